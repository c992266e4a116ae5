"""The negative control: the same suite against the hardened, the weak and the decoy lab.

Every block-type control must PASS on hardened and FAIL on weak: a probe that passes on both
can never fail and is a bug. On the decoy lab (weak plus wrong-reason blockers: unrelated
policies, a webhook that is down, REJECT rules, a TLS server refusing for a non-certificate
reason) no block-type control may PASS: a PASS there came from the wrong cause. Every other
expectation profile of the catalog (`detection`) is run too, on its controls, on all three.
`.ci/run` produces the results.json files and points KUBEPROBE_NEGATIVE_CONTROL at their
parent (reports/<profile> and reports/<profile>-<expectation profile> below it).
"""
from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

import pytest

from kubeprobe.catalog import load_catalog
from kubeprobe.outcome import Expectation

ROOT = os.environ.get("KUBEPROBE_NEGATIVE_CONTROL")
pytestmark = pytest.mark.skipif(not ROOT, reason="KUBEPROBE_NEGATIVE_CONTROL not set: "
                                "run by .ci/run after the suite ran on both lab profiles")
CATALOG = load_catalog()
BLOCK_TYPE = sorted(c.id for c in CATALOG.controls
                    if c.expectation("default") is Expectation.BLOCKED)
ALERT_TYPE = [c for c in CATALOG.controls if c.expectation("default") is Expectation.ALERTED]
# No Falco can run on the lab: its syscall-level controls are NOT-VERIFIED, but their attacks
# must still have run for real. The audit log is real on hardened and absent on weak.
FALCO_TYPE = sorted(c.id for c in ALERT_TYPE if c.alert["source"] == "falco")
AUDIT_TYPE = sorted(c.id for c in ALERT_TYPE if c.alert["source"] == "audit")
# Prevention with detection behind it: the hardened lab must refuse with the accepted
# authority; the weak lab lets the attack through, and (no Falco) it is NOT-VERIFIED.
EITHER_TYPE = sorted(c.id for c in CATALOG.controls
                     if c.expectation("default") is Expectation.BLOCKED_OR_ALERTED)


# Expectation profiles other than default, and the controls each one changes.
OTHER_PROFILES = {name: sorted(c.id for c in CATALOG.controls if name in c.expected)
                  for name in CATALOG.profiles if name != "default"}


def passed_by_alert(row: dict) -> bool:
    """A PASS whose every passing endpoint was judged on a matched alert (an endpoint's
    reason starts with "alerted"; the row's reason prefixes each with its endpoint)."""
    passing = [e for e in row.get("endpoints", []) if e["verdict"] == "PASS"]
    return (row["verdict"] == "PASS" and bool(passing)
            and all(e["reason"].startswith("alerted") for e in passing))


# Which result sets the run produced, when not every one: the kind runs of .ci/run give only
# hardened and weak (KUBEPROBE_NEGATIVE_CONTROL_RUNS="hardened weak"); the tests that need
# another set (decoy, the other expectation profiles) are skipped there, saying so.
RUNS = os.environ.get("KUBEPROBE_NEGATIVE_CONTROL_RUNS")


def results(profile: str) -> dict[str, dict]:
    if RUNS is not None and profile not in RUNS.split():
        pytest.skip(f"{profile} was not run here (KUBEPROBE_NEGATIVE_CONTROL_RUNS={RUNS!r})")
    path = Path(ROOT) / profile / "results.json"
    assert path.is_file(), f"{path} missing: the suite did not run on the {profile} lab"
    return {c["id"]: c for c in json.loads(path.read_text())["controls"]}


@pytest.fixture(scope="module")
def hardened():
    return results("hardened")


@pytest.fixture(scope="module")
def weak():
    return results("weak")


# Controls a target cannot run by construction may SKIP there, and only SKIP, naming the
# option that would make them run (KUBEPROBE_NEGATIVE_CONTROL_SKIP_OK="REGISTRY-*": a kind
# cluster has no registry with signed samples; those controls are proven on the lab).
SKIP_OK = os.environ.get("KUBEPROBE_NEGATIVE_CONTROL_SKIP_OK", "").split()


