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

A `grpc` probe is one unary gRPC call over HTTP/2 (TLS with ALPN h2): `body` is the request
message (protobuf), the Exchange's `body` the base64 of the first response message, and
`http_headers` stay empty (response headers are not decoded beyond :status). It is the
proof on a port that serves gRPC only (etcd with --listen-client-http-urls).
"""
from __future__ import annotations

import base64
import dataclasses
import errno
import http.client
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
    grpc: bool = False        # a unary gRPC call over HTTP/2 to `path` (needs tls)

    def __post_init__(self) -> None:
        if self.grpc and not (self.tls and self.method == "POST"):
            raise ValueError("a gRPC probe is a POST over TLS (HTTP/2 negotiated with ALPN)")

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
            "grpc": self.grpc,
            "client_certificate": self.client_cert.label if self.client_cert else None,
            "headers": {k: ("<redacted>" if k.lower() == "authorization" else v)
                        for k, v in self.headers.items()},
            "body": (base64.b64encode(self.body).decode() if self.grpc
                     else self.body.decode(errors="replace")) if self.body else None,
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
    tls_alpn: str | None = None       # the application protocol the server selected (ALPN)
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


def tls13_alert_may_be_lost(probe: Probe, ex: Exchange) -> bool:
    """TLS 1.3: a server refusing our certificate sends its alert right after the handshake
    and closes; when our request is still unread it closes with an RST, which can overtake
    the alert. A reset or EOF with no byte after a TLS 1.3 handshake in which the server asked
    for a certificate is that race or something else (a port serving gRPC only): repeat it."""
    return (probe.tls and probe.method is not None and ex.tls_handshake
            and ex.tls_version == "TLSv1.3" and ex.tls_cert_requested is True
            and ex.error in ("reset", "eof") and ex.http_status is None
            and ex.bytes_received == 0)


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
    exchange.tls_alpn = sock.selected_alpn_protocol()
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
    if probe.grpc:
        ctx.set_alpn_protocols(["h2"])
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


def _recv_before(sock: socket.socket, deadline: float) -> bytes:
    """One recv that may wait only until `deadline` (b"" when the peer closed)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise socket.timeout("read deadline")
    sock.settimeout(remaining)
    return sock.recv(65536)


def _read_response(sock: socket.socket, deadline: float, data: bytearray) -> bool:
    """Append to `data` until the peer closes, the declared Content-Length arrives, the read
    cap or the deadline; True when the response ended (close or Content-Length). Reading by
    Content-Length matters: some servers (etcd's peer port) keep the connection open after
    answering. Errors propagate with `data` holding what arrived before them."""
    while len(data) < BODY_LIMIT + 16 * 1024:
        chunk = _recv_before(sock, deadline)
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


# ---------------------------------------------------------------- gRPC over HTTP/2
# Just enough HTTP/2 (RFC 9113) and HPACK (RFC 7541) for one unary call: the request headers
# are literals without Huffman coding; of the response headers only :status is decoded.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x7
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
_STREAM = 1
# HPACK static table entries 8..14 are ":status" with these values.
_STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}
# HPACK Huffman codes of the digits (RFC 7541 Appendix B): all a status value needs.
_HUFFMAN_DIGITS = {("0" * 5): "0", "00001": "1", "00010": "2", "011001": "3", "011010": "4",
                   "011011": "5", "011100": "6", "011101": "7", "011110": "8", "011111": "9"}


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big")
            + payload)


