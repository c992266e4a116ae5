"""Join the etcd peer port (2380) without a peer certificate and list the members.

SUCCEEDED: the peer port answered GET /members: any host can talk raft to this member.
BLOCKED:   TLS client-certificate alert after the server's CertificateRequest. A refused
           connection is INCONCLUSIVE (kubeprobe.refusals).
"""
from kubeprobe import refusals
from kubeprobe.classify import not_tls, refusal, unexpected
from kubeprobe.outcome import Observation

TARGETS = "etcd_peer"
WHAT = "etcd peer /members without a peer certificate"


def run(ctx, target):
    probe = ctx.probe(target.host, target.port, tls=True, method="GET", path="/members")
    exchange, refused = refusals.refused_twice(
        ctx, probe, ctx.exchange(probe), WHAT, "etcd",
        refusals.etcd_up(ctx.kube, target.name, target.host))
    if refused:
        return refused
    if not_tls(exchange):
        ctx.note("the peer port did not complete a TLS handshake; retried in plain HTTP")
        exchange = ctx.exchange(ctx.probe(target.host, target.port, tls=False, method="GET",
                                          path="/members"))
    blocked = refusal(exchange, WHAT)
    if blocked:
        return blocked
    body = exchange.body or ""
    if exchange.http_status == 200 and body.lstrip().startswith("["):
        return Observation.succeeded(f"{WHAT}: the peer port listed the members",
                                     members=body[:500])
    return unexpected(exchange, WHAT)
