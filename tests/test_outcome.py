"""The verdict rules: BLOCKED needs the accepted authority, inconclusive is never a pass, an
expected alert without an alert source is NOT-VERIFIED."""
from __future__ import annotations

import pytest

from kubeprobe.outcome import Authority, Expectation, Observation, Verdict, judge

ACCEPT_401 = frozenset({Authority.HTTP_401})


def test_blocked_requires_an_authority():
    with pytest.raises(ValueError):
        Observation(outcome=Observation.blocked(Authority.HTTP_401, "x").outcome, summary="x")
    with pytest.raises(ValueError):
        Observation(Observation.succeeded("x").outcome, "x", authority=Authority.HTTP_401)


def test_blocked_by_the_accepted_authority_passes():
    obs = Observation.blocked(Authority.HTTP_401, "401")
    assert judge(Expectation.BLOCKED, ACCEPT_401, obs, {}).verdict is Verdict.PASS


def test_blocked_by_a_weaker_authority_fails_with_the_explanation():
    obs = Observation.blocked(Authority.HTTP_403, "403")
    judged = judge(Expectation.BLOCKED, ACCEPT_401, obs, {Authority.HTTP_403: "anonymous on"})
    assert judged.verdict is Verdict.FAIL and "anonymous on" in judged.reason


@pytest.mark.parametrize("expected", list(Expectation))
def test_inconclusive_is_never_a_pass(expected):
    obs = Observation.inconclusive("timed out")
    for configured in (False, True):
        verdict = judge(expected, ACCEPT_401, obs, {}, configured, alerted=True).verdict
        assert verdict is Verdict.ERROR


def test_succeeded_fails_a_block_control():
    assert judge(Expectation.BLOCKED, ACCEPT_401, Observation.succeeded("200"),
                 {}).verdict is Verdict.FAIL


def test_expected_alert_without_source_is_not_verified():
    obs = Observation.succeeded("200")
    for expected in (Expectation.ALERTED, Expectation.BLOCKED_OR_ALERTED):
        assert judge(expected, ACCEPT_401, obs, {}, alert_source_configured=False).verdict \
            is Verdict.NOT_VERIFIED


def test_alert_decides_when_a_source_is_configured():
    obs = Observation.succeeded("200")
    assert judge(Expectation.ALERTED, ACCEPT_401, obs, {}, True, alerted=True).verdict \
        is Verdict.PASS
    assert judge(Expectation.ALERTED, ACCEPT_401, obs, {}, True, alerted=False).verdict \
        is Verdict.FAIL


def test_blocked_or_alerted_passes_on_block_without_alert_source():
    obs = Observation.blocked(Authority.HTTP_401, "401")
    assert judge(Expectation.BLOCKED_OR_ALERTED, ACCEPT_401, obs, {}).verdict is Verdict.PASS


@pytest.mark.parametrize(("verdict", "require_alerts", "expected"), [
    (Verdict.PASS, False, "pass"), (Verdict.PASS, True, "pass"),
    (Verdict.SKIP, False, "skip"), (Verdict.SKIP, True, "skip"),
    (Verdict.NOT_VERIFIED, False, "skip"), (Verdict.NOT_VERIFIED, True, "fail"),
    (Verdict.FAIL, False, "fail"), (Verdict.ERROR, False, "fail"),
])
def test_pytest_outcome_of_each_verdict(verdict, require_alerts, expected):
    """NOT-VERIFIED is never a pass; --require-alerts turns it into a failure (exit 1)."""
    from kubeprobe.plugin import verdict_outcome
    assert verdict_outcome(verdict, require_alerts) == expected
