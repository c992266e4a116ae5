"""A container engine kind can use: the one that answers, else ours.

On a user's machine their own Docker answers `docker info` and is used untouched. When nothing
answers, kubeprobe starts its own dockerd (moby v2 from its Go module, with runc 1.5 built with
libseccomp, over Debian's containerd, which dockerd manages): Debian's docker.io 20.10 cannot
start the --privileged containers kind needs where the capability bounding set lacks
CAP_SYS_RESOURCE, newer moby asks runc only for the capabilities the daemon holds.

Ours keeps everything under its own roots and never touches the host's firewall:

    data-root   /var/lib/kubeprobe-docker      (images, containers, volumes; the node image cache)
    exec-root   /run/kubeprobe-docker          (pidfile, containerd socket)
    socket      unix:///var/run/docker.sock    (the default, so the docker CLI and kind need no
                                                DOCKER_HOST; only ever taken when nothing answers)
    log         /var/log/kubeprobe-docker.log
    flags       --iptables=false --ip6tables=false --bridge=none (kind creates its own bridge
                network; published ports go through docker-proxy)
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kubeprobe.kind import tools

DATA_ROOT = Path("/var/lib/kubeprobe-docker")
EXEC_ROOT = Path("/run/kubeprobe-docker")
PIDFILE = EXEC_ROOT / "dockerd.pid"
LOG = Path("/var/log/kubeprobe-docker.log")
SOCKET = Path("/var/run/docker.sock")


class EngineError(RuntimeError):
    """One line: why no engine can be had."""


@dataclass(frozen=True)
class Engine:
    version: str
    ours: bool          # kubeprobe's dockerd (started by kubeprobe), not the user's
    started_now: bool   # this call started it


def answers(timeout: float = 10) -> str | None:
    """The server version when an engine answers `docker info`, else None."""
    if shutil.which("docker") is None:
        return None
    try:
        done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    version = done.stdout.strip()
    return version if done.returncode == 0 and version else None


def our_pid() -> int | None:
    """The pid of kubeprobe's dockerd when it runs, else None."""
    try:
        pid = int(PIDFILE.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:
        if Path(f"/proc/{pid}/exe").resolve().name != "dockerd":
            return None
    except OSError:
        return None
    return pid


def status() -> dict:
    return {"answers": answers(), "ours": our_pid(), "data_root": str(DATA_ROOT),
            "log": str(LOG)}


def _path_with(*dirs: Path) -> str:
    return os.pathsep.join([*(str(d) for d in dirs), os.environ.get("PATH", "")])


def start(deadline_seconds: float = 90, log=lambda line: None) -> Engine:
    """Start kubeprobe's dockerd (building it first when needed) and wait until it answers."""
    if shutil.which("docker") is None:
        raise EngineError("the docker CLI is not installed (Debian: apt-get install docker-cli)")
    if shutil.which("containerd") is None:
        raise EngineError("containerd is not installed (Debian: apt-get install containerd)")
    moby = tools.ensure(tools.MOBY, log).parent     # dockerd, docker-proxy
    runc = tools.ensure(tools.RUNC, log).parent
    if SOCKET.exists() and answers(5) is None:
        SOCKET.unlink()                # a stale socket: nothing answered on it
    for d in (DATA_ROOT, EXEC_ROOT):
        d.mkdir(parents=True, exist_ok=True)
    Path("/lib/modules").mkdir(parents=True, exist_ok=True)  # kind binds it into every node
    env = {**os.environ, "PATH": _path_with(moby, runc)}
    cmd = [str(moby / "dockerd"), "--data-root", str(DATA_ROOT), "--exec-root", str(EXEC_ROOT),
           "--pidfile", str(PIDFILE), "--host", f"unix://{SOCKET}",
           "--iptables=false", "--ip6tables=false", "--bridge=none",
           "--userland-proxy-path", str(moby / "docker-proxy"),
           "--add-runtime", f"kubeprobe-runc={runc / 'runc'}", "--default-runtime",
           "kubeprobe-runc"]
    log(f"starting kubeprobe's dockerd (data-root {DATA_ROOT}, log {LOG})")
    with open(LOG, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                start_new_session=True)
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = LOG.read_text(errors="replace").strip().splitlines()[-3:]
            raise EngineError(f"kubeprobe's dockerd exited {proc.returncode}: "
                              + " | ".join(tail))
        version = answers(5)
        if version:
            return Engine(version, ours=True, started_now=True)
        time.sleep(0.5)  # poll interval inside a deadline
    proc.terminate()
    raise EngineError(f"kubeprobe's dockerd did not answer `docker info` in "
                      f"{deadline_seconds:.0f}s (see {LOG})")


def ensure(log=lambda line: None) -> Engine:
    """The engine that answers; ours started only when none does."""
    version = answers()
    if version:
        return Engine(version, ours=our_pid() is not None, started_now=False)
    return start(log=log)


def stop(deadline_seconds: float = 60) -> bool:
    """Stop kubeprobe's dockerd (never the user's engine). True if one was stopped."""
    pid = our_pid()
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        time.sleep(0.2)  # poll interval inside a deadline
    raise EngineError(f"kubeprobe's dockerd (pid {pid}) did not stop in {deadline_seconds:.0f}s")
