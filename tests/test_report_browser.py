"""kubeprobe's report.html in a real browser: Debian's Chromium (/usr/bin/chromium), driven by
Playwright for Python (its bundled driver; never `playwright install`: no browser download).

For the committed results document (tests/data, trimmed from CI's decoy run) and, when
KUBEPROBE_NEGATIVE_CONTROL points at CI's reports (`.ci/run`), the real hardened and weak runs:

- the summary numbers are results.json's;
- run identity, executive summary and the CIS table are on the first 1280x800 screen;
- one click on a FAIL row opens its evidence;
- nothing runs off the right edge at 1280 px, closed or with every row open;
- the printed PDF holds the whole report (every control id, and every control's remediation,
  which is only inside its closed <details>): print CSS alone opens them, and beforeprint
  opens them too;
- the page fetches nothing but itself.

Screenshots and the PDF stay next to the report that was checked: reports/browser/fixture/
for the committed document, $KUBEPROBE_NEGATIVE_CONTROL/<lab>/ for CI's (there the run's own
report.html must be exactly what its results.json renders to); $KUBEPROBE_BROWSER_ARTIFACTS
puts them all below another directory. Skipped, saying so, only where Chromium is absent.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from kubeprobe import auditor

REPO = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).with_name("data") / "results-decoy-trimmed.json"
CHROMIUM = "/usr/bin/chromium"
# The machine's notes: root needs --no-sandbox; nothing may try to reach the network.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
SCREEN = {"width": 1280, "height": 800}
CI_REPORTS = os.environ.get("KUBEPROBE_NEGATIVE_CONTROL")
ARTIFACTS = os.environ.get("KUBEPROBE_BROWSER_ARTIFACTS")

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=(
    f"{CHROMIUM} is absent: `apt-get install chromium` (.ci/install does)"))


def cases() -> list[tuple[str, Path, Path]]:
    """(name, results.json, directory of the report and its screenshots)."""
    # Absolute: .ci/run names its reports relative to the checkout, and a file:// URL cannot be.
    artifacts = Path(ARTIFACTS).resolve() if ARTIFACTS else None
    found = [("fixture", FIXTURE, (artifacts or REPO / "reports" / "browser") / "fixture")]
    for lab in ("hardened", "weak") if CI_REPORTS else ():
        ci = Path(CI_REPORTS).resolve()
        found.append((lab, ci / lab / "results.json", artifacts / lab if artifacts else ci / lab))
    return found


@pytest.fixture(scope="module")
def chromium():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: pip install -e '.[selftest]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def report_for(results: Path, directory: Path) -> tuple[dict, Path]:
    """The results document and its report.html: the one the run left next to its
    results.json (which must be exactly what the document renders to), else rendered into
    `directory`."""
    assert results.is_file(), f"{results} missing"
    document = json.loads(results.read_text())
    rendered = auditor.render(document)
    directory.mkdir(parents=True, exist_ok=True)
    report = directory / "report.html"
    if results.parent.resolve() == directory.resolve() and report.is_file():
        existing = report.read_text()
        assert auditor.GENERATOR in existing, (
            f"{report} was not written by this kubeprobe (pytest-html's?): run the suite again")
        assert existing == rendered, f"{report} differs from what {results} renders to"
    else:
        report.write_text(rendered)
    return document, report


@pytest.fixture(params=cases(), ids=lambda case: case[0])
def opened(request, chromium):
    """(document, report, page) with the report open at 1280x800; the page's requests."""
    name, results, directory = request.param
    document, report = report_for(results, directory)
    page = chromium.new_page(viewport=SCREEN)
    page.requests = []
    page.on("request", lambda r: page.requests.append(r.url))
    page.goto(report.as_uri())
    page.wait_for_function("document.readyState === 'complete'")
    yield document, report, page
    page.close()


def first_control(document: dict, verdict: str = "FAIL") -> str:
    """The id of the first row with this verdict (the first row at all on a run without)."""
    rows = auditor.ordered_controls(document)
    return next((c["id"] for c in rows if c["verdict"] == verdict), rows[0]["id"])


def no_horizontal_overflow(page) -> tuple[int, int]:
    return page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")


