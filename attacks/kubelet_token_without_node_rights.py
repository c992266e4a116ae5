"""GET /pods on the kubelet API with the token of a ServiceAccount that has no role bindings.

SUCCEEDED: HTTP 200: the kubelet authorises every authenticated caller (AlwaysAllow).
BLOCKED:   HTTP 403: Webhook authorization asked the API server and was told no.
HTTP 401 means the kubelet does not accept tokens (webhook authentication off): authorization
was never exercised, so the result is INCONCLUSIVE, not a pass. So is a refused connection
(kubeprobe.refusals).
"""
from kubeprobe import refusals
from kubeprobe.classify import http_auth_refusal, kubelet_answer, refusal, unexpected
from kubeprobe.outcome import Observation

TARGETS = "node"
WHAT = "GET /pods on the kubelet with a ServiceAccount token without node rights"


def run(ctx, target):
    token = ctx.credentials.service_account_token(ctx)
    probe = ctx.probe(target.host, target.port, tls=True, method="GET", path="/pods",
                      headers={"Authorization": f"Bearer {token}"})
    exchange, refused = refusals.refused_twice(ctx, probe, ctx.exchange(probe), WHAT,
                                               "the kubelet",
                                               refusals.kubelet_up(ctx.kube, target.name))
    if refused:
        return refused
    if exchange.http_status == 401:
        return Observation.inconclusive(
            f"{WHAT}: HTTP 401: the kubelet did not authenticate the token (webhook "
            "authentication off?), so its authorization mode was not exercised")
    return (refusal(exchange, WHAT) or http_auth_refusal(exchange, WHAT, anonymous=False)
            or kubelet_answer(exchange, WHAT) or unexpected(exchange, WHAT))
