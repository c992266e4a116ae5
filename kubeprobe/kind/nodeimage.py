"""An offline kind node image for the lab's Kubernetes version, built from the lab's binaries.

`kind build node-image` cannot work offline (it pulls a base image and fetches every image
that is not in its archives), so the image is assembled here, following kind v0.33.0's
images/base/Dockerfile and pkg/build/nodeimage:

  1. base: Debian bookworm (systemd 252: cgroup v1 hosts) from debootstrap with kind's package
     list, kind's images/base/files (entrypoint, units, containerd config), the Dockerfile's
     unit clean-up; cached as a tar under ~/.cache/kubeprobe/kind/.
  2. node: containerd/ctr/shim, runc (libseccomp), crictl, the CNI plugins kindnetd uses, the
     lab's kubeadm/kubelet/kubectl; /kind/version, kind's CNI and storage manifests;
     cri-base.json (`ctr oci spec` + kind's createContainer hook, no rlimits); units enabled
     with `systemctl --root`.
  3. images, imported with kind's own command into the rootfs's containerd store (a containerd
     run on the host with --root there, namespace k8s.io, pinned, not unpacked): every image
     `kubeadm config images list` names (control plane, etcd, pause, coredns) made from the
     lab's binaries, plus kindnetd, local-path-provisioner and local-path-helper under the
     exact tags kind v0.33.0 compiles in.
  4. `docker import` with kind's ENTRYPOINT, ENV and STOPSIGNAL, tagged
     kubeprobe/kind-node:<k8s version>-<key>; the key digests every input, so a second call
     finds the image and builds nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from kubeprobe import images
from kubeprobe.kind import tools
from kubeprobe.lab import node_images
from kubeprobe.gotools import cache_root

KIND_SRC_VERSION = tools.KIND.version
# kind v0.33.0 pkg/build/nodeimage/const_cni.go and const_storage.go
KINDNETD_IMAGE = "docker.io/kindest/kindnetd:v20260820-69b56db7"
STORAGE_PROVISIONER_IMAGE = "docker.io/kindest/local-path-provisioner:v20260820-69b56db7"
STORAGE_HELPER_IMAGE = "docker.io/kindest/local-path-helper:v20260131-7181c60a"
REPOSITORY = "kubeprobe/kind-node"
UPSTREAM_DEFAULT = ("kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc"
                    "4f5de89adff580ae5")  # kind v0.33.0's default node image
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# kind v0.33.0 images/base/Dockerfile's list, minus what a cgroup v1/offline node never uses
# (fuse-overlayfs: rootless; nfs-common, open-iscsi, e2fsprogs, curl, git)
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "conntrack", "iptables", "nftables",
                 "iproute2", "ethtool", "util-linux", "mount", "kmod", "libseccomp2", "pigz",
                 "bash", "ca-certificates", "jq", "procps")
CNI_PLUGINS = ("host-local", "loopback", "ptp", "portmap")
HOST_CNI_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
ENTRYPOINT = ["/usr/local/bin/entrypoint", "/sbin/init"]


class NodeImageError(RuntimeError):
    """One line: why the node image cannot be built."""


def kind_source() -> Path:
    """kind's module directory (downloaded by its build), for images/base/files and manifests."""
    cache = cache_root() / "gomod"
    src = cache / f"sigs.k8s.io/kind@{KIND_SRC_VERSION}"
    if not src.is_dir():
        env = tools.go_env(tools.KIND)
        subprocess.run(["go", "mod", "download", f"sigs.k8s.io/kind@{KIND_SRC_VERSION}"],
                       env=env, cwd=tempfile.gettempdir(), capture_output=True, timeout=900)
    if not src.is_dir():
        raise NodeImageError(f"kind's source {src} is missing (go mod download failed)")
    return src