def test_summary_numbers_are_results_json(opened):
    document, _, page = opened
    counted = Counter(c["verdict"] for c in document["controls"])
    for verdict in auditor.VERDICTS:
        shown = int(page.locator(f'[data-count="{verdict}"]').inner_text())
        assert shown == document["summary"].get(verdict, 0) == counted[verdict], verdict
    assert int(page.locator('[data-count="total"]').inner_text()) == len(document["controls"])
    # The per-component rows add up to the same numbers, column by column.
    columns = page.evaluate("""() => [...document.querySelectorAll('#summary tr[data-component]')]
        .map(tr => [...tr.querySelectorAll('td')].slice(1, 6).map(td => +td.textContent))""")
    sums = [sum(col) for col in zip(*columns)] if columns else [0] * 5
    assert sums == [counted[v] for v in auditor.VERDICTS]


def test_identity_summary_and_cis_table_on_the_first_screen(opened):
    document, report, page = opened
    for section in ("#identity", "#summary"):
        box = page.locator(section).bounding_box()
        assert page.locator(section).is_visible() and box["y"] + box["height"] <= 800, \
            (section, box)
    heading = page.locator("#cis h2").bounding_box()
    first_row = page.locator("#cis table tr").nth(2).bounding_box()   # header, section, item
    assert heading["y"] >= 0 and first_row["y"] + first_row["height"] <= 800, first_row
    assert page.locator("#identity").inner_text().count("sha256") >= 2
    page.screenshot(path=str(report.with_name("report-first-screen.png")))


def test_a_fail_row_opens_to_its_evidence_with_one_click(opened):
    document, report, page = opened
    control = page.locator(f"#control-{first_control(document)}")
    evidence = control.locator(".evidence")
    assert not evidence.is_visible()
    control.locator("summary").click()
    evidence.wait_for(state="visible")
    assert control.get_attribute("open") is not None
    assert evidence.locator("p").first.is_visible()   # the verdict and its reason
    page.screenshot(path=str(report.with_name("report-fail-open.png")))


def test_nothing_runs_off_the_right_edge(opened):
    _, report, page = opened
    width, inner = no_horizontal_overflow(page)
    assert width <= inner, f"closed: {width} px wide in a {inner} px window"
    page.screenshot(path=str(report.with_name("report-full-page.png")), full_page=True)
    page.locator("#expand-all").click()
    page.wait_for_function("document.querySelectorAll('details:not([open])').length === 0")
    width, inner = no_horizontal_overflow(page)
    assert width <= inner, f"every row open: {width} px wide in a {inner} px window"


def test_beforeprint_opens_every_row_and_afterprint_closes_them_again(opened):
    _, _, page = opened
    closed = page.evaluate("document.querySelectorAll('details:not([open])').length")
    page.evaluate("window.dispatchEvent(new Event('beforeprint'))")
    assert page.evaluate("document.querySelectorAll('details:not([open])').length") == 0
    page.evaluate("window.dispatchEvent(new Event('afterprint'))")
    assert page.evaluate("document.querySelectorAll('details:not([open])').length") == closed


def test_the_pdf_holds_the_whole_report(opened):
    """Printed with every row closed: the print stylesheet alone must show all evidence."""
    document, report, page = opened
    pdf = report.with_name("report.pdf")
    assert page.evaluate("document.querySelectorAll('details[open]').length") == 0
    page.pdf(path=str(pdf), format="A4", print_background=True)
    assert pdf.stat().st_size > 20_000
    if shutil.which("pdftotext") is None:   # poppler-utils: .ci/install has it
        pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf.read_bytes()))
        assert pages >= 1 + len(document["controls"]) // 4, pages
        return
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert not [c["id"] for c in document["controls"] if c["id"] not in text]
    # pdftotext joins a word broken at a hyphen: compare without whitespace or hyphens.
    flat = re.sub(r"[\s\-‐]+", "", text)
    hidden = [c["id"] for c in document["controls"]
              if re.sub(r"[\s\-]+", "", c["remediation"]) not in flat]
    assert not hidden, f"evidence missing from the PDF for {hidden}"


def test_the_report_fetches_nothing_but_itself(opened):
    _, report, page = opened
    page.locator("#expand-all").click()
    assert set(page.requests) == {report.as_uri()}, page.requests
