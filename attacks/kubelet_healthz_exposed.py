"""GET /healthz on the kubelet's health port (10248) from outside the node.

SUCCEEDED: HTTP 200: the health endpoint is bound to a reachable address.
BLOCKED:   connection refused: it listens on loopback only (healthzBindAddress 127.0.0.1).
"""
from kubeprobe.classify import refusal, unexpected
from kubeprobe.outcome import Observation

TARGETS = "node"
WHAT = "GET /healthz on the kubelet health port from off the node"


def run(ctx, target, port=10248):
    exchange = ctx.exchange(ctx.probe(target.host, port, tls=False, method="GET",
                                      path="/healthz"))
    if exchange.http_status == 200:
        return Observation.succeeded(f"{WHAT}: HTTP 200 {exchange.body!r}")
    return refusal(exchange, WHAT) or unexpected(exchange, WHAT)
