"""The pod agent (agent/main.go) and the runner transport must describe the same wire the
same way: otherwise one vantage point would be judged differently from the other."""
from __future__ import annotations

import shutil
import socket

import pytest

from kubeprobe.classify import ETCD_RANGE_PATH, ETCD_REGISTRY_RANGE
from kubeprobe.net import Probe, RunnerTransport
from tests import fakekubelet

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="needs Go to build the agent")
COMPARED = ("connected", "error", "tls_handshake", "tls_alert", "tls_version", "http_status",
            "body")


@pytest.fixture(scope="module")
def agent():
    from kubeprobe.agent import LocalAgentTransport
    return LocalAgentTransport()


def both(agent, probe: Probe) -> tuple:
    runner, pod = RunnerTransport().exchange(probe), agent.exchange(probe)
    assert {k: getattr(pod, k) for k in COMPARED} == {k: getattr(runner, k) for k in COMPARED}
    return runner, pod


def test_mtls_etcd_refusal_is_the_same_alert(agent, etcd_servers):
    etcd = etcd_servers["mtls"]
    runner, _ = both(agent, Probe("127.0.0.1", etcd.client_port, method="POST",
                                  path=ETCD_RANGE_PATH, body=ETCD_REGISTRY_RANGE))
    assert runner.tls_alert in ("bad_certificate", "certificate_required")


def test_foreign_cert_on_mtls_etcd(agent, etcd_servers, etcd_pki):
    from kubeprobe.identities import ClusterCredentials
    probe = Probe("127.0.0.1", etcd_servers["mtls"].client_port, method="POST",
                  path=ETCD_RANGE_PATH, body=ETCD_REGISTRY_RANGE,
                  client_cert=ClusterCredentials(None).foreign_ca_client_cert())
    runner, _ = both(agent, probe)
    assert runner.error == "tls_alert"


def test_trusted_cert_reads_the_same_keys(agent, etcd_servers, etcd_pki):
    probe = Probe("127.0.0.1", etcd_servers["mtls"].client_port, method="POST",
                  path=ETCD_RANGE_PATH, body=ETCD_REGISTRY_RANGE,
                  client_cert=etcd_pki.apiserver_etcd_client())
    runner, _ = both(agent, probe)
    assert runner.http_status == 200 and "kvs" in runner.body


def test_plain_http_etcd_and_peer_port(agent, etcd_servers):
    etcd = etcd_servers["plain"]
    runner, _ = both(agent, Probe("127.0.0.1", etcd.client_port, tls=False, method="POST",
                                  path=ETCD_RANGE_PATH, body=ETCD_REGISTRY_RANGE))
    assert runner.http_status == 200
    peer, _ = both(agent, Probe("127.0.0.1", etcd_servers["tls_no_client_auth"].peer_port,
                                method="GET", path="/members"))
    assert peer.http_status == 200  # answered although the connection stays open


@pytest.mark.parametrize(("mode", "status"), [("hardened", 401), ("anonymous_webhook", 403),
                                              ("open", 200)])
def test_kubelet_answers(agent, mode, status):
    with fakekubelet.serve(mode) as kubelet:
        runner, _ = both(agent, Probe("127.0.0.1", kubelet.port, method="GET", path="/pods"))
    assert runner.http_status == status


def test_closed_port_is_refused_by_both(agent):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        runner, _ = both(agent, Probe("127.0.0.1", sock.getsockname()[1], method="GET"))
    assert runner.error == "refused"


def test_silent_port_times_out_in_both(agent):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        runner, _ = both(agent, Probe("127.0.0.1", sock.getsockname()[1], method="GET",
                                      read_timeout=0.5))
    assert runner.error == "timeout"
