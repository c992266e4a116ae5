"""`kubeprobe kind engine|tools|image` (also `python -m kubeprobe.kind.cli ...`).

    kubeprobe kind engine start|stop|status   the engine kind uses (ours only when none answers)
    kubeprobe kind tools                       build (or find) kind, helm, dockerd, runc
    kubeprobe kind image [--version V] [--force] [--no-coredns]
                                               the offline node image for the lab's Kubernetes
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from kubeprobe.kind import engine, lab_version, nodeimage, tools


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubeprobe kind",
                                     description="kind clusters: engine, tools, node image")
    sub = parser.add_subparsers(dest="command", required=True)
    eng = sub.add_parser("engine", help="the container engine kind uses")
    eng.add_argument("action", choices=("start", "stop", "status"))
    sub.add_parser("tools", help="build (or find) kind, helm, dockerd and runc (cached)")
    img = sub.add_parser("image", help="build (or find) the offline kind node image")
    img.add_argument("--version", default=None,
                     help="the lab's Kubernetes version (default: the lab's default)")
    img.add_argument("--force", action="store_true", help="rebuild even when cached")
    img.add_argument("--if-offline", action="store_true",
                     help="only when the engine cannot pull kind's upstream kindest/node")
    img.add_argument("--no-coredns", action="store_true",
                     help="leave coredns out (it is the longest build)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    log = lambda line: print(f"[kind] {line}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        if args.command == "engine":
            if args.action == "start":
                found = engine.ensure(log)
                print(f"engine: {found.version} ({'kubeprobe dockerd' if found.ours else 'yours'}"
                      f"{', started now' if found.started_now else ''})")
            elif args.action == "stop":
                print("engine: stopped kubeprobe's dockerd" if engine.stop()
                      else "engine: kubeprobe's dockerd is not running (nothing stopped)")
            else:
                state = engine.status()
                print(json.dumps(state, indent=2))
                return 0 if state["answers"] else 1
        elif args.command == "tools":
            for tool in (*tools.CLI_TOOLS, *tools.ENGINE_TOOLS):
                tools.ensure(tool, log)
                print(f"{tool.name} {tool.version}: {tool.dir} "
                      f"(built in {tools.stamp(tool)['seconds']}s)")
        elif args.command == "image":
            engine.ensure(log)
            if args.if_offline:
                if nodeimage.docker_has(nodeimage.UPSTREAM_DEFAULT) or subprocess.run(
                        ["docker", "pull", nodeimage.UPSTREAM_DEFAULT], capture_output=True,
                        timeout=900).returncode == 0:
                    print(f"node image: {nodeimage.UPSTREAM_DEFAULT} (pulled; no offline image "
                          f"needed)")
                    return 0
            stamp = lab_version.stamp(args.version)
            started = time.monotonic()
            ref = nodeimage.build(stamp, log=log, force=args.force,
                                  with_coredns=not args.no_coredns)
            nodeimage.prune_old(ref)
            print(f"node image: {ref} ({time.monotonic() - started:.0f}s)")
    except lab_version.VersionError as exc:
        print(f"kubeprobe kind: {exc}", file=sys.stderr)
        return 2
    except (engine.EngineError, tools.ToolUnavailable, nodeimage.NodeImageError) as exc:
        print(f"kubeprobe kind: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
