"""GET an API path with the token of a workload ServiceAccount that has no role bindings
(the compromised-workload identity): list or read Secrets, or reach the kubelet through the
API server's nodes/proxy. Sent to every API server endpoint (the kubeconfig URL and the API
server's own addresses).

Identity first: a SelfSubjectReview with the same token, to the same endpoint, must name the
ServiceAccount; only then is a 403 the authorizer refusing *this* caller (and the 403's
Status message must name it too).

SUCCEEDED: HTTP 200 (the names are the proof; Secret values are never recorded).
BLOCKED:   HTTP 403 from the API server's authorizer, naming the proven caller.
INCONCLUSIVE: HTTP 401 (authentication failed: authorization was never tested), an identity
           the API server would not confirm, or a 403 that does not name the caller.
`{node}` in the path is replaced by the first node's name. Evidence also counts the workload
pods that get a ServiceAccount token mounted (the identity this attack uses).
"""
from kubeprobe import inventory
from kubeprobe.authn import status_message, unreached_own_endpoint, whoami
from kubeprobe.classify import UNPROVEN_ERRORS, list_answer, refusal, unexpected
from kubeprobe.context import RUN_ID_LABEL
from kubeprobe.outcome import Authority, Observation

TARGETS = "apiserver_network"


def run(ctx, target, path="/api/v1/secrets", node=None):
    if "{node}" in path:
        # A real node: never a throwaway Node of a kubeprobe run (no kubelet behind it).
        node = node or ctx.kube.core.list_node(
            label_selector=f"!{RUN_ID_LABEL}", limit=1,
            _request_timeout=ctx.kube.timeout).items[0].metadata.name
        path = path.format(node=node)
    headers = {"Authorization": f"Bearer {ctx.credentials.service_account_token(ctx)}"}
    what = f"GET {path} on {target.address} as a workload ServiceAccount without role bindings"
    identity = whoami(ctx, target.host, target.port, headers)
    if ctx.exchanges and ctx.exchanges[-1]["response"]["error"] in UNPROVEN_ERRORS:
        return unreached_own_endpoint(ctx, target, Observation.inconclusive(
            f"{what}: {ctx.exchanges[-1]['response']['error']} ({target.address})"))
    if not identity.known:
        return Observation.inconclusive(f"{what}: the API server did not confirm the token's "
                                        f"identity ({identity.detail}), so no refusal could "
                                        "be attributed to authorization")
    exchange = ctx.exchange(ctx.probe(target.host, target.port, tls=True, method="GET",
                                      path=path, headers=headers))
    refused = refusal(exchange, what)
    if refused:
        return refused
    message = status_message(exchange.body)
    if exchange.http_status == 401:
        return Observation.inconclusive(
            f"{what}: HTTP 401 for a token the API server authenticated a moment earlier "
            f"({identity.detail}): authentication failed on this request (an authenticating "
            "proxy? a wrong audience?), so authorization was never tested",
            status_body=(exchange.body or "")[:300])
    if exchange.http_status == 403:
        if not identity.named_in(message):
            return Observation.inconclusive(
                f"{what}: HTTP 403 that does not name the proven caller {identity.username} "
                "(not a Kubernetes authorizer's Status?)", status_body=(exchange.body or "")[:300])
        observation = Observation.blocked(
            Authority.HTTP_403, f"{what}: HTTP 403, the authorizer denied "
            f"{identity.username}: {message[:200]}", identity=identity.detail)
        observation.evidence["token_automount"] = inventory.token_automount_inventory(
            *inventory.collect(ctx.kube))
        return observation
    if exchange.http_status == 200:
        # A 200 is the attack getting through, whatever the body (a list, a single object,
        # the kubelet's answer through nodes/proxy): a list's item names are the proof.
        observation = list_answer(exchange, what, "items") or Observation.succeeded(
            f"{what}: HTTP 200 ({len(exchange.body or '')} characters"
            f"{', truncated' if exchange.body_truncated else ''})")
        observation.evidence["identity"] = identity.detail
        return observation
    return unexpected(exchange, what)
