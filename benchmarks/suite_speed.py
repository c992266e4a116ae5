"""Benchmark the run engine on a running lab: wall time of the suite beside the sum of its
controls' own times (what a serial run would take).

    python benchmarks/suite_speed.py [--parallelism N ...]

Two runs against the running lab (`kubeprobe lab up --profile ...` first; it is left up):
every control but the long-running ones (goal <= 5 s wall), then the whole suite (goal <=
the longest long-running control's wait + 5 s). Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubeprobe.catalog import load_catalog  # noqa: E402
from kubeprobe.lab import cluster  # noqa: E402


def run_suite(profile: str, parallelism: int, controls: list[str] | None) -> dict:
    with tempfile.TemporaryDirectory() as reports:
        cmd = [sys.executable, "-m", "pytest", str(REPO / "suites"), "-q", "-p", "no:randomly",
               "--target", "lab", "--cluster-profile", profile, "--reports-dir", reports,
               "--parallelism", str(parallelism)]
        if controls:
            cmd += ["--controls", ",".join(controls)]
        started = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        wall = time.monotonic() - started
        path = Path(reports) / "results.json"
        if not path.is_file():
            sys.exit(f"suite_speed: the suite wrote no results (exit {done.returncode}): "
                     f"{(done.stdout + done.stderr).strip().splitlines()[-1:]}")
        rows = json.loads(path.read_text())["controls"]
    return {"wall": wall, "rows": rows, "exit": done.returncode}


def describe(label: str, run: dict) -> None:
    rows = run["rows"]
    total = sum(r["duration_s"] for r in rows)
    slowest = sorted(rows, key=lambda r: -r["duration_s"])[:3]
    starts = [datetime.fromisoformat(r["started_at"]).timestamp() for r in rows]
    phase = max(s + r["duration_s"] for s, r in zip(starts, rows)) - min(starts)
    print(f"{label}: {len(rows)} controls, attack phase {phase:.1f} s (first control started "
          f"to last one judged), wall {run['wall']:.1f} s (pytest process, incl. start-up), "
          f"sum of control times {total:.1f} s, speed-up {total / phase:.1f}x, exit "
          f"{run['exit']}")
    print("  slowest: " + ", ".join(f"{r['id']} {r['duration_s']:.1f} s" for r in slowest))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallelism", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    state = cluster.status()
    if state is None:
        print("suite_speed: no lab is running; `kubeprobe lab up --profile hardened` first",
              file=sys.stderr)
        return 2
    catalog = load_catalog()
    quick = [c.id for c in catalog.controls if not c.long_running]
    print(f"lab {state.k8s_version} ({state.profile}); {len(catalog.controls)} controls, "
          f"long-running: {', '.join(c.id for c in catalog.controls if c.long_running)}")
    for parallelism in args.parallelism:
        describe(f"parallelism {parallelism}, all but long-running",
                 run_suite(state.profile, parallelism, quick))
        describe(f"parallelism {parallelism}, whole suite",
                 run_suite(state.profile, parallelism, None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
