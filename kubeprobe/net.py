"""Network primitives shared by every attack: one request in, one `Exchange` record out.

An attack never talks to a socket itself. It describes what to send (`Probe`) and gets back
an `Exchange`: what the wire said, normalised so that the same record comes from the runner
(this module, Python `ssl`) and from a pod (the Go agent in `agent/`, same JSON schema).
Classification into BLOCKED / SUCCEEDED / INCONCLUSIVE happens in the attack modules, on the
record only, so both vantage points are judged by the same code.

Error kinds (`Exchange.error`):
  refused      TCP RST on connect: nothing listens (positive proof for "port closed")
  timeout      no answer within the deadline (filtered port, blackhole): never proof
  unreachable  no route / host down / DNS failure: never proof
  reset, eof   the peer closed or reset after connecting
  tls_alert    the TLS peer sent an alert; `tls_alert` names it (RFC 8446 names)
  tls_error    the TLS handshake failed locally (protocol mismatch, not TLS, ...)
  protocol     bytes arrived but were not HTTP
"""
from __future__ import annotations

import base64
import dataclasses
import errno
import json
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_READ_TIMEOUT = 5.0
BODY_LIMIT = 64 * 1024

# OpenSSL's reason strings -> RFC 8446 alert names (the Go agent maps Go's errors to the same).
_OPENSSL_ALERTS = {
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad_certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "unknown_ca",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "certificate_required",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "handshake_failure",
    "TLSV1_ALERT_ACCESS_DENIED": "access_denied",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "certificate_unknown",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "certificate_expired",
    "TLSV1_ALERT_DECRYPT_ERROR": "decrypt_error",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol_version",
    "TLSV1_ALERT_INTERNAL_ERROR": "internal_error",
}
#: Alerts that say "your client certificate was missing or not trusted".
CLIENT_CERT_ALERTS = frozenset({"bad_certificate", "unknown_ca", "certificate_required",
                                "certificate_unknown", "access_denied", "handshake_failure"})


@dataclass(frozen=True)
class ClientCert:
    """A client certificate and key, PEM-encoded."""
    cert_pem: bytes
    key_pem: bytes
    label: str = "client certificate"

    def to_json(self) -> dict:
        return {"cert_pem": self.cert_pem.decode(), "key_pem": self.key_pem.decode(),
                "label": self.label}


@dataclass(frozen=True)
class Probe:
    """What to send. `tls=False` means plain TCP/HTTP. The server certificate is never
    verified: an attacker does not care who answers, and the evidence records it."""
    host: str
    port: int
    tls: bool = True
    client_cert: ClientCert | None = None
    # TLS 1.2 makes a refused client certificate fail inside the handshake, deterministically
    # (with 1.3 the alert only surfaces on the first read). See FACTS.md, etcd.
    max_tls_version: str = "1.2"
    method: str | None = None          # None: handshake/connect only, no HTTP request
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    nonce: str | None = None  # the attack's nonce; the pod agent shows it in its command line

    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{self.path}"

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["client_cert"] = self.client_cert.to_json() if self.client_cert else None
        data["body_b64"] = base64.b64encode(self.body).decode() if self.body is not None else None
        del data["body"]
        return data

    def describe(self) -> dict:
        """The request as evidence: no key material."""
        return {
            "url": self.url(), "method": self.method, "tls": self.tls,
            "max_tls_version": self.max_tls_version if self.tls else None,
            "client_certificate": self.client_cert.label if self.client_cert else None,
            "headers": {k: ("<redacted>" if k.lower() == "authorization" else v)
                        for k, v in self.headers.items()},
            "body": self.body.decode(errors="replace") if self.body else None,
        }


@dataclass
class Exchange:
    """What happened on the wire. Same schema from every transport (see agent/main.go)."""
    vantage: str
    target: str
    started_at: str
    elapsed_ms: float
    connected: bool = False
    error: str | None = None          # see module docstring
    error_detail: str | None = None
    tls_handshake: bool = False
    tls_alert: str | None = None
    tls_version: str | None = None
    server_cert_subject: str | None = None
    server_cert_issuer: str | None = None
    http_status: int | None = None
    http_reason: str | None = None
    http_headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None           # text, cut at BODY_LIMIT
    bytes_received: int = 0

    @classmethod
    def from_json(cls, data: dict) -> "Exchange":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown Exchange fields: {sorted(unknown)}")
        return cls(**data)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def json_body(self) -> dict | None:
        try:
            value = json.loads(self.body or "")
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def summary(self) -> str:
        if self.http_status is not None:
            return f"HTTP {self.http_status} {self.http_reason or ''}".strip()
        if self.tls_alert:
            return f"TLS alert {self.tls_alert}"
        if self.error:
            return f"{self.error}: {self.error_detail or ''}".strip(": ")
        if self.tls_handshake:
            return f"TLS handshake completed ({self.tls_version})"
        return "connected" if self.connected else "no connection"


class Transport(Protocol):
    """How a probe reaches its target: from the runner, or from inside a pod."""
    vantage: str

    def exchange(self, probe: Probe) -> Exchange: ...


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _alert_name(exc: ssl.SSLError) -> str | None:
    reason = getattr(exc, "reason", None) or ""
    if reason in _OPENSSL_ALERTS:
        return _OPENSSL_ALERTS[reason]
    if "ALERT" in reason:
        return reason.split("ALERT_", 1)[-1].lower()
    return None


