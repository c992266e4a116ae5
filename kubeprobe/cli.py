"""`kubeprobe` console script.

    kubeprobe run [pytest args...]      run the suite (same as `pytest suites/ ...`; the
                                        installed suite outside a checkout)
    kubeprobe catalog [--catalog FILE]  validate the catalog and list its controls
    kubeprobe diff OLD NEW              what changed between two runs' results.json:
                                        regressions, fixes, added, removed, authority
                                        changes; exit 1 on regressions, 2 on a bad file
                                        (see kubeprobe/diff.py)
    kubeprobe sweep --run-id ID | --all [--kubeconfig FILE] [--context NAME] [--reports-dir DIR]
                                        remove the objects and planted files a run left
                                        (killed, or a cleanup failed): from its journal
                                        (DIR/journal/ID.jsonl) and the kubeprobe.io/run-id
                                        label; one line per thing removed, exit 0 when
                                        nothing is left (see kubeprobe/sweep.py)
    kubeprobe lab build|tools|up|down|status  the local lab cluster (see kubeprobe/lab)
    kubeprobe kind engine|tools|image   kind: the engine, its tools, the offline node image
    kubeprobe matrix [--profiles P,..] [--versions 1.35,1.36,1.37]
                                        the suite on the lab at each Kubernetes minor, one
                                        combined table (see kubeprobe/matrix.py)
    kubeprobe image publish --registry HOST[:PORT] [...]
                                        build the probe image, push it, sign it with
                                        --sign-key, print its digest ref for --probe-image
                                        (see kubeprobe/publish.py)
    kubeprobe rules generate ALLOWLIST  Falco rules from a kube-system allowlist
    kubeprobe docs controls [--check]   write docs/controls.md from the catalog and the attack
                                        docstrings (--check: exit 1 when it is stale)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kubeprobe.catalog import DEFAULT_CATALOG, CatalogError, load_catalog
from kubeprobe.resources import SUITES_DIR


def _catalog(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kubeprobe catalog")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    args = parser.parse_args(argv)
    try:
        catalog = load_catalog(args.catalog)
    except CatalogError as exc:
        print(f"kubeprobe: {exc}", file=sys.stderr)
        return 2
    for c in catalog.controls:
        expected = ", ".join(f"{p}={e.value}" for p, e in c.expected.items())
        print(f"{c.id:14} {c.component:15} {c.vantage:7} {expected:40} {c.title}")
    print(f"{len(catalog.controls)} controls, profiles: {', '.join(catalog.profiles)}")
    return 0


def _run(argv: list[str]) -> int:
    import pytest
    # No cache directory: installed, pytest's rootdir would be inside site-packages.
    return int(pytest.main([str(SUITES_DIR), "-p", "no:cacheprovider", *argv]))


def _lab(argv: list[str]) -> int:
    try:
        from kubeprobe.lab.cli import main as lab_main
    except ImportError as exc:
        print(f"kubeprobe: the lab is not available in this build: {exc}", file=sys.stderr)
        return 2
    return lab_main(argv)


def _kind(argv: list[str]) -> int:
    from kubeprobe.kind.cli import main as kind_main
    return kind_main(argv)


def _rules(argv: list[str]) -> int:
    from kubeprobe.rules import main as rules_main
    return rules_main(argv)


def _diff(argv: list[str]) -> int:
    from kubeprobe.diff import main as diff_main
    return diff_main(argv)


def _sweep(argv: list[str]) -> int:
    from kubeprobe.sweep import main as sweep_main
    return sweep_main(argv)


def _matrix(argv: list[str]) -> int:
    from kubeprobe.matrix import main as matrix_main
    return matrix_main(argv)


def _image(argv: list[str]) -> int:
    from kubeprobe.publish import main as publish_main
    return publish_main(argv)


def _docs(argv: list[str]) -> int:
    from kubeprobe.reference import main as docs_main
    return docs_main(argv)


COMMANDS = {"run": _run, "catalog": _catalog, "diff": _diff, "sweep": _sweep, "lab": _lab,
            "kind": _kind, "rules": _rules, "docs": _docs, "matrix": _matrix, "image": _image}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help")
              else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
