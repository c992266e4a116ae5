"""GET /pods on the kubelet API with a client certificate from a foreign CA that claims
system:masters.

SUCCEEDED: HTTP 200: the kubelet accepted the request (anonymous + AlwaysAllow, or it trusts
           any CA).
BLOCKED:   HTTP 401 (the certificate failed verification against the kubelet's client CA
           and anonymous auth is off), or a TLS client-certificate alert after the server's
           CertificateRequest. HTTP 403 means the request fell back to anonymous: a weaker
           state. A refused connection is INCONCLUSIVE (kubeprobe.refusals).
A kubelet WITH a client CA answers 401 to an unverifiable certificate even when anonymous
auth is on (its authenticator fails on a bad certificate instead of falling through); only a
kubelet without a client CA ignores the certificate, which is what this probe catches.
"""
from kubeprobe import refusals
from kubeprobe.classify import http_auth_refusal, kubelet_answer, refusal, unexpected

TARGETS = "node"
WHAT = "GET /pods on the kubelet with a foreign-CA client certificate"


def run(ctx, target):
    probe = ctx.probe(target.host, target.port, tls=True, method="GET", path="/pods",
                      client_cert=ctx.credentials.foreign_ca_client_cert())
    exchange, refused = refusals.refused_twice(ctx, probe, ctx.exchange(probe), WHAT,
                                               "the kubelet",
                                               refusals.kubelet_up(ctx.kube, target.name))
    return (refused or refusal(exchange, WHAT) or http_auth_refusal(exchange, WHAT, anonymous=True)
            or kubelet_answer(exchange, WHAT) or unexpected(exchange, WHAT))
