"""The auditor's report: `<reports-dir>/report.html`, rendered from the results document
(the very text written to results.json, read back), so its numbers cannot differ from it.

Self-contained (report.css and report.js inlined, nothing fetched) and deterministic: the same
document always gives the same bytes. Sections, in order:

  status       exit status; the one line of a run that aborted or must exit 2, on top
  identity     tool version and commit, catalog and Falco rules sha256, the cluster (API
               server, Kubernetes version, kube-system UID), the runner (SelfSubjectReview),
               profile, start and end
  changes      "Changes since the baseline", only when the document has `baseline_diff`
  summary      PASS / FAIL / ERROR / SKIP / NOT-VERIFIED, overall and by component (FAILs and
               ERRORs first), and the controls that need attention
  cis, mitre   CIS Kubernetes Benchmark section -> item -> controls -> verdict (controls
               without a CIS item listed apart); ATT&CK technique -> controls -> verdict
  controls     every control in a <details>: its reason and evidence (endpoints, exchanges,
               differential evidence, alerts, notes, cleanup, configuration); FAILs and
               ERRORs first, then catalog order; each links to its entry in docs/controls.md
"""
from __future__ import annotations

import html
import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import yaml

from kubeprobe.reference import anchor, cis_section

GENERATOR = "kubeprobe auditor report 1"
VERDICTS = ("PASS", "FAIL", "ERROR", "SKIP", "NOT-VERIFIED")     # summary columns
SEVERITY = ("FAIL", "ERROR", "NOT-VERIFIED", "SKIP", "PASS")     # worst first
EXIT_MEANING = {0: "every control held",
                1: "a control failed or could not be judged",
                2: "the suite could not run, or cannot vouch for the cluster it leaves"}
NOT_RECORDED = "not recorded"
ASSETS = Path(__file__).resolve().parent


def _e(value: Any) -> str:
    return html.escape(str(value))


def control_anchor(control_id: str) -> str:
    return f"control-{control_id}"


def worst(verdicts: Iterable[str]) -> str:
    return min(verdicts, key=lambda v: SEVERITY.index(v) if v in SEVERITY else len(SEVERITY))


def render(document: dict[str, Any]) -> str:
    """The whole report.html for one results document."""
    parts = [_head(document), "<body>", _toolbar(), "<h1>kubeprobe: active security "
             "conformance report</h1>", _status(document),
             '<div class="top">', _identity(document),
             "<div>", _changes(document), _summary(document), "</div></div>",
             _cis(document), _mitre(document), _controls(document), "</body></html>"]
    return "\n".join(p for p in parts if p) + "\n"


# -- page ----------------------------------------------------------------------------------
def _head(document: dict) -> str:
    env = document.get("environment") or {}
    counts = ", ".join(f"{n} {v}" for v, n in _totals(document).items() if n)
    title = f"kubeprobe report {env.get('Run id', '')}: {counts or 'no controls'}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta name="generator" content="{GENERATOR}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title>"
            f"<style>{(ASSETS / 'report.css').read_text()}</style>"
            f"<script>{(ASSETS / 'report.js').read_text()}</script></head>")


def _toolbar() -> str:
    return ('<div class="toolbar"><button type="button" id="expand-all">Expand all</button> '
            '<button type="button" id="collapse-all">Collapse all</button></div>')


def _status(document: dict) -> str:
    code = document.get("exit_status")
    ran, scheduled = len(document.get("controls") or []), document.get("scheduled")
    of = f" of {scheduled}" if isinstance(scheduled, int) and scheduled != ran else ""
    text = (f"Exit {_e(code)}: {_e(EXIT_MEANING.get(code, 'unknown exit status'))}; "
            f"{ran}{of} controls judged")
    line = (f'<span class="line" id="abort-line">{_e(document["error"])}</span>'
            if document.get("error") else "")
    return f'<div class="status exit-{_e(code)}" id="status">{text}{line}</div>'


