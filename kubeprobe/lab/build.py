"""Build the lab's Kubernetes, etcd and pause binaries from the Go module proxy, once.

Supported versions: every minor in SUPPORTED (the newest is the default). Each minor is
pinned to the newest patch the Go module proxy serves here (`go list -m -versions
k8s.io/kubernetes` on 2026-12-01 listed v1.35.4, v1.36.1, v1.36.3 and v1.37.2; the newer
patches upstream has published are refused with 403 "not available"). Versions are built
and cached side by side (k8s-vX.Y.Z/, etcd-vA.B.C/), so switching costs nothing once built.

Kubernetes is built through a wrapper module (build/kubernetes/vX.Y.Z) whose go.mod is
generated from the upstream go.mod: k8s.io/kubernetes requires its staging modules at v0.0.0
and maps them to ./staging with `replace`, which only the main module may do, so the wrapper
maps each of them to its published v0.X.Y tag; its go and godebug lines are upstream's.
etcd lives in its own wrapper (build/etcd/vA.B.C) because its grpc/otel versions clash with
Kubernetes'. The etcd version is asked of the freshly built kubeadm (`kubeadm config images
list`), so the etcd image always matches what kubeadm's manifest expects; when the proxy does
not serve that exact etcd patch, the nearest newer patch of the same minor is built and the
image is tagged with the version it really is.

Everything (module cache, build cache, binaries) lives under
${XDG_CACHE_HOME:-~/.cache}/kubeprobe so CI can cache one directory. A stamp file records
the inputs; a second run with the same inputs does nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kubeprobe import resources
from kubeprobe.gotools import cache_root  # noqa: F401 (callers import it from here too)
from kubeprobe.resources import data

# minor -> the patch built for it: the newest one the Go module proxy serves here.
SUPPORTED = {"1.35": "v1.35.4", "1.36": "v1.36.3", "1.37": "v1.37.2"}
DEFAULT_MINOR = max(SUPPORTED, key=lambda m: tuple(int(x) for x in m.split(".")))
DEFAULT_VERSION = SUPPORTED[DEFAULT_MINOR]
K8S_BINARIES = ("kubeadm", "kubelet", "kube-apiserver", "kube-controller-manager",
                "kube-scheduler", "kube-proxy", "kubectl")
GO_TAGS = "selinux,notest,grpcnotrace"  # upstream's tags (hack/lib/golang.sh)
ETCD_GODEBUG = "godebug default=go1.24"  # godebug only applies from the main module

BUILD_SOURCES = data("build")  # the Go wrapper modules as shipped (see build_dir)
_PATCH = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?$")


def resolve_version(spec: str | None = None) -> str:
    """'1.36', 'v1.36' -> the pinned patch of that minor; 'v1.36.1' -> itself (its minor must
    be supported); None -> the default (newest) version. ValueError names what is supported."""
    if spec is None or spec == "":
        return DEFAULT_VERSION
    m = _PATCH.match(spec.strip())
    minor = f"{m.group(1)}.{m.group(2)}" if m else None
    if minor not in SUPPORTED:
        raise ValueError(f"unsupported Kubernetes version {spec!r}: supported minors are "
                         f"{', '.join(SUPPORTED)} (default {DEFAULT_VERSION})")
    return SUPPORTED[minor] if m.group(3) is None else f"v{minor}.{m.group(3)}"


def minor_of(version: str) -> str:
    m = _PATCH.match(version)
    return f"{m.group(1)}.{m.group(2)}"


@dataclass(frozen=True)
class BuildPaths:
    cache: Path
    k8s_version: str = DEFAULT_VERSION

    @property
    def gomodcache(self) -> Path:
        return self.cache / "gomod"

    @property
    def gocache(self) -> Path:
        return self.cache / "gobuild"

    @property
    def k8s_bin(self) -> Path:
        return self.cache / f"k8s-{self.k8s_version}" / "bin"

    @property
    def stamp(self) -> Path:
        return self.cache / f"k8s-{self.k8s_version}" / "build.stamp.json"


def default_paths(version: str | None = None) -> BuildPaths:
    return BuildPaths(cache_root(), resolve_version(version))


def read_stamp(paths: BuildPaths | None = None, version: str | None = None) -> dict | None:
    """The stamp of a finished build of `version` (default: the newest supported), or None if
    the binaries are not (all) there."""
    paths = paths or default_paths(version)
    try:
        stamp = json.loads(paths.stamp.read_text())
    except (OSError, ValueError):
        return None
    wanted = [paths.k8s_bin / b for b in K8S_BINARIES] + [Path(stamp.get("etcd", "")),
                                                           Path(stamp.get("pause", ""))]
    if stamp.get("inputs") != _inputs_digest(paths.k8s_version) or not all(p.is_file() for p in wanted):
        return None
    return stamp


def built_versions(paths_root: Path | None = None) -> list[str]:
    """Every supported version whose build is complete in the cache, oldest first."""
    root = paths_root or cache_root()
    return [v for v in SUPPORTED.values() if read_stamp(BuildPaths(root, v))]


def _inputs_digest(version: str) -> str:
    """Changes whenever something that shapes the binaries changes."""
    h = hashlib.sha256()
    for part in (version, GO_TAGS, ETCD_GODEBUG, ",".join(K8S_BINARIES), "etcd-from-kubeadm-images"):
        h.update(part.encode() + b"\0")
    for src in sorted((BUILD_SOURCES / "pause").glob("*.go")):
        h.update(src.read_bytes())
    return h.hexdigest()[:16]


def build_dir(paths: BuildPaths) -> Path:
    """Where the wrapper modules are built: build/ itself in a checkout; installed, a copy in
    the cache (the build rewrites go.mod and go.sum; site-packages is not ours to write)."""
    if resources.IN_CHECKOUT:
        return BUILD_SOURCES
    work = paths.cache / "build-wrappers"
    for src in BUILD_SOURCES.rglob("*"):
        dst = work / src.relative_to(BUILD_SOURCES)
        if src.is_file() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    return work


class Builder:
    def __init__(self, paths: BuildPaths, log=print):
        self.paths = paths
        self.version = paths.k8s_version
        self.build_dir = build_dir(paths)
        self.log = log
        self.started = time.monotonic()
        self.k8s_origin: dict = {}

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(GOMODCACHE=str(self.paths.gomodcache), GOCACHE=str(self.paths.gocache),
                   GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-buildvcs=false",
                   GOOS="linux", GOARCH="amd64")
        return env

    def go(self, args: list[str], cwd: Path, capture: bool = False) -> str:
        proc = subprocess.run(["go", *args], cwd=cwd, env=self.env(), text=True,
                              stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.PIPE if capture else None)
        if proc.returncode != 0:
            detail = (proc.stderr or "").strip()[-4000:] if capture else ""
            raise RuntimeError(f"go {' '.join(args)} failed in {cwd} (rc={proc.returncode}) {detail}")
        return proc.stdout or ""

    def step(self, what: str, fn):
        t0 = time.monotonic()
        result = fn()
        now = time.monotonic()
        self.log(f"[build] {what}: {now - t0:.1f}s (total {now - self.started:.1f}s)", flush=True)
        return result

    # -- Kubernetes -------------------------------------------------------------------
    def k8s_module(self) -> Path:
        """Write build/kubernetes/<version>/go.mod from the upstream go.mod and download the graph."""
        wrapper = self.build_dir / "kubernetes" / self.version
        wrapper.mkdir(parents=True, exist_ok=True)
        info = json.loads(self.go(["mod", "download", "-json", f"k8s.io/kubernetes@{self.version}"],
                                  cwd=self.build_dir, capture=True))
        # Tag time (and commit, when the proxy knows it) stamp the binaries reproducibly.
        tag = json.loads(Path(info["Info"]).read_text())
        self.k8s_origin = {"commit": (tag.get("Origin") or info.get("Origin") or {}).get("Hash", ""),
                           "time": tag.get("Time", "")}
        upstream = Path(info["GoMod"]).read_text()
        wanted = render_k8s_gomod(upstream, self.version)
        gomod = wrapper / "go.mod"
        # `go mod tidy` adds require lines, so compare only the generated header.
        if not gomod.exists() or gomod.read_text().splitlines()[0] != wanted.splitlines()[0]:
            gomod.write_text(wanted)
            (wrapper / "go.sum").unlink(missing_ok=True)
        # tidy fills go.sum and downloads exactly the modules the seven commands need.
        self.go(["mod", "tidy"], cwd=wrapper)
        return Path(info["Dir"])

    def k8s_ldflags(self) -> str:
        major, minor = re.match(r"v(\d+)\.(\d+)\.", self.version).groups()
        keys = {"gitVersion": self.version, "gitMajor": major, "gitMinor": minor,
                "gitCommit": self.k8s_origin.get("commit", ""), "gitTreeState": "clean",
                "buildDate": self.k8s_origin.get("time", "")}
        # hack/lib/version.sh stamps both packages; kubeadm reads component-base,
        # kubectl's client side reads client-go.
        flags = ["-s", "-w"]
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [f"-X {pkg}.{k}={v}" for k, v in keys.items() if v]
        return " ".join(flags)

    def build_k8s(self, name: str) -> None:
        out = self.paths.k8s_bin / name
        self.go(["build", "-p", "2", "-trimpath", "-tags", GO_TAGS, "-ldflags", self.k8s_ldflags(),
                 "-o", str(out), f"k8s.io/kubernetes/cmd/{name}"], cwd=self.build_dir / "kubernetes" / self.version)

    def check_kubeadm_version(self) -> None:
        raw = subprocess.run([str(self.paths.k8s_bin / "kubeadm"), "version", "-o", "json"],
                             capture_output=True, text=True, check=True).stdout
        info = json.loads(raw)["clientVersion"]
        want_major, want_minor = re.match(r"v(\d+)\.(\d+)\.", self.version).groups()
        if (info["major"], info["minor"], info["gitVersion"]) != (want_major, want_minor, self.version):
            raise RuntimeError(f"kubeadm version stamp is wrong: {info}")

    # -- etcd ---------------------------------------------------------------------
    def kubeadm_etcd_version(self) -> str:
        """The etcd version this kubeadm puts in its manifest (`kubeadm config images list`)."""
        images = subprocess.run([str(self.paths.k8s_bin / "kubeadm"), "config", "images", "list",
                                 "--kubernetes-version", self.version], capture_output=True, text=True,
                                check=True).stdout.split()
        return etcd_version_from_images(images)

    def served_etcd_version(self, wanted: str) -> str:
        """`wanted` when the proxy serves it, else the nearest newer patch of its minor."""
        listed = self.go(["list", "-m", "-versions", "go.etcd.io/etcd/server/v3"], cwd=self.build_dir,
                         capture=True).split()[1:]
        return pick_served_patch(wanted, listed)

    def build_etcd(self, version: str) -> Path:
        wrapper = self.build_dir / "etcd" / version
        wrapper.mkdir(parents=True, exist_ok=True)
        gomod = wrapper / "go.mod"
        wanted = render_etcd_gomod(version)
        if not gomod.exists() or gomod.read_text().splitlines()[0] != wanted.splitlines()[0]:
            gomod.write_text(wanted)
            (wrapper / "go.sum").unlink(missing_ok=True)
        self.go(["mod", "tidy"], cwd=wrapper)
        bin_dir = etcd_bin_dir(self.paths, version)
        ldflags = f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA={version}"
        # Both module roots are main packages; the wrapper's `tool` lines keep them in the graph.
        for name, pkg in (("etcd", "go.etcd.io/etcd/server/v3"), ("etcdctl", "go.etcd.io/etcd/etcdctl/v3")):
            self.step(f"etcd {version}: {name}", lambda: self.go(
                ["build", "-p", "2", "-trimpath", "-ldflags", ldflags, "-o", str(bin_dir / name), pkg],
                cwd=wrapper))
        return bin_dir / "etcd"

    def build_pause(self) -> Path:
        out = self.paths.cache / "pause" / "bin" / "pause"
        self.go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out), "."], cwd=self.build_dir / "pause")
        return out

    def run(self) -> dict:
        self.step(f"download k8s.io/kubernetes@{self.version} and its module graph", self.k8s_module)
        for name in K8S_BINARIES:
            self.step(f"{name} {self.version}", lambda: self.build_k8s(name))
        self.check_kubeadm_version()
        kubeadm_etcd = self.kubeadm_etcd_version()
        etcd_version = self.served_etcd_version(kubeadm_etcd)
        if etcd_version != kubeadm_etcd:
            self.log(f"[build] kubeadm {self.version} names etcd {kubeadm_etcd}; the proxy does not serve it, "
                     f"building {etcd_version} (the image is tagged {etcd_version[1:]}-0)", flush=True)
        etcd = self.build_etcd(etcd_version)
        pause = self.step("pause", self.build_pause)
        stamp = {"inputs": _inputs_digest(self.version), "k8s_version": self.version,
                 "k8s_bin": str(self.paths.k8s_bin), "kubeadm_etcd_version": kubeadm_etcd,
                 "etcd_version": etcd_version, "etcd_image_tag": etcd_version[1:] + "-0", "etcd": str(etcd),
                 "pause": str(pause), "seconds": round(time.monotonic() - self.started, 1)}
        self.paths.stamp.write_text(json.dumps(stamp, indent=2) + "\n")
        return stamp


def etcd_bin_dir(paths: BuildPaths, version: str) -> Path:
    return paths.cache / f"etcd-{version}" / "bin"


def render_k8s_gomod(upstream: str, version: str) -> str:
    """The wrapper go.mod: same go line and godebug as upstream, every ./staging replace
    pointed at the published staging tag (v1.37.N -> v0.37.N)."""
    staging = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", upstream, re.M)
    if not staging:
        raise RuntimeError("no ./staging replaces found in the upstream go.mod")
    go_line = re.search(r"^go (\S+)$", upstream, re.M).group(1)
    godebug = re.search(r"^godebug (\S+)$", upstream, re.M)
    godebug_line = f"godebug {godebug.group(1)}" if godebug else f"godebug default=go{go_line.rsplit('.', 1)[0]}"
    staging_version = "v0." + version.split(".", 1)[1]
    lines = ["// Generated by kubeprobe/lab/build.py from k8s.io/kubernetes " + version + "'s go.mod.",
             "// Do not edit: change SUPPORTED and rebuild.", "module kubeprobe.local/lab/kubernetes", "",
             f"go {go_line}", "", godebug_line, "",
             f"require k8s.io/kubernetes {version}", "", "tool ("]
    lines += [f"\tk8s.io/kubernetes/cmd/{b}" for b in K8S_BINARIES] + [")", "", "replace ("]
    lines += [f"\t{m} => {m} {staging_version}" for m in staging] + [")", ""]
    return "\n".join(lines)


def render_etcd_gomod(version: str) -> str:
    return "\n".join([
        f"// Generated by kubeprobe/lab/build.py for etcd {version}. Do not edit.",
        "module kubeprobe.local/lab/etcd", "", "go 1.24.0", "", ETCD_GODEBUG, "",
        "require (", f"\tgo.etcd.io/etcd/server/v3 {version}", f"\tgo.etcd.io/etcd/etcdctl/v3 {version}", ")", "",
        "tool (", "\tgo.etcd.io/etcd/server/v3", "\tgo.etcd.io/etcd/etcdctl/v3", ")", ""])


def etcd_version_from_images(images: list[str]) -> str:
    """registry.k8s.io/etcd:3.7.0-0 in kubeadm's image list -> v3.7.0."""
    for ref in images:
        name, _, tag = ref.rpartition(":")
        if name.rsplit("/", 1)[-1] == "etcd":
            m = re.match(r"^(\d+\.\d+\.\d+)-\d+$", tag)
            if not m:
                raise RuntimeError(f"kubeadm's etcd image tag {tag!r} is not <semver>-<n>")
            return "v" + m.group(1)
    raise RuntimeError(f"kubeadm lists no etcd image: {' '.join(images)}")


