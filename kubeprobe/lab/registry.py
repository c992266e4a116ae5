"""The lab's OCI registry: the CNCF distribution registry (v3) on the node.

    start()     (after kubeadm's certs phase) a TLS certificate from the lab's CA
                (/etc/kubernetes/pki/ca.crt) for the node address and the registry's name,
                htpasswd authentication with a password made per lab (hardened) or none
                (weak, decoy: the same registry, anonymous), the registry process (its PID
                goes into the lab state, so `lab down` kills it), and containerd's hosts.toml
                (its config_path) mapping the name to the node address with the CA.
    populate()  (once the API answers) the lab's trusted images pushed to it and a pod
                pulled from it by the kubelet: with an imagePullSecret (hardened), without
                one (weak); signing and the admission webhook are kubeprobe.lab.signing.

The registry is named registry.kubeprobe.local:5443 in image references (the same string in
every lab, so the hardened trusted-registry policy can name it); containerd reaches it on
the node address through hosts.toml, pods through hostAliases, this host through
`Registry(address=...)`. Everything lives under <lab dir>/registry/; the password only in
registry/credentials.json (0600) and in the pull Secret.
"""
from __future__ import annotations

import base64
import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kubeprobe import images, oci, pki
from kubeprobe.lab import gotools, host

NAME = "registry.kubeprobe.local"
PORT = 5443
HOST = f"{NAME}:{PORT}"
USERNAME = "kubeprobe"
PULL_SECRET = "kubeprobe-registry"
NAMESPACE = "kubeprobe-registry"  # where the pulled-by-the-kubelet pod runs
SAMPLE_REPOSITORY = "kubeprobe/sample"
KUBERNETES_CA = Path("/etc/kubernetes/pki")


class RegistryLabError(RuntimeError):
    """One line: why the lab's registry could not be set up."""


@dataclass
class RegistryInfo:
    """What the lab state records about its registry (no password: see credentials)."""
    host: str
    address: str            # node_ip:port, what this host and containerd connect to
    authenticated: bool
    ca_file: str
    directory: str
    credentials_file: str | None = None
    images: dict | None = None      # name -> digest reference, once populated
    public_keys: dict | None = None  # cosign public keys (PEM): "lab", "foreign"
    signature_admission: dict | None = None  # the webhook that enforces them (hardened)

    def credentials(self) -> tuple[str, str] | None:
        if not self.credentials_file:
            return None
        data = json.loads(Path(self.credentials_file).read_text())
        return data["username"], data["password"]

    def client(self, anonymous: bool = False) -> oci.Registry:
        creds = None if anonymous else self.credentials()
        return oci.Registry(self.host, address=self.address, ca_file=self.ca_file,
                            username=creds[0] if creds else None,
                            password=creds[1] if creds else None)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict | None) -> "RegistryInfo | None":
        return cls(**raw) if raw else None


def htpasswd_line(username: str, password: str) -> str:
    """A bcrypt htpasswd line: distribution's htpasswd access controller takes only bcrypt
    (registry/auth/htpasswd: bcrypt.CompareHashAndPassword)."""
    import bcrypt

    # cost 8: the password is 24 random URL-safe characters, nothing to stretch; the
    # registry checks it on every request.
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=8)).decode()
    return f"{username}:{hashed}\n"