# -- run identity --------------------------------------------------------------------------
def identity_rows(document: dict) -> list[tuple[str, str]]:
    """(label, value) of the run identity, in the order an auditor checks them."""
    env = document.get("environment") or {}
    tool = document.get("kubeprobe") or {}
    version = tool.get("version") or NOT_RECORDED
    commit = tool.get("commit") or ("not a git checkout" if tool else NOT_RECORDED)
    started, ended = document.get("started_at"), document.get("generated_at")

    def get(key: str) -> str:
        return env.get(key) or NOT_RECORDED

    return [("Tool", f"kubeprobe {version}, commit {commit}"),
            ("Catalog", f"{get('Catalog')} sha256 {get('Catalog (sha256)')}"),
            ("Falco rules", f"sha256 {get('Falco rules (sha256)')}"),
            ("API server", get("API server")),
            ("Kubernetes", get("Kubernetes")),
            ("Node cgroups", get("Node cgroups")),
            ("kube-system UID", get("kube-system UID")),
            ("Runner", f"{get('Runner')} (SelfSubjectReview)" if env.get("Runner")
             else NOT_RECORDED),
            ("Profile", get("Profile")),
            ("Started", started or NOT_RECORDED),
            ("Ended", f"{ended or NOT_RECORDED}{_duration(started, ended)}"),
            ("Run id", get("Run id")), ("Target", get("Target")),
            ("Context", get("Context")), ("Alert sources", get("Alert sources")),
            ("Falco", get("Falco"))]


def _duration(started: str | None, ended: str | None) -> str:
    try:
        seconds = (datetime.fromisoformat(ended) - datetime.fromisoformat(started))
    except (TypeError, ValueError):
        return ""
    return f" ({round(seconds.total_seconds())} s)"


def _identity(document: dict) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>"
                   for k, v in identity_rows(document))
    return (f'<section id="identity"><h2>Run identity</h2>'
            f'<table class="kv">{rows}</table></section>')


# -- changes since the baseline --------------------------------------------------------------
CHANGE_GROUPS = (("regressions", "Regression"), ("fixes", "Fix"),
                 ("authority_changes", "Authority change"), ("added", "Added"),
                 ("removed", "Removed"))


def _changes(document: dict) -> str:
    diff = document.get("baseline_diff")
    if not isinstance(diff, dict):
        return ""
    counts = ", ".join(f"{len(diff.get(key) or [])} {label.lower()}(s)"
                       for key, label in CHANGE_GROUPS)
    rows = [_change_row(label, item, document) for key, label in CHANGE_GROUPS
            for item in diff.get(key) or []]
    table = ("<table><tr><th style=\"width:9em\">Change</th><th>Control</th>"
             "<th style=\"width:22%\">Before</th><th style=\"width:22%\">After</th></tr>"
             + "".join(rows) + "</table>") if rows else "<p>No change.</p>"
    return (f'<section id="changes"><h2>Changes since the baseline</h2>'
            f"<p>Baseline <code>{_e(diff.get('baseline', NOT_RECORDED))}</code>: "
            f"{_e(counts)}.</p>{table}</section>")


def _change_row(label: str, item: dict, document: dict) -> str:
    present = {c["id"] for c in document.get("controls") or []}
    cid = item.get("id", "?")
    name = (f'<a href="#{control_anchor(cid)}">{_e(cid)}</a>' if cid in present else _e(cid))
    return (f"<tr><td>{_e(label)}</td><td>{name}: {_e(item.get('title', ''))}</td>"
            f"<td>{_side(item.get('before'))}</td><td>{_side(item.get('after'))}</td></tr>")


def _side(side: dict | None) -> str:
    if not side:
        return "-"
    verdict = side.get("verdict", "?")
    return (f'<span class="verdict v-{_e(verdict)}">{_e(verdict)}</span> '
            f"{_e(side.get('observed', ''))}")


# -- executive summary -----------------------------------------------------------------------
def _totals(document: dict) -> dict[str, int]:
    """The counts results.json states (its `summary`), every verdict named, zeros too."""
    summary = document.get("summary") or {}
    return {v: int(summary.get(v, 0)) for v in VERDICTS}


def by_component(document: dict) -> list[tuple[str, Counter]]:
    """(component, verdict counts), components with FAILs, then ERRORs, first."""
    counts: dict[str, Counter] = {}
    for control in document.get("controls") or []:
        counts.setdefault(control.get("component", "?"), Counter())[control["verdict"]] += 1
    return sorted(counts.items(), key=lambda kv: (-kv[1]["FAIL"], -kv[1]["ERROR"], kv[0]))