def _connect_error(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, socket.gaierror) or exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH,
                                                          errno.EHOSTDOWN, errno.EADDRNOTAVAIL):
        return "unreachable"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    return "unreachable"


def _describe_peer(sock: ssl.SSLSocket, exchange: Exchange) -> None:
    exchange.tls_version = sock.version()
    der = sock.getpeercert(binary_form=True)
    if der:
        from cryptography import x509
        cert = x509.load_der_x509_certificate(der)
        exchange.server_cert_subject = cert.subject.rfc4514_string()
        exchange.server_cert_issuer = cert.issuer.rfc4514_string()


def _client_context(probe: Probe) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = (ssl.TLSVersion.TLSv1_2 if probe.max_tls_version == "1.2"
                           else ssl.TLSVersion.TLSv1_3)
    if probe.client_cert:
        import os
        import tempfile
        # ssl only loads key material from files; keep them private and short-lived.
        with tempfile.TemporaryDirectory() as tmp:
            cert_path, key_path = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
            for path, data in ((cert_path, probe.client_cert.cert_pem),
                               (key_path, probe.client_cert.key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            ctx.load_cert_chain(cert_path, key_path)
    return ctx


def _http_request_bytes(probe: Probe) -> bytes:
    headers = {"Host": f"{probe.host}:{probe.port}", "User-Agent": "kubeprobe",
               "Accept": "application/json, */*", "Connection": "close", **probe.headers}
    if probe.body is not None:
        headers.setdefault("Content-Type", "application/json")
        headers["Content-Length"] = str(len(probe.body))
    head = f"{probe.method} {probe.path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode() + (probe.body or b"")


def _parse_http(raw: bytes, exchange: Exchange) -> None:
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if not sep or len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        exchange.error, exchange.error_detail = "protocol", f"not an HTTP response: {raw[:80]!r}"
        return
    exchange.http_status = int(parts[1])
    exchange.http_reason = parts[2] if len(parts) > 2 else ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        exchange.http_headers[name.strip().lower()] = value.strip()
    if exchange.http_headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    exchange.body = body[:BODY_LIMIT].decode("utf-8", errors="replace")


def _dechunk(data: bytes) -> bytes:
    out, rest = bytearray(), data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2:]
    return bytes(out)


def _read_response(sock: socket.socket, deadline: float) -> bytes:
    """Read until the peer closes, the declared Content-Length arrives, or the deadline.
    Reading by Content-Length matters: some servers (etcd's peer port) keep the
    connection open after answering."""
    data = bytearray()
    while len(data) < BODY_LIMIT + 16 * 1024:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("read deadline")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        head, sep, body = bytes(data).partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and value.strip().isdigit():
                    if len(body) >= int(value.strip()):
                        return bytes(data)
    return bytes(data)


class RunnerTransport:
    """Probes sent from the machine running the suite (outside the cluster)."""
    vantage = "runner"

    def exchange(self, probe: Probe) -> Exchange:
        started = time.monotonic()
        ex = Exchange(vantage=self.vantage, target=probe.url(), started_at=_now(), elapsed_ms=0)
        try:
            self._exchange(probe, ex)
        finally:
            ex.elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        return ex

    def _exchange(self, probe: Probe, ex: Exchange) -> None:
        try:
            raw = socket.create_connection((probe.host, probe.port), timeout=probe.connect_timeout)
        except OSError as exc:
            ex.error, ex.error_detail = _connect_error(exc), str(exc)
            return
        ex.connected = True
        deadline = time.monotonic() + probe.read_timeout
        sock: socket.socket = raw
        try:
            if probe.tls:
                raw.settimeout(probe.read_timeout)
                try:
                    sock = _client_context(probe).wrap_socket(raw, server_hostname=None)
                except ssl.SSLError as exc:
                    ex.tls_alert = _alert_name(exc)
                    ex.error = "tls_alert" if ex.tls_alert else "tls_error"
                    ex.error_detail = str(exc)
                    return
                ex.tls_handshake = True
                _describe_peer(sock, ex)
            if probe.method is None:
                return
            sock.sendall(_http_request_bytes(probe))
            raw_response = _read_response(sock, deadline)
            ex.bytes_received = len(raw_response)
            if not raw_response:
                ex.error, ex.error_detail = "eof", "peer closed the connection without a byte"
                return
            _parse_http(raw_response, ex)
        except ssl.SSLError as exc:
            # TLS 1.3: a refused client certificate arrives as an alert on the first read.
            ex.tls_alert = _alert_name(exc)
            if ex.tls_alert:
                ex.error, ex.error_detail = "tls_alert", str(exc)
            else:
                ex.error, ex.error_detail = ("eof" if isinstance(exc, ssl.SSLEOFError)
                                             else "tls_error"), str(exc)
        except (socket.timeout, TimeoutError) as exc:
            ex.error, ex.error_detail = "timeout", str(exc) or "read timed out"
        except ConnectionResetError as exc:
            ex.error, ex.error_detail = "reset", str(exc)
        except OSError as exc:
            ex.error, ex.error_detail = "reset", str(exc)
        finally:
            sock.close()
