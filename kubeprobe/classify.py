"""Shared classification of `Exchange` records into Observations.

Only recognised refusals become BLOCKED. Everything an attack does not recognise is
INCONCLUSIVE with the wire summary, so an odd answer can never turn into a pass.
"""
from __future__ import annotations

import base64

from kubeprobe import etcdgrpc, refusals
from kubeprobe.net import BODY_LIMIT, CLIENT_CERT_ALERTS, Exchange
from kubeprobe.outcome import Authority, Observation

#: Connection-level failures that prove nothing.
UNPROVEN_ERRORS = {"timeout": "timed out (filtered port or dead host): nothing proves a block",
                   "unreachable": "host unreachable: nothing proves a block"}


def tls_refusal(ex: Exchange, what: str) -> Observation | None:
    """BLOCKED for a client-certificate alert from a server that asked for a certificate (a
    CertificateRequest in the handshake); any other alert is INCONCLUSIVE and says why: a
    handshake_failure also comes from a cipher, curve or SNI mismatch. None without an alert."""
    if ex.tls_alert is None:
        return None
    evidence = {"tls_alert": ex.tls_alert, "tls_version": ex.tls_version,
                "tls_cert_requested": ex.tls_cert_requested}
    if ex.tls_alert in CLIENT_CERT_ALERTS and ex.tls_cert_requested:
        where = f"the {ex.tls_version} handshake" if ex.tls_version else "the handshake"
        return Observation.blocked(
            Authority.TLS_CLIENT_CERT_ALERT,
            f"{what}: TLS alert {ex.tls_alert} after the server asked for a client certificate "
            f"(CertificateRequest in {where}): client certificate refused", **evidence)
    if ex.tls_cert_requested is None:
        why = "the transport could not see whether the server asked for a client certificate"
    elif not ex.tls_cert_requested:
        why = ("no client certificate was requested (no CertificateRequest in the handshake): "
               "a cipher, curve, SNI or protocol mismatch, not a client-certificate refusal")
    else:
        why = "the server asked for a client certificate, but this alert does not refuse one"
    return Observation.inconclusive(f"{what}: TLS alert {ex.tls_alert} ({ex.target}); {why}",
                                    error_detail=ex.error_detail, **evidence)


def refusal(ex: Exchange, what: str) -> Observation | None:
    """A TLS alert judged by `tls_refusal`; INCONCLUSIVE for a timeout, an unreachable host or
    a refused connection; None when the exchange got further than that. A refusal is judged
    with the component's status or configuration by kubeprobe.refusals before this is
    reached; alone it proves no control."""
    alerted = tls_refusal(ex, what)
    if alerted:
        return alerted
    if ex.error == "refused":
        return Observation.inconclusive(
            f"{what}: connection refused ({ex.target}): a closed port, a restart and a firewall "
            "rule look the same, and nothing here tells them apart", network_refusal=None)
    if ex.error in UNPROVEN_ERRORS:
        return Observation.inconclusive(f"{what}: {UNPROVEN_ERRORS[ex.error]} ({ex.target})",
                                        error_detail=ex.error_detail)
    return None


def http_auth_refusal(ex: Exchange, what: str, anonymous: bool) -> Observation | None:
    """BLOCKED for HTTP 401/403. For an anonymous request a 403 means anonymous
    authentication is ON and only authorization said no: the summary says so."""
    if ex.http_status == 401:
        return Observation.blocked(Authority.HTTP_401, f"{what}: HTTP 401 Unauthorized "
                                   "(authentication refused)", status_body=ex.body[:300]
                                   if ex.body else None)
    if ex.http_status == 403:
        detail = ("anonymous authentication is enabled; authorization denied the request"
                  if anonymous else "authenticated, but authorization denied the request")
        return Observation.blocked(Authority.HTTP_403, f"{what}: HTTP 403 Forbidden ({detail})",
                                   status_body=ex.body[:300] if ex.body else None)
    return None


def not_tls(ex: Exchange) -> bool:
    """A ClientHello sent to a plaintext server ends as a TLS protocol error, or as a reset
    when the server answers 400 and closes with our bytes unread: both mean "not TLS"."""
    return ex.error in ("tls_error", "reset", "eof") and not ex.tls_handshake


