"""List a resource cluster-wide on the API server with no credentials at all.

SUCCEEDED: HTTP 200: anonymous users may list it (the item names are the proof; secret values
           are never recorded).
BLOCKED:   HTTP 401 (anonymous authentication off) or HTTP 403 (anonymous denied by RBAC).
"""
from kubeprobe.classify import http_auth_refusal, refusal, unexpected
from kubeprobe.outcome import Observation

TARGETS = "apiserver"


def run(ctx, target, resource="pods"):
    what = f"anonymous list of {resource} on the API server"
    exchange = ctx.exchange(ctx.probe(target.host, target.port, tls=True, method="GET",
                                      path=f"/api/v1/{resource}?limit=20"))
    blocked = refusal(exchange, what) or http_auth_refusal(exchange, what, anonymous=True)
    if blocked:
        return blocked
    body = exchange.json_body()
    if exchange.http_status == 200 and body is not None and isinstance(body.get("items"), list):
        names = [f"{(i.get('metadata') or {}).get('namespace')}/"
                 f"{(i.get('metadata') or {}).get('name')}" for i in body["items"]]
        return Observation.succeeded(f"{what}: HTTP 200, {len(names)} {resource} listed",
                                     names_sample=names[:10])
    return unexpected(exchange, what)