def pick_served_patch(wanted: str, listed: list[str]) -> str:
    """`wanted` if listed; else the lowest listed patch above it in the same minor (never a
    pre-release, never another minor: kubeadm's manifest flags follow the etcd minor)."""
    if wanted in listed:
        return wanted
    w = _PATCH.match(wanted)
    newer = sorted((int(m.group(3)), v) for v in listed if (m := _PATCH.match(v))
                   and m.group(3) is not None and m.group(1, 2) == w.group(1, 2) and int(m.group(3)) > int(w.group(3)))
    if not newer:
        raise RuntimeError(f"the Go module proxy serves no etcd {wanted} nor a newer {w.group(1)}.{w.group(2)} patch "
                           f"(listed: {' '.join(listed) or 'nothing'})")
    return newer[0][1]


def build(version: str | None = None, log=print) -> dict:
    """Build (or find cached) the binaries of one supported version (default: the newest)."""
    paths = default_paths(version)
    stamp = read_stamp(paths)
    if stamp:
        log(f"[build] cached: Kubernetes {stamp['k8s_version']} and etcd {stamp['etcd_version']} "
            f"in {paths.cache} (nothing to do)", flush=True)
        return stamp
    if shutil.which("go") is None:
        raise RuntimeError("go is not on PATH")
    return Builder(paths, log).run()


if __name__ == "__main__":
    try:
        result = build(sys.argv[1] if len(sys.argv) > 1 else None)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result, indent=2))
