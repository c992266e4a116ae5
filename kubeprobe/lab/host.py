"""Small host-level helpers for the lab: processes, mounts, ports, links, iptables, sysctls.

Everything here acts on explicit PIDs, paths and names handed in by the caller; nothing
matches processes by name.
"""
from __future__ import annotations

import ctypes
import errno
import os
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Iterable

from kubeprobe.waiting import WaitTimeout, wait_for

MNT_DETACH = 2


def run(args: list[str], check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"{shlex.join(args)} failed (rc={proc.returncode}): {msg[-1] if msg else ''}")
    return proc


# -- processes ---------------------------------------------------------------------------
def start_process(args: list[str], log_path: Path, env: dict | None = None) -> int:
    """Start a long-running process in its own session (so its process group can be
    killed as a whole), output appended to log_path. Returns the PID (= PGID)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
    return proc.pid


def process_alive(pid: int, exe: str | None = None) -> bool:
    """True if pid runs (not a zombie) and, when given, its executable is `exe`."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        _reap(pid)
        return False
    if exe is not None:
        try:
            return os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(exe)
        except OSError:
            return False
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def kill_pids(pids: Iterable[int], groups: bool = False, grace: float = 5.0) -> None:
    """SIGTERM (the process group when `groups`), wait up to `grace` s, then SIGKILL."""
    pids = [p for p in set(pids) if p > 1]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.killpg(pid, sig) if groups else os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            wait_for(lambda: not any(process_alive(p) for p in pids), grace if sig == signal.SIGTERM else 10,
                     "processes to exit", interval_s=0.05)
            return
        except WaitTimeout:
            continue


def pids_with_cmdline_arg(arg: str) -> list[int]:
    """PIDs whose argv contains `arg` exactly (e.g. a containerd socket path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if arg.encode() in argv:
            found.append(int(entry.name))
    return found


# -- cgroups (v1, cgroupfs driver) -----------------------------------------------------------
def cgroup_roots() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 controllers, named and unified)."""
    roots = []
    for fields in _mountinfo():
        if fields["fstype"] in ("cgroup", "cgroup2"):
            roots.append(Path(fields["mount_point"]))
    return roots


def _cgroup_dirs(name: str) -> list[str]:
    """Every cgroup directory at or below `name` in every hierarchy, deepest first.
    os.walk ignores directories that vanish while it walks (the kubelet removes pod cgroups)."""
    dirs = [d for root in cgroup_roots() for d, _, _ in os.walk(root / name)]
    return sorted(dirs, key=lambda d: -d.count("/"))


def pids_in_cgroup_subtree(name: str) -> set[int]:
    pids: set[int] = set()
    for d in _cgroup_dirs(name):
        try:
            pids.update(int(p) for p in Path(d, "cgroup.procs").read_text().split())
        except OSError:
            pass
    return pids


def remove_cgroup_subtree(name: str, deadline_s: float = 15.0) -> None:
    """rmdir every cgroup at or below `name`, deepest first. A cgroup whose last task is still
    exiting answers EBUSY for a moment, so retry until none is left or the deadline passes
    (what remains then is reported by the leftover checks)."""
    def removed() -> bool:
        for d in _cgroup_dirs(name):
            try:
                os.rmdir(d)
            except OSError:
                pass
        return not _cgroup_dirs(name)
    try:
        wait_for(removed, deadline_s, f"the {name} cgroups to be removable", interval_s=0.1)
    except WaitTimeout:
        pass


# -- mounts ----------------------------------------------------------------------------
def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def _mountinfo() -> list[dict]:
    rows = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        parts = left.split()
        rows.append({"mount_point": _unescape(parts[4]), "fstype": right.split()[0]})
    return rows


def mounts_under(prefixes: Iterable[Path]) -> list[str]:
    prefixes = [str(p).rstrip("/") for p in prefixes]
    found = {m["mount_point"] for m in _mountinfo()
             if any(m["mount_point"] == p or m["mount_point"].startswith(p + "/") for p in prefixes)}
    return sorted(found, key=lambda m: -m.count("/"))


