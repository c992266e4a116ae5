"""An anonymous HTTPS request to the kubelet API (10250): no certificate, no token.

SUCCEEDED: HTTP 200: anonymous requests are authenticated and authorised (AlwaysAllow).
BLOCKED:   HTTP 401 (anonymous authentication off); HTTP 403 means anonymous authentication
           is ON and only Webhook authorization said no, a weaker state the catalog FAILS.
A refused connection never exercised authentication: INCONCLUSIVE (kubeprobe.refusals).
"""
from kubeprobe import refusals
from kubeprobe.classify import http_auth_refusal, kubelet_answer, refusal, unexpected

TARGETS = "node"


def run(ctx, target, path="/pods"):
    what = f"anonymous GET {path} on the kubelet"
    probe = ctx.probe(target.host, target.port, tls=True, method="GET", path=path)
    exchange, refused = refusals.refused_twice(ctx, probe, ctx.exchange(probe), what,
                                               "the kubelet",
                                               refusals.kubelet_up(ctx.kube, target.name))
    return (refused or refusal(exchange, what)
            or http_auth_refusal(exchange, what, anonymous=True)
            or kubelet_answer(exchange, what) or unexpected(exchange, what))
