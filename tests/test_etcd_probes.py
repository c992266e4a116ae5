"""Every etcd probe against every real etcd configuration: the classification must be right,
so each probe is shown to PASS on the hardened setup and FAIL on the weak ones."""
from __future__ import annotations

import socket

import pytest

from kubeprobe.catalog import load_attack, load_catalog
from kubeprobe.outcome import Authority, Outcome, Verdict, judge
from tests.conftest import LocalCredentials, endpoint

CATALOG = load_catalog()

# (control, etcd mode) -> (outcome, authority). The hardened row (mtls) must be BLOCKED for
# every control; each control must be SUCCEEDED on at least one weak mode.
EXPECTED = {
    ("ETCD-01", "mtls"): (Outcome.BLOCKED, Authority.TLS_CLIENT_CERT_ALERT),
    ("ETCD-01", "tls_no_client_auth"): (Outcome.SUCCEEDED, None),
    ("ETCD-01", "plain"): (Outcome.SUCCEEDED, None),
    ("ETCD-01", "cluster_ca_trusted"): (Outcome.BLOCKED, Authority.TLS_CLIENT_CERT_ALERT),
    ("ETCD-02", "mtls"): (Outcome.BLOCKED, Authority.TLS_CLIENT_CERT_ALERT),
    ("ETCD-02", "tls_no_client_auth"): (Outcome.SUCCEEDED, None),
    ("ETCD-02", "cluster_ca_trusted"): (Outcome.BLOCKED, Authority.TLS_CLIENT_CERT_ALERT),
    ("ETCD-02", "plain"): (Outcome.SUCCEEDED, None),
    ("ETCD-03", "mtls"): (Outcome.BLOCKED, Authority.TLS_REQUIRED),
    ("ETCD-03", "tls_no_client_auth"): (Outcome.BLOCKED, Authority.TLS_REQUIRED),
    ("ETCD-03", "plain"): (Outcome.SUCCEEDED, None),
    ("ETCD-04", "mtls"): (Outcome.BLOCKED, Authority.TLS_CLIENT_CERT_ALERT),
    ("ETCD-04", "tls_no_client_auth"): (Outcome.SUCCEEDED, None),
    ("ETCD-04", "cluster_ca_trusted"): (Outcome.SUCCEEDED, None),
    ("ETCD-04", "plain"): (Outcome.SUCCEEDED, None),
    ("ETCD-05", "mtls"): (Outcome.BLOCKED, Authority.TLS_CLIENT_CERT_ALERT),
    ("ETCD-05", "tls_no_client_auth"): (Outcome.SUCCEEDED, None),
    ("ETCD-05", "plain"): (Outcome.SUCCEEDED, None),
}


def run_control(control_id, etcd, make_ctx, etcd_pki):
    control = CATALOG.get(control_id)
    attack = load_attack(control.attack)
    port = etcd.peer_port if attack.TARGETS == "etcd_peer" else etcd.client_port
    ctx = make_ctx(credentials=LocalCredentials(etcd_pki), control_id=control_id)
    observation = attack.run(ctx, endpoint(attack.TARGETS, port), **control.params)
    return control, observation, ctx


@pytest.mark.parametrize(("control_id", "mode"), sorted(EXPECTED))
def test_etcd_probe_classifies_real_etcd(control_id, mode, etcd_servers, make_ctx, etcd_pki):
    control, observation, ctx = run_control(control_id, etcd_servers[mode], make_ctx, etcd_pki)
    outcome, authority = EXPECTED[(control_id, mode)]
    assert (observation.outcome, observation.authority) == (outcome, authority), \
        (observation, ctx.exchanges)
    verdict = judge(control.expectation("default"), control.blocked_by, observation,
                    control.weaker).verdict
    assert verdict is (Verdict.PASS if outcome is Outcome.BLOCKED else Verdict.FAIL)
    assert ctx.exchanges, "the attack must have touched the network"


def test_every_etcd_control_passes_on_mtls_and_fails_somewhere():
    etcd_controls = {c.id for c in CATALOG.controls if c.component == "etcd"}
    for control_id in etcd_controls:
        assert EXPECTED[(control_id, "mtls")][0] is Outcome.BLOCKED
        assert any(outcome is Outcome.SUCCEEDED
                   for (cid, _), (outcome, _) in EXPECTED.items() if cid == control_id), \
            f"{control_id} is never shown to fail"


def test_tls_without_client_auth_is_proven_by_registry_keys(etcd_servers, make_ctx, etcd_pki):
    _, observation, _ = run_control("ETCD-01", etcd_servers["tls_no_client_auth"], make_ctx,
                                    etcd_pki)
    assert "/registry/secrets/default/db-password" in observation.evidence["keys_sample"]


def test_refused_port_is_no_pass_without_the_api(make_ctx):
    """A refusal never exercised authentication: repeated once, then the component would be
    checked through the API. Self-tests have none: INCONCLUSIVE, cannot corroborate."""
    with socket.socket() as sock:  # bind, never listen: connect gets RST
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        attack = load_attack("etcd_client_without_cert")
        ctx = make_ctx()
        observation = attack.run(ctx, endpoint("etcd_client", port))
    assert observation.outcome is Outcome.INCONCLUSIVE
    assert "cannot corroborate: no API" in observation.summary
    assert [e["response"]["error"] for e in ctx.exchanges] == ["refused", "refused"]
    assert judge(CATALOG.get("ETCD-01").expectation("default"),
                 CATALOG.get("ETCD-01").blocked_by, observation, {}).verdict is Verdict.ERROR


