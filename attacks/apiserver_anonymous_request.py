"""List a resource cluster-wide on the API server with no credentials at all.

SUCCEEDED: HTTP 200: anonymous users may list it (the item names are the proof; secret values
           are never recorded).
BLOCKED:   HTTP 401 (anonymous authentication off) or HTTP 403 (anonymous denied by RBAC).
"""
from kubeprobe.classify import http_auth_refusal, list_answer, refusal, unexpected

TARGETS = "apiserver"


def run(ctx, target, resource="pods"):
    what = f"anonymous list of {resource} on the API server"
    exchange = ctx.exchange(ctx.probe(target.host, target.port, tls=True, method="GET",
                                      path=f"/api/v1/{resource}?limit=20"))
    blocked = refusal(exchange, what) or http_auth_refusal(exchange, what, anonymous=True)
    if blocked:
        return blocked
    return list_answer(exchange, what, resource) or unexpected(exchange, what)
