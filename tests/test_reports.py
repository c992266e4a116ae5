"""The reports a run leaves: results.json, report.html (kubeprobe's auditor report, rendered
from the very document written to results.json), junit.xml. Runs attack
tests/standin_apiserver.py (a TLS stand-in that answers like an API server and can stop
answering at a chosen request); nothing here touches the lab."""
from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import pytest
from kubernetes.client.rest import ApiException

from kubeprobe import auditor
from kubeprobe.journal import Journal
from kubeprobe.kube import Kube
from kubeprobe.provenance import sha256_of
from kubeprobe.reference import DOCS_CONTROLS
from kubeprobe.reportfiles import write_atomically
from tests.test_journal import planted
from tests.test_bad_input import (StandInApiServer, assert_one_clear_line, closed_port,
                                  kubeconfig, load_catalog, run_suite, standin_suite,
                                  throwaway_catalog)


def test_environment_names_the_cluster_and_the_runner(tmp_path):
    """kube-system's UID names the cluster; SelfSubjectReview names the runner as the API
    server authenticated it (the official client, the runner's own credentials)."""
    catalog = load_catalog(throwaway_catalog(tmp_path, "succeeds"))
    with StandInApiServer() as api:
        environment = standin_suite(api, catalog, tmp_path).environment
    assert environment["kube-system UID"] == "5tand1n0-0000-4000-8000-000000000001"
    assert environment["Runner"] == ("standin-runner (groups: standin:admins, "
                                     "system:authenticated)")
    assert environment["Catalog (sha256)"] == sha256_of(catalog.path)
    digest = environment["Falco rules (sha256)"].split()[-1]
    assert len(digest) == 64  # the whole digest, not a prefix


def test_identity_that_cannot_be_read_says_why(tmp_path):
    with StandInApiServer() as api:
        kube = Kube.connect(api.kubeconfig(tmp_path), None)
        api.answer = lambda method, path: (403, {"kind": "Status", "code": 403,
                                                 "reason": "Forbidden", "message": "no"})
        assert kube.runner_identity() == ("unknown (SelfSubjectReview: ForbiddenException: "
                                          "HTTP 403 Forbidden)")
        assert kube.namespace_uid("kube-system") == ("unknown (ForbiddenException: HTTP 403 "
                                                         "Forbidden)")


# ---------------------------------------------------------------- the files of a whole run

def reports_of(tmp_path: Path) -> Path:
    return tmp_path / "reports"


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def standin_run(tmp_path: Path, *args: str, **standin) -> subprocess.CompletedProcess:
    catalog = throwaway_catalog(tmp_path, "succeeds")
    with StandInApiServer(**standin) as api:
        return run_suite(tmp_path, "--kubeconfig", str(api.kubeconfig(tmp_path)),
                         "--catalog", str(catalog), *args)


