"""Benchmark: the kubelet controls (KUBELET-01..06) against >= 100 kubelet-like endpoints, each
a real TLS server (or a filtered or refusing address) in a network namespace of its own.

    sudo python benchmarks/kubelet_fanout.py [--endpoints 120] [--connect-timeout 1]
                                              [--parallelism N] [--budget 900]

What runs where (all of it made by this script, all of it removed at the end, also on Ctrl-C
or SIGTERM; leftovers of a killed run are removed at the next start):

- `kpfan-hub`: a namespace holding only a bridge (`br0`); every other namespace hangs off it
  through a veth pair. The addresses (10.213.0.0/16) exist inside these namespaces only:
  nothing is added to the machine's own network namespace, no traffic leaves these namespaces.
- `kpfan-eN`, one per endpoint, with its own address, one of three kinds (4:1:1):
    hardened   a TLS server on 10250 answering 401 to every request, like a kubelet with
               anonymous auth off (tests/fakekubelet.py, mode `hardened`); 10255 and 10248
               closed (readOnlyPort 0, healthz on loopback)
    filtered   an iptables DROP of every TCP segment: each connect runs into --connect-timeout
    refusing   nothing listens: every connect is refused (RST)
- `kpfan-cli`: the runner. The suite runs in a child process there (`ip netns exec`), through
  the public `kubeprobe.suite.Suite.run_control`, with the endpoints injected
  (`suite.__dict__["endpoints"]`) and `StandInKube` in place of the API (NOT an API server: it
  says every kubelet is up and configured like the hardened lab: readOnlyPort 0, healthz on
  127.0.0.1). So it measures whatever the engine does: serial today, a bounded pool once
  `Suite.parallelism` exists (`--parallelism` sets it then).

Printed: endpoints by kind, the fan-out wall time per control, the time of the same control
against one filtered endpoint alone (the worst case), their ratio (the engine's goal: <= 2),
each control's verdict counts, peak RSS of the runner, and the tracemalloc peak of one extra
KUBELET-01 fan-out. Asserts nothing (not a timed test). Needs root, `ip` and `iptables`.
"""
from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import resource
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from http.server import ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PREFIX = "kpfan-"
HUB, CLIENT = f"{PREFIX}hub", f"{PREFIX}cli"
NETWORK = "10.213"          # /16, inside the benchmark's namespaces only
CLIENT_ADDRESS = f"{NETWORK}.0.1"
KINDS = ("hardened", "hardened", "hardened", "hardened", "filtered", "refusing")
CONTROLS = ("KUBELET-01", "KUBELET-02", "KUBELET-03", "KUBELET-04", "KUBELET-05", "KUBELET-06")
CLONE_NEWNET = 0x40000000
LOCK = "/tmp/kubeprobe-kubelet-fanout.lock"
MAX_ENDPOINTS = 500


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def address(index: int) -> str:
    return f"{NETWORK}.{1 + index // 250}.{1 + index % 250}"


def kind_of(index: int) -> str:
    return KINDS[index % len(KINDS)]


# ---------------------------------------------------------------- the namespaces (outer process)

def our_namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=30).stdout
    return [line.split()[0] for line in listed.splitlines()
            if line.split() and line.split()[0].startswith(PREFIX)]


def clean_up() -> int:
    """Delete every namespace of ours (their veths and the bridge go with them)."""
    names = our_namespaces()
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
    return len(names)


