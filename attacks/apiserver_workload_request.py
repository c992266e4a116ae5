"""GET an API path with the token of a workload ServiceAccount that has no role bindings
(the compromised-workload identity): list or read Secrets, or reach the kubelet through the
API server's nodes/proxy.

SUCCEEDED: HTTP 200 (the names are the proof; Secret values are never recorded).
BLOCKED:   HTTP 403 (authorization denied) or 401.
`{node}` in the path is replaced by the first node's name. Evidence also counts the workload
pods that get a ServiceAccount token mounted (the identity this attack uses).
"""
from kubeprobe.classify import http_auth_refusal, list_answer, refusal, unexpected
from kubeprobe import inventory
from kubeprobe.outcome import Observation

TARGETS = "apiserver"


def run(ctx, target, path="/api/v1/secrets", node=None):
    if "{node}" in path:
        node = node or ctx.kube.core.list_node(limit=1, _request_timeout=ctx.kube.timeout) \
            .items[0].metadata.name
        path = path.format(node=node)
    token = ctx.credentials.service_account_token(ctx)
    what = f"GET {path} as a workload ServiceAccount without role bindings"
    exchange = ctx.exchange(ctx.probe(target.host, target.port, tls=True, method="GET",
                                      path=path, headers={"Authorization": f"Bearer {token}"}))
    blocked = refusal(exchange, what) or http_auth_refusal(exchange, what, anonymous=False)
    if blocked:
        blocked.evidence["token_automount"] = inventory.token_automount_inventory(
            *inventory.collect(ctx.kube))
        return blocked
    if exchange.http_status == 200:
        # A 200 is the attack getting through, whatever the body (a list, a single object,
        # the kubelet's answer through nodes/proxy): a list's item names are the proof.
        return list_answer(exchange, what, "items") or Observation.succeeded(
            f"{what}: HTTP 200 ({len(exchange.body or '')} characters"
            f"{', truncated' if exchange.body_truncated else ''})")
    return unexpected(exchange, what)