def test_report_html_is_rendered_from_the_text_of_results_json(tmp_path):
    done = standin_run(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr   # the throwaway attack FAILs
    reports = reports_of(tmp_path)
    text = (reports / "results.json").read_text()
    document = json.loads(text)
    html = (reports / "report.html").read_text()
    assert html == auditor.render(document)   # the very document: numbers cannot differ
    assert f'content="{auditor.GENERATOR}"' in html
    assert ElementTree.parse(reports / "junit.xml").getroot().tag in ("testsuites", "testsuite")
    assert not [p.name for p in reports.iterdir() if p.name.endswith(".tmp")]
    assert document["kubeprobe"]["version"] and document["scheduled"] == 1
    assert document["started_at"] <= document["generated_at"]
    assert document["benchmarks"] == {}    # the throwaway catalog names no benchmark
    assert document["control_reference"] == DOCS_CONTROLS.as_uri()   # reports outside the repo
    assert "standin-runner" in html and "5tand1n0-0000-4000-8000-000000000001" in html
    assert f"report: {reports / 'report.html'}" in done.stdout


def test_a_run_that_cannot_start_leaves_the_last_report_in_place(tmp_path):
    """Exit 2 before any control ran: the line on the terminal and in results.json;
    report.html and junit.xml stay the last run's, whose results.json is kept as
    results.previous.json (and stays so through a second run that cannot start)."""
    standin_run(tmp_path)
    reports = reports_of(tmp_path)
    before = snapshot(reports)
    first_run = json.loads(before["results.json"])["environment"]["Run id"]

    for args, expected in ((["--kubeconfig", str(kubeconfig(tmp_path, closed_port()))],
                            "no cluster"),
                           (["--connect-timeout", "-1"], "--connect-timeout '-1'")):
        done = run_suite(tmp_path, *args)
        line = assert_one_clear_line(done, expected)
        after = snapshot(reports)
        assert after["report.html"] == before["report.html"]
        assert after["junit.xml"] == before["junit.xml"]
        assert after["results.previous.json"] == before["results.json"]
        document = json.loads(after["results.json"])
        assert document["cannot_start"] is True and document["exit_status"] == 2
        assert document["error"] in line and document["error"].startswith("kubeprobe: ")
        assert document["controls"] == [] and document["summary"] == {}
        assert document["previous"]["results"] == "results.previous.json"
        assert document["previous"]["run_id"] == first_run
        assert not [p.name for p in reports.iterdir() if p.name.endswith(".tmp")]


def test_a_run_aborted_mid_way_reports_what_it_completed_with_the_reason_on_top(tmp_path):
    done = standin_run(tmp_path, stop_on=lambda method, path, _: path.startswith(
        "/api/v1/nodes") and "labelSelector=kubeprobe.io" not in path)
    line = assert_one_clear_line(done, "stopped answering mid-run (during STANDIN-01)")
    document = json.loads((reports_of(tmp_path) / "results.json").read_text())
    assert document["error"] in line and "cannot_start" not in document
    row, = document["controls"]
    assert row["verdict"] == "ERROR"
    html = (reports_of(tmp_path) / "report.html").read_text()
    status = html.split('id="status"', 1)[1].split("</div>", 1)[0]
    assert "Exit 2" in status and auditor._e(document["error"]) in status
    assert html.index('id="status"') < html.index('id="identity"')


def test_pytest_html_still_writes_where_html_says(tmp_path):
    done = standin_run(tmp_path, f"--html={tmp_path / 'elsewhere.html'}")
    assert done.returncode == 1, done.stdout + done.stderr
    pytest_html = (tmp_path / "elsewhere.html").read_text()
    assert "kubeprobe-evidence" in pytest_html and ">Verdict</th>" in pytest_html
    ours = (reports_of(tmp_path) / "report.html").read_text()
    assert auditor.GENERATOR in ours


def test_html_naming_kubeprobes_own_report_goes_next_to_it(tmp_path):
    target = reports_of(tmp_path) / "report.html"
    done = standin_run(tmp_path, f"--html={target}")
    instead = reports_of(tmp_path) / "pytest-html.html"
    assert (f"kubeprobe: {target} is kubeprobe's own report; pytest-html's goes to "
            f"{instead} instead") in done.stdout + done.stderr
    assert "kubeprobe-evidence" in instead.read_text()
    assert auditor.GENERATOR in target.read_text()


def test_reports_are_replaced_in_one_step(tmp_path, monkeypatch):
    """Written to a temporary file, fsync'd, then renamed over the old one: a write that
    breaks off leaves the old file whole and no temporary behind."""
    path = tmp_path / "results.json"
    path.write_text("the previous run's")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_atomically(path, "x" * 100_000)
    assert path.read_text() == "the previous run's"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    monkeypatch.undo()
    write_atomically(path, "the new run's")
    assert path.read_text() == "the new run's"


def test_a_failed_cleanup_is_one_line_not_an_http_dump(tmp_path, caplog):
    """An ApiException's str() carries the response headers and body over many lines: a
    failed strike-out of the cluster journal (like every failed cleanup) is logged as one
    line naming the status."""
    failing = ApiException(status=500, reason="Internal Server Error")
    failing.headers = {"Audit-Id": "1234", "Content-Type": "application/json"}
    failing.body = '{"kind":"Status","message":"etcdserver: request timed out"}'
    assert "HTTP response headers" in str(failing)

    class BrokenClusterJournal:
        def record(self, entry):
            pass

        def clear(self, entry):
            raise failing

    journal = Journal.start(tmp_path, "oneline01")
    journal.cluster = BrokenClusterJournal()
    entry = journal.intend(planted(), "RUNTIME-07")
    with caplog.at_level(logging.WARNING, logger="kubeprobe"):
        journal.undone(entry)
    message, = [r.getMessage() for r in caplog.records]
    assert message == ("cluster journal: cannot strike #1: ApiException: HTTP 500 Internal "
                       "Server Error")


def test_changes_since_the_baseline_come_first_after_the_run_identity(tmp_path):
    from tests.test_diff import P, baseline_file, standin_catalog
    catalog = standin_catalog(tmp_path, HELD_01="succeeded")
    baseline = baseline_file(tmp_path, ("HELD-01", P, "BLOCKED (http_401)"))
    with StandInApiServer() as api:
        done = run_suite(tmp_path, "--kubeconfig", str(api.kubeconfig(tmp_path)),
                         "--catalog", str(catalog), "--baseline", str(baseline))
    assert done.returncode == 1, done.stdout + done.stderr
    html = (reports_of(tmp_path) / "report.html").read_text()
    order = [html.index(f'id="{s}"') for s in ("status", "identity", "changes", "summary")]
    assert order == sorted(order)
    changes = html.split('id="changes"', 1)[1].split("</section>", 1)[0]
    assert "<td>Regression</td>" in changes and 'href="#control-HELD-01"' in changes
    assert auditor._e(str(baseline)) in changes
