"""A real CNCF distribution registry (v3, kubeprobe/lab/gotools.py builds it) for the
self-tests: on a free loopback port, TLS from a throwaway CA, htpasswd authentication or
anonymous, exactly as the lab writes its configuration (kubeprobe/lab/registry.py)."""
from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubeprobe import oci, pki
from kubeprobe.lab import gotools, registry
from kubeprobe.waiting import wait_for
from tests.realetcd import free_port


@dataclass
class RunningRegistry:
    host: str                      # 127.0.0.1:PORT
    ca_file: Path
    credentials: tuple[str, str] | None
    process: subprocess.Popen
    log: Path

    def client(self, anonymous: bool = False) -> oci.Registry:
        creds = None if anonymous else self.credentials
        return oci.Registry(self.host, ca_file=self.ca_file,
                            username=creds[0] if creds else None,
                            password=creds[1] if creds else None)


def registry_binary() -> Path:
    if gotools.stamp(gotools.REGISTRY) is None:
        pytest.fail("the distribution registry is not built: python3 -m kubeprobe.cli lab tools "
                    "registry (.ci/install builds it)")
    return gotools.REGISTRY.binary


# distribution's `silly` access controller: it challenges a request without an Authorization
# header (Bearer, this realm) and grants any request that has one; "for testing", its source
# says. It stands for a registry (or a front) that only checks that a credential is sent.
SILLY_AUTH = """\
auth:
  silly:
    realm: https://127.0.0.1:9/token
    service: kubeprobe-selftest
"""


def start(directory: Path, authenticated: bool, silly: bool = False,
          data: Path | None = None) -> RunningRegistry:
    """`silly`: distribution's any-credential access controller instead (no credentials to
    push with: give it `data`, another registry's storage, to serve what was pushed there)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = pki.CertificateAuthority.create("kubeprobe-selftest-registry-ca")
    server = ca.issue("registry", client=False, server=True, hosts=("127.0.0.1",))
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    (directory / "tls.crt").write_bytes(server.cert_pem)
    (directory / "tls.key").write_bytes(server.key_pem)
    credentials = None
    auth = ""
    if authenticated:
        credentials = ("selftest", secrets.token_urlsafe(16))
        (directory / "htpasswd").write_text(registry.htpasswd_line(*credentials))
        auth = registry.AUTH.format(htpasswd=directory / "htpasswd")
    elif silly:
        auth = SILLY_AUTH
    port = free_port()
    (directory / "config.yml").write_text(registry.CONFIG.format(
        profile="selftest", data=data or directory / "data", address=f"127.0.0.1:{port}",
        secret=secrets.token_hex(8), cert=directory / "tls.crt", key=directory / "tls.key",
        auth=auth))
    log = directory / "registry.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([str(registry_binary()), "serve",
                                    str(directory / "config.yml")], stdout=out,
                                   stderr=subprocess.STDOUT)
    running = RunningRegistry(f"127.0.0.1:{port}", directory / "ca.crt", credentials, process,
                              log)
    probe = running.client(anonymous=True)

    def answers():
        if process.poll() is not None:
            raise RuntimeError(f"registry exited: {log.read_text()[-500:]}")
        try:
            # its own answer, no challenge followed (silly's realm is nowhere)
            return probe.request("GET", "/v2/", scope="", anonymous=True).status in (200, 401)
        except oci.RegistryError:
            return False
    try:
        wait_for(answers, 20, "the self-test registry", interval_s=0.05)
    except BaseException:
        stop(running)                  # never left serving behind a failed start
        raise
    return running


def stop(running: RunningRegistry) -> None:
    running.process.terminate()
    try:
        running.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()
