"""Which of the lab's builds a kind node image is made from.

Works with the lab's single-version build API (read_stamp()) and with the per-version one
(build.resolve_version("1.36"), build.read_stamp(version=...), k8s-vX.Y.Z/ cache dirs).
"""
from __future__ import annotations

import inspect
import json

from kubeprobe.lab import build


class VersionError(ValueError):
    """One line: the version asked for is not one the lab supports or has built."""


def stamp(version: str | None = None) -> dict:
    if version is not None and hasattr(build, "resolve_version"):
        try:
            version = build.resolve_version(version)
        except Exception as exc:  # noqa: BLE001 - the lab's own one-line message
            raise VersionError(str(exc)) from None
    params = inspect.signature(build.read_stamp).parameters
    if "version" in params:
        found = build.read_stamp(version=version)
    elif version is None:
        found = build.read_stamp()
    else:
        v = version if version.startswith("v") else f"v{version}"
        try:
            found = json.loads((build.cache_root() / f"k8s-{v}" / "build.stamp.json").read_text())
        except (OSError, ValueError):
            found = None
    if found is None:
        raise VersionError(f"the lab's Kubernetes {version or '(default version)'} is not built: "
                           f"run `kubeprobe lab build` first")
    return found
