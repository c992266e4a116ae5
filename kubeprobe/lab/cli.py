"""`kubeprobe lab build|up|down|status` (also `python -m kubeprobe.lab.cli ...`)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kubeprobe.lab import build, cluster
from kubeprobe.lab.cluster import LabError

AUDIT_WEBHOOK_TOKEN_ENV = "KUBEPROBE_AUDIT_WEBHOOK_TOKEN"  # the suite's --audit-webhook-token


def _audit_webhook(url: str | None) -> cluster.config.AuditWebhook | None:
    from kubeprobe.alerts import TOKEN_PATTERN, TOKEN_RULE
    if url is None:
        return None
    if not url.startswith(("http://", "https://")):
        raise LabError(f"--audit-webhook {url!r}: an http:// or https:// URL")
    token = os.environ.get(AUDIT_WEBHOOK_TOKEN_ENV)
    if not token:
        raise LabError(f"--audit-webhook needs the receiver's token in ${AUDIT_WEBHOOK_TOKEN_ENV}")
    if not TOKEN_PATTERN.match(token):
        raise LabError(f"${AUDIT_WEBHOOK_TOKEN_ENV} must be {TOKEN_RULE}")
    return cluster.config.AuditWebhook(url, token)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubeprobe lab", description="single-node Kubernetes lab on this host")
    sub = parser.add_subparsers(dest="command", required=True)
    versions = ", ".join(f"{m} ({v})" for m, v in build.SUPPORTED.items())
    b = sub.add_parser("build", help="build Kubernetes, etcd and pause from the Go module proxy (cached)")
    b.add_argument("--k8s-version", metavar="V", help=f"a supported minor or patch: {versions}; "
                   f"default {build.DEFAULT_VERSION}")
    b.add_argument("--all", action="store_true", help="every supported minor, side by side")
    up = sub.add_parser("up", help="start the lab")
    up.add_argument("--k8s-version", metavar="V", help=f"Kubernetes version to run ({versions}); "
                    f"default {build.DEFAULT_VERSION}; it must be built")
    up.add_argument("--profile", choices=sorted(cluster.config.PROFILES), required=True)
    up.add_argument("--image", action="append", default=[], type=Path, metavar="TAR",
                    help="extra docker-archive tar to import into the node (repeatable)")
    up.add_argument("--audit-webhook", metavar="URL", default=None,
                    help="the API server also posts its audit events to URL (a kubeprobe "
                         "--audit-webhook receiver, e.g. http://NODE_IP:2802/), in batches of "
                         "at most 1 s, with the bearer token from $" + AUDIT_WEBHOOK_TOKEN_ENV)
    sub.add_parser("down", help="stop the lab and remove everything it created")
    sub.add_parser("status", help="show whether the lab runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "build":
            for version in (build.SUPPORTED.values() if args.all else [args.k8s_version]):
                build.build(version)
        elif args.command == "up":
            state = cluster.up(args.profile, args.image, version=args.k8s_version,
                               audit_webhook=_audit_webhook(args.audit_webhook))
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
                  f"  audit webhook: {state.audit_webhook or '-'}\n"
                  f"  images:     {' '.join(state.images) or '-'}")
            return 0 if state.running else 1
    except LabError as exc:
        print(f"kubeprobe lab: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError) as exc:  # build failures, unsupported versions
        print(f"kubeprobe lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
