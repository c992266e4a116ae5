"""kubeprobe's auditor report (kubeprobe.auditor) as HTML text, from a committed results
document (tests/data: trimmed from a real CI run on the decoy lab). What a browser makes of
it is tests/test_report_browser.py."""
from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser
from pathlib import Path

from kubeprobe import auditor
from kubeprobe.reference import DOCS_CONTROLS, anchor

FIXTURE = Path(__file__).with_name("data") / "results-decoy-trimmed.json"
SECTIONS = ["status", "identity", "summary", "cis", "mitre", "controls"]


def fixture() -> dict:
    return json.loads(FIXTURE.read_text())


class Elements(HTMLParser):
    """Every start tag with its attributes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def elements(text: str) -> list[tuple[str, dict]]:
    parser = Elements()
    parser.feed(text)
    return parser.tags


def ids_in_order(text: str) -> list[str]:
    return [attrs["id"] for _, attrs in elements(text) if "id" in attrs]


def test_sections_come_in_the_auditors_order():
    ids = ids_in_order(auditor.render(fixture()))
    assert [i for i in ids if i in SECTIONS] == SECTIONS
    assert "changes" not in ids   # no baseline_diff: no section at all


def test_changes_since_the_baseline_come_first_after_the_run_identity():
    document = fixture()
    document["baseline_diff"] = {
        "baseline": "reports/nightly-2026-11-30/results.json",
        "regressions": [{"id": "ETCD-01", "title": "etcd refuses clients without a certificate",
                         "before": {"verdict": "PASS", "observed": "BLOCKED (tls_client_cert_alert)"},
                         "after": {"verdict": "FAIL", "observed": "SUCCEEDED"}}],
        "fixes": [], "added": [],
        "removed": [{"id": "OLD-01", "title": "a control this catalog no longer has",
                     "before": {"verdict": "PASS", "observed": "BLOCKED (http_401)"},
                     "after": None}],
        "authority_changes": []}
    text = auditor.render(document)
    ids = [i for i in ids_in_order(text) if i in SECTIONS + ["changes"]]
    assert ids == ["status", "identity", "changes", "summary", "cis", "mitre", "controls"]
    changes = text.split('id="changes"', 1)[1].split("</section>", 1)[0]
    assert "reports/nightly-2026-11-30/results.json" in changes
    assert "1 regression(s), 0 fix(s), 0 authority change(s), 0 added(s), 1 removed(s)" in changes
    assert '<a href="#control-ETCD-01">ETCD-01</a>' in changes   # in this run: linked
    assert "OLD-01" in changes and 'href="#control-OLD-01"' not in changes


def test_summary_numbers_are_the_documents():
    document = fixture()
    text = auditor.render(document)
    shown = dict(re.findall(r'data-count="([A-Z-]+|total)">(\d+)<', text))
    assert {k: int(v) for k, v in shown.items() if k != "total"} == {
        v: document["summary"].get(v, 0) for v in auditor.VERDICTS}
    assert int(shown["total"]) == len(document["controls"])
    summary = text.split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert ">NOT-VERIFIED<" in summary and "skipped" not in summary.lower()


def test_components_with_fails_and_errors_come_first():
    rows = auditor.by_component(fixture())
    keys = [(-c["FAIL"], -c["ERROR"]) for _, c in rows]
    assert keys == sorted(keys)


def test_every_control_has_a_row_with_its_evidence_and_its_reference():
    document = fixture()
    text = auditor.render(document)
    reference = DOCS_CONTROLS.read_text()
    details = {attrs["id"]: attrs for tag, attrs in elements(text) if tag == "details"
               and "control" in attrs.get("class", "")}
    assert set(details) == {f"control-{c['id']}" for c in document["controls"]}
    for control in document["controls"]:
        assert (f'href="{document["control_reference"]}#{anchor(control["id"])}"') in text
        assert f"## {control['id']}\n" in reference     # the anchor exists there
        assert auditor._e(control["remediation"]) in text


def test_fails_and_errors_are_listed_first():
    verdicts = [c["verdict"] for c in auditor.ordered_controls(fixture())]
    first = [v for v in verdicts if v in ("FAIL", "ERROR")]
    assert verdicts[:len(first)] == first and "FAIL" in first and "ERROR" in first


def test_cis_table_groups_by_section_and_lists_unmapped_controls_apart():
    sections, unmapped = auditor.cis_items(fixture())
    assert list(sections) == sorted(sections, key=auditor._numeric)
    assert sections["2"]["2.2"][0]["id"] == "ETCD-01"
    assert {c["id"] for c in unmapped} == {"NODEPORT-01", "RUNTIME-03"}


def test_differential_evidence_is_shown_as_the_pair():
    text = auditor.render(fixture())
    row = text.split('id="control-ADMISSION-01"', 1)[1].split("</details>", 1)[0]
    assert "Differential evidence" in row and "Twin (without the property)" in row


def test_self_contained_and_escaped():
    document = fixture()
    document["controls"][0]["title"] = "<script>alert(1)</script>"
    text = auditor.render(document)
    assert "<script>alert(1)</script>" not in text
    for tag, attrs in elements(text):
        assert tag not in ("link", "img", "iframe", "object", "embed"), tag
        assert "src" not in attrs, (tag, attrs)
    assert "@import" not in text and "url(" not in text
    assert text == auditor.render(document)   # deterministic: the same bytes every time


def test_a_document_from_before_these_fields_still_renders():
    document = fixture()
    for key in ("kubeprobe", "started_at", "benchmarks", "control_reference", "scheduled"):
        document.pop(key)
    text = auditor.render(document)
    assert "not recorded" in text and 'class="ref"' not in text


def test_an_aborted_run_says_why_on_top():
    document = copy.deepcopy(fixture())
    document.update(exit_status=2, scheduled=48, error="kubeprobe: API server "
                    "https://192.0.2.2:6443 stopped answering mid-run (during ETCD-05)")
    text = auditor.render(document)
    status = text.split('id="status"', 1)[1].split("</div>", 1)[0]
    assert "Exit 2" in status and "12 of 48 controls judged" in status
    assert "stopped answering mid-run (during ETCD-05)" in status
    assert text.index('id="status"') < text.index('id="identity"')
