"""`kubeprobe lab build|tools|up|down|status` (also `python -m kubeprobe.lab.cli ...`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kubeprobe.lab import build, cluster
from kubeprobe.lab.cluster import LabError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubeprobe lab", description="single-node Kubernetes lab on this host")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build Kubernetes, etcd and pause from the Go module proxy (cached)")
    tools = sub.add_parser("tools", help="build the registry, cosign and policy-controller from "
                                         "their Go modules (cached; kubeprobe/lab/gotools.py)")
    tools.add_argument("names", nargs="*", metavar="NAME")
    up = sub.add_parser("up", help="start the lab")
    up.add_argument("--profile", choices=sorted(cluster.config.PROFILES), required=True)
    up.add_argument("--image", action="append", default=[], type=Path, metavar="TAR",
                    help="extra docker-archive tar to import into the node (repeatable)")
    sub.add_parser("down", help="stop the lab and remove everything it created")
    sub.add_parser("status", help="show whether the lab runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "build":
            build.build()
        elif args.command == "tools":
            from kubeprobe.lab import gotools
            return gotools.main(args.names)
        elif args.command == "up":
            state = cluster.up(args.profile, args.image)
            print(f"lab up: profile={state.profile} node={state.node_name} ip={state.node_ip} "
                  f"kubeconfig={state.kubeconfig}")
        elif args.command == "down":
            cluster.down()
        elif args.command == "status":
            state = cluster.status()
            if state is None:
                leftovers = cluster.state_path().exists()
                print("lab: not running" + (" (leftovers of a previous lab; run `kubeprobe lab down`)"
                                            if leftovers else ""))
                return 1
            print(f"lab: {'running' if state.running else 'DEGRADED (a lab process died; see logs)'}\n"
                  f"  profile:    {state.profile}\n  version:    {state.k8s_version}\n"
                  f"  kubeconfig: {state.kubeconfig}\n  node:       {state.node_name} {state.node_ip}\n"
                  f"  pids:       {' '.join(f'{k}={v}' for k, v in sorted(state.pids.items())) or '-'}\n"
                  f"  logs:       {state.log_dir}\n  audit log:  {state.audit_log or '-'}\n"
                  f"  images:     {' '.join(state.images) or '-'}")
            return 0 if state.running else 1
    except LabError as exc:
        print(f"kubeprobe lab: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # build failures
        print(f"kubeprobe lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