def _run(cmd: list[str], what: str, timeout: float = 1800, **kw) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)
    except FileNotFoundError:
        raise NodeImageError(f"{what}: {cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise NodeImageError(f"{what}: did not finish in {timeout:.0f}s") from None
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace") if isinstance(done.stderr, bytes) \
            else done.stderr
        raise NodeImageError(f"{what} failed: " + " | ".join(err.strip().splitlines()[-4:]))
    return done


def _kind_go_const(path: Path, start: str) -> str:
    """A Go raw-string constant (`...`) from kind's source, e.g. the CNI manifest."""
    text = path.read_text()
    at = text.index(start)
    begin = text.index("`", at) + 1
    parts, i = [], begin
    # kind splices image constants in with "` + name + `": resolve the two it uses
    consts = {"kindnetdImage": KINDNETD_IMAGE, "storageProvisionerImage":
              STORAGE_PROVISIONER_IMAGE, "storageHelperImage": STORAGE_HELPER_IMAGE}
    while True:
        end = text.index("`", i)
        parts.append(text[i:end])
        rest = text[end + 1:].lstrip()
        if not rest.startswith("+"):
            break
        name, _, tail = rest[1:].lstrip().partition("+")
        parts.append(consts[name.strip()])
        i = text.index("`", end + 1 + len(rest[:rest.index(tail)])) + 1
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# 1. base rootfs

def base_dir() -> Path:
    return cache_root() / "kind"


def base_key() -> str:
    src = kind_source() / "images/base/files"
    h = hashlib.sha256(json.dumps([SUITE, MIRROR, BASE_PACKAGES, KIND_SRC_VERSION]).encode())
    for path in sorted(src.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(src)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def base_rootfs(log=lambda line: None) -> Path:
    """A tar of the bookworm base rootfs with kind's base files; debootstrap the first time."""
    out = base_dir() / f"base-{SUITE}-{base_key()}.tar"
    if out.is_file():
        return out
    if shutil.which("debootstrap") is None:
        raise NodeImageError("debootstrap is not installed (apt-get install debootstrap)")
    base_dir().mkdir(parents=True, exist_ok=True)
    log(f"debootstrap {SUITE} (minbase + {len(BASE_PACKAGES)} packages) from {MIRROR}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kubeprobe-kind-base-", dir=base_dir()) as tmp:
        root = Path(tmp) / "rootfs"
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
              SUITE, str(root), MIRROR], "debootstrap", timeout=3600)
        files = kind_source() / "images/base/files"
        _run(["cp", "-a", "--no-preserve=ownership", f"{files}/.", str(root)],
             "copying kind's base files")
        for rel in ("usr/local/bin/entrypoint", "usr/local/bin/clean-install",
                    "kind/bin/mount-product-files.sh", "kind/bin/create-kubelet-cgroup-v2.sh",
                    "kind/bin/undo-mount-hacks.sh"):
            if (root / rel).exists():
                (root / rel).chmod(0o755)
        for d in ("kind", "kind/bin"):
            (root / d).chmod(0o755)
        # images/base/Dockerfile: unit clean-up, journald, /sbin/init
        script = """
set -e
find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
      /lib/systemd/system/local-fs.target.wants/* \
      /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
echo ReadKMsg=no >> /etc/systemd/journald.conf
ln -sf /usr/lib/systemd/systemd /sbin/init
mkdir -p /etc/kubernetes/manifests
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/debconf/* /var/log/* /usr/share/doc/* /usr/share/man/*
"""
        _run(["chroot", str(root), "/bin/sh", "-c", script], "cleaning the base rootfs")
        tmp_tar = out.with_suffix(".tar.tmp")
        _run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tmp_tar), "."],
             "packing the base rootfs")
        os.replace(tmp_tar, out)
    log(f"base rootfs {out.name} in {time.monotonic() - started:.0f}s")
    return out


# ---------------------------------------------------------------------------------------------
# 2./3. node

def kubeadm_images(stamp: dict) -> list[str]:
    kubeadm = Path(stamp["k8s_bin"]) / "kubeadm"
    done = _run([str(kubeadm), "config", "images", "list", "--kubernetes-version",
                 stamp["k8s_version"]], "kubeadm config images list")
    return done.stdout.decode().split()


def _host_cni_plugin(name: str) -> Path:
    for d in HOST_CNI_DIRS:
        if (d / name).is_file():
            return d / name
    raise NodeImageError(f"CNI plugin {name} is not installed on the host "
                         f"(apt-get install containernetworking-plugins)")


def _iptables_files() -> dict:
    files = {}
    for program in node_images.IPTABLES_PROGRAMS:
        host = shutil.which(program)
        if host is None:
            raise NodeImageError(f"{program} is not installed on the host (apt-get install "
                                 f"iptables)")
        files.update(images.host_program_files(host))
    files.update(images.host_program_files(node_images.XTABLES_EXTENSIONS))
    return files


def _busybox_files() -> dict:
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        raise NodeImageError("busybox is not installed (apt-get install busybox-static)")
    files = {"/bin/busybox": busybox}
    for applet in ("sh", "mkdir", "rm", "ls", "cat"):
        files[f"/bin/{applet}"] = images.File(symlink="busybox")
    return files


