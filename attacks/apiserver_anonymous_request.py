"""List a resource cluster-wide on the API server with no credentials at all, on every
API server endpoint: the kubeconfig URL and the API server's own addresses (a front end
such as an authenticating proxy may refuse what the API server itself would serve).

The request carries the attack's nonce (a label selector that matches every object) so an
audit-based detector can tie its event to this attack.

SUCCEEDED: HTTP 200: anonymous users may list it (the item names are the proof; secret values
           are never recorded).
BLOCKED:   HTTP 401 (anonymous authentication off) or HTTP 403 (anonymous denied by RBAC), in
           a Kubernetes Status body, from the API server itself.
INCONCLUSIVE: a refusal by a front end that is not the API server (named as such), or a
           401/403 that is not a Kubernetes Status.
"""
import ipaddress

from kubeprobe.authn import speaks_for_apiserver, status_message, unreached_own_endpoint
from kubeprobe.classify import UNPROVEN_ERRORS, http_auth_refusal, list_answer, refusal, unexpected
from kubeprobe.context import Unavailable
from kubeprobe.outcome import Observation, Outcome

TARGETS = "apiserver_network"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(ctx, target, resource="pods"):
    what = f"anonymous list of {resource} on {target.address}"
    if str(ctx.transport.vantage).startswith("pod") and _loopback(target.host):
        # kind publishes the API server on the runner's 127.0.0.1: inside a pod that address
        # is the pod itself. The API server's own endpoints are attacked from there instead.
        raise Unavailable(f"{target.address} is the runner's loopback address (the kubeconfig "
                          f"URL of a local cluster): no pod can reach it; the API server's own "
                          f"endpoints are attacked from the pod instead")
    # `!key` matches every object without that label: the listing is unchanged.
    path = f"/api/v1/{resource}?limit=20&labelSelector=%21kubeprobe-nonce-{ctx.nonce}"
    exchange = ctx.exchange(ctx.probe(target.host, target.port, tls=True, method="GET",
                                      path=path))
    if exchange.error in UNPROVEN_ERRORS:
        return unreached_own_endpoint(ctx, target, refusal(exchange, what))
    listed = list_answer(exchange, what, resource)
    if listed:
        listed.evidence["nonce"] = ctx.nonce
        return listed
    blocked = refusal(exchange, what) or http_auth_refusal(exchange, what, anonymous=True)
    if blocked is None:
        return unexpected(exchange, what)
    if blocked.outcome is not Outcome.BLOCKED:
        return blocked
    is_apiserver, detail = speaks_for_apiserver(ctx, target)
    if not is_apiserver:
        return Observation.inconclusive(
            f"{what}: refused by a front end, not by the API server ({blocked.summary}; "
            f"{detail}): the API server's own authentication was not reached from here",
            front_end=target.address)
    if exchange.http_status in (401, 403) and status_message(exchange.body) is None:
        return Observation.inconclusive(f"{what}: HTTP {exchange.http_status} without a "
                                        "Kubernetes Status body: not the API server's answer",
                                        body=(exchange.body or "")[:300])
    blocked.evidence["answered_by"] = detail
    return blocked
