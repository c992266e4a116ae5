"""Tools the self-tests build from Go modules, cached like the lab's builds.

    python3 -m tests.tools            build (or find) every tool; one line each

wheelhouse: the wheels of kubeprobe's dependencies and of its build backend, fetched once with
`pip download` into ${XDG_CACHE_HOME:-~/.cache}/kubeprobe/wheelhouse/, so the wheel self-test
builds and installs kubeprobe in a fresh venv with `--no-index` (nothing from the network).

actionlint (github.com/rhysd/actionlint) lints the example GitHub workflow. It is built with
`GOTOOLCHAIN=local go install` into ${XDG_CACHE_HOME:-~/.cache}/kubeprobe/tools/, sharing the
lab's module and build caches (gomod/, gobuild/); a stamp records the build's time. A second
call finds the binary and builds nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kubeprobe.lab.build import cache_root

ACTIONLINT_MODULE = "github.com/rhysd/actionlint"
ACTIONLINT_VERSION = "v1.7.12"


class ToolUnavailable(RuntimeError):
    """One line: why the tool cannot be had here (no Go, the build failed)."""


def tools_dir() -> Path:
    return cache_root() / "tools"


def actionlint_dir() -> Path:
    return tools_dir() / f"actionlint-{ACTIONLINT_VERSION}"


def actionlint_stamp() -> dict | None:
    """What the cached build recorded (version, seconds), or None when it is not built."""
    try:
        stamp = json.loads((actionlint_dir() / "build.stamp.json").read_text())
    except (OSError, ValueError):
        return None
    return stamp if (actionlint_dir() / "actionlint").is_file() else None


def ensure_actionlint(log=lambda line: None) -> Path:
    """The cached actionlint binary, built from its Go module the first time."""
    binary = actionlint_dir() / "actionlint"
    if actionlint_stamp() is not None:
        return binary
    if shutil.which("go") is None:
        raise ToolUnavailable("go is not installed: actionlint cannot be built")
    cache = cache_root()
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0",
           "GOMODCACHE": str(cache / "gomod"), "GOCACHE": str(cache / "gobuild"),
           "GOBIN": str(actionlint_dir()), "GOFLAGS": "-buildvcs=false"}
    actionlint_dir().mkdir(parents=True, exist_ok=True)
    log(f"building actionlint {ACTIONLINT_VERSION} from its Go module")
    started = time.monotonic()
    done = subprocess.run(["go", "install", f"{ACTIONLINT_MODULE}/cmd/actionlint@"
                                            f"{ACTIONLINT_VERSION}"],
                          env=env, cwd=actionlint_dir(), capture_output=True, text=True,
                          timeout=1800)
    if done.returncode != 0 or not binary.is_file():
        raise ToolUnavailable(f"building actionlint {ACTIONLINT_VERSION} failed: "
                              f"{done.stderr.strip()[-500:]}")
    seconds = round(time.monotonic() - started, 1)
    version = subprocess.run([str(binary), "-version"], capture_output=True, text=True)
    (actionlint_dir() / "build.stamp.json").write_text(json.dumps(
        {"module": ACTIONLINT_MODULE, "version": ACTIONLINT_VERSION, "seconds": seconds,
         "go": subprocess.run(["go", "env", "GOVERSION"], capture_output=True,
                              text=True).stdout.strip(),
         "reports": version.stdout.strip().splitlines()[:1]}, indent=2) + "\n")
    return binary


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
    failed = 0
    try:
        binary = ensure_actionlint(log=say)
        stamp = actionlint_stamp() or {}
        say(f"actionlint {ACTIONLINT_VERSION}: {binary} (built in {stamp.get('seconds', '?')} s "
            f"with {stamp.get('go', '?')})")
    except ToolUnavailable as exc:
        say(str(exc))
        failed += 1
    try:
        wheelhouse = ensure_wheelhouse(log=say)
        say(f"wheelhouse: {wheelhouse} ({len(list(wheelhouse.glob('*.whl')))} wheels)")
    except ToolUnavailable as exc:
        say(str(exc))
        failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
