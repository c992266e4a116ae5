"""The kind path's programs, built from their Go modules and cached like the lab's builds.

    kind        sigs.k8s.io/kind                      the kind CLI
    helm        helm.sh/helm/v3                       the documented Falco path
    moby        github.com/moby/moby/v2               dockerd + docker-proxy (our engine, only
                                                      started when no engine answers)
    runc        github.com/opencontainers/runc        cgo + libseccomp (-tags seccomp); for our
                                                      dockerd and inside the node image
    containerd  github.com/containerd/containerd/v2   containerd, ctr, shim (node image)
    crictl      sigs.k8s.io/cri-tools                 crictl (node image)
    local-path  github.com/rancher/local-path-provisioner   the node image's storage
    coredns     github.com/coredns/coredns            the node image's DNS addon
    kindnetd    kubeprobe/kind/kindnetd: kind's nested module images/kindnetd at kind@2411fe07,
                vendored (the Go module proxy does not serve sigs.k8s.io/kind/images/kindnetd).
                Not the 69b56db7 source kind v0.33.0's image tag names: its next change
                (e35179f0) needs sigs.k8s.io/kube-network-policies
                v1.0.1-0.20260528073847-f67f0fb35e2b, which the proxy refuses (403); 2411fe07
                is the last kindnetd on kube-network-policies v0.8.0, which it serves.

Each lands in ${XDG_CACHE_HOME:-~/.cache}/kubeprobe/tools/<name>-<version>/ with a
build.stamp.json (module, version, seconds, go). Builds share the lab's GOMODCACHE (gomod/) and
GOCACHE (gobuild/), under `nice` with go's default parallelism (on a fresh CI machine the builds
own the cores), GOTOOLCHAIN=local. A second
call finds the stamp and builds nothing.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubeprobe.lab.build import cache_root

HERE = Path(__file__).resolve().parent


class ToolUnavailable(RuntimeError):
    """One line: why the tool cannot be had here (no Go, the build failed)."""


@dataclass(frozen=True)
class GoTool:
    name: str
    module: str
    version: str
    packages: tuple[str, ...]          # package path -> binary named after its last element
    cgo: bool = False
    tags: str = ""
    how: str = "install"               # install: go install pkg@version
                                       # moddir: build inside a copy of the module (replaces)
                                       # local: build the vendored module under kubeprobe/kind
    ldflags: str = "-s -w"
    outputs: dict = field(default_factory=dict)  # package -> binary name when it differs

    @property
    def dir(self) -> Path:
        return cache_root() / "tools" / f"{self.name}-{self.version}"

    def binary(self, name: str | None = None) -> Path:
        return self.dir / (name or self.binaries()[0])

    def binaries(self) -> list[str]:
        return [self.outputs.get(p, p.rstrip("/").rsplit("/", 1)[-1]) for p in self.packages]


KIND = GoTool("kind", "sigs.k8s.io/kind", "v0.33.0", ("sigs.k8s.io/kind",))
HELM = GoTool("helm", "helm.sh/helm/v3", "v3.22.0", ("helm.sh/helm/v3/cmd/helm",))
MOBY = GoTool("moby", "github.com/moby/moby/v2", "v2.0.0-beta.24",
              ("github.com/moby/moby/v2/cmd/dockerd", "github.com/moby/moby/v2/cmd/docker-proxy"))
RUNC = GoTool("runc", "github.com/opencontainers/runc", "v1.5.3", (".",), cgo=True,
              tags="seccomp", how="moddir", outputs={".": "runc"},
              ldflags="-s -w -X main.version=1.5.3")
CONTAINERD = GoTool("containerd", "github.com/containerd/containerd/v2", "v2.3.4",
                    ("github.com/containerd/containerd/v2/cmd/containerd",
                     "github.com/containerd/containerd/v2/cmd/ctr",
                     "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"),
                    tags="no_btrfs no_devmapper no_zfs",
                    ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=v2.3.4")
CRICTL = GoTool("crictl", "sigs.k8s.io/cri-tools", "v1.37.0",
                ("sigs.k8s.io/cri-tools/cmd/crictl",),
                ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=v1.37.0")
LOCAL_PATH = GoTool("local-path-provisioner", "github.com/rancher/local-path-provisioner",
                    "v0.0.30", ("github.com/rancher/local-path-provisioner",))
KINDNETD = GoTool("kindnetd", "sigs.k8s.io/kind/images/kindnetd", "2411fe07",
                  ("./cmd/kindnetd",), how="local")


# One CoreDNS build serves every Kubernetes version the lab supports: the node image tags it as
# the coredns image that version's kubeadm lists (the binary reads kubeadm's Corefile either way).
COREDNS = GoTool("coredns", "github.com/coredns/coredns", "v1.14.6",
                 ("github.com/coredns/coredns",))


ENGINE_TOOLS = (MOBY, RUNC)
CLI_TOOLS = (KIND, HELM)
NODE_TOOLS = (CONTAINERD, RUNC, CRICTL, KINDNETD, LOCAL_PATH, COREDNS)


def go_env(tool: GoTool) -> dict:
    cache = cache_root()
    return {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "1" if tool.cgo else "0",
            "GOMODCACHE": str(cache / "gomod"), "GOCACHE": str(cache / "gobuild"),
            "GOFLAGS": "-buildvcs=false", "GOBIN": str(tool.dir)}


def stamp(tool: GoTool) -> dict | None:
    try:
        data = json.loads((tool.dir / "build.stamp.json").read_text())
    except (OSError, ValueError):
        return None
    return data if all((tool.dir / b).is_file() for b in tool.binaries()) else None


def _go(args: list[str], env: dict, cwd: Path, what: str, timeout: float = 3600) -> None:
    done = subprocess.run(["nice", "-n", "10", "go", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise ToolUnavailable(f"{what} failed: " + " | ".join(
            done.stderr.strip().splitlines()[-6:]))


def ensure(tool: GoTool, log=lambda line: None) -> Path:
    """The tool's directory, its binaries built from the Go module the first time (one build
    at a time per tool, machine-wide: a second caller waits for the first and finds it)."""
    if stamp(tool) is not None:
        return tool.dir
    tool.dir.mkdir(parents=True, exist_ok=True)
    with open(tool.dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_locked(tool, log)


def _ensure_locked(tool: GoTool, log) -> Path:
    if stamp(tool) is not None:
        return tool.dir
    if shutil.which("go") is None:
        raise ToolUnavailable(f"go is not installed: {tool.name} cannot be built")
    env = go_env(tool)
    tool.dir.mkdir(parents=True, exist_ok=True)
    log(f"building {tool.name} {tool.version} from {tool.module}")
    started = time.monotonic()
    flags = ["-trimpath", "-ldflags", tool.ldflags]  # go's default -p: every core of a CI machine
    if tool.tags:
        flags += ["-tags", tool.tags]
    if tool.how == "install":
        for package in tool.packages:
            _go(["install", *flags, f"{package}@{tool.version}"], env, tool.dir,
                f"building {package}@{tool.version}")
    elif tool.how == "moddir":
        # `go install pkg@version` refuses modules with replace directives: build inside a
        # writable copy of the downloaded module, where its go.mod is the main module.
        with tempfile.TemporaryDirectory(prefix=f"kubeprobe-{tool.name}-") as tmp:
            done = subprocess.run(["go", "mod", "download", "-json",
                                   f"{tool.module}@{tool.version}"], env=env, cwd=tmp,
                                  capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                raise ToolUnavailable(f"downloading {tool.module}@{tool.version} failed: "
                                      f"{done.stdout.strip()[-300:]} {done.stderr.strip()[-300:]}")
            src = Path(json.loads(done.stdout)["Dir"])
            work = Path(tmp) / "src"
            shutil.copytree(src, work)
            for path in work.rglob("*"):
                path.chmod(path.stat().st_mode | 0o200)
            for package in tool.packages:
                out = tool.dir / tool.outputs.get(package, package.rsplit("/", 1)[-1])
                _go(["build", *flags, "-o", str(out), package], env, work,
                    f"building {tool.module}@{tool.version} ({package})")
    elif tool.how == "local":
        with tempfile.TemporaryDirectory(prefix=f"kubeprobe-{tool.name}-") as tmp:
            work = Path(tmp) / "src"
            shutil.copytree(HERE / tool.name, work)
            for package in tool.packages:
                out = tool.dir / tool.outputs.get(package, package.rsplit("/", 1)[-1])
                _go(["build", "-mod=mod", *flags, "-o", str(out), package], env, work,
                    f"building {tool.name} ({package})")
    missing = [b for b in tool.binaries() if not (tool.dir / b).is_file()]
    if missing:
        raise ToolUnavailable(f"building {tool.name} left no {', '.join(missing)}")
    seconds = round(time.monotonic() - started, 1)
    (tool.dir / "build.stamp.json").write_text(json.dumps(
        {"module": tool.module, "version": tool.version, "seconds": seconds,
         "cgo": tool.cgo, "tags": tool.tags,
         "go": subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True,
                              env=env).stdout.strip()}, indent=2) + "\n")
    log(f"built {tool.name} {tool.version} in {seconds:.0f}s")
    return tool.dir


def kind_binary(log=lambda line: None) -> Path:
    return ensure(KIND, log) / "kind"


def helm_binary(log=lambda line: None) -> Path:
    return ensure(HELM, log) / "helm"
