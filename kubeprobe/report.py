"""Reports: results.json (the document kubeprobe's own report.html is rendered from, see
kubeprobe.auditor and kubeprobe.reportfiles), the pytest-html columns and evidence (when
`--html` asks for pytest-html's report), the terminal summary."""
from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import yaml

from kubeprobe.provenance import sha256_of, tool_identity

VERDICT_COLOURS = {"PASS": "#1a7f37", "FAIL": "#cf222e", "ERROR": "#9a6700",
                   "SKIP": "#57606a", "NOT-VERIFIED": "#8250df"}


def _e(value: Any) -> str:
    return html.escape(str(value))


def html_title(report) -> None:
    report.title = "kubeprobe: active security conformance report"


def html_header(cells: list[str]) -> None:
    cells.insert(1, '<th class="sortable" data-column-type="control">Control</th>')
    cells.insert(2, "<th>Expected</th>")
    cells.insert(3, "<th>Observed</th>")
    cells.insert(4, '<th class="sortable" data-column-type="verdict">Verdict</th>')


def html_row(report, cells: list[str]) -> None:
    data = getattr(report, "kubeprobe", None)
    if data is None:
        for index in range(1, 5):
            cells.insert(index, "<td>-</td>")
        return
    colour = VERDICT_COLOURS.get(data["verdict"], "#000")
    cells.insert(1, f'<td class="col-control">{_e(data["id"])}: {_e(data["title"])}</td>')
    cells.insert(2, f'<td>{_e(data["expected"])}</td>')
    cells.insert(3, f'<td>{_e(data["observed"])}</td>')
    cells.insert(4, f'<td style="color:{colour};font-weight:bold">{_e(data["verdict"])}</td>')


def _exchange_html(exchange: dict) -> str:
    req, res = exchange["request"], exchange["response"]
    wire = []
    for key in ("error", "error_detail", "tls_handshake", "tls_alert", "tls_version",
                "tls_cert_requested", "tls_alpn", "server_cert_subject", "server_cert_issuer",
                "http_status", "http_reason", "body_truncated", "elapsed_ms", "started_at",
                "vantage"):
        # "the server did not ask for a client certificate" is evidence too: show False.
        shown = res.get(key) is not None if key == "tls_cert_requested" else \
            res.get(key) not in (None, False, "")
        if shown:
            wire.append(f"<b>{_e(key)}</b>: {_e(res[key])}")
    body = f"<pre>{_e(res['body'])}</pre>" if res.get("body") else ""
    return (f"<li><code>{_e(req.get('method') or 'CONNECT')} {_e(req['url'])}</code> "
            f"(client certificate: {_e(req.get('client_certificate') or 'none')}"
            f"{', Authorization header' if 'Authorization' in req.get('headers', {}) else ''})"
            f"<br>{'; '.join(wire)}{body}</li>")


def evidence_html(data: dict) -> str:
    colour = VERDICT_COLOURS.get(data["verdict"], "#000")
    parts = [
        '<div class="kubeprobe-evidence" style="font-family:sans-serif;font-size:13px">',
        f'<p><b style="color:{colour}">{_e(data["verdict"])}</b>: {_e(data["reason"])}</p>',
        "<table>",
        *(f"<tr><th style='text-align:left;padding-right:1em'>{_e(k)}</th><td>{_e(v)}</td></tr>"
          for k, v in (("Guidance", data["guidance"]),
                       ("Attack", f"attacks/{data['attack']}.py {data['params'] or ''}"),
                       ("Identity", data["identity"]), ("Vantage", data["vantage"]),
                       ("Expected", f"{data['expected']} (profile {data['profile']}), "
                                    f"accepted: {', '.join(data['accepted_authorities'])}"),
                       ("Mappings", ", ".join(f"{k}: {', '.join(v)}"
                                              for k, v in data["mappings"].items())),
                       ("Started", f"{data['started_at']} ({data['duration_s']} s)"),
                       ("Remediation", data["remediation"]))),
        "</table>"]
    for endpoint in data["endpoints"]:
        obs = endpoint["observation"]
        parts.append(f"<h4>{_e(endpoint['endpoint']['name'])} "
                     f"{_e(endpoint['endpoint']['address'])} from {_e(endpoint['vantage'])}: "
                     f"{_e(endpoint['verdict'])}</h4>")
        parts.append(f"<p>Observed <b>{_e(obs['outcome'])}</b>"
                     f"{' by ' + _e(obs['authority']) if obs['authority'] else ''} at "
                     f"{_e(obs['observed_at'])}: {_e(obs['summary'])}</p>")
        if obs["evidence"]:
            parts.append(f"<pre>{_e(json.dumps(obs['evidence'], indent=1, default=str))}</pre>")
        parts.append("<ul>" + "".join(_exchange_html(x) for x in endpoint["exchanges"]) + "</ul>")
        if endpoint.get("alert"):
            alert = endpoint["alert"]
            state = "matched" if alert["matched"] else f"NO MATCH ({alert['reason']})"
            parts.append(f"<p><b>Alert</b> from {_e(alert['source'])}: {_e(state)}; matcher "
                         f"{_e(json.dumps(alert['matcher']))}</p>")
            shown = alert["matched"] or alert["alerts_in_window"]
            if shown:
                parts.append(f"<pre>{_e(json.dumps(shown, indent=1, default=str)[:4000])}</pre>")
        for note in endpoint["notes"]:
            parts.append(f"<p><i>{_e(note)}</i></p>")
        for step in endpoint["cleanup"]:
            state = f"FAILED: {step['error']}" if step["error"] else "done"
            parts.append(f"<p>cleanup: {_e(step['step'])}: {_e(state)}</p>")
    if data["configuration"]:
        parts.append("<h4>Configuration (cross-check; the attack decides the verdict)</h4>")
        parts.append(f"<pre>{_e(yaml.safe_dump(data['configuration'], sort_keys=False))}</pre>")
    parts.append("</div>")
    return "".join(parts)


