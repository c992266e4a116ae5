"""GET /pods on the kubelet API with a client certificate from a foreign CA that claims
system:masters.

SUCCEEDED: HTTP 200: the kubelet accepted the request (anonymous + AlwaysAllow, or it trusts
           any CA).
BLOCKED:   HTTP 401 (the certificate failed verification against the kubelet's client CA
           and anonymous auth is off), a TLS client-certificate alert, or nothing listens.
           HTTP 403 means the request fell back to anonymous: a weaker state.
A kubelet WITH a client CA answers 401 to an unverifiable certificate even when anonymous
auth is on (its authenticator fails on a bad certificate instead of falling through); only a
kubelet without a client CA ignores the certificate, which is what this probe catches.
"""
from kubeprobe.classify import http_auth_refusal, kubelet_answer, refusal, unexpected

TARGETS = "node"
WHAT = "GET /pods on the kubelet with a foreign-CA client certificate"


def run(ctx, target):
    exchange = ctx.exchange(ctx.probe(target.host, target.port, tls=True, method="GET",
                                      path="/pods",
                                      client_cert=ctx.credentials.foreign_ca_client_cert()))
    return (refusal(exchange, WHAT) or http_auth_refusal(exchange, WHAT, anonymous=True)
            or kubelet_answer(exchange, WHAT) or unexpected(exchange, WHAT))
