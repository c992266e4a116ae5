"""Benchmark kind beside the lab: `kind create cluster` (to every node Ready) and delete, next to
`lab up` to node Ready and `lab down`, same profile.

    sudo python benchmarks/kind_create.py [--profile hardened|weak] [--workers N] [--no-lab]

Needs `kubeprobe kind tools`, a node image (`kubeprobe kind image`, or a pullable kindest/node)
and, for the lab column, a finished `kubeprobe lab build` and no lab running (the lab part runs
under /tmp/kubeprobe-lab.lock, like every lab user on a shared machine).
"""
from __future__ import annotations

import argparse
import fcntl
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubeprobe import targets  # noqa: E402
from kubeprobe.kind import engine  # noqa: E402


def kind_round(profile: str, workers: int, image: str) -> tuple[float, float]:
    kind = targets.kind_cli()
    name = f"kubeprobe-bench-{int(time.time())}"
    with tempfile.TemporaryDirectory(prefix="kubeprobe-kind-bench-") as tmp:
        config = targets.kind_config_for(profile, workers=workers)
        for node in config["nodes"]:
            node["image"] = image
        path = Path(tmp) / "kind-config.yaml"
        path.write_text(yaml.safe_dump(config))
        t0 = time.monotonic()
        try:
            targets._run([kind, "create", "cluster", "--name", name, "--config", str(path),
                          "--kubeconfig", str(Path(tmp) / "kubeconfig"), "--wait", "300s"],
                         900, "kind create")
            created = time.monotonic() - t0
        finally:
            t1 = time.monotonic()
            targets._run([kind, "delete", "cluster", "--name", name], 300, "kind delete")
            deleted = time.monotonic() - t1
    return created, deleted


def lab_round(profile: str) -> tuple[float, float] | str:
    from kubeprobe.lab import cluster
    with open("/tmp/kubeprobe-lab.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cluster.status() is not None:
            return "a lab is running (not touched)"
        quiet = lambda *a, **k: None  # noqa: E731
        t0 = time.monotonic()
        try:
            cluster.up(profile, log=quiet)
            up = time.monotonic() - t0
        finally:
            t1 = time.monotonic()
            cluster.down(log=quiet)
            down = time.monotonic() - t1
    return up, down


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="hardened", choices=("hardened", "weak"))
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--no-lab", action="store_true", help="only the kind column")
    args = parser.parse_args()
    reason = targets.kind_available()
    if reason:
        print(f"kind is not available: {reason}", file=sys.stderr)
        return 2
    started = engine.ensure()
    try:
        image, why = targets._kind_node_image("auto", lambda line: None)
        created, deleted = kind_round(args.profile, args.workers, image)
        print(f"kind create cluster ({args.profile}, {1 + args.workers} node(s), {image}): "
              f"{created:.1f} s, kind delete: {deleted:.1f} s   [{why}]")
    finally:
        if started.started_now:
            engine.stop()
    if not args.no_lab:
        lab = lab_round(args.profile)
        if isinstance(lab, str):
            print(f"lab up: not measured: {lab}")
        else:
            print(f"lab up ({args.profile}) to node Ready: {lab[0]:.1f} s, lab down: {lab[1]:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