def skipped_as_allowed(control_id: str, row: dict) -> bool:
    if not any(fnmatch.fnmatch(control_id, pattern) for pattern in SKIP_OK):
        return False
    assert row["verdict"] == "SKIP" and "--" in row["reason"], (
        f"{control_id} may only SKIP here, naming the option it needs: {row['verdict']}: {row['reason']}")
    return True


@pytest.mark.parametrize("control_id", BLOCK_TYPE)
def test_block_control_passes_on_hardened(control_id, hardened):
    row = hardened.get(control_id)
    assert row is not None, f"{control_id} did not run on the hardened lab"
    if skipped_as_allowed(control_id, row):
        return
    assert row["verdict"] == "PASS", f"{control_id} on hardened: {row['verdict']}: {row['reason']}"


@pytest.mark.parametrize("control_id", BLOCK_TYPE)
def test_block_control_fails_on_weak(control_id, weak):
    row = weak.get(control_id)
    assert row is not None, f"{control_id} did not run on the weak lab"
    if skipped_as_allowed(control_id, row):
        return
    assert row["verdict"] == "FAIL", (f"{control_id} does not fail on the weak lab "
                                      f"({row['verdict']}: {row['reason']}): a probe that "
                                      "cannot fail")


def test_alert_controls_are_never_a_pass_without_detector(hardened, weak):
    for rows in (hardened, weak):
        for row in rows.values():
            if row["expected"] in ("ALERTED", "BLOCKED_OR_ALERTED") and row["verdict"] == "PASS":
                observed = row["observed"]
                assert observed.startswith("BLOCKED") or passed_by_alert(row), row


@pytest.mark.parametrize("control_id", FALCO_TYPE)
@pytest.mark.parametrize("profile", ["hardened", "weak"])
def test_falco_control_attack_runs_and_is_not_verified(control_id, profile):
    row = results(profile).get(control_id)
    assert row is not None, f"{control_id} did not run on the {profile} lab"
    assert row["verdict"] == "NOT-VERIFIED", f"{control_id} on {profile}: {row['verdict']}: {row['reason']}"
    assert row["observed"] == "SUCCEEDED" or row["observed"].startswith("BLOCKED ("), (
        f"{control_id} on {profile}: the attack itself did not run ({row['observed']}: {row['reason']})")


@pytest.mark.parametrize("control_id", AUDIT_TYPE)
def test_audit_control_passes_on_hardened_and_fails_on_weak(control_id, hardened, weak):
    assert hardened[control_id]["verdict"] == "PASS", hardened[control_id]["reason"]
    assert weak[control_id]["verdict"] == "FAIL", weak[control_id]["reason"]


@pytest.mark.parametrize("control_id", EITHER_TYPE)
def test_block_or_alert_control_blocks_on_hardened_and_goes_through_on_weak(control_id, hardened,
                                                                           weak):
    assert hardened[control_id]["verdict"] == "PASS", hardened[control_id]["reason"]
    assert hardened[control_id]["observed"].startswith("BLOCKED ("), hardened[control_id]
    assert weak[control_id]["observed"] == "SUCCEEDED", weak[control_id]["reason"]
    assert weak[control_id]["verdict"] == "NOT-VERIFIED", weak[control_id]["reason"]


def test_weak_against_hardened_baseline_regresses_every_block_type_control():
    """kubeprobe diff on this CI run's own results: the weak lab, judged against the hardened
    lab as its baseline, is a regression of every block-type control (exit 1)."""
    from kubeprobe import diff
    old, new = (Path(ROOT) / lab / "results.json" for lab in ("hardened", "weak"))
    changes = diff.compare(diff.load_results(old), diff.load_results(new), old)
    regressed = {i["id"] for i in changes["regressions"]}
    # Controls this target may only SKIP (KUBEPROBE_NEGATIVE_CONTROL_SKIP_OK) cannot regress.
    required = {c for c in BLOCK_TYPE + EITHER_TYPE
                if not any(fnmatch.fnmatch(c, pattern) for pattern in SKIP_OK)}
    assert required <= regressed, sorted(required - regressed)
    assert diff.main([str(old), str(new)]) == 1


@pytest.fixture(scope="module")
def decoy():
    return results("decoy")


