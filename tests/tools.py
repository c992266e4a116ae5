"""Tools the self-tests build from Go modules, cached like the lab's builds.

    python3 -m tests.tools            build (or find) every tool; one line each

wheelhouse: the wheels of kubeprobe's dependencies and of its build backend, fetched once with
`pip download` into ${XDG_CACHE_HOME:-~/.cache}/kubeprobe/wheelhouse/, so the wheel self-test
builds and installs kubeprobe in a fresh venv with `--no-index` (nothing from the network).

actionlint (github.com/rhysd/actionlint) lints the example GitHub workflow; kubeprobe/gotools.py
builds it from its Go module once, cached beside the lab's and kind's tools.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from kubeprobe.gotools import GoTool, ToolUnavailable, cache_root, ensure, report

ACTIONLINT = GoTool("actionlint", "github.com/rhysd/actionlint", "v1.7.12",
                    ("github.com/rhysd/actionlint/cmd/actionlint",))


def ensure_actionlint(log=lambda line: None) -> Path:
    """The cached actionlint binary, built from its Go module the first time."""
    return ensure(ACTIONLINT, log)


REPO = Path(__file__).resolve().parent.parent
BUILD_REQUIREMENTS = ("setuptools>=68", "wheel")


def requirements() -> list[str]:
    """kubeprobe's dependencies (pyproject.toml) and its build backend."""
    import tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *BUILD_REQUIREMENTS]


def wheelhouse_dir() -> Path:
    return cache_root() / "wheelhouse"


def ensure_wheelhouse(log=lambda line: None) -> Path:
    """The wheelhouse, filled by `pip download` when the requirements changed (a stamp holds
    their hash)."""
    wanted = hashlib.sha256("\n".join(requirements()).encode()).hexdigest()[:16]
    stamp = wheelhouse_dir() / "requirements.sha256"
    if stamp.is_file() and stamp.read_text().strip() == wanted:
        return wheelhouse_dir()
    wheelhouse_dir().mkdir(parents=True, exist_ok=True)
    log(f"pip download: {len(requirements())} requirements into {wheelhouse_dir()}")
    done = subprocess.run([sys.executable, "-m", "pip", "download", "-q",
                           "--disable-pip-version-check", "--only-binary", ":all:", "-d",
                           str(wheelhouse_dir()), *requirements()],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise ToolUnavailable(f"pip download failed: {done.stderr.strip()[-500:]}")
    stamp.write_text(wanted + "\n")
    return wheelhouse_dir()


def main() -> int:
    say = lambda line: print(f"[tools] {line}", flush=True)  # noqa: E731
    failed = report([ACTIONLINT], say)
    try:
        wheelhouse = ensure_wheelhouse(log=say)
        say(f"wheelhouse: {wheelhouse} ({len(list(wheelhouse.glob('*.whl')))} wheels)")
    except ToolUnavailable as exc:
        say(str(exc))
        failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
