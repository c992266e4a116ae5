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

An alert alone does not say why the server refused: `handshake_failure` also comes from a
cipher, curve or SNI mismatch. `tls_cert_requested` records whether the server sent a
CertificateRequest during the handshake (None: not known), which is what makes an alert a
client-certificate refusal (kubeprobe.classify). A 200 whose body was cut at BODY_LIMIT (or
whose connection ended early) is still a 200: `body_truncated` says the body is a prefix.
"""
from __future__ import annotations

import base64
import dataclasses
import errno
import ipaddress
import json
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_READ_TIMEOUT = 5.0
BODY_LIMIT = 64 * 1024

# OpenSSL names a received alert in its reason string: SSLV3_ALERT_x, TLSV1_ALERT_x and
# TLSV13_ALERT_x map to the RFC 8446 name x; a few reasons carry no "ALERT" (ssl/ssl_err.c).
# The Go agent maps Go's alert texts to the same names.
_OPENSSL_ALERT_PREFIXES = ("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")
_OPENSSL_ALERT_EXCEPTIONS = {
    "TLSV1_ALERT_USER_CANCELLED": "user_canceled",
    "TLSV1_UNRECOGNIZED_NAME": "unrecognized_name",
    "TLSV1_UNSUPPORTED_EXTENSION": "unsupported_extension",
    "TLSV1_CERTIFICATE_UNOBTAINABLE": "certificate_unobtainable",
    "TLSV1_BAD_CERTIFICATE_STATUS_RESPONSE": "bad_certificate_status_response",
    "TLSV1_BAD_CERTIFICATE_HASH_VALUE": "bad_certificate_hash_value",
}
#: Alerts a server sends when the client certificate is missing or not trusted. They count as
#: a client-certificate refusal only when the server asked for one (`tls_cert_requested`).
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
            "sni": server_name(self.host) if self.tls else None,
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
    # The server sent a CertificateRequest in the handshake (None: no TLS attempt got that far
    # in a way this transport can tell).
    tls_cert_requested: bool | None = None
    server_cert_subject: str | None = None
    server_cert_issuer: str | None = None
    http_status: int | None = None
    http_reason: str | None = None
    http_headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None           # text, cut at BODY_LIMIT
    body_truncated: bool = False      # the body is a prefix: cut at BODY_LIMIT or ended early
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

    def json_prefix(self) -> dict | None:
        """`json_body()`; for a truncated body, the object's members that arrived whole (a cut
        array keeps its whole elements): judge a cut 200 on what it did say."""
        if not self.body_truncated:
            return self.json_body()
        return json_object_prefix(self.body or "")

    def summary(self) -> str:
        if self.http_status is not None:
            cut = (f" (body truncated after {len(self.body or '')} characters)"
                   if self.body_truncated else "")
            return f"HTTP {self.http_status} {self.http_reason or ''}".strip() + cut
        if self.tls_alert:
            return f"TLS alert {self.tls_alert}"
        if self.error:
            return f"{self.error}: {self.error_detail or ''}".strip(": ")
        if self.tls_handshake:
            return f"TLS handshake completed ({self.tls_version})"
        return "connected" if self.connected else "no connection"


def tls13_needed(probe: Probe, ex: Exchange) -> bool:
    """A TLS-1.3-only server refuses a ClientHello capped at TLS 1.2 with protocol_version:
    the probe must be repeated with TLS 1.3 to reach the server's real answer."""
    if not probe.tls or probe.max_tls_version != "1.2" or ex.tls_handshake:
        return False
    detail = (ex.error_detail or "").lower()
    return ex.tls_alert == "protocol_version" or (
        ex.error == "tls_error" and ("unsupported protocol" in detail
                                     or "protocol version" in detail))


_WHITESPACE = re.compile(r"\s*")


def json_object_prefix(text: str) -> dict | None:
    """The members of a JSON object text that may be cut short, up to the cut: whole values
    only, and for an array the elements before the cut. None unless the text opens an object."""
    decoder = json.JSONDecoder()

    def skip(i: int) -> int:
        return _WHITESPACE.match(text, i).end()

    def whole_value(i: int) -> tuple[object, int]:
        value, end = decoder.raw_decode(text, i)
        if end == len(text) and isinstance(value, (int, float)):
            raise ValueError("a number at the cut may itself be cut")
        return value, end

    found: dict = {}
    i = skip(0)
    if not text.startswith("{", i):
        return None
    i += 1
    try:
        while True:
            i = skip(i)
            key, i = decoder.raw_decode(text, i)
            i = skip(i)
            if not text.startswith(":", i):
                return found
            i = skip(i + 1)
            if text.startswith("[", i):
                items: list = []
                found[key] = items
                i = skip(i + 1)
                while not text.startswith("]", i):
                    value, i = whole_value(i)
                    items.append(value)
                    i = skip(i)
                    if text.startswith(",", i):
                        i = skip(i + 1)
                    elif not text.startswith("]", i):
                        return found
                i += 1
            else:
                found[key], i = whole_value(i)
            i = skip(i)
            if not text.startswith(",", i):
                return found
            i += 1
    except (ValueError, IndexError):
        return found


