"""Benchmark the lab: cached build (no-op), `lab up` to node Ready, `lab down`.

    sudo python benchmarks/lab_up.py [--profile hardened|weak] [--runs N]

Targets: up <= 60 s (goal <= 20 s). Needs root and a finished `kubeprobe lab build`.
Refuses to run while a lab is up (it would tear it down).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubeprobe.lab import build, cluster  # noqa: E402


def timed(fn) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="hardened", choices=sorted(cluster.config.PROFILES))
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    if cluster.status() is not None:
        print("a lab is running; run `kubeprobe lab down` first", file=sys.stderr)
        return 2
    quiet = lambda *a, **k: None  # noqa: E731
    print(f"build (cached, no-op): {timed(lambda: build.build(log=quiet)):.2f} s")
    ups, downs = [], []
    try:
        for run in range(1, args.runs + 1):
            ups.append(timed(lambda: cluster.up(args.profile, log=quiet)))
            downs.append(timed(lambda: cluster.down(log=quiet)))
            print(f"run {run}: lab up ({args.profile}) to node Ready: {ups[-1]:.1f} s, lab down: {downs[-1]:.1f} s")
    except cluster.LabError as exc:
        print(f"lab failed: {exc}", file=sys.stderr)
        cluster.down(log=quiet)
        return 1
    if args.runs > 1:
        print(f"median: up {statistics.median(ups):.1f} s, down {statistics.median(downs):.1f} s")
    verdict = "goal met" if max(ups) <= 20 else ("target met" if max(ups) <= 60 else "TARGET MISSED")
    print(f"lab up target <= 60 s, goal <= 20 s: {verdict}")
    return 0 if max(ups) <= 60 else 1


if __name__ == "__main__":
    sys.exit(main())
