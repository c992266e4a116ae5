"""Where kubeprobe finds what it ships beside its code, in a checkout and when installed.

The repository keeps the suite's run-time files at its root:

    attacks/           the attack modules          installed as the package kubeprobe.attacks
    suites/            the suite's test module     installed as the package kubeprobe.suites
    fixtures/          audit policy, kind profiles, policies, Falco rules
    agent/             the pod-vantage agent's Go sources (the probe image is built from them)
    build/             the lab's Go wrapper modules
    kind-config.yaml   the hardened cluster

A wheel (`pip install .`) carries attacks/ and suites/ as packages (pyproject's package-dir)
and the rest below kubeprobe/_data/ with the same relative paths (setup.py's build step), all
found here through importlib.resources. A checkout is recognised by its pyproject.toml and
kind-config.yaml next to the kubeprobe package: there everything is read in place, so an
edit counts at once, and reports go to the checkout's reports/; installed, reports go to
./reports in the working directory.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
IN_CHECKOUT = all((CHECKOUT / name).exists() for name in
                  ("pyproject.toml", "kind-config.yaml", "attacks", "suites", "fixtures"))


def _package_path(*parts: str) -> Path:
    """A directory inside the installed kubeprobe package, as a real path (a wheel installs
    unpacked; a zipped kubeprobe is not supported: attack modules are loaded by path)."""
    found = importlib.resources.files("kubeprobe").joinpath(*parts)
    if not isinstance(found, Path):
        raise RuntimeError(f"kubeprobe must be installed as files, not inside {found}")
    return found


if IN_CHECKOUT:
    ATTACKS_DIR = CHECKOUT / "attacks"
    SUITES_DIR = CHECKOUT / "suites"
    DATA_ROOT = CHECKOUT
    DEFAULT_REPORTS = CHECKOUT / "reports"
else:
    ATTACKS_DIR = _package_path("attacks")
    SUITES_DIR = _package_path("suites")
    DATA_ROOT = _package_path("_data")
    DEFAULT_REPORTS = Path("reports")


def data(relative: str) -> Path:
    """A shipped file or directory by its path in the repository, e.g.
    data("fixtures/falco") or data("kind-config.yaml")."""
    return DATA_ROOT / relative
