"""Talk plain HTTP to the etcd client port.

SUCCEEDED: etcd answered the range request in clear text.
BLOCKED:   the plaintext request got nothing (or an HTTP 400 "HTTP request to an HTTPS
           server") AND the same port then completed or refused a TLS handshake: the port
           requires TLS (positive proof), and nothing else.
A refused connection is INCONCLUSIVE (kubeprobe.refusals).
"""
from kubeprobe import refusals
from kubeprobe.classify import (ETCD_RANGE_PATH, ETCD_REGISTRY_RANGE, etcd_range_answer,
                                refusal, unexpected)
from kubeprobe.outcome import Authority, Observation

TARGETS = "etcd_client"
WHAT = "etcd range over plain HTTP"


def run(ctx, target):
    probe = ctx.probe(target.host, target.port, tls=False, method="POST", path=ETCD_RANGE_PATH,
                      body=ETCD_REGISTRY_RANGE)
    plain, refused = refusals.refused_twice(ctx, probe, ctx.exchange(probe), WHAT, "etcd",
                                            refusals.etcd_up(ctx.kube, target.name, target.host))
    if refused:
        return refused
    answered = refusal(plain, WHAT) or etcd_range_answer(plain, WHAT)
    if answered:
        return answered
    rejected = (plain.error in ("eof", "reset")
                or (plain.http_status == 400 and "HTTPS" in (plain.body or "")))
    if not rejected:
        return unexpected(plain, WHAT)
    tls = ctx.exchange(ctx.probe(target.host, target.port, tls=True))
    if tls.tls_handshake or tls.tls_alert is not None:  # an alert is a TLS record too
        return Observation.blocked(
            Authority.TLS_REQUIRED,
            f"{WHAT}: plaintext rejected ({plain.summary()}) and the port speaks TLS "
            f"({tls.summary()})")
    return unexpected(tls, f"{WHAT} (TLS confirmation)")