def attach_extras(rep, result) -> None:
    import pytest_html
    extras = getattr(rep, "extras", [])
    extras.append(pytest_html.extras.html(evidence_html(rep.kubeprobe)))
    rep.extras = extras


def add_environment(config, suite) -> None:
    try:
        from pytest_metadata.plugin import metadata_key
    except ImportError:  # pragma: no cover
        return
    metadata = config.stash.get(metadata_key, None)
    if metadata is not None:
        metadata.update(suite.environment)


def _environment(suite) -> dict[str, str]:
    """Read at the start of the run; if the run ended before that (the API server went away
    during setup), what is known without asking it."""
    if "environment" in vars(suite) or not suite.kube.gone:
        try:
            return suite.environment
        except Exception:  # noqa: BLE001 - the reports are still written
            pass
    return {"Run id": suite.run_id, "Target": suite.target.description,
            "API server": suite.kube.server_url, "Profile": suite.profile,
            "Catalog": str(suite.catalog.path),
            "Catalog (sha256)": sha256_of(suite.catalog.path) or "unreadable"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunFacts:
    """What the plugin knows about the run beyond the suite: when it started, how many
    controls were scheduled, the one `kubeprobe:` line it ends with (if any), and where the
    control reference is from the reports directory."""
    started_at: str
    scheduled: int | None = None
    error: str | None = None
    control_reference: str | None = None


def _frame(facts: RunFacts, exitstatus: int, environment: dict, benchmarks: dict) -> dict:
    document = {"tool": "kubeprobe", "schema": 1, "kubeprobe": tool_identity(),
                "started_at": facts.started_at, "generated_at": now(),
                "environment": environment, "exit_status": int(exitstatus)}
    if facts.error:
        document["error"] = facts.error
    document.update(scheduled=facts.scheduled, benchmarks=benchmarks,
                    control_reference=facts.control_reference)
    return document


def results_document(suite, exitstatus: int, facts: RunFacts) -> dict[str, Any]:
    results = suite.ordered_results
    counts = Counter(r.verdict.value for r in results)
    return {**_frame(facts, exitstatus, _environment(suite), suite.catalog.benchmarks),
            "summary": dict(sorted(counts.items())),
            "alert_receivers": _receivers(suite),
            "controls": [r.to_json() for r in results]}


def cannot_start_document(facts: RunFacts, environment: dict, benchmarks: dict,
                          exitstatus: int = 2) -> dict[str, Any]:
    """A run that ends before any control ran (exit 2: refused, no cluster, ...): why, and
    nothing else (report.html and junit.xml are the previous run's; kubeprobe.reportfiles)."""
    return {**_frame(facts, exitstatus, environment, benchmarks), "cannot_start": True,
            "summary": {}, "controls": []}


def with_baseline_diff(payload: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The results document with `baseline_diff` (kubeprobe.diff.compare) before `controls`."""
    out = {k: v for k, v in payload.items() if k != "controls"}
    out["baseline_diff"] = changes
    out["controls"] = payload["controls"]
    return out


def _receivers(suite) -> dict[str, Any]:
    """What each HTTP alert receiver accepted and refused (never its token)."""
    return {name: source.status() for name, source in sorted(suite.alert_sources.items())
            if hasattr(source, "status")}


def terminal_summary(terminalreporter, suite, files, gated: dict | None = None,
                     fail_on: str = "failure") -> None:
    """The baseline diff first (when --baseline was given), then the verdicts, the receivers,
    where the reports are, and what --fail-on regression made of the exit code."""
    from kubeprobe import diff
    tr = terminalreporter
    changes = gated["diff"] if gated else None
    if changes is not None:
        tr.section("kubeprobe changes since the baseline")
        for line in diff.summary_lines(changes, gated["others"]):
            tr.write_line(line, red=line.startswith("REGRESSION"),
                          green=line.startswith("FIX"))
    tr.section("kubeprobe verdicts")
    for result in suite.ordered_results:
        tr.write_line(f"{result.verdict.value:13} {result.control.id:14} {result.observed:40} "
                      f"{result.control.title}")
    counts = Counter(r.verdict.value for r in suite.ordered_results)
    tr.write_line(", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "no controls ran")
    for name, status in _receivers(suite).items():
        if status["refused"]:
            tr.write_line(f"the {name} receiver refused {sum(status['refused'].values())} "
                          f"POST(s), none ingested: " + ", ".join(
                              f"{n} x {why}" for why, n in status["refused"].items()),
                          yellow=True)
    if files is not None and files.published:
        tr.write_line(f"results: {files.path('results.json')}  report: "
                      f"{files.path('report.html')}")
    elif files is not None:
        tr.write_line(f"results: {files.path('results.json')} (this run judged no control: "
                      f"report.html and junit.xml are the previous run's)")
    if fail_on == "regression" and gated is not None and gated["exit_status"] in (0, 1):
        if changes is None:
            tr.write_line("kubeprobe: --fail-on regression without --baseline: no earlier run "
                          "to compare with, so no regression (exit 0; a cleanup or target "
                          "problem is still exit 2); this results.json can be the next run's "
                          "baseline", yellow=True)
        else:
            n = len(changes["regressions"])
            tr.write_line(f"kubeprobe: --fail-on regression: {n} regression(s) since the "
                          f"baseline, exit {gated['exit_status']}",
                          red=bool(n), green=not n)