def build_network(count: int) -> None:
    sh("ip", "netns", "add", HUB)
    sh("ip", "-n", HUB, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", HUB, "link", "set", "br0", "up")
    attach(CLIENT, "vc", CLIENT_ADDRESS)
    for index in range(count):
        name = f"{PREFIX}e{index}"
        attach(name, f"ve{index}", address(index))
        if kind_of(index) == "filtered":
            sh("ip", "netns", "exec", name, "iptables", "-w", "-A", "INPUT", "-p", "tcp",
               "-j", "DROP")


def attach(namespace: str, hub_end: str, ip: str) -> None:
    sh("ip", "netns", "add", namespace)
    sh("ip", "-n", HUB, "link", "add", hub_end, "type", "veth", "peer", "name", "eth0",
       "netns", namespace)
    sh("ip", "-n", HUB, "link", "set", hub_end, "master", "br0", "up")
    sh("ip", "-n", namespace, "addr", "add", f"{ip}/16", "dev", "eth0")
    sh("ip", "-n", namespace, "link", "set", "eth0", "up")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:  # no getfqdn(): no name lookup for a benchmark address
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def start_kubelets(count: int) -> list[_Server]:
    """A TLS server on ADDRESS:10250 in each hardened endpoint's namespace, all served by
    threads of this process: each listening socket is made inside its namespace (setns) and
    keeps it after the thread switches back."""
    from kubeprobe import pki
    from tests.fakekubelet import MODES, _handler

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    ca = pki.CertificateAuthority.create("kpfan-kubelet-ca")
    issued = ca.issue("kpfan-kubelet", server=True, client=False, hosts=(CLIENT_ADDRESS,))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
        cert.write_bytes(issued.cert_pem)
        key.write_bytes(issued.key_pem)
        context.load_cert_chain(cert, key)
    handler = _handler(MODES["hardened"], True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    servers = []
    try:
        for index in range(count):
            if kind_of(index) != "hardened":
                continue
            target = os.open(f"/var/run/netns/{PREFIX}e{index}", os.O_RDONLY)
            try:
                if libc.setns(target, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns into the endpoint's namespace")
                server = _Server((address(index), 10250), handler)
            finally:
                os.close(target)
                if libc.setns(home, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back")
            server.socket = context.wrap_socket(server.socket, server_side=True)
            servers.append(server)
    finally:
        os.close(home)
    for server in servers:
        threading.Thread(target=server.serve_forever, args=(0.5,), daemon=True).start()
    return servers


def stop_servers(servers: list[_Server]) -> None:
    """All at once: one after another, each shutdown() waits up to a poll interval."""
    stoppers = [threading.Thread(target=s.shutdown, daemon=True) for s in servers]
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join(timeout=5)
    for server in servers:
        server.server_close()


def outer(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("needs root (network namespaces)")
        return 2
    if not 1 <= args.endpoints <= MAX_ENDPOINTS:
        print(f"--endpoints: 1..{MAX_ENDPOINTS}")
        return 2

    lock = open(LOCK, "w")
    try:  # one run at a time: a second one would remove the first one's namespaces
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another kubelet_fanout run holds {LOCK}")
        return 2

    def stop(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    stale = clean_up()
    if stale:
        print(f"removed {stale} namespace(s) left by an earlier run")
    servers: list[_Server] = []
    try:
        started = time.monotonic()
        build_network(args.endpoints)
        servers = start_kubelets(args.endpoints)
        print(f"network: {args.endpoints} endpoint namespaces + hub + runner in "
              f"{time.monotonic() - started:.1f} s; {len(servers)} TLS kubelets serving",
              flush=True)
        inner_args = [sys.executable, str(Path(__file__).resolve()), "--inner",
                      "--endpoints", str(args.endpoints),
                      "--connect-timeout", str(args.connect_timeout),
                      "--read-timeout", str(args.read_timeout)]
        if args.parallelism is not None:
            inner_args += ["--parallelism", str(args.parallelism)]
        if args.json:
            inner_args += ["--json", str(Path(args.json).resolve())]
        done = subprocess.run(["ip", "netns", "exec", CLIENT, *inner_args], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=args.budget)
        return done.returncode
    except subprocess.TimeoutExpired:
        print(f"the run exceeded --budget {args.budget:.0f} s and was stopped")
        return 1
    finally:
        stop_servers(servers)
        removed = clean_up()
        left = our_namespaces()
        print(f"cleaned up: {removed} namespace(s) removed"
              + (f"; STILL THERE: {', '.join(left)}" if left else ", none left"), flush=True)


# ---------------------------------------------------------------- the runner (inner process)

HARDENED_CONFIGZ = {"authentication": {"anonymous": {"enabled": False},
                                       "webhook": {"enabled": True}},
                    "authorization": {"mode": "Webhook"}, "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1", "healthzPort": 10248, "port": 10250}


class _StandInCore:
    """nodes/proxy for refusals.kubelet_up: every kubelet answers /healthz."""

    def connect_get_node_proxy_with_path(self, node, path, **_):
        if path == "configz":
            return SimpleNamespace(status=200, data=json.dumps(
                {"kubeletconfig": HARDENED_CONFIGZ}).encode())
        return SimpleNamespace(status=200, data=b"ok")


class StandInKube:
    """A stand-in for kubeprobe.kube.Kube, NOT an API server: the few calls the kubelet
    controls make (is the API alive, a kubelet's /configz and /healthz through nodes/proxy)
    answered from memory, so the benchmark measures the attacks and nothing else."""

    server_url = "standin://benchmark"
    context = None

    def __init__(self, timeout: tuple[float, float]) -> None:
        self.timeout, self.gone, self.core = timeout, False, _StandInCore()

    def alive(self) -> bool:
        return True

    def mark_gone(self, deadline_s: float = 1.0) -> None:
        self.gone = True

    def kubelet_configz(self, node: str) -> dict:
        return dict(HARDENED_CONFIGZ)


def make_suite(endpoint_list, args):
    from kubeprobe.catalog import load_catalog
    from kubeprobe.discovery import Endpoints
    from kubeprobe.suite import Suite
    from kubeprobe.targets import Target

    found = Endpoints()
    for endpoint in endpoint_list:
        found.add(endpoint)
    suite = Suite(catalog=load_catalog(), kube=StandInKube((args.connect_timeout,
                                                             args.read_timeout)),
                  target=Target("existing", None, None, "kubelet fan-out benchmark"),
                  run_id="kpfan", connect_timeout=args.connect_timeout,
                  read_timeout=args.read_timeout)
    suite.__dict__["endpoints"] = found
    if args.parallelism is not None:
        if not hasattr(suite, "parallelism"):
            raise SystemExit("--parallelism: this engine has no Suite.parallelism")
        suite.parallelism = args.parallelism
    return suite


def inner(args: argparse.Namespace) -> int:
    from kubeprobe.discovery import Endpoint

    endpoints = [Endpoint("node", f"{kind_of(i)}-{i}", address(i), 10250, "benchmark")
                 for i in range(args.endpoints)]
    worst = next(e for e in endpoints if e.name.startswith("filtered"))
    fan = make_suite(endpoints, args)
    alone = make_suite([worst], args)
    controls = {c.id: c for c in fan.catalog.controls if c.id in CONTROLS}
    engine = (f"Suite.parallelism={fan.parallelism}" if hasattr(fan, "parallelism")
              else "serial (this engine has no Suite.parallelism)")
    print(f"endpoints: {len(endpoints)} ({', '.join(f'{n} {k}' for k, n in sorted(Counter(kind_of(i) for i in range(len(endpoints))).items()))}); "
          f"connect timeout {args.connect_timeout:g} s, read timeout {args.read_timeout:g} s; "
          f"engine: {engine}")
    print(f"{'control':11} {'fan-out s':>10} {'1 worst s':>10} {'ratio':>7}  verdicts per endpoint")
    rows = []
    for control_id in CONTROLS:
        control = controls[control_id]
        started = time.monotonic()
        result = fan.run_control(control)
        fan_s = time.monotonic() - started
        started = time.monotonic()
        alone.run_control(control)
        worst_s = time.monotonic() - started
        verdicts = Counter(e.verdict.value for e in result.endpoints)
        rows.append({"control": control_id, "fan_out_s": round(fan_s, 2),
                     "worst_endpoint_s": round(worst_s, 2), "ratio": round(fan_s / worst_s, 1),
                     "verdicts": dict(verdicts), "endpoints": len(result.endpoints)})
        print(f"{control_id:11} {fan_s:10.2f} {worst_s:10.2f} {fan_s / worst_s:7.1f}  "
              + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())), flush=True)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    fan.run_control(controls["KUBELET-01"])
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    total = sum(r["fan_out_s"] for r in rows)
    print(f"total fan-out {total:.1f} s for {len(CONTROLS)} controls; peak RSS {rss_mib:.0f} MiB;"
          f" tracemalloc peak (one KUBELET-01 fan-out) {traced_peak:.1f} MiB")
    print(f"goal for the engine: fan-out <= 2x one worst-case endpoint (worst ratio now "
          f"{max(r['ratio'] for r in rows):.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"endpoints": len(endpoints), "engine": engine, "controls": rows,
             "connect_timeout_s": args.connect_timeout, "peak_rss_mib": round(rss_mib),
             "tracemalloc_peak_mib": round(traced_peak, 1)}, indent=1))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=120)
    parser.add_argument("--connect-timeout", type=float, default=1.0)
    parser.add_argument("--read-timeout", type=float, default=2.0)
    parser.add_argument("--parallelism", type=int, default=None,
                        help="set Suite.parallelism (an engine that has it)")
    parser.add_argument("--budget", type=float, default=900,
                        help="seconds the whole run may take before it is stopped")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        return inner(args) if args.inner else outer(args)
    except KeyboardInterrupt:
        print("interrupted" + ("" if args.inner else " (namespaces removed, see above)"))
        return 130


if __name__ == "__main__":
    sys.exit(main())