def unexpected(ex: Exchange, what: str) -> Observation:
    return Observation.inconclusive(f"{what}: unexpected answer: {ex.summary()}",
                                    error_detail=ex.error_detail,
                                    tls_cert_requested=ex.tls_cert_requested)


# etcd v3 JSON gateway: keys-only range over /registry .. /registrz (base64), a few keys.
ETCD_REGISTRY_RANGE = (b'{"key":"L3JlZ2lzdHJ5","range_end":"L3JlZ2lzdHJ6",'
                       b'"keys_only":true,"limit":10}')
ETCD_RANGE_PATH = "/v3/kv/range"


def etcd_range_answer(ex: Exchange, what: str) -> Observation | None:
    """SUCCEEDED when etcd answered a range request: the key names are the proof (never
    values: the request is keys-only)."""
    body = ex.json_prefix()
    if ex.http_status == 200 and body is not None and "header" in body:
        keys = [base64.b64decode(kv.get("key", "")).decode(errors="replace")
                for kv in body.get("kvs", [])]
        count = (f"at least {len(keys)}" if ex.body_truncated
                 else body.get("count", len(keys)))
        return Observation.succeeded(
            f"{what}: etcd answered the range request on {ex.target} "
            f"({count} keys under /registry)",
            keys_sample=keys, etcd_header=body.get("header"))
    return None


def _cut(ex: Exchange) -> str:
    return (f" (body over {BODY_LIMIT} bytes: counted from the part read)"
            if ex.body_truncated else "")


def listed_items(ex: Exchange) -> list[str] | None:
    """namespace/name of the items of a JSON list answer (a truncated one: the items that
    arrived whole), or None when the body is no list."""
    body = ex.json_prefix()
    if body is None or not isinstance(body.get("items"), list):
        return None
    return [f"{(i.get('metadata') or {}).get('namespace')}/{(i.get('metadata') or {}).get('name')}"
            for i in body["items"] if isinstance(i, dict)]


def list_answer(ex: Exchange, what: str, noun: str) -> Observation | None:
    """SUCCEEDED for an HTTP 200 list: the item names are the proof, never their contents. A
    200 cut at the read limit is still a 200: its whole items are named ("at least N"), and a
    JSON body cut before any whole item is named by status, type and size."""
    if ex.http_status != 200:
        return None
    names = listed_items(ex)
    if names is not None:
        count = f"at least {len(names)}" if ex.body_truncated else str(len(names))
        return Observation.succeeded(f"{what}: HTTP 200, {count} {noun} listed{_cut(ex)}",
                                     names_sample=names[:10], body_truncated=ex.body_truncated)
    return truncated_answer(ex, what)


def truncated_answer(ex: Exchange, what: str) -> Observation | None:
    """SUCCEEDED for an HTTP 200 JSON answer too large to parse whole."""
    content_type = ex.http_headers.get("content-type", "")
    if ex.http_status == 200 and ex.body_truncated and "json" in content_type:
        return Observation.succeeded(
            f"{what}: HTTP 200 {content_type}, body over {BODY_LIMIT} bytes",
            body_truncated=True)
    return None


def etcd_range_attack(ctx, target, what: str, client_cert=None,
                      retry_plain: bool = True) -> Observation:
    """POST a keys-only /registry range to an etcd client port over TLS and classify it.
    When the port does not speak TLS at all, an attacker simply switches to plain HTTP:
    no certificate check can stop that. When TLS lets us in but the JSON range gets no
    HTTP answer, the port serves gRPC only (etcd with --listen-client-http-urls): the same
    range is asked in gRPC. A refused connection is no authentication: see
    kubeprobe.refusals."""
    def attempt(tls: bool) -> Exchange:
        return ctx.exchange(ctx.probe(target.host, target.port, tls=tls, method="POST",
                                      client_cert=client_cert if tls else None,
                                      path=ETCD_RANGE_PATH, body=ETCD_REGISTRY_RANGE))
    first_probe = ctx.probe(target.host, target.port, tls=True, method="POST",
                            client_cert=client_cert, path=ETCD_RANGE_PATH,
                            body=ETCD_REGISTRY_RANGE)
    exchange, refused = refusals.refused_twice(
        ctx, first_probe, ctx.exchange(first_probe), what, "etcd",
        refusals.etcd_up(ctx.kube, target.name, target.host))
    if refused:
        return refused
    if retry_plain and not_tls(exchange):
        ctx.note("the port did not complete a TLS handshake; retried in plain HTTP")
        exchange = attempt(tls=False)
    judged = refusal(exchange, what) or etcd_range_answer(exchange, what)
    if judged:
        return judged
    if exchange.tls_handshake and exchange.http_status is None \
            and exchange.error in ("eof", "reset", "protocol"):
        ctx.note(f"TLS completed but the JSON range got no HTTP answer ({exchange.summary()}): "
                 "asked the same range in gRPC over HTTP/2")
        return etcd_grpc_range_attack(ctx, target, what, client_cert, exchange)
    return unexpected(exchange, what)


