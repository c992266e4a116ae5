"""Baseline diff (kubeprobe.diff): the verdict-change rules, the `baseline_diff` shape, bad
baseline files, `kubeprobe diff`, and `--baseline` / `--fail-on regression` on a real run of
the plugin against tests/standin_apiserver.py (a TLS stand-in, not a cluster).

tests/samples/ci-*.results.json are CI's results.json of the hardened, weak and decoy labs,
trimmed to what a diff reads (no endpoints, no evidence).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kubeprobe import diff
from kubeprobe.catalog import load_catalog
from kubeprobe.outcome import Expectation
from tests.standin_apiserver import StandInApiServer
from tests.test_bad_input import assert_one_clear_line, closed_port, kubeconfig, run_suite

REPO = Path(__file__).resolve().parent.parent
SAMPLES = Path(__file__).parent / "samples"
P, F, E, S, N = "PASS", "FAIL", "ERROR", "SKIP", "NOT-VERIFIED"

# before -> after: the kind it is listed under (None: not listed). All 25 pairs.
RULES = {
    (P, P): None, (P, F): "regressions", (P, E): "regressions", (P, S): "regressions",
    (P, N): "regressions",
    (F, P): "fixes", (F, F): None, (F, E): None, (F, S): None, (F, N): None,
    (E, P): "fixes", (E, F): None, (E, E): None, (E, S): None, (E, N): None,
    (S, P): "fixes", (S, F): "regressions", (S, E): "regressions", (S, S): None, (S, N): None,
    (N, P): "fixes", (N, F): "regressions", (N, E): "regressions", (N, S): None, (N, N): None,
}


def test_every_verdict_pair_is_decided():
    assert set(RULES) == {(a, b) for a in diff.VERDICTS for b in diff.VERDICTS}
    for (before, after), kind in RULES.items():
        assert diff.classify(before, after) == kind, (before, after)


def doc(*rows) -> dict:
    return {"tool": "kubeprobe", "schema": 1, "controls": [
        {"id": i, "title": f"title of {i}", "verdict": v, "observed": o} for i, v, o in rows]}


def test_the_baseline_diff_shape():
    old = doc(("A-01", P, "BLOCKED (http_401)"), ("A-02", F, "SUCCEEDED"),
              ("A-03", P, "BLOCKED (http_401)"), ("A-04", F, "SUCCEEDED"),
              ("A-05", P, "BLOCKED (http_403)"), ("GONE-01", P, "BLOCKED (http_401)"),
              ("A-06", F, "SUCCEEDED"))
    new = doc(("A-01", F, "SUCCEEDED"), ("A-02", P, "BLOCKED (admission_denial)"),
              ("A-03", P, "BLOCKED (connection_refused)"), ("A-04", F, "SUCCEEDED"),
              ("A-05", P, "BLOCKED (http_403)"), ("NEW-01", E, "INCONCLUSIVE"),
              ("A-06", E, "INCONCLUSIVE"))
    result = diff.compare(old, new, "old/results.json")
    assert list(result) == ["baseline", "regressions", "fixes", "added", "removed",
                            "authority_changes"]
    assert result["baseline"] == "old/results.json"
    assert result["regressions"] == [{
        "id": "A-01", "title": "title of A-01",
        "before": {"verdict": "PASS", "observed": "BLOCKED (http_401)"},
        "after": {"verdict": "FAIL", "observed": "SUCCEEDED"}}]
    assert [i["id"] for i in result["fixes"]] == ["A-02"]
    assert result["authority_changes"] == [{
        "id": "A-03", "title": "title of A-03",
        "before": {"verdict": "PASS", "observed": "BLOCKED (http_401)"},
        "after": {"verdict": "PASS", "observed": "BLOCKED (connection_refused)"}}]
    assert result["added"] == [{"id": "NEW-01", "title": "title of NEW-01", "before": None,
                                "after": {"verdict": "ERROR", "observed": "INCONCLUSIVE"}}]
    assert result["removed"] == [{"id": "GONE-01", "title": "title of GONE-01",
                                  "after": None, "before": {"verdict": "PASS",
                                                            "observed": "BLOCKED (http_401)"}}]
    json.dumps(result)  # plain JSON
    others = diff.other_changes(old, new)
    assert [(i["id"], i["before"]["verdict"], i["after"]["verdict"]) for i in others] == \
        [("A-06", F, E)]
    lines = diff.summary_lines(result, others)
    assert lines[0] == ("since old/results.json: 1 regressions, 1 fixes, 1 added, 1 removed, "
                        "1 authority changes")
    assert lines[1].startswith("REGRESSION  A-01") and \
        "PASS BLOCKED (http_401) -> FAIL SUCCEEDED" in lines[1]
    assert [line.split()[0] for line in lines[1:]] == ["REGRESSION", "FIX", "AUTHORITY",
                                                        "ADDED", "REMOVED", "other"]


def test_an_authority_that_appears_beside_the_same_verdict_is_a_change():
    old = doc(("A-01", F, "SUCCEEDED"), ("A-02", F, "SUCCEEDED"))
    new = doc(("A-01", F, "BLOCKED (tls_required); SUCCEEDED"), ("A-02", F, "INCONCLUSIVE"))
    result = diff.compare(old, new, "x")
    assert [i["id"] for i in result["authority_changes"]] == ["A-01"]
    assert diff.authorities("BLOCKED (tls_required); BLOCKED (http_401); SUCCEEDED") == \
        {"tls_required", "http_401"}


@pytest.mark.parametrize("exitstatus, fail_on, regressions, expected", [
    (1, "failure", 0, 1), (0, "failure", 1, 0), (1, "regression", 0, 0),
    (1, "regression", 2, 1), (0, "regression", 1, 1), (0, "regression", 0, 0),
    (2, "regression", 0, 2), (2, "regression", 3, 2), (5, "regression", 0, 5),
])
def test_gate(exitstatus, fail_on, regressions, expected):
    changes = {"regressions": [{}] * regressions}
    assert diff.gate(exitstatus, fail_on, changes) == expected
    if fail_on == "regression" and exitstatus in (0, 1):
        assert diff.gate(exitstatus, fail_on, None) == 0  # no baseline: nothing regressed


def sample(lab: str) -> dict:
    return diff.load_results(SAMPLES / f"ci-{lab}.results.json")


def test_ci_hardened_against_weak_lists_every_block_type_control_as_a_regression():
    catalog = load_catalog()
    # The samples are CI runs of an older catalog: judge the controls they hold.
    in_sample = {c["id"] for c in sample("hardened")["controls"]}
    block_type = {c.id for c in catalog.controls
                  if c.expectation("default") in (Expectation.BLOCKED,
                                                  Expectation.BLOCKED_OR_ALERTED)} & in_sample
    assert len(block_type) >= 30, "the samples no longer hold the block-type controls"
    result = diff.compare(sample("hardened"), sample("weak"), "hardened/results.json")
    regressed = {i["id"] for i in result["regressions"]}
    assert block_type <= regressed, sorted(block_type - regressed)
    # and nothing else but the audit control, which the weak lab has no log for
    assert regressed - block_type == {"AUDIT-01"}
    assert all(i["before"]["verdict"] == "PASS" for i in result["regressions"])
    assert not result["fixes"] and not result["added"] and not result["removed"]
    # The other way round every one of them is a fix.
    back = diff.compare(sample("weak"), sample("hardened"), "weak/results.json")
    assert {i["id"] for i in back["fixes"]} == regressed and not back["regressions"]


def test_ci_weak_against_decoy_moves_within_broken_are_not_regressions():
    result = diff.compare(sample("weak"), sample("decoy"), "weak/results.json")
    regressed = {i["id"]: (i["before"]["verdict"], i["after"]["verdict"])
                 for i in result["regressions"]}
    # decoy: wrong-reason blockers turn weak's FAILs into FAIL or ERROR, never a PASS
    assert all(before in diff.UNPROVEN for before, _ in regressed.values()), regressed
    assert {i["id"] for i in result["fixes"]} == {"AUDIT-01"}  # the decoy keeps an audit log
    others = diff.other_changes(sample("weak"), sample("decoy"))
    assert {(i["before"]["verdict"], i["after"]["verdict"]) for i in others} == {(F, E)}


# ------------------------------------------------------------------ bad files, one line

BAD_FILES = {
    "missing": (None, "cannot read it (No such file or directory)"),
    "not-json": ("{\"tool\": \"kubeprobe\",", "not JSON (Expecting property name"),
    "a-list": ("[]", "not a kubeprobe results.json: the top level is a list"),
    "other-tool": ('{"tool": "kube-bench", "schema": 1, "controls": []}', "`tool` is 'kube-bench'"),
    "schema-2": ('{"tool": "kubeprobe", "schema": 2, "controls": []}', "this kubeprobe reads schema 1"),
    "no-controls": ('{"tool": "kubeprobe", "schema": 1}', "`controls` is missing or not a list"),
    "bad-verdict": (json.dumps(doc(("A-01", "MAYBE", "x"))), "verdict 'MAYBE' is not one of"),
    "no-observed": ('{"tool": "kubeprobe", "schema": 1, "controls": [{"id": "A-01", '
                    '"title": "t", "verdict": "PASS"}]}', "controls[0]: `observed` is missing"),
    "duplicate": (json.dumps(doc(("A-01", P, "x"), ("A-01", F, "y"))),
                  "controls[1]: control A-01 appears twice"),
    # A run that judged nothing is no baseline: every control would be "added", and the
    # regression gate could never close.
    "cannot-start": ('{"tool": "kubeprobe", "schema": 1, "cannot_start": true, "controls": [],'
                     ' "error": "kubeprobe: no cluster"}',
                     "the results of a run that could not start (kubeprobe: no cluster); the "
                     "run before it is"),
}


def bad_file(tmp_path: Path, name: str) -> Path:
    text, _ = BAD_FILES[name]
    path = tmp_path / f"{name}.json"
    if text is not None:
        path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_results_file_is_one_line(tmp_path, name):
    path = bad_file(tmp_path, name)
    with pytest.raises(diff.ResultsError) as caught:
        diff.load_results(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and BAD_FILES[name][1] in message
    assert "\n" not in message


def kubeprobe(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubeprobe.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})


def test_kubeprobe_diff_command():
    hardened, weak = (str(SAMPLES / f"ci-{lab}.results.json") for lab in ("hardened", "weak"))
    done = kubeprobe("diff", hardened, weak)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"since {hardened}: 37 regressions, 0 fixes")
    assert "REGRESSION  KUBELET-01         PASS BLOCKED (http_401) -> FAIL SUCCEEDED" in \
        done.stdout
    assert lines == diff.summary_lines(diff.compare(sample("hardened"), sample("weak"),
                                                    hardened))
    done = kubeprobe("diff", weak, hardened)
    assert done.returncode == 0 and "0 regressions, 37 fixes" in done.stdout
    done = kubeprobe("diff", hardened, hardened)
    assert done.returncode == 0
    assert done.stdout.splitlines() == [f"since {hardened}: 0 regressions, 0 fixes, 0 added, "
                                        f"0 removed, 0 authority changes"]


@pytest.mark.parametrize("args, expected", [
    (["only-one"], "usage: kubeprobe diff OLD/results.json NEW/results.json"),
    (["missing"], "missing.json: cannot read it"),
    (["schema-2"], "this kubeprobe reads schema 1"),
])
def test_kubeprobe_diff_bad_input(tmp_path, args, expected):
    if args != ["only-one"]:
        args = [str(bad_file(tmp_path, args[0])), str(SAMPLES / "ci-weak.results.json")]
    done = kubeprobe("diff", *args)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and expected in done.stderr, done.stderr


# ------------------------------------------------ --baseline and --fail-on on a real run

CATALOG = """profiles: {default: prevention}
attacks_dir: attacks
controls:
"""
CONTROL = """- id: {id}
  title: {id} of the baseline self-test
  component: kube-apiserver
  guidance: none; this control only exists in a self-test
  attack: {attack}
  params: {{outcome: {outcome}}}
  identity: the runner
  vantage: runner
  expected: {{default: BLOCKED}}
  blocked_by: [http_401]
  mappings: {{cis: [], mitre: [T1613]}}
  remediation: none
