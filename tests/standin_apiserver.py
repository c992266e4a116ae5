"""A stand-in for the Kubernetes API server, for the exit-code self-tests. It is NOT an API
server: over real TLS it answers the few requests a kubeprobe run makes around one attack
(/version, the node list, kube-system pods, creating and deleting a ConfigMap) with fixed
JSON, and it can be told to stop answering when a chosen request arrives. Stopping closes the
listener and drops that request's connection unanswered: from the runner this is an API server
that went away mid-run (the request is cut, every later connection is refused).
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from kubeprobe import pki

VERSION = {"major": "1", "minor": "34", "gitVersion": "v1.34.0-standin", "gitCommit": "0",
           "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24",
           "compiler": "gc", "platform": "linux/amd64"}
NODE = {"metadata": {"name": "standin-node"},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": 1}}}}
ETCD_POD = {"metadata": {"name": "etcd-standin-node", "namespace": "kube-system",
                         "labels": {"component": "etcd"}},
            "spec": {"nodeName": "standin-node",
                     "containers": [{"name": "etcd", "image": "standin/etcd",
                                     "command": ["etcd", "--name=standin"]}]},
            "status": {"hostIP": "127.0.0.1", "phase": "Running"}}

KUBE_SYSTEM = {"kind": "Namespace", "apiVersion": "v1",
               "metadata": {"name": "kube-system", "uid": "5tand1n0-0000-4000-8000-000000000001"}}
SELF_SUBJECT_REVIEW = {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                       "metadata": {}, "status": {"userInfo": {
                           "username": "standin-runner",
                           "groups": ["standin:admins", "system:authenticated"]}}}

# (method, path, headers) -> True to stop answering at this request
StopRule = Callable[[str, str, dict], bool]


def kubeconfig_text(url: str, token: str = "standin-token") -> str:
    return f"""apiVersion: v1
kind: Config
clusters:
- name: standin
  cluster: {{server: "{url}", insecure-skip-tls-verify: true}}
users:
- name: runner
  user: {{token: {token}}}
contexts:
- name: standin
  context: {{cluster: standin, user: runner}}
current-context: standin
"""


@dataclass
class StandInApiServer:
    stop_on: StopRule | None = None
    etcd_pod: bool = False               # list a kubeadm-style etcd pod in kube-system
    requests: list[tuple[str, str]] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> "StandInApiServer":
        ca = pki.CertificateAuthority.create("standin-apiserver-ca")
        issued = ca.issue("standin-apiserver", server=True, client=False, hosts=("127.0.0.1",))
        context = issued.server_context()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "standin.kubeconfig"
        path.write_text(kubeconfig_text(self.url))
        return path

    def stop(self) -> None:
        """Stop answering: close the listener (later connections are refused)."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        threading.Thread(target=self._close, daemon=True).start()
        self._thread.join(timeout=5)

    def _close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, method: str, path: str) -> tuple[int, dict]:
        route = urlsplit(path).path.rstrip("/") or "/"
        query = urlsplit(path).query
        if method == "GET" and route == "/version":
            return 200, VERSION
        if method == "GET" and route == "/api/v1/namespaces/kube-system":
            return 200, KUBE_SYSTEM
        if method == "POST" and route == "/apis/authentication.k8s.io/v1/selfsubjectreviews":
            return 201, SELF_SUBJECT_REVIEW
        if method == "GET" and route == "/api/v1/nodes":
            return 200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": [NODE]}
        if method == "GET" and route.endswith("/pods"):
            items = [ETCD_POD] if (self.etcd_pod and route == "/api/v1/namespaces/kube-system/pods"
                                   and "component%3Detcd" in query) else []
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        if method == "POST" and route.endswith("/configmaps"):
            return 201, {"kind": "ConfigMap", "apiVersion": "v1",
                         "metadata": {"name": "kp-standin", "namespace": "default"}}
        if method == "DELETE":
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                     "reason": "NotFound", "code": 404,
                     "message": f"the stand-in does not serve {method} {route}"}


def _handler(standin: StandInApiServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _serve(self) -> None:
            standin.requests.append((self.command, self.path))
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if standin.stopped.is_set() or (standin.stop_on is not None and standin.stop_on(
                    self.command, self.path, dict(self.headers))):
                standin.stop()
                self.close_connection = True  # no answer: the connection just ends
                return
            status, body = standin.answer(self.command, self.path)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve
    return Handler