def _summary(document: dict) -> str:
    totals = _totals(document)
    tiles = "".join(f'<div class="tile v-{v}"><b data-count="{v}">{n}</b>{v}</div>'
                    for v, n in totals.items())
    tiles += (f'<div class="tile"><b data-count="total">{sum(totals.values())}</b>'
              "controls</div>")
    head = "".join(f"<th>{v}</th>" for v in VERDICTS)
    rows = "".join(
        f'<tr data-component="{_e(name)}"><td>{_e(name)}</td>'
        + "".join(f'<td class="{"" if c[v] else "zero"}">{c[v]}</td>' for v in VERDICTS)
        + f"<td>{sum(c.values())}</td></tr>" for name, c in by_component(document))
    return (f'<section id="summary"><h2>Executive summary</h2><div class="tiles">{tiles}</div>'
            f'<table class="counts"><tr><th>Component</th>{head}<th>Total</th></tr>{rows}'
            f"</table>{_attention(document)}</section>")


def _attention(document: dict) -> str:
    rows = [c for c in document.get("controls") or [] if c["verdict"] in ("FAIL", "ERROR")]
    if not rows:
        return "<p>No control FAILED or ended in ERROR.</p>"
    rows.sort(key=lambda c: SEVERITY.index(c["verdict"]))
    return "<p><b>Needs attention:</b> " + "".join(_chip(c) for c in rows) + "</p>"


def _chip(control: dict) -> str:
    verdict = control["verdict"]
    return (f'<a class="chip v-{_e(verdict)}" href="#{control_anchor(control["id"])}" '
            f'title="{_e(control.get("title", ""))}">{_e(control["id"])} '
            f"<span>{_e(verdict)}</span></a>")


# -- CIS and ATT&CK ------------------------------------------------------------------------
def cis_items(document: dict) -> tuple[dict[str, dict[str, list[dict]]], list[dict]]:
    """{section: {item: [controls]}} in benchmark order, and the controls with no CIS item."""
    sections: dict[str, dict[str, list[dict]]] = {}
    unmapped = []
    for control in document.get("controls") or []:
        items = (control.get("mappings") or {}).get("cis") or []
        if not items:
            unmapped.append(control)
        for item in items:
            sections.setdefault(cis_section(item), {}).setdefault(item, []).append(control)
    ordered = {s: dict(sorted(items.items(), key=lambda kv: _numeric(kv[0])))
               for s, items in sorted(sections.items(), key=lambda kv: _numeric(kv[0]))}
    return ordered, unmapped


def _numeric(item: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in item.split("."))


def _cis(document: dict) -> str:
    sections, unmapped = cis_items(document)
    titles = (document.get("benchmarks") or {}).get("cis_sections") or {}
    rows = []
    for section, items in sections.items():
        rows.append(f'<tr class="group"><th colspan="3">{_e(section)} '
                    f"{_e(titles.get(section, ''))}</th></tr>")
        rows += [_mapping_row(item, "", controls) for item, controls in items.items()]
    name = (document.get("benchmarks") or {}).get("cis", "CIS Kubernetes Benchmark")
    apart = ("<p><b>No CIS item:</b> " + "".join(_chip(c) for c in unmapped) + "</p>"
             if unmapped else "")
    return (f'<section id="cis"><h2>{_e(name)}</h2><table class="mapping">'
            "<tr><th>Item</th><th>Controls</th><th>Verdict</th></tr>"
            + "".join(rows) + f"</table>{apart}</section>")


def _mapping_row(key: str, name: str, controls: list[dict]) -> str:
    verdict = worst(c["verdict"] for c in controls)
    label = f"{_e(key)} {_e(name)}".strip()
    return (f'<tr class="v-{_e(verdict)}"><td>{label}</td>'
            f'<td>{"".join(_chip(c) for c in controls)}</td>'
            f'<td><span class="verdict">{_e(verdict)}</span></td></tr>')


