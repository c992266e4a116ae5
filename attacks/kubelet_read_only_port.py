"""GET /pods on the kubelet's unauthenticated read-only port (10255 by default).

SUCCEEDED: HTTP 200: the read-only port is open and discloses pods without any credential.
BLOCKED:   connection refused: the port is closed (readOnlyPort: 0).
A timeout (filtered) is INCONCLUSIVE: the port may be open behind a firewall rule.
"""
from kubeprobe.classify import kubelet_answer, refusal, unexpected

TARGETS = "node"
WHAT = "GET /pods on the kubelet read-only port"


def run(ctx, target, port=10255):
    exchange = ctx.exchange(ctx.probe(target.host, port, tls=False, method="GET", path="/pods"))
    return refusal(exchange, WHAT) or kubelet_answer(exchange, WHAT) or unexpected(exchange, WHAT)