def _lab_ca() -> pki.CertificateAuthority:
    try:
        cert = x509.load_pem_x509_certificate((KUBERNETES_CA / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((KUBERNETES_CA / "ca.key").read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise RegistryLabError(f"the lab's CA is not readable ({exc}); kubeadm's certs phase "
                               "must run first") from None
    return pki.CertificateAuthority("kubernetes", cert, key)


CONFIG = """\
# Written by kubeprobe lab: the distribution registry of the {profile} lab.
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {address}
  secret: {secret}
  tls:
    certificate: {cert}
    key: {key}
  debug:
    addr: ""
{auth}"""

AUTH = """\
auth:
  htpasswd:
    realm: kubeprobe-lab
    path: {htpasswd}
"""

HOSTS_TOML = """\
# Written by kubeprobe lab: {host} is the lab's registry on the node address.
server = "https://{host}"

[host."https://{address}"]
  capabilities = ["pull", "resolve"]
  ca = "{ca}"
"""


def hosts_dir(lab_dir: Path) -> Path:
    """containerd's config_path: one directory per registry host, each with hosts.toml."""
    return lab_dir / "registry" / "hosts"


def start(profile: str, authenticated: bool, node_ip: str, lab_dir: Path, log_dir: Path,
          log=lambda line: None) -> tuple[RegistryInfo, dict[str, dict]]:
    """Write the registry's files, start it and wait until /v2/ answers; returns its info
    and the process to record ({"registry": {"pid", "exe"}})."""
    try:
        binary = gotools.ensure(gotools.REGISTRY, log=log)
    except gotools.ToolUnavailable as exc:
        raise RegistryLabError(str(exc)) from None
    directory = lab_dir / "registry"
    (directory / "data").mkdir(parents=True, exist_ok=True)
    issued = _lab_ca().issue(NAME, client=False, server=True, hosts=(NAME, node_ip), days=7)
    (directory / "ca.crt").write_bytes((KUBERNETES_CA / "ca.crt").read_bytes())
    (directory / "tls.crt").write_bytes(issued.cert_pem)
    (directory / "tls.key").write_bytes(issued.key_pem)
    (directory / "tls.key").chmod(0o600)
    address = f"{node_ip}:{PORT}"
    credentials_file = None
    auth = ""
    if authenticated:
        password = secrets.token_urlsafe(24)
        (directory / "htpasswd").write_text(htpasswd_line(USERNAME, password))
        credentials_file = directory / "credentials.json"
        credentials_file.touch(mode=0o600)
        credentials_file.write_text(json.dumps({"username": USERNAME, "password": password}))
        auth = AUTH.format(htpasswd=directory / "htpasswd")
    (directory / "config.yml").write_text(CONFIG.format(
        profile=profile, data=directory / "data", address=address,
        secret=secrets.token_hex(16), cert=directory / "tls.crt", key=directory / "tls.key",
        auth=auth))
    hosts = hosts_dir(lab_dir) / HOST
    hosts.mkdir(parents=True, exist_ok=True)
    (hosts / "hosts.toml").write_text(HOSTS_TOML.format(host=HOST, address=address,
                                                        ca=directory / "ca.crt"))
    pid = host.start_process([str(binary), "serve", str(directory / "config.yml")],
                             log_dir / "registry.log")
    info = RegistryInfo(HOST, address, authenticated, str(directory / "ca.crt"), str(directory),
                        str(credentials_file) if credentials_file else None)
    client = info.client(anonymous=True)

    def answers():
        if not host.process_alive(pid):
            tail = (log_dir / "registry.log").read_text().strip().splitlines()[-1:]
            raise RegistryLabError(f"the registry exited: {' '.join(tail)}")
        try:
            return client.ping().status in (200, 401)
        except oci.RegistryError:
            return False
    host.wait_for(answers, 30, f"the registry on {address}", interval_s=0.1)
    return info, {"registry": {"pid": pid, "exe": str(binary)}}


def sample_image(name: str, pause_binary: Path, out: Path) -> Path:
    """A tiny runnable image: the lab's static pause binary plus a file naming the sample
    (so each sample has its own digest)."""
    return images.save_image(f"kubeprobe.local/sample:{name}", {
        "pause": images.File(host_path=pause_binary, mode=0o755),
        "kubeprobe-sample": f"{name}\n".encode()}, out, entrypoint=["/pause"])


def push(info: RegistryInfo, tar: Path, repository: str, tag: str) -> str:
    """Push a docker-archive to the lab registry; returns the digest reference by name."""
    client = info.client()
    return client.reference(repository, client.push_archive(tar, repository, tag))


def docker_config(info: RegistryInfo) -> dict:
    """A docker config.json for the registry (empty `auths` when it is anonymous)."""
    creds = info.credentials()
    if creds is None:
        return {"auths": {}}
    auth = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
    return {"auths": {host_: {"username": creds[0], "password": creds[1], "auth": auth}
                      for host_ in (info.host, info.address)}}


def pull_secret_manifest(info: RegistryInfo, namespace: str) -> dict:
    config = json.dumps(docker_config(info)).encode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": PULL_SECRET, "namespace": namespace},
            "data": {".dockerconfigjson": base64.b64encode(config).decode()}}


def puller_manifests(info: RegistryInfo, image: str) -> list[dict]:
    """A namespace and a restricted pod running `image` from the lab registry: pulled by the
    kubelet with the pull Secret when the registry wants credentials, without one when not."""
    docs: list[dict] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}]
    spec: dict = {
        "containers": [{"name": "main", "image": image, "imagePullPolicy": "Always",
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "runAsNonRoot": True, "runAsUser": 65532,
                                            "capabilities": {"drop": ["ALL"]},
                                            "seccompProfile": {"type": "RuntimeDefault"}}}],
        "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 0}
    if info.authenticated:
        docs.append(pull_secret_manifest(info, NAMESPACE))
        spec["imagePullSecrets"] = [{"name": PULL_SECRET}]
    docs.append({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "registry-puller", "namespace": NAMESPACE,
                              "labels": {"app.kubernetes.io/part-of": "kubeprobe-lab"}},
                 "spec": spec})
    return docs


