"""A stand-in for the kubelet's HTTPS API (and its read-only and health ports), for the
classification self-tests. It is NOT a kubelet: it answers the way a real kubelet answers in
each authentication/authorization configuration (FACTS.md, kubelet), over real TLS sockets.

Like the kubelet, it never rejects a client certificate in the TLS handshake (the kubelet
uses RequestClientCert and verifies later, in authentication): a foreign certificate simply
fails authentication. Python's ssl cannot request-without-verifying, so the server does not
ask for certificates at all; from the attacker's side the answer is the same (401 or 403).
"""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kubeprobe import pki

# mode -> how the kubelet is configured
MODES = {
    "hardened":            {"anonymous": False, "webhook_authn": True, "authz": "Webhook"},
    "anonymous_webhook":   {"anonymous": True, "webhook_authn": True, "authz": "Webhook"},
    "open":                {"anonymous": True, "webhook_authn": True, "authz": "AlwaysAllow"},
    "no_token_authn":      {"anonymous": False, "webhook_authn": False, "authz": "Webhook"},
}
RIGHTLESS_TOKEN = "token-of-a-serviceaccount-without-node-rights"
RIGHTLESS_USER = "system:serviceaccount:kp:rightless"
PODS = {"kind": "PodList", "apiVersion": "v1", "metadata": {},
        "items": [{"metadata": {"name": "etcd-node", "namespace": "kube-system"}},
                  {"metadata": {"name": "app-0", "namespace": "default"}}]}


def _user(mode: dict, headers) -> str | None:
    auth = headers.get("Authorization", "")
    if auth.startswith("Bearer ") and mode["webhook_authn"]:
        return RIGHTLESS_USER if auth[7:] == RIGHTLESS_TOKEN else None
    return "system:anonymous" if mode["anonymous"] else None


def _handler(mode: dict, secure: bool):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _send(self, status: int, body: str, ctype: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/healthz":
                return self._send(200, "ok")
            if secure:
                user = _user(mode, self.headers)
                if user is None:
                    return self._send(401, "Unauthorized")
                if mode["authz"] == "Webhook":
                    return self._send(403, f"Forbidden (user={user}, verb=get, "
                                           f"resource=nodes, subresource=proxy)")
            if self.path.startswith("/configz"):
                body = {"kubeletconfig": {"authentication": {"anonymous": {
                    "enabled": mode["anonymous"]}}, "authorization": {"mode": mode["authz"]}}}
                return self._send(200, json.dumps(body), "application/json")
            if self.path.startswith(("/pods", "/runningpods")):
                return self._send(200, json.dumps(PODS), "application/json")
            return self._send(404, "404 page not found")
    return Handler


@dataclass
class FakeKubelet:
    port: int            # HTTPS API (10250 role)
    read_only_port: int  # plain HTTP read-only API (10255 role)


@contextmanager
def serve(mode_name: str):
    """Start the HTTPS API and the read-only port for one configuration."""
    mode = MODES[mode_name]
    ca = pki.CertificateAuthority.create("kubelet-ca")
    server_cert = ca.issue("fake-kubelet", server=True, client=False, hosts=("127.0.0.1",))
    context = server_cert.server_context()
    secure = ThreadingHTTPServer(("127.0.0.1", 0), _handler(mode, True))
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    plain = ThreadingHTTPServer(("127.0.0.1", 0), _handler(mode, False))
    threads = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True) for s in (secure, plain)]
    for t in threads:
        t.start()
    try:
        yield FakeKubelet(secure.server_address[1], plain.server_address[1])
    finally:
        for s in (secure, plain):
            s.shutdown()
            s.server_close()