@pytest.mark.parametrize("control_id", BLOCK_TYPE)
def test_block_control_never_passes_on_decoy(control_id, decoy):
    row = decoy.get(control_id)
    assert row is not None, f"{control_id} did not run on the decoy lab"
    assert row["verdict"] != "PASS", (f"{control_id} PASSED on the decoy lab, where only "
                                      f"wrong-reason blockers stand: {row['reason']}")


@pytest.mark.parametrize("control_id", EITHER_TYPE)
def test_block_or_alert_control_is_not_blocked_by_a_decoy(control_id, decoy):
    row = decoy[control_id]
    assert not (row["verdict"] == "PASS" and row["observed"].startswith("BLOCKED")), row


@pytest.mark.parametrize(("expectation_profile", "control_id"),
                         [(p, c) for p, ids in OTHER_PROFILES.items() for c in ids])
def test_other_expectation_profiles_pass_hardened_and_fail_weak(expectation_profile,
                                                                control_id):
    hardened_row = results(f"hardened-{expectation_profile}").get(control_id)
    weak_row = results(f"weak-{expectation_profile}").get(control_id)
    decoy_row = results(f"decoy-{expectation_profile}").get(control_id)
    assert None not in (hardened_row, weak_row, decoy_row), (
        f"{control_id} did not run under --profile {expectation_profile} on every lab")
    assert hardened_row["verdict"] == "PASS", hardened_row["reason"]
    assert weak_row["verdict"] != "PASS", weak_row["reason"]
    if decoy_row["verdict"] == "PASS":
        assert passed_by_alert(decoy_row), (
            f"{control_id} under {expectation_profile} PASSED on the decoy without an alert: "
            f"{decoy_row['reason']}")


@pytest.mark.parametrize("expectation_profile", sorted(OTHER_PROFILES))
def test_alert_path_of_each_expectation_profile_can_pass(expectation_profile):
    """Where attacks go through (the decoy keeps an audit log), some control of the profile
    must PASS on a matched alert: an alert path that never passes is as untested as a block
    that never fails."""
    rows = results(f"decoy-{expectation_profile}")
    alerted = [c for c, row in rows.items()
               if row["observed"] == "SUCCEEDED" and passed_by_alert(row)]
    assert alerted, {c: (r["verdict"], r["reason"][:120]) for c, r in rows.items()}


INTRUSIVE = sorted(c.id for c in CATALOG.controls if c.intrusive)
SYSTEM_USERS = ("system:node:", "system:serviceaccount:", "system:kube-", "system:apiserver",
                "system:anonymous")


def _intrusive_writes(events: list[dict]) -> list[str]:
    """What an existing-cluster run without --intrusive must never do, from the audit log."""
    found = []
    for event in events:
        ref = event.get("objectRef") or {}
        verb, resource = event.get("verb"), ref.get("resource")
        dry_run = "dryRun=" in event.get("requestURI", "")
        what = f"{verb} {resource}/{ref.get('subresource') or ''} {ref.get('namespace')}/" \
               f"{ref.get('name')} ({event.get('requestURI')})"
        if verb == "create" and resource in ("nodes", "certificatesigningrequests"):
            found.append(what)
        elif (ref.get("namespace") == "kube-system" and not dry_run
              and verb in ("create", "update", "patch", "delete")):
            found.append(what)
        elif ref.get("namespace") == "kube-system" and ref.get("subresource") in ("exec",
                                                                                "attach"):
            found.append(what)
        elif ((event.get("impersonatedUser") or {}).get("username", "")
              .startswith("system:node:")):
            found.append(f"impersonating a node: {what}")
    return found


