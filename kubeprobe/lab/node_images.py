"""The images kubeadm's manifests reference, built from the lab's own binaries.

Names come from `kubeadm config images list`, so they match the static pod manifests and
the kube-proxy DaemonSet exactly. Tars are cached next to the binaries, keyed by the build
stamp, and rebuilt only when the binaries change.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from kubeprobe import images
from kubeprobe.lab.host import run

# kube-proxy (iptables mode) execs these; they come from the host, with their libraries
# and the dlopen()ed xtables extensions.
IPTABLES_PROGRAMS = ("iptables", "iptables-save", "iptables-restore",
                     "ip6tables", "ip6tables-save", "ip6tables-restore")
XTABLES_EXTENSIONS = Path("/usr/lib/x86_64-linux-gnu/xtables")


def kubeadm_image_list(kubeadm: Path, config: Path) -> list[str]:
    return run([str(kubeadm), "config", "images", "list", "--config", str(config)]).stdout.split()


def _repo_and_name(ref: str) -> str:
    """registry.k8s.io/kube-apiserver:v1.34.10 -> kube-apiserver"""
    return ref.rsplit("/", 1)[-1].split(":", 1)[0]


def image_files(ref: str, stamp: dict) -> dict | None:
    """Files, entrypoint and cmd for one kubeadm image; None for images the lab skips."""
    k8s_bin = Path(stamp["k8s_bin"])
    etcd_bin = Path(stamp["etcd"]).parent
    name = _repo_and_name(ref)
    if name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        return {"files": {f"/usr/local/bin/{name}": k8s_bin / name}, "entrypoint": None}
    if name == "kube-proxy":
        files = {"/usr/local/bin/kube-proxy": k8s_bin / "kube-proxy"}
        for program in IPTABLES_PROGRAMS:
            host = shutil.which(program)
            if host is None:
                raise RuntimeError(f"{program} is not installed on the host (apt-get install -y iptables)")
            files.update(images.host_program_files(host))
        files.update(images.host_program_files(XTABLES_EXTENSIONS))
        return {"files": files, "entrypoint": None}
    if name == "etcd":
        return {"files": {"/usr/local/bin/etcd": etcd_bin / "etcd",
                          "/usr/local/bin/etcdctl": etcd_bin / "etcdctl"}, "entrypoint": None}
    if name == "pause":
        return {"files": {"/pause": Path(stamp["pause"])}, "entrypoint": ["/pause"]}
    return None  # coredns: the lab skips the addon/coredns phase


def build_node_images(stamp: dict, kubeadm_config: Path, out_dir: Path) -> list[Path]:
    """Docker-archive tars for every image kubeadm will ask for (except coredns)."""
    kubeadm = Path(stamp["k8s_bin"]) / "kubeadm"
    key = hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:12]
    tars = []
    for ref in kubeadm_image_list(kubeadm, kubeadm_config):
        spec = image_files(ref, stamp)
        if spec is None:
            continue
        tar = out_dir / key / (ref.replace("/", "_").replace(":", "_") + ".tar")
        if not tar.exists():
            images.save_image(ref, spec["files"], tar, entrypoint=spec["entrypoint"])
        tars.append(tar)
    return tars