def apply(kubectl, docs: list[dict], what: str) -> None:
    """`kubectl apply -f -` of `docs` (kubectl: the lab's runner, returns CompletedProcess)."""
    body = "\n---\n".join(json.dumps(d) for d in docs)
    proc = kubectl("apply", "-f", "-", input=body, check=False)
    if proc.returncode != 0:
        raise RegistryLabError(f"kubectl apply of {what} failed: "
                               f"{(proc.stderr or proc.stdout).strip()[-300:]}")


def wait_pulled(kubectl, namespace: str, pod: str, deadline_s: float = 90) -> str:
    """Wait until the kubelet pulled the pod's image and the pod runs; returns the imageID the
    kubelet reports (the registry digest). A pull error stops at once, with its message."""
    def pulled():
        proc = kubectl("-n", namespace, "get", "pod", pod, "-o", "json", check=False)
        if proc.returncode != 0:
            return None
        status = json.loads(proc.stdout).get("status", {})
        for c in status.get("containerStatuses") or []:
            waiting = (c.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
                raise RegistryLabError(f"the kubelet could not pull {c.get('image')}: "
                                       f"{waiting.get('reason')}: {waiting.get('message', '')}")
            if (c.get("state") or {}).get("running") and c.get("imageID"):
                return c["imageID"]
        return None
    return host.wait_for(pulled, deadline_s, f"pod {namespace}/{pod} to pull and run", interval_s=0.5)


def populate(info: RegistryInfo, kubectl, pause_binary: Path, work: Path,
             extra_images: list[Path], log=lambda line: None) -> RegistryInfo:
    """Push the lab's trusted images (the signed samples of kubeprobe.lab.signing, every extra
    image tar such as the agent) and have the kubelet pull one; returns `info` with `images`
    (name -> digest reference) and `public_keys` filled in."""
    from kubeprobe.lab import signing
    signed = signing.sign_samples(info, pause_binary, work, log=log)
    pushed = dict(signed["images"])
    for tar in extra_images:
        repository, tag = _repository_of(tar)
        pushed[repository] = push(info, tar, repository, tag)
    apply(kubectl, puller_manifests(info, pushed["trusted"]), "the registry puller pod")
    image_id = wait_pulled(kubectl, NAMESPACE, "registry-puller")
    log(f"registry: the kubelet pulled {pushed['trusted']} "
        f"({'with the pull Secret' if info.authenticated else 'anonymously'}; {image_id})")
    info.images = pushed
    info.public_keys = {"lab": signed["lab_public_key"], "foreign": signed["foreign_public_key"]}
    return info


def _repository_of(tar: Path) -> tuple[str, str]:
    """The lab-registry repository and tag for a docker-archive's first RepoTag
    (kubeprobe.local/agent:abc -> kubeprobe/agent, abc)."""
    import tarfile
    with tarfile.open(tar) as archive:
        entry = json.load(archive.extractfile("manifest.json"))[0]
    ref = images.normalize_ref((entry.get("RepoTags") or ["kubeprobe.local/image:latest"])[0])
    name, tag = ref.rsplit(":", 1)
    path = name.split("/", 1)[1] if "/" in name else name
    if not path.startswith("kubeprobe/"):
        path = "kubeprobe/" + path.rsplit("/", 1)[-1]
    return path, tag