class Transport(Protocol):
    """How a probe reaches its target: from the runner, or from inside a pod."""
    vantage: str

    def exchange(self, probe: Probe) -> Exchange: ...


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def server_name(host: str) -> str | None:
    """The SNI to send: the host when it is a DNS name, none for an IP address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


def _alert_name(exc: ssl.SSLError) -> str | None:
    reason = getattr(exc, "reason", None) or ""
    if reason in _OPENSSL_ALERT_EXCEPTIONS:
        return _OPENSSL_ALERT_EXCEPTIONS[reason]
    for prefix in _OPENSSL_ALERT_PREFIXES:
        if reason.startswith(prefix):
            return reason[len(prefix):].lower()
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


_HANDSHAKE_RECORD, _CERTIFICATE_REQUEST = 22, 13


def _watch_certificate_request(context: ssl.SSLContext, ex: Exchange) -> None:
    """Record in `ex.tls_cert_requested` whether the server sends a CertificateRequest. CPython's
    private `_msg_callback` sees every handshake message (decrypted in TLS 1.3); without it the
    field stays None (unknown)."""
    if not hasattr(context, "_msg_callback"):
        return
    ex.tls_cert_requested = False

    def seen(_conn, direction, _version, content_type, msg_type, _data) -> None:
        if direction == "read" and content_type == _HANDSHAKE_RECORD \
                and msg_type == _CERTIFICATE_REQUEST:
            ex.tls_cert_requested = True
    context._msg_callback = seen


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


def _parse_http(raw: bytes, exchange: Exchange, ended_cleanly: bool) -> None:
    """`ended_cleanly`: the read stopped at the declared Content-Length or at the peer's close,
    not at the read cap, a reset or the deadline."""
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
    complete = ended_cleanly
    declared = exchange.http_headers.get("content-length", "")
    if declared.isdigit():
        complete = len(body) >= int(declared)
    if exchange.http_headers.get("transfer-encoding", "").lower() == "chunked":
        body, complete = _dechunk(body)
    exchange.body = body[:BODY_LIMIT].decode("utf-8", errors="replace")
    exchange.body_truncated = len(body) > BODY_LIMIT or not complete


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    """The chunked body and whether its last (zero-size) chunk arrived."""
    out, rest = bytearray(), data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            return bytes(out), True
        out += rest[:size]
        if size > len(rest):
            break
        rest = rest[size + 2:]
    return bytes(out), False


def _read_response(sock: socket.socket, deadline: float, data: bytearray) -> bool:
    """Append to `data` until the peer closes, the declared Content-Length arrives, the read
    cap or the deadline; True when the response ended (close or Content-Length). Reading by
    Content-Length matters: some servers (etcd's peer port) keep the connection open after
    answering. Errors propagate with `data` holding what arrived before them."""
    while len(data) < BODY_LIMIT + 16 * 1024:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("read deadline")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            return True
        data += chunk
        head, sep, body = bytes(data).partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and value.strip().isdigit():
                    if len(body) >= int(value.strip()):
                        return True
    return False


def _record_failure(ex: Exchange, exc: BaseException) -> None:
    """A failure after connecting, as an error kind (see the module docstring)."""
    if isinstance(exc, ssl.SSLError):
        # TLS 1.3: a refused client certificate arrives as an alert after the handshake.
        ex.tls_alert = _alert_name(exc)
        if ex.tls_alert:
            ex.error = "tls_alert"
        elif isinstance(exc, ssl.SSLEOFError):
            ex.error = "eof"  # the peer closed mid-stream without an alert
        else:
            ex.error = "tls_error" if not ex.tls_handshake else "reset"
    elif isinstance(exc, (socket.timeout, TimeoutError)):
        ex.error = "timeout"
    else:
        ex.error = "reset"
    ex.error_detail = str(exc) or type(exc).__name__


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
                context = _client_context(probe)
                _watch_certificate_request(context, ex)
                try:
                    sock = context.wrap_socket(raw, server_hostname=server_name(probe.host))
                except ssl.SSLError as exc:
                    # An alert, a local failure, or the peer closing mid-handshake (eof).
                    _record_failure(ex, exc)
                    return
                ex.tls_handshake = True
                _describe_peer(sock, ex)
            if probe.method is None:
                return
            self._request(sock, probe, ex, deadline)
        except OSError as exc:  # ssl.SSLError, resets and timeouts are OSErrors
            _record_failure(ex, exc)
        finally:
            sock.close()

    @staticmethod
    def _request(sock: socket.socket, probe: Probe, ex: Exchange, deadline: float) -> None:
        send_failure: OSError | None = None
        try:
            sock.sendall(_http_request_bytes(probe))
        except OSError as exc:
            # The server may already have refused us and closed (TLS 1.3 sends the alert
            # right after the handshake): what it said can still be waiting to be read.
            send_failure = exc
        received = bytearray()
        try:
            ended_cleanly = _read_response(sock, deadline, received)
        except OSError as exc:
            if not received:
                _record_failure(ex, exc)
                if ex.error != "tls_alert" and send_failure is not None:
                    ex.error, ex.error_detail = None, None
                    _record_failure(ex, send_failure)
                return
            ended_cleanly = False  # part of an answer, then a reset or the deadline
        ex.bytes_received = len(received)
        if not received:
            if send_failure is not None:
                _record_failure(ex, send_failure)
            else:
                ex.error, ex.error_detail = "eof", "peer closed the connection without a byte"
            return
        _parse_http(bytes(received), ex, ended_cleanly)