def _hpack_int(value: int, prefix_bits: int, high: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([high | value])
    out, value = bytearray([high | limit]), value - limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _hpack_literal(name: bytes, value: bytes) -> bytes:
    """Literal header field without indexing, new name, no Huffman coding."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


def _huffman_digits(data: bytes) -> str | None:
    bits, out, code = "".join(f"{b:08b}" for b in data), [], ""
    for bit in bits:
        code += bit
        if code in _HUFFMAN_DIGITS:
            out.append(_HUFFMAN_DIGITS[code])
            code = ""
        elif len(code) > 6:
            return None
    return "".join(out) if set(code) <= {"1"} else None  # the rest is EOS padding


def _status_of(block: bytes) -> int | None:
    """:status from the first field of a response header block: an indexed static entry, or
    a literal with the static name (value plain or Huffman-coded digits)."""
    if not block:
        return None
    first = block[0]
    if first & 0x80:
        return _STATIC_STATUS.get(first & 0x7F)
    if first & 0xC0 == 0x40:
        name_index = first & 0x3F
    elif first & 0xF0 in (0x00, 0x10):
        name_index = first & 0x0F
    else:
        return None
    if name_index not in _STATIC_STATUS or len(block) < 2:
        return None
    huffman, length = block[1] & 0x80, block[1] & 0x7F
    raw = block[2:2 + length]
    text = _huffman_digits(raw) if huffman else raw.decode("ascii", errors="replace")
    return int(text) if text and text.isdigit() else None


def _unpadded(flags: int, kind: int, payload: bytes) -> bytes:
    if flags & _PADDED and payload:
        payload = payload[1:len(payload) - payload[0]]
    if kind == _HEADERS and flags & _PRIORITY:
        payload = payload[5:]
    return payload


def _next_frame(sock: socket.socket, buffer: bytearray,
                deadline: float) -> tuple[int, int, int, bytes] | None:
    """The next frame (kind, flags, stream, payload), or None when the peer closed."""
    while True:
        if len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) >= 9 + length:
                header, payload = bytes(buffer[:9]), bytes(buffer[9:9 + length])
                del buffer[:9 + length]
                return (header[3], header[4], int.from_bytes(header[5:9], "big") & 0x7FFFFFFF,
                        payload)
        chunk = _recv_before(sock, deadline)
        if not chunk:
            return None
        buffer += chunk


def _grpc_call(sock: socket.socket, probe: Probe, ex: Exchange, deadline: float) -> None:
    message = probe.body or b""
    host = f"[{probe.host}]" if ":" in probe.host else probe.host
    authority = f"{host}:{probe.port}"
    fields = ((b":method", b"POST"), (b":scheme", b"https"), (b":path", probe.path.encode()),
              (b":authority", authority.encode()), (b"content-type", b"application/grpc"),
              (b"te", b"trailers"), (b"user-agent", b"kubeprobe"))
    request = (_H2_PREFACE + _h2_frame(_SETTINGS, 0, 0, b"")
               + _h2_frame(_HEADERS, _END_HEADERS, _STREAM,
                           b"".join(_hpack_literal(n, v) for n, v in fields))
               + _h2_frame(_DATA, _END_STREAM, _STREAM,
                           b"\x00" + len(message).to_bytes(4, "big") + message))
    send_failure: OSError | None = None
    try:
        sock.sendall(request)
    except OSError as exc:
        send_failure = exc  # as for HTTP/1.1: what the server said may still be readable
    buffer, data = bytearray(), bytearray()
    headers_seen, ended, failure = False, False, None
    try:
        while not ended:
            frame = _next_frame(sock, buffer, deadline)
            if frame is None:
                break
            kind, flags, stream, payload = frame
            if kind == _SETTINGS and not flags & _ACK:
                sock.sendall(_h2_frame(_SETTINGS, _ACK, 0, b""))
            elif kind == _GOAWAY and not headers_seen:
                failure = (f"HTTP/2 GOAWAY, error code {int.from_bytes(payload[4:8], 'big')}: "
                           f"{payload[8:200]!r}")
                break
            elif stream == _STREAM and kind == _RST_STREAM:
                failure = f"HTTP/2 RST_STREAM, error code {int.from_bytes(payload[:4], 'big')}"
                break
            elif stream == _STREAM and kind in (_HEADERS, _DATA):
                payload = _unpadded(flags, kind, payload)
                if kind == _HEADERS and not headers_seen:
                    headers_seen = True
                    ex.http_status = _status_of(payload)
                elif kind == _DATA and len(data) <= BODY_LIMIT + 5:
                    data += payload
                ended = bool(flags & _END_STREAM)
    except OSError as exc:
        if not headers_seen:
            _record_failure(ex, exc)
            if ex.error != "tls_alert" and send_failure is not None:
                ex.error, ex.error_detail = None, None
                _record_failure(ex, send_failure)
            return
    if not headers_seen:
        if failure:
            ex.error, ex.error_detail = "protocol", failure
        elif send_failure is not None:
            _record_failure(ex, send_failure)
        else:
            ex.error, ex.error_detail = "eof", "peer closed the connection without an HTTP/2 answer"
        return
    ex.http_reason = http.client.responses.get(ex.http_status or 0, "")
    ex.bytes_received = len(data)
    truncated = not ended
    if len(data) >= 5:
        length = int.from_bytes(data[1:5], "big")
        first = bytes(data[5:5 + length])
        truncated = truncated or length > len(first) or len(first) > BODY_LIMIT
        ex.body = base64.b64encode(first[:BODY_LIMIT]).decode()
    ex.body_truncated = truncated


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
            if probe.grpc:
                _grpc_call(sock, probe, ex, deadline)
            else:
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