def test_silent_port_is_inconclusive_not_blocked(make_ctx):
    with socket.socket() as sock:  # listens, never accepts or answers: like a tarpit
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        attack = load_attack("etcd_client_without_cert")
        ctx = make_ctx()
        observation = attack.run(ctx, endpoint("etcd_client", sock.getsockname()[1]))
    assert observation.outcome is Outcome.INCONCLUSIVE
    assert judge(CATALOG.get("ETCD-01").expectation("default"),
                 CATALOG.get("ETCD-01").blocked_by, observation, {}).verdict is Verdict.ERROR


GRPC_ONLY = {
    ("ETCD-01", "grpc_only_no_client_auth"): (Outcome.SUCCEEDED, None),
    ("ETCD-04", "grpc_only_no_client_auth"): (Outcome.SUCCEEDED, None),
    ("ETCD-01", "grpc_only_cluster_ca_trusted"): (Outcome.BLOCKED, Authority.TLS_CLIENT_CERT_ALERT),
    ("ETCD-02", "grpc_only_cluster_ca_trusted"): (Outcome.BLOCKED, Authority.TLS_CLIENT_CERT_ALERT),
    ("ETCD-04", "grpc_only_cluster_ca_trusted"): (Outcome.SUCCEEDED, None),
}


@pytest.mark.parametrize(("control_id", "mode"), sorted(GRPC_ONLY))
def test_grpc_only_port_is_judged_in_grpc(control_id, mode, grpc_only_etcd, make_ctx,
                                          etcd_pki):
    """The JSON range gets no HTTP answer on a gRPC-only port; the same range asked as a gRPC
    call (HTTP/2, ALPN h2) returns the keys: a FAIL with the keys as proof, never an ERROR."""
    control, observation, ctx = run_control(control_id, grpc_only_etcd[mode], make_ctx,
                                            etcd_pki)
    outcome, authority = GRPC_ONLY[(control_id, mode)]
    assert (observation.outcome, observation.authority) == (outcome, authority), \
        (observation, ctx.exchanges)
    if outcome is Outcome.SUCCEEDED:
        assert "gRPC Range over HTTP/2" in observation.summary
        assert "/registry/secrets/default/db-password" in observation.evidence["keys_sample"]
        assert observation.evidence["etcd_header"]["cluster_id"] > 0
        assert [e["request"]["grpc"] for e in ctx.exchanges] == [False, True]
        verdict = judge(control.expectation("default"), control.blocked_by, observation,
                        control.weaker).verdict
        assert verdict is Verdict.FAIL
    if (control_id, mode) == ("ETCD-04", "grpc_only_cluster_ca_trusted"):
        assert "accepted ours" in observation.summary


class SeparateSignerCredentials(LocalCredentials):
    """A cluster whose kube-apiserver-client signer is a CA of its own: same name as the
    cluster CA ("kubernetes"), different key."""

    def __init__(self, certs):
        super().__init__(certs)
        from kubeprobe import pki
        self.signer = pki.CertificateAuthority.create("kubernetes")

    def cluster_ca_client_cert(self, ctx):
        return self.signer.issue("kubeprobe-csr-user").client_cert("from a separate signer")


def test_etcd04_certificate_is_verified_against_the_trust_bundle(etcd_servers, make_ctx,
                                                                  etcd_pki):
    _, observation, ctx = run_control("ETCD-04", etcd_servers["cluster_ca_trusted"], make_ctx,
                                      etcd_pki)
    assert observation.outcome is Outcome.SUCCEEDED
    assert any("signature verified" in note for note in ctx.notes)


def test_etcd04_separate_signer_is_skipped_not_judged(etcd_servers, make_ctx, etcd_pki):
    from kubeprobe.context import Unavailable
    ctx = make_ctx(credentials=SeparateSignerCredentials(etcd_pki), control_id="ETCD-04")
    with pytest.raises(Unavailable, match="not signed by any CA in the cluster's trust bundle"):
        load_attack("etcd_client_cluster_ca_cert").run(
            ctx, endpoint("etcd_client", etcd_servers["cluster_ca_trusted"].client_port))
    assert ctx.exchanges == [], "nothing may be sent with a certificate that proves nothing"


def test_issuing_ca_checks_the_signature_not_the_name(etcd_pki):
    from kubeprobe import pki
    namesake = pki.CertificateAuthority.create("kubernetes")
    cert = etcd_pki.cluster_ca_client().cert_pem
    bundle = namesake.cert_pem + etcd_pki.etcd_ca.cert_pem + etcd_pki.cluster_ca.cert_pem
    assert pki.issuing_ca(cert, bundle).public_key() == etcd_pki.cluster_ca.cert.public_key()
    assert pki.issuing_ca(cert, namesake.cert_pem + etcd_pki.etcd_ca.cert_pem) is None
