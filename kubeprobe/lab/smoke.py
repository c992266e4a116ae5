"""End-to-end smoke test of a running lab: a pod runs and reaches the kubelet port on the
node IP, a ClusterIP Service answers from a pod, and a NodePort Service answers on the node
IP (unless the profile's admission policies forbid NodePorts, which is then reported).

The test image is busybox-static from the host, built with kubeprobe.images and referenced
by digest under kubeprobe.local/ so the hardened profile's image policies admit it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kubeprobe import images
from kubeprobe.lab import build, cluster, host

NAMESPACE = "kubeprobe-lab-smoke"
IMAGE = "kubeprobe.local/lab-smoke:1"


@dataclass
class SmokeResult:
    kubelet_port_reachable: bool = False
    cluster_ip_answers: bool = False
    node_port_answers: bool | None = None  # None: NodePort refused by admission policy
    notes: list[str] = field(default_factory=list)


def smoke_image(out_dir: Path) -> Path:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).is_file():
        raise RuntimeError("busybox-static is not installed (apt-get install -y busybox-static)")
    return images.save_image(IMAGE, {"/bin/busybox": Path(busybox), "/bin/sh": images.File(symlink="busybox")},
                             out_dir / "lab-smoke.tar", entrypoint=["/bin/busybox"])


def run_smoke(state: cluster.LabState, timeout: float = 60) -> SmokeResult:
    kubectl = [str(Path(build.read_stamp(version=state.k8s_version)["k8s_bin"]) / "kubectl"), "--kubeconfig", str(state.kubeconfig)]
    sock = str(cluster.containerd_socket())
    tar = smoke_image(state.lab_dir / "smoke")
    image = next(r for r in images.import_into_containerd(tar, sock) if "@sha256:" in r)
    image = image.removeprefix("docker.io/")
    result = SmokeResult()

    def k(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(kubectl + list(args), input=stdin, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def pod(name: str, command: list[str], labels: dict | None = None) -> dict:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels or {}},
                "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                         "automountServiceAccountToken": False,
                         "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never",
                                         "command": command,
                                         "securityContext": {"allowPrivilegeEscalation": False}}]}}

    k("create", "namespace", NAMESPACE, check=False)
    try:
        server = pod("server", ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/"], {"app": "smoke"})
        client = pod("client", ["/bin/sh", "-c", f"/bin/busybox nc -w 3 {state.node_ip} 10250 </dev/null "
                                                 "&& echo KUBELET-OK; sleep 3600"])
        k("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": [server, client]}))
        svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "smoke", "namespace": NAMESPACE},
               "spec": {"selector": {"app": "smoke"}, "ports": [{"port": 80, "targetPort": 8080}]}}
        k("apply", "-f", "-", stdin=json.dumps(svc))
        node_port_svc = dict(svc, metadata={"name": "smoke-np", "namespace": NAMESPACE},
                             spec=dict(svc["spec"], type="NodePort"))
        np = k("apply", "-f", "-", stdin=json.dumps(node_port_svc), check=False)
        if np.returncode != 0:
            result.notes.append("NodePort refused: " + np.stderr.strip().splitlines()[-1])
        k("-n", NAMESPACE, "wait", "--for=condition=Ready", "pod/server", "pod/client", f"--timeout={int(timeout)}s")

        result.kubelet_port_reachable = bool(host.wait_for(
            lambda: "KUBELET-OK" in k("-n", NAMESPACE, "logs", "client", check=False).stdout,
            timeout, "the client pod to reach the kubelet port"))
        cluster_ip = k("-n", NAMESPACE, "get", "svc", "smoke", "-o", "jsonpath={.spec.clusterIP}").stdout
        # busybox-static's wget crashes in getaddrinfo (static glibc); nc speaks HTTP fine.
        http_get = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 3 {cluster_ip} 80"
        result.cluster_ip_answers = bool(host.wait_for(lambda: "HTTP/1" in k(
            "-n", NAMESPACE, "exec", "client", "--", "/bin/sh", "-c", http_get, check=False).stdout,
            timeout, "the ClusterIP service"))
        if np.returncode == 0:
            port = k("-n", NAMESPACE, "get", "svc", "smoke-np", "-o", "jsonpath={.spec.ports[0].nodePort}").stdout
            result.node_port_answers = bool(host.wait_for(
                lambda: _http_ok(f"http://{state.node_ip}:{port}/"), timeout, "the NodePort service"))
    finally:
        k("delete", "namespace", NAMESPACE, "--timeout=60s", check=False)
    return result


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as exc:  # httpd answered (e.g. 403/404): the port works
        return exc.code < 500
    except OSError:
        return False
