"""GET /pods on the kubelet API with the token of a ServiceAccount that has no role bindings.

SUCCEEDED: HTTP 200: the kubelet authorises every authenticated caller (AlwaysAllow).
BLOCKED:   HTTP 403 from Webhook authorization, and the kubelet's refusal names the very
           ServiceAccount the token belongs to (`Forbidden (user=system:serviceaccount:...`):
           the caller's identity is known, so the 403 is the authorizer's answer about it.
HTTP 401 means the kubelet does not accept tokens (webhook authentication off): authorization
was never exercised, so the result is INCONCLUSIVE, not a pass. So is a 403 that does not
name the caller, and a refused connection (kubeprobe.refusals).
"""
from kubeprobe import refusals
from kubeprobe.classify import http_auth_refusal, kubelet_answer, refusal, unexpected
from kubeprobe.outcome import Observation, Outcome

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
    observation = (refusal(exchange, WHAT) or http_auth_refusal(exchange, WHAT, anonymous=False)
                   or kubelet_answer(exchange, WHAT) or unexpected(exchange, WHAT))
    if observation.outcome is Outcome.BLOCKED and exchange.http_status == 403:
        caller = ctx.service_account_username
        if caller is None or f"user={caller}," not in (exchange.body or ""):
            return Observation.inconclusive(
                f"{WHAT}: HTTP 403 that does not name the token's ServiceAccount "
                f"({caller or 'unknown'}): not shown to be the authorizer's answer about this "
                "caller", status_body=(exchange.body or "")[:300])
        observation.evidence["identity"] = f"the kubelet's refusal names {caller}"
    return observation