"""
ATTACK = '''
from kubeprobe.outcome import Authority, Observation

TARGETS = "apiserver"


def run(ctx, target, outcome="succeeded"):
    if outcome == "cleanup_fails":
        ctx.defer("delete nothing", lambda: 1 / 0)
    if outcome == "blocked":
        return Observation.blocked(Authority.HTTP_401, "the stand-in said 401")
    return Observation.succeeded("the throwaway attack went through")
'''


def standin_catalog(tmp_path: Path, **outcomes: str) -> Path:
    """One throwaway control per keyword: id -> outcome (blocked: PASS, succeeded: FAIL)."""
    (tmp_path / "attacks").mkdir(exist_ok=True)
    (tmp_path / "attacks" / "by_param.py").write_text(ATTACK)
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG + "".join(CONTROL.format(id=i.replace("_", "-"), attack="by_param",
                                                     outcome=o) for i, o in outcomes.items()))
    return path


def baseline_file(tmp_path: Path, *rows) -> Path:
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(doc(*rows)))
    return path


def standin_run(tmp_path: Path, catalog: Path, *args: str):
    with StandInApiServer() as api:
        done = run_suite(tmp_path, "--kubeconfig", str(api.kubeconfig(tmp_path)),
                         "--catalog", str(catalog), *args)
    results = json.loads((tmp_path / "reports" / "results.json").read_text())
    return done, results


def test_known_fails_pass_the_regression_gate_and_the_diff_comes_first(tmp_path):
    catalog = standin_catalog(tmp_path, KNOWN_01="succeeded", HELD_01="blocked")
    baseline = baseline_file(tmp_path, ("KNOWN-01", F, "SUCCEEDED"),
                             ("HELD-01", P, "BLOCKED (http_401)"))
    done, results = standin_run(tmp_path, catalog)  # default: a FAIL is exit 1, as ever
    assert done.returncode == 1 and "baseline_diff" not in results, done.stdout
    done, results = standin_run(tmp_path, catalog, "--baseline", str(baseline),
                                "--fail-on", "regression")
    assert done.returncode == 0, done.stdout + done.stderr
    assert results["exit_status"] == 0
    assert results["baseline_diff"] == {"baseline": str(baseline), "regressions": [],
                                        "fixes": [], "added": [], "removed": [],
                                        "authority_changes": []}
    assert list(results)[-2:] == ["baseline_diff", "controls"]
    out = done.stdout
    assert out.index("kubeprobe changes since the baseline") < out.index("kubeprobe verdicts")
    assert "--fail-on regression: 0 regression(s) since the baseline, exit 0" in out
    # --baseline alone changes no exit code
    done, results = standin_run(tmp_path, catalog, "--baseline", str(baseline))
    assert done.returncode == 1 and results["baseline_diff"]["regressions"] == []


def test_a_regression_fails_the_gate(tmp_path):
    catalog = standin_catalog(tmp_path, HELD_01="succeeded", NEW_01="blocked")
    baseline = baseline_file(tmp_path, ("HELD-01", P, "BLOCKED (http_401)"),
                             ("GONE-01", F, "SUCCEEDED"))
    done, results = standin_run(tmp_path, catalog, "--baseline", str(baseline),
                                "--fail-on", "regression")
    assert done.returncode == 1, done.stdout + done.stderr
    changes = results["baseline_diff"]
    assert changes["regressions"] == [{
        "id": "HELD-01", "title": "HELD-01 of the baseline self-test",
        "before": {"verdict": "PASS", "observed": "BLOCKED (http_401)"},
        "after": {"verdict": "FAIL", "observed": "SUCCEEDED"}}]
    assert [i["id"] for i in changes["added"]] == ["NEW-01"]
    assert [i["id"] for i in changes["removed"]] == ["GONE-01"]
    section = done.stdout.split("kubeprobe changes since the baseline")[1]
    assert section.index("REGRESSION  HELD-01") < section.index("kubeprobe verdicts")
    assert "--fail-on regression: 1 regression(s) since the baseline, exit 1" in done.stdout


def test_fail_on_regression_without_a_baseline_is_said(tmp_path):
    catalog = standin_catalog(tmp_path, KNOWN_01="succeeded")
    done, results = standin_run(tmp_path, catalog, "--fail-on", "regression")
    assert done.returncode == 0 and "baseline_diff" not in results
    assert "--fail-on regression without --baseline: no earlier run to compare with" in \
        done.stdout


def test_exit_2_stays_2_under_the_regression_gate(tmp_path):
    catalog = standin_catalog(tmp_path, HELD_01="cleanup_fails")
    baseline = baseline_file(tmp_path, ("HELD-01", F, "SUCCEEDED"))
    done, results = standin_run(tmp_path, catalog, "--baseline", str(baseline),
                                "--fail-on", "regression")
    assert done.returncode == 2 and results["exit_status"] == 2, done.stdout
    assert results["baseline_diff"]["regressions"] == []


@pytest.mark.parametrize("name", ["missing", "not-json", "schema-2", "bad-verdict"])
def test_a_bad_baseline_stops_the_run_before_it_starts(tmp_path, name):
    # The kubeconfig names a closed port: had the run started, the line would say "no cluster".
    done = run_suite(tmp_path, "--kubeconfig", str(kubeconfig(tmp_path, closed_port())),
                     "--baseline", str(bad_file(tmp_path, name)))
    line = assert_one_clear_line(done, BAD_FILES[name][1], max_s=20)
    assert f"kubeprobe: --baseline {tmp_path / name}.json: " in line


def test_bad_fail_on(tmp_path):
    done = run_suite(tmp_path, "--kubeconfig", str(kubeconfig(tmp_path, closed_port())),
                     "--fail-on", "warning")
    assert_one_clear_line(done, "--fail-on 'warning': must be one of failure, regression")


def test_samples_are_trimmed_copies_of_real_runs():
    for lab in ("hardened", "weak", "decoy"):
        data = sample(lab)
        assert len(data["controls"]) == 48 and data["environment"]["Target"].startswith(
            f"local lab v1.34.10 ({lab})")