def image_specs(stamp: dict, coredns_dir: Path | None) -> dict[str, dict]:
    """ref -> save_image keyword arguments, for every image the node must hold."""
    specs: dict[str, dict] = {}
    for ref in kubeadm_images(stamp):
        name = ref.rsplit("/", 1)[-1].split(":", 1)[0]
        if name == "coredns":
            if coredns_dir is None:
                continue
            specs[ref] = {"files": {"/coredns": coredns_dir / "coredns"},
                          "entrypoint": ["/coredns"]}
            continue
        spec = node_images.image_files(ref, stamp)
        if spec is None:
            raise NodeImageError(f"no recipe for kubeadm's image {ref}")
        specs[ref] = {"files": spec["files"], "entrypoint": spec["entrypoint"]}
    kindnetd = tools.KINDNETD.dir / "kindnetd"
    specs[KINDNETD_IMAGE] = {"files": {"/bin/kindnetd": kindnetd, **_iptables_files()},
                             "cmd": ["/bin/kindnetd"]}
    provisioner = tools.LOCAL_PATH.dir / "local-path-provisioner"
    specs[STORAGE_PROVISIONER_IMAGE] = {
        "files": {"/usr/bin/local-path-provisioner": provisioner, **_busybox_files()},
        "cmd": ["local-path-provisioner"]}
    specs[STORAGE_HELPER_IMAGE] = {"files": _busybox_files(), "cmd": ["/bin/sh"]}
    return specs


def _has_cap_sys_resource() -> bool:
    """CAP_SYS_RESOURCE (bit 24) in this machine's capability bounding set."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return bool(int(line.split()[1], 16) >> 24 & 1)
    return True


def sandbox_image(refs: list[str]) -> str:
    pause = [r for r in refs if r.rsplit("/", 1)[-1].startswith("pause:")]
    if not pause:
        raise NodeImageError("kubeadm lists no pause image")
    return pause[0]


def image_key(stamp: dict, coredns_version: str | None) -> str:
    """Digest of every input: the lab's binaries (its stamp), the tools, the base, this file."""
    h = hashlib.sha256()
    h.update(json.dumps(stamp, sort_keys=True).encode())
    for tool in tools.NODE_TOOLS:
        h.update(json.dumps(tools.stamp(tool) or {}, sort_keys=True).encode())
    h.update(base_key().encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:12]


def image_ref(stamp: dict, coredns_version: str | None) -> str:
    return f"{REPOSITORY}:{stamp['k8s_version']}-{image_key(stamp, coredns_version)}"


def coredns_version(stamp: dict) -> str:
    for ref in kubeadm_images(stamp):
        if ref.rsplit("/", 1)[-1].startswith("coredns:"):
            return ref.rsplit(":", 1)[1]
    raise NodeImageError("kubeadm lists no coredns image")


