"""An anonymous request for kube-system Secrets, carrying the attack's nonce in its URI, that
the API server's audit trail must record (who: system:anonymous or the failed 401 at stage
ResponseStarted; what: requestURI, verb; from where: sourceIPs; and the response code).

SUCCEEDED: HTTP 200 (anonymous may read kube-system Secrets).
BLOCKED:   HTTP 401/403, as on any sane cluster. Either way the control is about the evidence
           trail: it PASSes only when the matching audit event is found.
"""
from kubeprobe.classify import http_auth_refusal, refusal, unexpected
from kubeprobe.outcome import Observation

TARGETS = "apiserver"


def run(ctx, target):
    path = f"/api/v1/namespaces/kube-system/secrets?labelSelector=kubeprobe-nonce%3D{ctx.nonce}"
    what = "anonymous list of kube-system secrets (nonce in the URI)"
    exchange = ctx.exchange(ctx.probe(target.host, target.port, tls=True, method="GET",
                                      path=path))
    if exchange.http_status == 200:
        return Observation.succeeded(f"{what}: HTTP 200", nonce=ctx.nonce)
    return (refusal(exchange, what) or http_auth_refusal(exchange, what, anonymous=True)
            or unexpected(exchange, what))
