"""A refused connection is not authentication (kubeprobe.refusals).

Real refused sockets (bound, never listening: the kernel answers RST) and stub component
checks in place of the API: an authentication control never passes on a refusal; a port-closed
control passes only when the kubelet's configuration says the port is off.
"""
from __future__ import annotations

import socket

import pytest
from kubernetes.client.rest import ApiException

from kubeprobe import refusals
from kubeprobe.catalog import load_attack, load_catalog
from kubeprobe.net import RunnerTransport
from kubeprobe.outcome import Authority, Outcome, Verdict, judge
from tests.conftest import LocalCredentials, endpoint

CATALOG = load_catalog()
AUTHENTICATION_CONTROLS = ["KUBELET-01", "KUBELET-02", "KUBELET-03", "KUBELET-06", "KUBELET-07",
                           "KUBELET-08", "ETCD-01", "ETCD-02", "ETCD-03", "ETCD-04", "ETCD-05"]


@pytest.fixture
def refused_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def verdict(control_id, observation):
    control = CATALOG.get(control_id)
    return judge(control.expectation("default"), control.blocked_by, observation,
                 control.weaker).verdict


def status(up, detail="stub"):
    def check():
        return refusals.ComponentStatus(up, detail)
    return check


def never_called():
    raise AssertionError("the component check ran although the repeat was not refused")


@pytest.mark.parametrize("control_id", AUTHENTICATION_CONTROLS)
def test_refused_connection_never_passes_an_authentication_control(control_id, refused_port,
                                                                   make_ctx, etcd_pki):
    control = CATALOG.get(control_id)
    assert Authority.CONNECTION_REFUSED not in control.blocked_by
    ctx = make_ctx(credentials=LocalCredentials(etcd_pki, token="t"), control_id=control_id)
    attack = load_attack(control.attack)
    observation = attack.run(ctx, endpoint(attack.TARGETS, refused_port), **control.params)
    assert observation.outcome is Outcome.INCONCLUSIVE, observation
    assert "cannot corroborate: no API" in observation.summary
    assert sum(e["response"]["error"] == "refused" for e in ctx.exchanges) == 2
    assert verdict(control_id, observation) is Verdict.ERROR


def test_component_up_and_refused_is_a_network_refusal(refused_port, make_ctx):
    ctx = make_ctx(control_id="KUBELET-01")
    probe = ctx.probe("127.0.0.1", refused_port, tls=True, method="GET", path="/pods")
    exchange, observation = refusals.refused_twice(
        ctx, probe, ctx.exchange(probe), "anonymous GET /pods", "the kubelet",
        status(True, "nodes/proxy /healthz 200 'ok'"))
    assert observation.outcome is Outcome.INCONCLUSIVE
    assert observation.summary.startswith("network refusal: ")
    assert "authentication was never exercised" in observation.summary
    assert observation.evidence["network_refusal"] is True
    assert observation.evidence["refused_attempts"] == 2 and len(ctx.exchanges) == 2
    assert verdict("KUBELET-01", observation) is Verdict.ERROR


def test_component_not_shown_up_is_a_restart_not_a_pass(refused_port, make_ctx):
    ctx = make_ctx(control_id="ETCD-01")
    probe = ctx.probe("127.0.0.1", refused_port, tls=True, method="POST")
    _, observation = refusals.refused_twice(ctx, probe, ctx.exchange(probe), "etcd range",
                                            "etcd", status(False, "kube-system/etcd-n Pending"))
    assert observation.outcome is Outcome.INCONCLUSIVE
    assert "refused while etcd is not shown up: restarting?" in observation.summary


def test_component_that_cannot_be_checked_is_not_corroborated(refused_port, make_ctx):
    ctx = make_ctx()
    probe = ctx.probe("127.0.0.1", refused_port, tls=False)
    _, observation = refusals.refused_twice(ctx, probe, ctx.exchange(probe), "x", "etcd",
                                            refusals.etcd_up(None, "member", "127.0.0.1"))
    assert "cannot corroborate: no API" in observation.summary


class ListensAfterFirstAttempt:
    """The real runner transport; after the first exchange the refused socket starts to
    listen, as a component coming back from a restart does."""
    vantage = "runner"

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.calls = sock, 0

    def exchange(self, probe):
        result = RunnerTransport().exchange(probe)
        self.calls += 1
        if self.calls == 1:
            self.sock.listen(1)
        return result