def _mitre(document: dict) -> str:
    techniques: dict[str, list[dict]] = {}
    for control in document.get("controls") or []:
        for technique in (control.get("mappings") or {}).get("mitre") or []:
            techniques.setdefault(technique, []).append(control)
    names = (document.get("benchmarks") or {}).get("mitre_techniques") or {}
    rows = "".join(_mapping_row(t, names.get(t, ""), controls)
                   for t, controls in sorted(techniques.items()))
    name = (document.get("benchmarks") or {}).get("mitre", "MITRE ATT&CK")
    return (f'<section id="mitre"><h2>{_e(name)}</h2><table class="mapping">'
            f"<tr><th>Technique</th><th>Controls</th><th>Verdict</th></tr>{rows}</table>"
            "</section>")


# -- every control and its evidence -----------------------------------------------------------
def ordered_controls(document: dict) -> list[dict]:
    """FAILs, then ERRORs, then the rest, each in catalog (document) order."""
    controls = list(document.get("controls") or [])
    rank = {"FAIL": 0, "ERROR": 1}
    return sorted(controls, key=lambda c: rank.get(c["verdict"], 2))


def _controls(document: dict) -> str:
    reference = document.get("control_reference")
    body = "".join(_control(c, reference, document) for c in ordered_controls(document))
    return (f'<section id="controls"><h2>Controls and evidence</h2><p>FAILs and ERRORs '
            "first, then catalog order. Open a row for its evidence.</p>"
            f"{body or '<p>No control was judged.</p>'}</section>")


def _control(c: dict, reference: str | None, document: dict) -> str:
    link = (f' <a class="ref" href="{_e(reference)}#{anchor(c["id"])}">reference</a>'
            if reference else "")
    meta = (f'{_e(c.get("component", ""))} &middot; expected {_e(c.get("expected", ""))} '
            f'&middot; observed {_e(c.get("observed", ""))}')
    return (f'<details class="control v-{_e(c["verdict"])}" id="{control_anchor(c["id"])}" '
            f'data-verdict="{_e(c["verdict"])}"><summary><span class="verdict">'
            f'{_e(c["verdict"])}</span> <b>{_e(c["id"])}</b> {_e(c.get("title", ""))} '
            f'<span class="meta">{meta}</span>{link}</summary>'
            f'<div class="evidence">{evidence(c, document)}</div></details>')


def evidence(c: dict, document: dict) -> str:
    parts = [f'<p><b>{_e(c["verdict"])}</b>: {_e(c.get("reason", ""))}</p>',
             _control_facts(c, document)]
    parts += [_endpoint(e) for e in c.get("endpoints") or []]
    if c.get("configuration"):
        parts.append("<h4>Configuration (cross-check; the attack decides the verdict)</h4>"
                     f"<pre>{_e(yaml.safe_dump(c['configuration'], sort_keys=False))}</pre>")
    return "".join(parts)


def _control_facts(c: dict, document: dict) -> str:
    names = (document.get("benchmarks") or {}).get("mitre_techniques") or {}
    mappings = c.get("mappings") or {}
    params = f" {json.dumps(c['params'], sort_keys=True)}" if c.get("params") else ""
    facts = [("Guidance", c.get("guidance")),
             ("Attack", f"attacks/{c.get('attack')}.py{params}"),
             ("Identity", c.get("identity")), ("Vantage", c.get("vantage")),
             ("Expected", f"{c.get('expected')} (profile {c.get('profile')}); accepted "
                          f"authorities: {', '.join(c.get('accepted_authorities') or []) or '-'}"),
             ("CIS", ", ".join(mappings.get("cis") or []) or "no CIS item"),
             ("MITRE ATT&CK", "; ".join(f"{t} {names.get(t, '')}".strip()
                                        for t in mappings.get("mitre") or [])),
             ("Started", f"{c.get('started_at')} ({c.get('duration_s')} s)"),
             ("Remediation", c.get("remediation"))]
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    return f'<table class="kv">{rows}</table>'


