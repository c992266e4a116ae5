"""Build container images without a registry or a container engine.

An image here is one layer made from a handful of files, written as a docker-archive tar
(what `docker save` produces and `ctr images import` reads): manifest.json with RepoTags,
an image config (os/arch linux/amd64, entrypoint, cmd, env) and the layer tar. Output is
deterministic: same inputs, same image ID.

    files = {"/usr/local/bin/etcd": Path(".../etcd"), "/etc/motd": b"hi\\n"}
    save_image("registry.k8s.io/etcd:3.6.5-0", files, "/tmp/etcd.tar",
               entrypoint=["/usr/local/bin/etcd"])
    import_into_containerd(Path("/tmp/etcd.tar"), "/run/containerd/containerd.sock")
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence, Union

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EPOCH = 0  # every entry gets mtime 0 so rebuilding gives the same digest


@dataclass(frozen=True)
class File:
    """Content for one path in the image: bytes, a host file to copy, or a symlink target."""
    data: bytes | None = None
    host_path: Path | None = None
    symlink: str | None = None
    mode: int | None = None  # default: the host file's mode, or 0o644 for bytes


FileSpec = Union[bytes, str, Path, File]


def _as_file(spec: FileSpec) -> File:
    if isinstance(spec, File):
        return spec
    if isinstance(spec, bytes):
        return File(data=spec)
    return File(host_path=Path(spec))


def _layer_tar(files: Mapping[str, FileSpec], dirs: Sequence[str]) -> bytes:
    entries: dict[str, File] = {str(PurePosixPath("/", p)).lstrip("/"): _as_file(s) for p, s in files.items()}
    # Parent directories first (0755), plus requested empty dirs (e.g. /tmp 1777).
    wanted_dirs: dict[str, int] = {}
    for path in entries:
        for parent in PurePosixPath(path).parents:
            if str(parent) != ".":
                wanted_dirs.setdefault(str(parent), 0o755)
    for d in dirs:
        name, _, mode = d.partition(":")
        wanted_dirs[name.strip("/")] = int(mode, 8) if mode else 0o755
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(wanted_dirs):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, wanted_dirs[name], EPOCH
            tar.addfile(info)
        for name in sorted(entries):
            spec = entries[name]
            info = tarfile.TarInfo(name)
            info.mtime = EPOCH
            if spec.symlink is not None:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, spec.symlink, 0o777
                tar.addfile(info)
                continue
            if spec.host_path is not None:
                data = spec.host_path.read_bytes()
                mode = spec.mode if spec.mode is not None else spec.host_path.stat().st_mode & 0o7777
            else:
                data, mode = spec.data or b"", spec.mode if spec.mode is not None else 0o644
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def save_image(ref: str, files: Mapping[str, FileSpec], out: Path | str, *,
               entrypoint: Sequence[str] | None = None, cmd: Sequence[str] | None = None,
               env: Mapping[str, str] | None = None, workdir: str = "/",
               dirs: Sequence[str] = ("tmp:1777",), labels: Mapping[str, str] | None = None) -> Path:
    """Write a one-layer linux/amd64 docker-archive tar for `ref` and return its path.

    `dirs` lists extra empty directories as "path" or "path:octal-mode".
    """
    out = Path(out)
    layer = _layer_tar(files, dirs)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    environment = {"PATH": DEFAULT_PATH, **(env or {})}
    config = {
        "architecture": "amd64", "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Env": [f"{k}={v}" for k, v in environment.items()],
                   "Entrypoint": list(entrypoint) if entrypoint else None,
                   "Cmd": list(cmd) if cmd else None, "WorkingDir": workdir,
                   "Labels": dict(labels or {})},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "kubeprobe.images"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.split(":")[1] + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [normalize_ref(ref)], "Layers": [layer_name]}]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((config_name, config_bytes), (layer_name, layer),
                           ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, EPOCH
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)
    return out


def normalize_ref(ref: str) -> str:
    """Fully qualify a reference the way containerd's CRI names images (docker.io/library/...)."""
    name, _, tag = ref.rpartition(":") if re.search(r":[\w.-]+$", ref.split("/")[-1]) else (ref, "", "latest")
    first = name.split("/")[0]
    if "/" not in name:
        name = "docker.io/library/" + name
    elif "." not in first and ":" not in first and first != "localhost":
        name = "docker.io/" + name
    return f"{name}:{tag}"


