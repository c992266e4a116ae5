/* kubeprobe auditor report: inlined into report.html (no external fetch). */
(function () {
  "use strict";
  function setAll(open) {
    document.querySelectorAll("details").forEach(function (d) { d.open = open; });
  }
  // Printing shows every piece of evidence; what was closed before closes again after.
  window.addEventListener("beforeprint", function () {
    document.querySelectorAll("details:not([open])").forEach(function (d) {
      d.setAttribute("data-print-opened", "");
      d.open = true;
    });
  });
  window.addEventListener("afterprint", function () {
    document.querySelectorAll("details[data-print-opened]").forEach(function (d) {
      d.removeAttribute("data-print-opened");
      d.open = false;
    });
  });
  // A link to a control (#control-ID) opens its evidence.
  function openTarget() {
    var id = decodeURIComponent(location.hash.slice(1));
    var target = id && document.getElementById(id);
    if (target && target.tagName === "DETAILS") { target.open = true; }
  }
  window.addEventListener("hashchange", openTarget);
  document.addEventListener("DOMContentLoaded", function () {
    openTarget();
    var expand = document.getElementById("expand-all");
    var collapse = document.getElementById("collapse-all");
    if (expand) { expand.addEventListener("click", function () { setAll(true); }); }
    if (collapse) { collapse.addEventListener("click", function () { setAll(false); }); }
  });
})();