def docker_has(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


def _cri_base_json(ctr: Path) -> bytes:
    spec = json.loads(_run([str(ctr), "oci", "spec"], "ctr oci spec").stdout)
    spec.setdefault("hooks", {})["createContainer"] = [
        {"path": "/kind/bin/mount-product-files.sh"}]
    spec["process"].pop("rlimits", None)
    return (json.dumps(spec, indent=2) + "\n").encode()


def _import_images(root: Path, tars: list[Path], containerd_dir: Path) -> None:
    """kind's imageimporter: ctr import into the rootfs's /var/lib/containerd, pinned."""
    with tempfile.TemporaryDirectory(prefix="kubeprobe-kind-ctrd-") as tmp:
        sock = Path(tmp) / "containerd.sock"
        config = Path(tmp) / "config.toml"
        # content and image metadata only: no CRI, nothing unpacked (CRI unpacks in the node)
        config.write_text('version = 3\ndisabled_plugins = ["io.containerd.grpc.v1.cri", '
                          '"io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"]\n'
                          f'[grpc]\n  address = "{sock}"\n')
        log = open(Path(tmp) / "log", "wb")
        proc = subprocess.Popen([str(containerd_dir / "containerd"), "--config", str(config),
                                 "--root", str(root / "var/lib/containerd"),
                                 "--state", str(Path(tmp) / "state")],
                                stdout=log, stderr=log, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            ctr = [str(containerd_dir / "ctr"), "--address", str(sock)]
            while subprocess.run([*ctr, "version"], capture_output=True).returncode != 0:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise NodeImageError("the build's containerd did not start: " + " | ".join(
                        (Path(tmp) / "log").read_text(errors="replace").splitlines()[-3:]))
                time.sleep(0.2)  # poll interval inside a deadline
            for tar in tars:
                with open(tar, "rb") as f:
                    _run([*ctr, "-n", "k8s.io", "images", "import",
                          "--label=io.cri-containerd.pinned=pinned", "--all-platforms",
                          "--no-unpack", "--digests", "-"], f"importing {tar.name}", stdin=f)
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
    # the host's containerd leaves state we don't want in an image
    for junk in ("io.containerd.runtime.v2.task", "io.containerd.sandbox.controller.v1.shim"):
        shutil.rmtree(root / "var/lib/containerd" / junk, ignore_errors=True)


def build(stamp: dict, *, log=lambda line: None, force: bool = False,
          with_coredns: bool = True) -> str:
    """The local node image's ref; built (and loaded into the engine) when missing."""
    cdns = coredns_version(stamp) if with_coredns else None
    for tool in tools.NODE_TOOLS:
        if tool is not tools.COREDNS or with_coredns:
            tools.ensure(tool, log)
    coredns_dir = tools.COREDNS.dir if with_coredns else None
    ref = image_ref(stamp, cdns)
    if docker_has(ref) and not force:
        return ref
    base = base_rootfs(log)
    started = time.monotonic()
    log(f"assembling node image {ref}")
    with tempfile.TemporaryDirectory(prefix="kubeprobe-kind-node-", dir=base_dir()) as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        _run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(base)], "unpacking the base")
        k8s_bin = Path(stamp["k8s_bin"])
        ctrd = tools.CONTAINERD.dir
        copies = {
            **{f"usr/bin/{b}": k8s_bin / b for b in ("kubeadm", "kubelet", "kubectl")},
            **{f"usr/local/bin/{b}": ctrd / b for b in ("containerd", "ctr",
                                                         "containerd-shim-runc-v2")},
            "usr/local/bin/crictl": tools.CRICTL.dir / "crictl",
            "usr/local/sbin/runc": tools.RUNC.dir / "runc",
            **{f"opt/cni/bin/{p}": _host_cni_plugin(p) for p in CNI_PLUGINS},
        }
        for rel, src in copies.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
            (root / rel).chmod(0o755)
        src = kind_source() / "pkg/build/nodeimage"
        (root / "kind/manifests").mkdir(parents=True, exist_ok=True)
        (root / "kind/manifests/default-cni.yaml").write_text(
            _kind_go_const(src / "const_cni.go", "const defaultCNIManifest"))
        (root / "kind/manifests/default-storage.yaml").write_text(
            _kind_go_const(src / "const_storage.go", "const defaultStorageManifest"))
        (root / "kind/version").write_text(stamp["k8s_version"] + "\n")
        refs = list(image_specs(stamp, coredns_dir))
        # containerd's sandbox image = the pause kubeadm names (kind pins its own tag)
        config = root / "etc/containerd/config.toml"
        text = config.read_text()
        old = next(line for line in text.splitlines() if "sandbox_image" in line)
        text = text.replace(old, f'  sandbox_image = "{sandbox_image(refs)}"')
        # Without CAP_SYS_RESOURCE (a bounding set without it, as on these machines) no process
        # may lower its oom_score_adj, and runc fails every sandbox ("failed to update
        # /proc/self/oom_score_adj: Permission denied"); restricted, containerd never asks for a
        # score below its own (kind's rootless setting). Harmless where the capability exists.
        if not _has_cap_sys_resource():
            text = text.replace("restrict_oom_score_adj = false", "restrict_oom_score_adj = true")
        config.write_text(text)
        (root / "etc/containerd/cri-base.json").write_bytes(_cri_base_json(ctrd / "ctr"))
        _run(["systemctl", f"--root={root}", "enable", "kubelet.service", "containerd.service",
              "undo-mount-hacks.service"], "enabling the node's units")
        _run(["systemctl", f"--root={root}", "mask", "systemd-binfmt.service"],
             "masking systemd-binfmt")
        # 3. images
        tars = []
        for ref_, spec in image_specs(stamp, coredns_dir).items():
            tar = Path(tmp) / "images" / (ref_.replace("/", "_").replace(":", "_") + ".tar")
            images.save_image(ref_, spec.pop("files"), tar, **spec)
            tars.append(tar)
        _import_images(root, tars, ctrd)
        # 4. docker import
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."],
                               stdout=subprocess.PIPE)
        done = subprocess.run(
            ["docker", "import",
             "--change", f"ENTRYPOINT {json.dumps(ENTRYPOINT)}",
             "--change", "ENV container=docker",
             "--change", "STOPSIGNAL SIGRTMIN+3",
             "--change", f"LABEL io.kubeprobe.kind-node={stamp['k8s_version']}",
             "-", ref], stdin=tar.stdout, capture_output=True, text=True, timeout=1800)
        tar.stdout.close()
        tar.wait()
        if done.returncode != 0:
            raise NodeImageError(f"docker import of {ref} failed: {done.stderr.strip()[-300:]}")
    log(f"node image {ref} in {time.monotonic() - started:.0f}s")
    return ref


def prune_old(keep: str) -> list[str]:
    """Remove this repository's other tags (earlier keys), so only the current image is cached."""
    listing = subprocess.run(["docker", "image", "ls", REPOSITORY, "--format",
                              "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True)
    old = [r for r in listing.stdout.split() if r != keep]
    for ref in old:
        subprocess.run(["docker", "image", "rm", ref], capture_output=True)
    return old
