"""The negative control: the same suite against the hardened and the weak lab.

Every block-type control must PASS on hardened and FAIL on weak: a probe that passes on both
can never fail and is a bug. `.ci/run` produces the two results.json files and points
KUBEPROBE_NEGATIVE_CONTROL at their parent (reports/hardened, reports/weak below it).
"""
from __future__ import annotations

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


def results(profile: str) -> dict[str, dict]:
    path = Path(ROOT) / profile / "results.json"
    assert path.is_file(), f"{path} missing: the suite did not run on the {profile} lab"
    return {c["id"]: c for c in json.loads(path.read_text())["controls"]}


@pytest.fixture(scope="module")
def hardened():
    return results("hardened")


@pytest.fixture(scope="module")
def weak():
    return results("weak")


@pytest.mark.parametrize("control_id", BLOCK_TYPE)
def test_block_control_passes_on_hardened(control_id, hardened):
    row = hardened.get(control_id)
    assert row is not None, f"{control_id} did not run on the hardened lab"
    assert row["verdict"] == "PASS", f"{control_id} on hardened: {row['verdict']}: {row['reason']}"


@pytest.mark.parametrize("control_id", BLOCK_TYPE)
def test_block_control_fails_on_weak(control_id, weak):
    row = weak.get(control_id)
    assert row is not None, f"{control_id} did not run on the weak lab"
    assert row["verdict"] == "FAIL", (f"{control_id} does not fail on the weak lab "
                                      f"({row['verdict']}: {row['reason']}): a probe that "
                                      "cannot fail")


def test_alert_controls_are_never_a_pass_without_detector(hardened, weak):
    for rows in (hardened, weak):
        for row in rows.values():
            if row["expected"] in ("ALERTED", "BLOCKED_OR_ALERTED") and row["verdict"] == "PASS":
                observed = row["observed"]
                assert observed.startswith("BLOCKED") or row["reason"].startswith("alerted"), row


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
