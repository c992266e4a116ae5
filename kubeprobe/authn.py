"""Proof of identity before an authorization verdict.

A 403 proves that an authorizer said no only when the caller's identity is known: the API
server's SelfSubjectReview (authentication.k8s.io/v1, GA since 1.28) returns the username
it authenticated for the very credentials the attack uses, sent the same way to the same
endpoint. A 401 for a token the cluster just issued means authentication failed (an
authenticating proxy, a wrong audience): authorization was never exercised.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

SELF_SUBJECT_REVIEW_PATH = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
SELF_SUBJECT_REVIEW = json.dumps({"apiVersion": "authentication.k8s.io/v1",
                                  "kind": "SelfSubjectReview"}).encode()


@dataclass(frozen=True)
class Identity:
    username: str | None          # None: the API server did not confirm who the caller is
    groups: tuple[str, ...]
    detail: str                   # what the SelfSubjectReview answered, for the evidence

    @property
    def known(self) -> bool:
        return self.username is not None

    def named_in(self, message: str) -> bool:
        """The authorizer's refusal names this caller (`User "<name>" cannot ...`)."""
        return self.username is not None and f'"{self.username}"' in (message or "")


def whoami(ctx, host: str, port: int, headers: dict[str, str]) -> Identity:
    """SelfSubjectReview with the attack's credentials, through the attack's transport."""
    exchange = ctx.exchange(ctx.probe(host, port, tls=True, method="POST",
                                      path=SELF_SUBJECT_REVIEW_PATH, headers=headers,
                                      body=SELF_SUBJECT_REVIEW))
    body = exchange.json_body() or {}
    user = ((body.get("status") or {}).get("userInfo") or {})
    if exchange.http_status == 201 and user.get("username"):
        identity = Identity(user["username"], tuple(user.get("groups") or ()),
                            f"SelfSubjectReview: {user['username']} "
                            f"(groups {', '.join(user.get('groups') or [])})")
        ctx.note(f"identity proven: {identity.detail}")
        return identity
    return Identity(None, (), f"SelfSubjectReview answered {exchange.summary()}"
                              + (f": {body.get('message')}" if body.get("message") else ""))


def status_message(body: str | None) -> str | None:
    """The `message` of a Kubernetes Status body, if the answer is one."""
    try:
        status = json.loads(body or "")
    except ValueError:
        return None
    if isinstance(status, dict) and status.get("kind") == "Status":
        return str(status.get("message", ""))
    return None


# -- is this endpoint the API server, or a front end? ------------------------------------
APISERVER_SAN = "kubernetes.default.svc"


def serves_apiserver_certificate(kube, host: str, port: int,
                                 timeout: float = 3.0) -> tuple[bool, str]:
    """(True, detail) when host:port presents the API server's own serving certificate:
    signed by the cluster CA (the kubeconfig's) and naming kubernetes.default.svc, which
    every kube-apiserver serving certificate does. A TLS pass-through load balancer keeps
    it; a TLS-terminating proxy presents its own."""
    import socket
    import ssl

    from cryptography import x509

    ca_pem = kube.cluster_ca_pem if kube is not None else None
    if not ca_pem:
        return False, "no cluster CA in the kubeconfig to check the serving certificate with"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=None) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        return False, f"no TLS handshake with {host}:{port}: {exc}"
    cert = x509.load_der_x509_certificate(der)
    try:
        names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    signed = any(_signed_by(cert, ca) for ca in x509.load_pem_x509_certificates(ca_pem))
    detail = (f"{host}:{port} serves {cert.subject.rfc4514_string()} issued by "
              f"{cert.issuer.rfc4514_string()} (cluster CA signature: "
              f"{'valid' if signed else 'no'}; {APISERVER_SAN} in SANs: "
              f"{'yes' if APISERVER_SAN in names else 'no'})")
    return signed and APISERVER_SAN in names, detail


def _signed_by(cert, ca) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # noqa: BLE001 - any failure means: not issued by this CA
        return False
    return True


def speaks_for_apiserver(ctx, target) -> tuple[bool, str]:
    """Whether answers from this `apiserver_network` endpoint are the API server's own: one
    of its own endpoints, or a front end that passes its serving certificate through."""
    from kubeprobe.discovery import FRONT_END
    if target.name != FRONT_END:
        return True, f"{target.address} is one of the API server's own endpoints ({target.source})"
    return serves_apiserver_certificate(ctx.kube, target.host, target.port, ctx.connect_timeout)


def unreached_own_endpoint(ctx, target, observation):
    """An own API server endpoint this vantage cannot reach (private address): SKIP it when
    the kubeconfig URL provably is the API server (judged there instead), else keep the
    INCONCLUSIVE observation."""
    from kubeprobe.context import Unavailable
    host, port = ctx.kube.server_host_port
    if (host, port) == (target.host, target.port):
        return observation
    is_apiserver, detail = serves_apiserver_certificate(ctx.kube, host, port,
                                                        ctx.connect_timeout)
    if is_apiserver:
        raise Unavailable(f"{target.address} is not reachable from this vantage "
                          f"({observation.summary}); the kubeconfig URL serves the API "
                          f"server's own certificate and is judged instead ({detail})")
    return observation
