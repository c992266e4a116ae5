"""Kubelet probes against a TLS server answering like a kubelet in each configuration
(tests/fakekubelet.py, a named stand-in): each probe PASSes on the hardened configuration and
FAILs on the weak ones; the 403-for-anonymous state is reported as the weaker state it is."""
from __future__ import annotations

import socket

import pytest

from kubeprobe.catalog import load_attack, load_catalog
from kubeprobe.outcome import Authority, Outcome, Verdict, judge
from tests import fakekubelet
from tests.conftest import LocalCredentials, endpoint

CATALOG = load_catalog()
B, S, I = Outcome.BLOCKED, Outcome.SUCCEEDED, Outcome.INCONCLUSIVE

# control -> mode -> (outcome, authority, verdict)
EXPECTED = {
    "KUBELET-01": {"hardened": (B, Authority.HTTP_401, Verdict.PASS),
                   "anonymous_webhook": (B, Authority.HTTP_403, Verdict.FAIL),
                   "open": (S, None, Verdict.FAIL)},
    "KUBELET-02": {"hardened": (B, Authority.HTTP_401, Verdict.PASS),
                   "open": (S, None, Verdict.FAIL)},
    "KUBELET-03": {"hardened": (B, Authority.HTTP_401, Verdict.PASS),
                   "open": (S, None, Verdict.FAIL)},
    "KUBELET-06": {"hardened": (B, Authority.HTTP_401, Verdict.PASS),
                   "anonymous_webhook": (B, Authority.HTTP_403, Verdict.FAIL),
                   "open": (S, None, Verdict.FAIL)},
    "KUBELET-07": {"hardened": (B, Authority.HTTP_403, Verdict.PASS),
                   "open": (S, None, Verdict.FAIL),
                   "no_token_authn": (I, None, Verdict.ERROR)},
}
CASES = [(c, m) for c, modes in EXPECTED.items() for m in modes]


@pytest.mark.parametrize(("control_id", "mode"), CASES)
def test_kubelet_probe_classifies(control_id, mode, make_ctx):
    control = CATALOG.get(control_id)
    attack = load_attack(control.attack)
    ctx = make_ctx(credentials=LocalCredentials(token=fakekubelet.RIGHTLESS_TOKEN),
                   control_id=control_id)
    with fakekubelet.serve(mode) as kubelet:
        observation = attack.run(ctx, endpoint("node", kubelet.port), **control.params)
    outcome, authority, verdict = EXPECTED[control_id][mode]
    assert (observation.outcome, observation.authority) == (outcome, authority), observation
    judged = judge(control.expectation("default"), control.blocked_by, observation,
                   control.weaker)
    assert judged.verdict is verdict, judged
    if authority is Authority.HTTP_403 and control_id != "KUBELET-07":
        assert "anonymous" in judged.reason  # the weaker state is named, not hidden


def test_token_403_that_does_not_name_the_caller_is_inconclusive(make_ctx):
    """A 403 that names another identity (or none) is not shown to be the authorizer's
    answer about this ServiceAccount: INCONCLUSIVE, never a pass."""
    control = CATALOG.get("KUBELET-07")
    ctx = make_ctx(credentials=LocalCredentials(token=fakekubelet.RIGHTLESS_TOKEN))
    with fakekubelet.serve("hardened") as kubelet:
        ctx.credentials.service_account_token = lambda c: fakekubelet.RIGHTLESS_TOKEN
        ctx.service_account_username = "system:serviceaccount:other:someone-else"
        observation = load_attack(control.attack).run(ctx, endpoint("node", kubelet.port))
    assert observation.outcome is Outcome.INCONCLUSIVE, observation


def test_open_kubelet_evidence_names_what_leaked(make_ctx):
    attack = load_attack("kubelet_anonymous_request")
    with fakekubelet.serve("open") as kubelet:
        observation = attack.run(make_ctx(), endpoint("node", kubelet.port), path="/pods")
    assert "kube-system/etcd-node" in observation.evidence["pods_sample"]


@pytest.mark.parametrize("mode", ["open"])
def test_read_only_port_open_fails(mode, make_ctx):
    control = CATALOG.get("KUBELET-04")
    with fakekubelet.serve(mode) as kubelet:
        observation = load_attack(control.attack).run(make_ctx(), endpoint("node", 0),
                                                      port=kubelet.read_only_port)
    assert observation.outcome is Outcome.SUCCEEDED
    assert judge(control.expectation("default"), control.blocked_by, observation,
                 control.weaker).verdict is Verdict.FAIL


def test_healthz_reachable_fails_and_closed_is_not_passed_without_config(make_ctx):
    control = CATALOG.get("KUBELET-05")
    attack = load_attack(control.attack)
    with fakekubelet.serve("hardened") as kubelet:
        exposed = attack.run(make_ctx(), endpoint("node", 0), port=kubelet.read_only_port)
    assert exposed.outcome is Outcome.SUCCEEDED
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = attack.run(make_ctx(), endpoint("node", 0), port=sock.getsockname()[1])
    # The refusal is the proof only with the kubelet's configuration behind it (read through
    # the API server; tests/test_refusals.py drives that with a stub): none in a self-test.
    assert (closed.outcome, closed.authority) == (I, None)
    assert "cannot corroborate: no API" in closed.summary
    assert judge(control.expectation("default"), control.blocked_by, closed,
                 control.weaker).verdict is Verdict.ERROR