def image_id(tar_path: Path) -> str:
    """sha256 of the image config, i.e. what `ctr`/`crictl` show as the image ID."""
    with tarfile.open(tar_path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        return "sha256:" + manifest[0]["Config"].removesuffix(".json")


def import_into_containerd(tar: Path | str, address: str, namespace: str = "k8s.io") -> list[str]:
    """Import a docker-archive into containerd with `ctr`; return the refs it now answers to.

    Besides each `name:tag`, a `name@sha256:<manifest digest>` ref is added, as a registry
    pull would, so pods can pin the image by digest (containerd's CRI otherwise knows no
    repo digest for an imported image and would try to pull it).
    """
    base = ["ctr", "--address", address, "--namespace", namespace, "images"]
    proc = subprocess.run(base + ["import", str(tar)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ctr images import {tar} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    with tarfile.open(tar) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
    return add_digest_refs(["ctr", "--address", address, "--namespace", namespace],
                           [t for entry in manifest for t in entry.get("RepoTags") or []])


def add_digest_refs(ctr: Sequence[str], tags: Sequence[str]) -> list[str]:
    """For each imported `name:tag`, add `name@sha256:<manifest digest>` with `ctr images tag`
    (`ctr` is the command prefix: local, or `docker exec <kind node> ctr -n k8s.io`).
    Returns every ref the images now answer to."""
    refs = []
    for tag in (normalize_ref(t) for t in tags):
        listing = subprocess.run([*ctr, "images", "ls", f"name=={tag}"], capture_output=True,
                                 text=True, check=True).stdout
        digest_ref = tag.rsplit(":", 1)[0] + "@" + digest_from_ctr_listing(listing, tag)
        subprocess.run([*ctr, "images", "tag", "--force", tag, digest_ref], capture_output=True,
                       text=True, check=True)
        refs += [tag, digest_ref]
    return refs


def host_program_files(program: Path | str, extra: Sequence[Path | str] = ()) -> dict[str, File]:
    """A host ELF program plus the shared libraries `ldd` says it needs, at their host paths.

    Symlinks along the way are kept as symlinks so argv[0]-dispatching multi-call binaries
    (xtables-nft-multi) keep working. `extra` adds files or whole directories (e.g. plugins
    that are dlopen()ed and invisible to ldd), copied with their own libraries.
    """
    files: dict[str, File] = {}

    def add_path(path: Path) -> None:
        # Record each symlink hop, then the real file.
        while path.is_symlink():
            target = os.readlink(path)
            files[str(path)] = File(symlink=target)
            path = (path.parent / target) if not os.path.isabs(target) else Path(target)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                add_path(child)
            return
        if str(path) in files:
            return
        files[str(path)] = File(host_path=path)
        for lib in _ldd(path):
            add_path(lib)

    add_path(Path(program))
    for item in extra:
        add_path(Path(item))
    return files


def _ldd(path: Path) -> list[Path]:
    proc = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:  # static binary or not an ELF file
        return []
    libs = []
    for line in proc.stdout.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def digest_from_ctr_listing(listing: str, ref: str, namespace: str = "k8s.io") -> str:
    """The DIGEST column of `ctr images ls` (REF TYPE DIGEST SIZE ...) for `ref`."""
    ref = normalize_ref(ref)
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == ref:
            return next(f for f in fields if f.startswith("sha256:"))
    raise RuntimeError(f"{ref} is not in containerd namespace {namespace}")
