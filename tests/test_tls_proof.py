"""A TLS alert is a client-certificate refusal only when the server asked for a certificate.

Real OpenSSL servers on loopback (tests/tlsservers.py) and real etcd: a refusal after a
CertificateRequest (TLS 1.2 in the handshake, TLS 1.3 after it) is BLOCKED; the same
handshake_failure caused by a cipher or SNI mismatch, where no certificate was ever requested,
is INCONCLUSIVE and says so.
"""
from __future__ import annotations

import pytest

from kubeprobe.catalog import load_attack, load_catalog
from kubeprobe.outcome import Authority, Outcome, Verdict, judge
from tests import realetcd, tlsservers
from tests.conftest import LocalCredentials, endpoint

CATALOG = load_catalog()
B, I = Outcome.BLOCKED, Outcome.INCONCLUSIVE


@pytest.fixture(scope="module")
def certs():
    with tlsservers.pki_dir() as made:
        yield made


def judged(control_id, observation):
    control = CATALOG.get(control_id)
    return judge(control.expectation("default"), control.blocked_by, observation,
                 control.weaker).verdict


# (configuration, host) -> outcome of ETCD-01 (no certificate) and ETCD-02 (foreign CA)
CASES = {
    ("mtls_tls12", "127.0.0.1"): B,
    ("mtls_tls13_only", "127.0.0.1"): B,
    ("cipher_mismatch", "127.0.0.1"): I,
    ("sni_required", "127.0.0.1"): I,          # no SNI for an IP: alert before any request
    ("sni_required", tlsservers.SNI_NAME): B,   # SNI sent for a DNS name: the real refusal
    ("sni_unrecognized_name", "127.0.0.1"): I,
}


@pytest.mark.parametrize(("configuration", "host"), sorted(CASES))
@pytest.mark.parametrize("control_id", ["ETCD-01", "ETCD-02"])
def test_alert_counts_only_after_a_certificate_request(certs, make_ctx, configuration, host,
                                                      control_id):
    control = CATALOG.get(control_id)
    ctx = make_ctx(control_id=control_id)
    with tlsservers.serve_configuration(certs, configuration) as server:
        observation = load_attack(control.attack).run(ctx, endpoint("etcd_client", server.port,
                                                                    host=host))
    expected = CASES[(configuration, host)]
    assert observation.outcome is expected, (observation, ctx.exchanges)
    if expected is B:
        assert observation.authority is Authority.TLS_CLIENT_CERT_ALERT
        assert observation.evidence["tls_cert_requested"] is True
        assert "CertificateRequest" in observation.summary
        assert judged(control_id, observation) is Verdict.PASS
    else:
        assert "no client certificate was requested" in observation.summary, observation
        assert judged(control_id, observation) is Verdict.ERROR


def test_tls13_only_server_gets_a_verdict_after_falling_back(certs, make_ctx):
    """Probes start capped at TLS 1.2; a 1.3-only server answers protocol_version, the probe is
    repeated with TLS 1.3 and the refusal arrives as certificate_required on the first read."""
    ctx = make_ctx(control_id="ETCD-01")
    with tlsservers.serve_configuration(certs, "mtls_tls13_only") as server:
        observation = load_attack("etcd_client_without_cert").run(
            ctx, endpoint("etcd_client", server.port))
    assert [e["response"]["tls_alert"] for e in ctx.exchanges] == ["protocol_version",
                                                                   "certificate_required"]
    assert any("repeated with TLS 1.3" in note for note in ctx.notes)
    assert (observation.outcome, observation.evidence["tls_version"]) == (B, "TLSv1.3")


def test_alert_without_alert_in_its_openssl_name_is_named(certs, make_ctx):
    ctx = make_ctx(control_id="ETCD-01")
    with tlsservers.serve_configuration(certs, "sni_unrecognized_name") as server:
        observation = load_attack("etcd_client_without_cert").run(
            ctx, endpoint("etcd_client", server.port))
    assert observation.evidence["tls_alert"] == "unrecognized_name"
    assert "TLS alert unrecognized_name" in observation.summary


@pytest.mark.parametrize("reset", [False, True])
def test_peer_closing_mid_handshake_is_no_refusal(make_ctx, reset):
    """No alert, no CertificateRequest: a peer dying mid-handshake proves nothing."""
    ctx = make_ctx(control_id="ETCD-01")
    with tlsservers.serve_closing_mid_handshake(reset) as server:
        observation = load_attack("etcd_client_without_cert").run(
            ctx, endpoint("etcd_client", server.port))
    assert observation.outcome is I, observation
    assert ctx.exchanges[0]["response"]["error"] == ("reset" if reset else "eof")


def test_tls13_close_without_alert_is_repeated_and_never_blocked(certs, make_ctx):
    """A TLS 1.3 server that asked for a certificate and then reset without any alert: the
    lost-alert race, or a server closing for another reason. Repeated once, then judged on
    what the wire said: no alert, no refusal."""
    context = tlsservers.server_context(certs, require_client_cert=False,
                                        request_client_cert=True, tls13_only=True)
    ctx = make_ctx(control_id="ETCD-01")
    with tlsservers.serve(context, reset_after_handshake=True) as server:
        observation = load_attack("etcd_client_without_cert").run(
            ctx, endpoint("etcd_client", server.port))
    responses = [e["response"] for e in ctx.exchanges if e["response"]["tls_handshake"]]
    assert len(responses) >= 2 and all(r["tls_cert_requested"] for r in responses)
    assert any("repeated once" in note for note in ctx.notes)
    assert observation.outcome is I, observation


def test_kubelet_foreign_cert_refused_by_tls13_only_server(certs, make_ctx):
    ctx = make_ctx(control_id="KUBELET-06")
    with tlsservers.serve_configuration(certs, "mtls_tls13_only") as server:
        observation = load_attack("kubelet_foreign_ca_cert").run(ctx, endpoint("node",
                                                                               server.port))
    assert (observation.outcome, observation.evidence["tls_alert"]) == (B, "unknown_ca")
    assert judged("KUBELET-06", observation) is Verdict.PASS


@pytest.fixture(scope="module")
def etcd_tls13_only(etcd_pki, tmp_path_factory):
    binary = realetcd.lab_etcd_binary()
    if binary is None:
        pytest.skip("needs etcd >= 3.6 for --tls-min-version (set KUBEPROBE_TEST_ETCD36)")
    etcd = realetcd.start_etcd(binary, "mtls_tls13_only", etcd_pki,
                               tmp_path_factory.mktemp("etcd13"))
    yield etcd
    realetcd.stop_etcd(etcd)


@pytest.mark.parametrize("control_id", ["ETCD-01", "ETCD-02", "ETCD-04", "ETCD-05"])
def test_real_etcd_tls13_only_refusals_are_blocked(etcd_tls13_only, etcd_pki, make_ctx,
                                                    control_id):
    control = CATALOG.get(control_id)
    attack = load_attack(control.attack)
    port = (etcd_tls13_only.peer_port if attack.TARGETS == "etcd_peer"
            else etcd_tls13_only.client_port)
    for _ in range(5):  # the TLS 1.3 refusal arrives after the handshake: it must be stable
        ctx = make_ctx(credentials=LocalCredentials(etcd_pki), control_id=control_id)
        observation = attack.run(ctx, endpoint(attack.TARGETS, port))
        assert (observation.outcome, observation.authority) == \
            (B, Authority.TLS_CLIENT_CERT_ALERT), (observation, ctx.exchanges)
        assert observation.evidence["tls_version"] == "TLSv1.3"
        assert judged(control_id, observation) is Verdict.PASS
