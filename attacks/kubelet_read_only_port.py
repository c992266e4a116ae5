"""GET /pods on the kubelet's unauthenticated read-only port (10255 by default).

SUCCEEDED: HTTP 200: the read-only port is open and discloses pods without any credential.
BLOCKED:   connection refused AND the kubelet's configuration (/configz through the API
           server) says readOnlyPort: 0. Refused while the configuration says the port is
           served is a network refusal (a firewall rule): INCONCLUSIVE, as is a refusal whose
           configuration cannot be read.
A timeout (filtered) is INCONCLUSIVE: the port may be open behind a firewall rule.
"""
from kubeprobe import refusals
from kubeprobe.classify import kubelet_answer, refusal, unexpected

TARGETS = "node"
WHAT = "GET /pods on the kubelet read-only port"


def run(ctx, target, port=10255):
    exchange = ctx.exchange(ctx.probe(target.host, port, tls=False, method="GET", path="/pods"))
    closed = refusals.closed_port(exchange, WHAT, f"the read-only port {port}",
                                  refusals.read_only_port_config(ctx.kube, target.name, port))
    return (closed or refusal(exchange, WHAT) or kubelet_answer(exchange, WHAT)
            or unexpected(exchange, WHAT))