# The same keys-only range as ETCD_REGISTRY_RANGE, as a gRPC RangeRequest.
ETCD_REGISTRY_RANGE_GRPC = etcdgrpc.range_request(b"/registry", b"/registrz", 10, True)


def etcd_grpc_range_attack(ctx, target, what: str, client_cert, json_exchange: Exchange
                           ) -> Observation:
    """The range as a gRPC call (etcdserverpb.KV/Range, HTTP/2 via ALPN h2)."""
    ex = ctx.exchange(ctx.probe(target.host, target.port, tls=True, grpc=True, method="POST",
                                path=etcdgrpc.RANGE_METHOD, body=ETCD_REGISTRY_RANGE_GRPC,
                                client_cert=client_cert))
    answered = etcd_grpc_range_answer(ex, what, client_cert is not None)
    if answered:
        return answered
    alerted = tls_refusal(ex, what)
    if alerted:
        return alerted
    if client_cert is None and json_exchange.tls_cert_requested is False:
        # No answer to read, but the server never asked for a client certificate at all.
        return Observation.succeeded(
            f"{what}: etcd completed a {json_exchange.tls_version} handshake on "
            f"{json_exchange.target} without asking for a client certificate (no "
            f"CertificateRequest); the gRPC Range got no answer ({ex.summary()})",
            tls_cert_requested=False, tls_version=json_exchange.tls_version)
    return unexpected(ex, f"{what} (gRPC)")


def etcd_grpc_range_answer(ex: Exchange, what: str, with_cert: bool) -> Observation | None:
    """SUCCEEDED when a gRPC Range came back with a RangeResponse: its header (cluster,
    member, revision) and key names are the proof."""
    if ex.http_status != 200 or not ex.body:
        return None
    try:
        parsed = etcdgrpc.parse_range_response(base64.b64decode(ex.body))
    except ValueError:
        return None
    if parsed is None:
        return None
    count = f"at least {len(parsed['keys'])}" if ex.body_truncated else parsed["count"]
    how = ("mutual TLS: the server asked for a client certificate and accepted ours"
           if with_cert and ex.tls_cert_requested else
           "the server asked for a client certificate and went on without one"
           if ex.tls_cert_requested else "no client certificate was asked for")
    return Observation.succeeded(
        f"{what}: etcd answered a gRPC Range over HTTP/2 ({ex.tls_version}, ALPN "
        f"{ex.tls_alpn}) on {ex.target} ({count} keys under /registry; {how}). The port "
        "serves gRPC only: its JSON gateway listens elsewhere",
        keys_sample=parsed["keys"], etcd_header=parsed["header"],
        grpc_method=etcdgrpc.RANGE_METHOD, tls_cert_requested=ex.tls_cert_requested)


def kubelet_answer(ex: Exchange, what: str) -> Observation | None:
    """SUCCEEDED when the kubelet served the request: what it disclosed is the proof."""
    if ex.http_status != 200:
        return None
    body = ex.json_prefix()
    pods = listed_items(ex)
    if pods is not None:
        count = f"at least {len(pods)}" if ex.body_truncated else str(len(pods))
        return Observation.succeeded(f"{what}: HTTP 200, the kubelet listed {count} pods"
                                     f"{_cut(ex)}", pods_sample=pods[:10])
    if body is not None and "kubeletconfig" in body:
        config = body["kubeletconfig"]
        return Observation.succeeded(
            f"{what}: HTTP 200, the kubelet disclosed its configuration",
            authentication=config.get("authentication"),
            authorization=config.get("authorization"))
    return truncated_answer(ex, what) or Observation.succeeded(
        f"{what}: HTTP 200 ({len(ex.body or '')} bytes)", body_sample=(ex.body or "")[:300])
