"""Real TLS and HTTP servers on loopback (Python `ssl` / OpenSSL), configured the ways a probe
must tell apart: a client certificate required under TLS 1.2 or TLS 1.3 only, a cipher nobody
offers, an SNI name required, and a 200 whose JSON body is larger than the probes read.

Nothing here imitates a component: each server really negotiates TLS and really answers HTTP.
"""
from __future__ import annotations

import json
import os
import socket
import socketserver
import ssl
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from kubeprobe import pki

# An AES-CCM suite: OpenSSL's client defaults exclude it and Go does not implement it, so a
# TLS 1.2 server restricted to it fails every handshake with handshake_failure.
CIPHER_NOBODY_OFFERS = "ECDHE-ECDSA-AES256-CCM"
SNI_NAME = "localhost"

Responder = Callable[[str, str], tuple[int, str, bytes]]  # (method, path) -> status, type, body


def answer_ok(method: str, path: str) -> tuple[int, str, bytes]:
    return 200, "application/json", json.dumps({"method": method, "path": path}).encode()


def big_secret_list(items: int = 300) -> bytes:
    """A SecretList well over 64 KiB, with values that must never reach the evidence."""
    return json.dumps({"kind": "SecretList", "apiVersion": "v1", "metadata": {},
                       "items": [{"metadata": {"name": f"secret-{i}", "namespace": "default"},
                                  "data": {"password": "c2VjcmV0LXZhbHVl" * 20}}
                                 for i in range(items)]}).encode()


@dataclass
class Pki:
    """The server's CA (which also signs the trusted client certificate) and a foreign CA."""
    ca: pki.CertificateAuthority
    server: pki.Issued
    directory: str

    @classmethod
    def create(cls, directory: str) -> "Pki":
        ca = pki.CertificateAuthority.create("tlsservers-ca")
        made = cls(ca, ca.issue("tls-server", server=True, client=False,
                                hosts=("127.0.0.1", SNI_NAME)), directory)
        for name, data in (("ca.crt", ca.cert_pem), ("server.crt", made.server.cert_pem),
                           ("server.key", made.server.key_pem)):
            path = os.path.join(directory, name)
            with open(path, "wb") as fh:
                fh.write(data)
        return made

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def trusted_client(self):
        return self.ca.issue("trusted-client").client_cert("client certificate (server's CA)")


@dataclass
class RunningServer:
    port: int
    tls: bool


def server_context(certs: Pki, *, require_client_cert: bool, request_client_cert: bool = False,
                   tls13_only: bool = False,
                   ciphers: str | None = None, sni_name: str | None = None,
                   sni_alert: int = ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.path("server.crt"), certs.path("server.key"))
    if tls13_only:
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    if ciphers:
        context.maximum_version = ssl.TLSVersion.TLSv1_2  # 1.3 suites are not set_ciphers'
        context.set_ciphers(ciphers)
    if require_client_cert or request_client_cert:
        # CERT_OPTIONAL asks for a certificate (CertificateRequest) and goes on without one.
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        context.load_verify_locations(certs.path("ca.crt"))
    if sni_name:
        def check_name(_sock, name, _context):
            # A real misconfiguration answers handshake_failure, which looks like a refused
            # client certificate: exactly what a probe must not mistake it for.
            return None if name == sni_name else sni_alert
        context.sni_callback = check_name
    return context


def _read_request(conn: socket.socket) -> tuple[str, str]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return "", ""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                   if k.strip().lower() == "content-length"), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    method, path = (lines[0].split(" ") + ["", ""])[:2]
    return method, path


@contextmanager
def serve(context: ssl.SSLContext | None, respond: Responder = answer_ok,
          reset_after_handshake: bool = False) -> Iterator[RunningServer]:
    """One threaded server on 127.0.0.1: TLS with `context` (handshake in the connection's own
    thread), plain HTTP without. Failed handshakes are the point, so they are not errors.
    `reset_after_handshake`: close with an RST and no alert once the handshake is done, as a
    refusal whose alert lost the race against the close looks from the client."""
    import struct

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            conn = self.request
            try:
                if context is not None:
                    conn = context.wrap_socket(conn, server_side=True)
                if reset_after_handshake:
                    self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                            struct.pack("ii", 1, 0))
                    return
                method, path = _read_request(conn)
                if not method:
                    return
                status, ctype, body = respond(method, path)
                conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\n"
                             f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                             .encode() + body)
            except (ssl.SSLError, OSError):
                pass
            finally:
                conn.close()

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield RunningServer(server.server_address[1], context is not None)
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def pki_dir() -> Iterator[Pki]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Pki.create(tmp)


CONFIGURATIONS = {
    # name -> keyword arguments of server_context
    "mtls_tls12": {"require_client_cert": True},
    "mtls_tls13_only": {"require_client_cert": True, "tls13_only": True},
    "cipher_mismatch": {"require_client_cert": True, "ciphers": CIPHER_NOBODY_OFFERS},
    "sni_required": {"require_client_cert": True, "sni_name": SNI_NAME},
    # OpenSSL's reason for this alert, TLSV1_UNRECOGNIZED_NAME, has no "ALERT" in it.
    "sni_unrecognized_name": {"require_client_cert": True, "sni_name": SNI_NAME,
                              "sni_alert": ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME},
    "tls_no_client_cert": {"require_client_cert": False},
}


@contextmanager
def serve_configuration(certs: Pki, name: str, respond: Responder = answer_ok
                        ) -> Iterator[RunningServer]:
    with serve(server_context(certs, **CONFIGURATIONS[name]), respond) as running:
        yield running


@contextmanager
def serve_closing_mid_handshake(reset: bool = False) -> Iterator[RunningServer]:
    """A listener that reads the ClientHello and closes (with an RST when `reset`): a TLS peer
    dying mid-handshake, without any alert."""
    import struct

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(4096)
            if reset:
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
            self.request.close()

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield RunningServer(server.server_address[1], True)
    finally:
        server.shutdown()
        server.server_close()