def unmount_all(prefixes: Iterable[Path]) -> None:
    """Unmount everything at or below the prefixes, deepest first (lazily if busy)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(5):  # stacked mounts need several rounds
        targets = mounts_under(prefixes)
        if not targets:
            return
        for target in targets:
            if libc.umount2(target.encode(), 0) != 0:
                libc.umount2(target.encode(), MNT_DETACH)


# -- ports ---------------------------------------------------------------------------
def listening_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


# -- network -------------------------------------------------------------------------
def netns_names() -> set[str]:
    try:
        return {p.name for p in Path("/run/netns").iterdir()}
    except OSError:
        return set()


NETNS_DIR = Path("/run/netns")


def delete_netns(name: str) -> None:
    path = NETNS_DIR / name
    unmount_all([path])
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno != errno.EBUSY or not _unstack_netns_dir():
            raise
        unmount_all([path])
        path.unlink(missing_ok=True)


def _unstack_netns_dir() -> bool:
    """`ip netns add` (by anything else on the host) bind-mounts /run/netns over itself: the
    lab's netns mounts made before are then hidden below it and their files cannot be
    removed. Lift that empty bind mount (nothing mounted on it) to reach them again."""
    mounts = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    tops = [m for m in mounts if m[4] == str(NETNS_DIR)]
    if not tops:
        return False
    top_id = tops[-1][0]
    if any(m[1] == top_id for m in mounts):
        return False  # someone's namespaces live on it: leave it alone
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.umount2(str(NETNS_DIR).encode(), MNT_DETACH) == 0


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def links_with_master(master: str) -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir()
                  if os.path.realpath(p / "master").endswith("/" + master))


def delete_link(name: str) -> None:
    if link_exists(name):
        run(["ip", "link", "delete", name], check=False)


IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")


def iptables_commands() -> list[str]:
    """Every iptables front end present: the nft one the host uses, plus legacy if installed."""
    names = ["iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy"]
    return [n for n in names if any(Path(d, n).exists() for d in ("/usr/sbin", "/sbin", "/usr/bin"))]


def _tables(tool: str) -> list[str]:
    """Tables worth listing. Listing a legacy table instantiates it, so for the legacy front
    ends only tables the kernel already has are listed."""
    if "legacy" not in tool:
        return list(IPTABLES_TABLES)
    names = "/proc/net/ip6_tables_names" if tool.startswith("ip6") else "/proc/net/ip_tables_names"
    try:
        present = Path(names).read_text().split()
    except OSError:
        return []
    return [t for t in IPTABLES_TABLES if t in present]


def lab_chains(tool: str, prefixes: tuple[str, ...]) -> dict[str, list[str]]:
    """{table: [chains with one of the prefixes]} for one iptables front end."""
    chains = {}
    for table in _tables(tool):
        proc = run([tool, "-w", "-t", table, "-S"], check=False)
        if proc.returncode != 0:
            continue
        names = [line.split()[1] for line in proc.stdout.splitlines()
                 if line.startswith("-N ") and line.split()[1].startswith(prefixes)]
        if names:
            chains[table] = names
    return chains


def remove_chains(tool: str, prefixes: tuple[str, ...]) -> None:
    """Delete rules that jump to prefixed chains, then flush and delete those chains."""
    for table in _tables(tool):
        proc = run([tool, "-w", "-t", table, "-S"], check=False)
        if proc.returncode != 0:
            continue
        lines = proc.stdout.splitlines()
        ours = [l.split()[1] for l in lines if l.startswith("-N ") and l.split()[1].startswith(prefixes)]
        for line in lines:
            args = shlex.split(line)
            if args[0] == "-A" and args[1] not in ours and _jumps_to(args, prefixes):
                run([tool, "-w", "-t", table, "-D", *args[1:]], check=False)
        for chain in ours:
            run([tool, "-w", "-t", table, "-F", chain], check=False)
        for chain in ours:
            run([tool, "-w", "-t", table, "-X", chain], check=False)


def _jumps_to(args: list[str], prefixes: tuple[str, ...]) -> bool:
    for flag in ("-j", "-g"):
        if flag in args:
            i = args.index(flag)
            if i + 1 < len(args) and args[i + 1].startswith(prefixes):
                return True
    return False


# -- sysctls -------------------------------------------------------------------------
def read_sysctl(key: str) -> str | None:
    try:
        return Path("/proc/sys", key.replace(".", "/")).read_text().strip()
    except OSError:
        return None


def write_sysctl(key: str, value: str) -> None:
    try:
        Path("/proc/sys", key.replace(".", "/")).write_text(value)
    except OSError:
        pass


def node_ipv4(preferred: str = "eth0") -> str:
    """IPv4 of `preferred`, else of the default route's interface (never a hard-coded address)."""
    if not link_exists(preferred):
        route = run(["ip", "-4", "-o", "route", "show", "default"]).stdout.split()
        if "dev" not in route:
            raise RuntimeError(f"no {preferred} and no default route to pick the node IP from")
        preferred = route[route.index("dev") + 1]
    return interface_ipv4(preferred)


def interface_ipv4(name: str) -> str:
    out = run(["ip", "-4", "-o", "addr", "show", "dev", name]).stdout.split()
    if "inet" not in out:
        raise RuntimeError(f"{name} has no IPv4 address")
    return out[out.index("inet") + 1].split("/")[0]