def test_repeat_that_gets_through_is_judged_instead(make_ctx):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        ctx = make_ctx(transport=ListensAfterFirstAttempt(sock))
        probe = ctx.probe("127.0.0.1", sock.getsockname()[1], tls=False)
        exchange, observation = refusals.refused_twice(ctx, probe, ctx.exchange(probe), "x",
                                                       "etcd", never_called)
    assert observation is None
    assert (exchange.error, exchange.connected) == (None, True)
    assert any("judged on the second" in note for note in ctx.notes)


def test_no_refusal_no_repeat(make_ctx):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        ctx = make_ctx()
        probe = ctx.probe("127.0.0.1", sock.getsockname()[1], tls=False)
        exchange, observation = refusals.refused_twice(ctx, probe, ctx.exchange(probe), "x",
                                                       "etcd", never_called)
    assert observation is None and len(ctx.exchanges) == 1


class ConfigzStub:
    """Stands in for kubeprobe.kube.Kube where only `kubelet_configz` is used: answers the
    given kubelet configuration (or raises the given error), as /configz would."""

    def __init__(self, config) -> None:
        self.config = config

    def kubelet_configz(self, node: str) -> dict:
        if isinstance(self.config, Exception):
            raise self.config
        return self.config


READ_ONLY = [({}, Outcome.BLOCKED, "readOnlyPort: 0"),                  # omitted: disabled
             ({"readOnlyPort": 0}, Outcome.BLOCKED, "readOnlyPort: 0"),
             ({"readOnlyPort": 10255}, Outcome.INCONCLUSIVE, "network refusal: the kubelet "
                                                             "serves the read-only port"),
             ({"readOnlyPort": 10266}, Outcome.INCONCLUSIVE, "not the probed port"),
             (ApiException(status=403), Outcome.INCONCLUSIVE, "cannot corroborate")]


@pytest.mark.parametrize(("config", "outcome", "words"), READ_ONLY)
def test_read_only_port_refusal_needs_the_kubelet_config(config, outcome, words, refused_port,
                                                         make_ctx):
    ctx = make_ctx(control_id="KUBELET-04")
    exchange = ctx.exchange(ctx.probe("127.0.0.1", refused_port, tls=False, method="GET"))
    observation = refusals.closed_port(
        exchange, "GET /pods on the read-only port", "the read-only port 10255",
        refusals.read_only_port_config(ConfigzStub(config), "node-a", 10255))
    assert observation.outcome is outcome and words in observation.summary, observation
    if outcome is Outcome.BLOCKED:
        assert observation.authority is Authority.CONNECTION_REFUSED
        assert observation.evidence["node node-a /configz"] == {"readOnlyPort": 0}
        assert verdict("KUBELET-04", observation) is Verdict.PASS
    else:
        assert verdict("KUBELET-04", observation) is Verdict.ERROR


HEALTHZ = [({"healthzBindAddress": "127.0.0.1", "healthzPort": 10248}, Outcome.BLOCKED,
            "loopback only"),
           ({"healthzBindAddress": "0.0.0.0", "healthzPort": 0}, Outcome.BLOCKED, "disabled"),
           ({"healthzBindAddress": "0.0.0.0", "healthzPort": 10248}, Outcome.INCONCLUSIVE,
            "network refusal: the kubelet serves healthz"),
           ({"healthzBindAddress": "127.0.0.1"}, Outcome.BLOCKED, "loopback only")]


@pytest.mark.parametrize(("config", "outcome", "words"), HEALTHZ)
def test_healthz_refusal_needs_the_kubelet_config(config, outcome, words, refused_port,
                                                  make_ctx):
    ctx = make_ctx(control_id="KUBELET-05")
    exchange = ctx.exchange(ctx.probe("127.0.0.1", refused_port, tls=False, method="GET"))
    observation = refusals.closed_port(
        exchange, "GET /healthz", "healthz on port 10248",
        refusals.healthz_config(ConfigzStub(config), "node-a", 10248, "127.0.0.1"))
    assert observation.outcome is outcome and words in observation.summary, observation
    assert verdict("KUBELET-05", observation) is (Verdict.PASS if outcome is Outcome.BLOCKED
                                                  else Verdict.ERROR)


def test_proxy_failure_tells_down_from_forbidden():
    unreachable = ApiException(status=503)
    unreachable.body = b"error trying to reach service: dial tcp 10.0.0.2:10250: connect: " \
                       b"connection refused"
    assert refusals._proxy_failure(unreachable, "the kubelet").up is False
    assert refusals._proxy_failure(ApiException(status=403), "the kubelet").up is None
    kubelet_error = ApiException(status=500)
    kubelet_error.body = b"[-]syncloop failed"
    assert refusals._proxy_failure(kubelet_error, "the kubelet").up is True