def test_intrusive_controls_never_touch_an_existing_cluster_without_intrusive():
    """The hardened lab attacked as an existing cluster (its kubeconfig), without
    --intrusive: every intrusive control SKIPs saying why, and the lab's audit log shows no
    Node or CSR created, no write to kube-system, no exec into it, no node impersonation by
    the runner during that run."""
    from datetime import datetime, timedelta
    if RUNS is not None and "hardened-existing" not in RUNS.split():
        pytest.skip(f"hardened-existing was not run here (KUBEPROBE_NEGATIVE_CONTROL_RUNS={RUNS!r})")
    root = Path(ROOT) / "hardened-existing"
    document = json.loads((root / "results.json").read_text())
    rows = {c["id"]: c for c in document["controls"]}
    for control_id in INTRUSIVE:
        assert rows[control_id]["verdict"] == "SKIP", rows[control_id]
        assert "--intrusive" in rows[control_id]["reason"], rows[control_id]
    started = min(datetime.fromisoformat(c["started_at"]) for c in rows.values())
    ended = datetime.fromisoformat(document["generated_at"])
    window = (started - timedelta(seconds=1), ended + timedelta(seconds=1))
    events = []
    for line in (root / "audit.log").read_text().splitlines():
        event = json.loads(line)
        user = (event.get("user") or {}).get("username", "")
        stamp = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if window[0] <= stamp <= window[1] and not user.startswith(SYSTEM_USERS):
            events.append(event)
    assert events, "no audit event of the runner in the run's window: the check saw nothing"
    assert _intrusive_writes(events) == []


@pytest.mark.parametrize("profile", ["hardened", "weak", "decoy"])
def test_each_lab_ran_the_newest_supported_kubernetes_and_says_how_its_nodes_run(profile):
    """CI proves the newest minor (the lab's default); the report names the version and each
    node's cgroup version, and on a cgroup v1 host that the kubelet runs there by permission."""
    from kubeprobe.lab.build import DEFAULT_VERSION
    if RUNS is not None and profile not in RUNS.split():
        pytest.skip(f"{profile} was not run here (KUBEPROBE_NEGATIVE_CONTROL_RUNS={RUNS!r})")
    env = json.loads((Path(ROOT) / profile / "results.json").read_text())["environment"]
    assert env["Kubernetes"] == DEFAULT_VERSION
    host_v1 = not Path("/sys/fs/cgroup/cgroup.controllers").exists()
    expected = ("cgroup v1 (deprecated; allowed by the kubelet's failCgroupV1: false)" if host_v1
                else "cgroup v2")
    assert env["Node cgroups"].startswith(expected), env["Node cgroups"]


# Planting through a privileged pod on the node: what the intrusive existing-cluster run
# reaches the lab's components with (--node-access pod).
NODE_POD_RUNTIME = ["RUNTIME-07", "RUNTIME-08", "RUNTIME-10", "RUNTIME-11"]


def test_intrusive_existing_cluster_with_published_probe_image_and_pull_secret():
    """Issue 15: the hardened lab used only through its kubeconfig, --intrusive, the probe
    image published to its registry (which refuses anonymous pulls) and pulled with
    --probe-image-pull-secret: no control SKIPs, every block-type control PASSes, the
    run-time attacks ran (through the privileged node-access pod), the pull secret is named
    in the evidence, and no object with the run's label is left on the cluster."""
    if RUNS is not None and "hardened-existing-intrusive" not in RUNS.split():
        pytest.skip(f"hardened-existing-intrusive was not run here "
                    f"(KUBEPROBE_NEGATIVE_CONTROL_RUNS={RUNS!r})")
    root = Path(ROOT) / "hardened-existing-intrusive"
    document = json.loads((root / "results.json").read_text())
    rows = {c["id"]: c for c in document["controls"]}
    assert {i for i, r in rows.items() if r["verdict"] == "SKIP"} == set()
    assert {i: rows[i]["reason"] for i in BLOCK_TYPE if rows[i]["verdict"] != "PASS"} == {}
    for control_id in NODE_POD_RUNTIME:
        row = rows[control_id]
        assert row["observed"] and row["observed"] != "SKIPPED", row
        text = json.dumps(row["endpoints"])
        assert "privileged pod falco/" in text and "pulled with the pull secret falco/" in text, row
    for control_id in ("RUNTIME-06", "RUNTIME-12", "RUNTIME-13"):
        assert "pulled with the pull secret" in json.dumps(rows[control_id]["endpoints"]), \
            rows[control_id]
    # `kubectl get <kinds> -A -l kubeprobe.io/run-id=<run> -o name` after the run's namespace
    # went: nothing (or "No resources found"); an error line fails too.
    leftovers = [line for line in (root / "leftovers.txt").read_text().splitlines()
                 if line.strip() and not line.startswith("No resources found")]
    assert leftovers == [], leftovers