def _endpoint(e: dict) -> str:
    point, obs = e.get("endpoint") or {}, e.get("observation") or {}
    by = f" by {_e(obs['authority'])}" if obs.get("authority") else ""
    parts = [f'<div class="endpoint"><h4>{_e(point.get("name"))} {_e(point.get("address"))} '
             f'from {_e(e.get("vantage"))}: <span class="verdict v-{_e(e.get("verdict"))}">'
             f'{_e(e.get("verdict"))}</span></h4>',
             f"<p>{_e(e.get('reason', ''))}</p>",
             f"<p>Observed <b>{_e(obs.get('outcome'))}</b>{by} at {_e(obs.get('observed_at'))}"
             f": {_e(obs.get('summary', ''))}</p>"]
    found = dict(obs.get("evidence") or {})
    if "differential" in found:
        parts.append(_differential(found.pop("differential")))
    if found:
        parts.append(f"<pre>{_e(json.dumps(found, indent=1, default=str))}</pre>")
    if e.get("exchanges"):
        parts.append("<h4>Exchanges</h4><ul>"
                     + "".join(_exchange(x) for x in e["exchanges"]) + "</ul>")
    parts.append(_alert(e.get("alert")))
    parts += [f'<p class="note">{_e(note)}</p>' for note in e.get("notes") or []]
    parts += [_cleanup(step) for step in e.get("cleanup") or []]
    return "".join(parts) + "</div>"


def _differential(pair: dict) -> str:
    """The positive twin and the attack, side by side: why a refusal proves the control."""
    rows = [("Property under test", pair.get("property under test")),
            ("Mode", pair.get("mode") + (f"; {pair['fallback']}" if pair.get("fallback")
                                         else ""))]
    for label, key in (("Twin (without the property)", "twin (without the property)"),
                       ("Attack (with the property)", "attack (with the property)")):
        side = pair.get(key)
        if side:
            message = (side.get("status") or {}).get("message")
            rows.append((label, f"{side.get('write')}: {side.get('answer')}"
                                + (f" ({message})" if message else "")))
        else:
            rows.append((label, "not sent"))
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return (f'<h4>Differential evidence</h4><table class="kv">{table}</table>'
            f"<details><summary>the two requests as sent</summary>"
            f"<pre>{_e(json.dumps(pair, indent=1, default=str))}</pre></details>")


WIRE_KEYS = ("error", "error_detail", "tls_handshake", "tls_alert", "tls_version",
             "tls_cert_requested", "tls_alpn", "server_cert_subject", "server_cert_issuer",
             "http_status", "http_reason", "body_truncated", "elapsed_ms", "started_at",
             "vantage")


def _exchange(exchange: dict) -> str:
    req, res = exchange.get("request") or {}, exchange.get("response") or {}
    wire = []
    for key in WIRE_KEYS:
        # "the server did not ask for a client certificate" is evidence too: show False.
        shown = (res.get(key) is not None if key == "tls_cert_requested"
                 else res.get(key) not in (None, False, ""))
        if shown:
            wire.append(f"<b>{_e(key)}</b>: {_e(res[key])}")
    body = f"<pre>{_e(res['body'])}</pre>" if res.get("body") else ""
    auth = ", Authorization header" if "Authorization" in (req.get("headers") or {}) else ""
    return (f"<li><code>{_e(req.get('method') or 'CONNECT')} {_e(req.get('url'))}</code> "
            f"(client certificate: {_e(req.get('client_certificate') or 'none')}{auth})"
            f"<br>{'; '.join(wire)}{body}</li>")


def _alert(alert: dict | None) -> str:
    if not alert:
        return ""
    state = "matched" if alert.get("matched") else f"NO MATCH ({alert.get('reason')})"
    shown = alert.get("matched") or alert.get("alerts_in_window")
    seen = (f"<pre>{_e(json.dumps(shown, indent=1, default=str)[:4000])}</pre>"
            if shown else "")
    return (f"<p><b>Alert</b> from {_e(alert.get('source'))}: {_e(state)}; matcher "
            f"<code>{_e(json.dumps(alert.get('matcher')))}</code></p>{seen}")


def _cleanup(step: dict) -> str:
    if step.get("error"):
        return (f'<p>cleanup: {_e(step.get("step"))}: <span class="failed">FAILED: '
                f'{_e(step["error"])}</span></p>')
    return f"<p>cleanup: {_e(step.get('step'))}: done</p>"
