"""GET /healthz on the kubelet's health port (10248) from outside the node.

SUCCEEDED: HTTP 200: the health endpoint is bound to a reachable address.
BLOCKED:   connection refused AND the kubelet's configuration (/configz through the API
           server) says healthz listens on loopback only (healthzBindAddress 127.0.0.1) or is
           off (healthzPort 0). Refused while configured on a reachable address is a network
           refusal: INCONCLUSIVE, as is a refusal whose configuration cannot be read.
"""
from kubeprobe import refusals
from kubeprobe.classify import refusal, unexpected
from kubeprobe.outcome import Observation

TARGETS = "node"
WHAT = "GET /healthz on the kubelet health port from off the node"


def run(ctx, target, port=10248):
    exchange = ctx.exchange(ctx.probe(target.host, port, tls=False, method="GET",
                                      path="/healthz"))
    if exchange.http_status == 200:
        return Observation.succeeded(f"{WHAT}: HTTP 200 {exchange.body!r}")
    closed = refusals.closed_port(exchange, WHAT, f"healthz on port {port}",
                                  refusals.healthz_config(ctx.kube, target.name, port,
                                                          target.host))
    return closed or refusal(exchange, WHAT) or unexpected(exchange, WHAT)
