"""`kubeprobe matrix`: the suite on every supported Kubernetes minor, one combined table.

    kubeprobe matrix [--profiles hardened,weak] [--versions 1.35,1.36,1.37]
                     [--reports-dir reports/matrix] [--no-build] [-- PYTEST ARGS...]

For each profile and version, in turn (the lab is one cluster at a time): build the version's
binaries if they are not cached (about 10 minutes each on 2 cores; --no-build refuses
instead), then `pytest suites/ --target lab --cluster-profile P --k8s-version V` into
DIR/P/V/ (the usual results.json, junit.xml and report.html). Then one table, control x
(profile, version) -> verdict, in DIR/matrix.md and DIR/matrix.json: the controls whose
verdict differs between versions of the same profile come first, each with the versions'
observations, so a behaviour change between minors is the first thing read.

Exit status: 0 when every run judged its controls and no verdict differs between versions
(each run's own exit status, e.g. 1 for the weak profile's FAILs, is in the table); 1 when a
verdict differs between versions; 2 for bad options; 3 when a run could not be made (build
failed, the suite could not start, a lab was already running).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubeprobe.diff import ResultsError, load_results
from kubeprobe.resources import DEFAULT_REPORTS, SUITES_DIR


@dataclass
class Run:
    profile: str
    version: str
    reports: Path
    exit_status: int | None = None
    seconds: float = 0.0
    error: str = ""
    results: dict = field(default_factory=dict)

    @property
    def column(self) -> str:
        return f"{self.profile} {self.version}"


def _parser() -> argparse.ArgumentParser:
    from kubeprobe.lab.build import SUPPORTED
    from kubeprobe.profiles import KIND_CONFIGS
    parser = argparse.ArgumentParser(prog="kubeprobe matrix",
                                     description="the suite on each supported Kubernetes minor")
    parser.add_argument("--profiles", default="hardened,weak",
                        help=f"comma-separated lab profiles ({', '.join(sorted(KIND_CONFIGS))})")
    parser.add_argument("--versions", default=",".join(SUPPORTED),
                        help=f"comma-separated minors or patches (default {','.join(SUPPORTED)})")
    parser.add_argument("--reports-dir", type=Path, default=None,
                        help="where the per-version reports and the matrix go (default reports/matrix)")
    parser.add_argument("--no-build", action="store_true",
                        help="refuse a version that is not built instead of building it")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER,
                        help="after --: extra arguments for every suite run")
    return parser


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def run_matrix(profiles: list[str], versions: list[str], out: Path, build_missing: bool,
               pytest_args: list[str], log=print) -> list[Run]:
    from kubeprobe.lab import build, cluster
    runs: list[Run] = []
    for version in versions:
        stamp = build.read_stamp(version=version)
        if stamp is None and build_missing:
            log(f"[matrix] building Kubernetes {version} (cached afterwards)")
            t0 = time.monotonic()
            try:
                build.build(version, log=lambda *a, **k: None)
            except (RuntimeError, subprocess.SubprocessError) as exc:
                log(f"[matrix] build of {version} failed: {exc}")
            else:
                log(f"[matrix] built {version} in {time.monotonic() - t0:.0f} s")
        for profile in profiles:
            run = Run(profile, version, out / profile / version)
            runs.append(run)
            if build.read_stamp(version=version) is None:
                run.error = (f"Kubernetes {version} is not built (run `kubeprobe lab build "
                             f"--k8s-version {build.minor_of(version)}`)")
                log(f"[matrix] {run.column}: {run.error}")
                continue
            if cluster.status() is not None:
                run.error = "a lab is already running; `kubeprobe lab down` first"
                log(f"[matrix] {run.column}: {run.error}")
                continue
            cmd = [sys.executable, "-m", "pytest", str(SUITES_DIR), "--target", "lab",
                   "--cluster-profile", profile, "--k8s-version", version,
                   "--reports-dir", str(run.reports), "-q", "-p", "no:cacheprovider", *pytest_args]
            log(f"[matrix] {run.column}: {' '.join(cmd[3:])}")
            t0 = time.monotonic()
            done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            run.seconds = round(time.monotonic() - t0, 1)
            run.exit_status = done.returncode
            (run.reports / "matrix-run.log").parent.mkdir(parents=True, exist_ok=True)
            (run.reports / "matrix-run.log").write_text(done.stdout)
            try:
                run.results = load_results(run.reports / "results.json")
            except ResultsError as exc:
                run.error = str(exc)
            tail = (done.stdout.strip().splitlines() or [""])[-1]
            log(f"[matrix] {run.column}: exit {done.returncode} in {run.seconds:.0f} s; {tail}")
    return runs


def combine(runs: list[Run]) -> dict:
    """The table: one row per control (catalog order of the first run that has it), one cell
    per run; rows whose verdict differs between versions of one profile first."""
    order: list[str] = []
    rows: dict[str, dict] = {}
    for run in runs:
        for control in run.results.get("controls", []):
            if control["id"] not in rows:
                order.append(control["id"])
                rows[control["id"]] = {"id": control["id"], "title": control["title"], "cells": {}}
            rows[control["id"]]["cells"][run.column] = {
                "verdict": control["verdict"], "observed": control["observed"],
                "reason": control.get("reason", "")}
    profiles = sorted({r.profile for r in runs})
    for row in rows.values():
        differs = []
        for profile in profiles:
            seen = {row["cells"].get(r.column, {}).get("verdict", "absent")
                    for r in runs if r.profile == profile and r.results}
            if len(seen) > 1:
                differs.append(profile)
        row["differs_in"] = differs
    ordered = ([rows[i] for i in order if rows[i]["differs_in"]]
               + [rows[i] for i in order if not rows[i]["differs_in"]])
    return {"tool": "kubeprobe", "kind": "version-matrix",
            "columns": [{"column": r.column, "profile": r.profile, "version": r.version,
                         "kubernetes": (r.results.get("environment") or {}).get("Kubernetes", ""),
                         "node_cgroups": (r.results.get("environment") or {}).get("Node cgroups", ""),
                         "exit_status": r.exit_status, "seconds": r.seconds, "error": r.error,
                         "reports": str(r.reports), "summary": r.results.get("summary", {})}
                        for r in runs],
            "differing": [r["id"] for r in ordered if r["differs_in"]],
            "rows": ordered}


def to_markdown(matrix: dict) -> str:
    cols = [c["column"] for c in matrix["columns"]]
    lines = ["# kubeprobe version matrix", ""]
    for c in matrix["columns"]:
        state = c["error"] or f"exit {c['exit_status']}, {c['seconds']:.0f} s, " + ", ".join(
            f"{k} {v}" for k, v in sorted(c["summary"].items()))
        lines.append(f"- **{c['column']}** ({c['kubernetes'] or 'not run'}): {state}; "
                     f"node cgroups: {c['node_cgroups'] or '-'}; reports: `{c['reports']}`")
    lines += ["", f"Verdicts that differ between versions: "
              f"{', '.join(matrix['differing']) or 'none'}.", "",
              "| control | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for row in matrix["rows"]:
        mark = " (differs: " + ", ".join(row["differs_in"]) + ")" if row["differs_in"] else ""
        cells = [row["cells"].get(c, {}).get("verdict", "-") for c in cols]
        lines.append(f"| {row['id']}{mark} | " + " | ".join(cells) + " |")
    differing = [r for r in matrix["rows"] if r["differs_in"]]
    if differing:
        lines += ["", "## What differs", ""]
        for row in differing:
            lines.append(f"### {row['id']}: {row['title']}")
            for col in cols:
                cell = row["cells"].get(col)
                if cell:
                    lines.append(f"- {col}: **{cell['verdict']}**, {cell['observed']}: {cell['reason'][:400]}")
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    from kubeprobe.lab.build import resolve_version
    from kubeprobe.profiles import KIND_CONFIGS
    args = _parser().parse_args(argv)
    profiles = _split(args.profiles)
    bad = [p for p in profiles if p not in KIND_CONFIGS]
    if bad or not profiles:
        print(f"kubeprobe matrix: --profiles {args.profiles!r}: each must be one of "
              f"{', '.join(sorted(KIND_CONFIGS))}", file=sys.stderr)
        return 2
    try:
        versions = [resolve_version(v) for v in _split(args.versions)]
    except ValueError as exc:
        print(f"kubeprobe matrix: --versions: {exc}", file=sys.stderr)
        return 2
    if not versions:
        print("kubeprobe matrix: --versions names no version", file=sys.stderr)
        return 2
    out = args.reports_dir or DEFAULT_REPORTS / "matrix"
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    runs = run_matrix(profiles, versions, out, not args.no_build, extra)
    matrix = combine(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "matrix.json").write_text(json.dumps(matrix, indent=2) + "\n")
    (out / "matrix.md").write_text(to_markdown(matrix))
    print(to_markdown(matrix))
    print(f"[matrix] written: {out / 'matrix.md'} and {out / 'matrix.json'}")
    if any(r.error or r.exit_status not in (0, 1) for r in runs):
        return 3
    return 1 if matrix["differing"] else 0
