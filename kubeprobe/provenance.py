"""Where a run's verdicts come from: the tool's version and git commit, and the sha256 of the
files that decide them (the catalog, the Falco rules). Every lookup answers, never raises:
what cannot be told is said (None), not guessed."""
from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

from kubeprobe import resources


def tool_version() -> str | None:
    try:
        return metadata.version("kubeprobe")
    except metadata.PackageNotFoundError:
        return None


def git_commit(root: Path = resources.CHECKOUT) -> str | None:
    """The checkout's HEAD, with `-dirty` when tracked files differ from it; None outside a
    git checkout (an installed package) or without git."""
    if not resources.IN_CHECKOUT or not (root / ".git").exists():
        return None
    head = _git(root, "rev-parse", "HEAD")
    if head is None:
        return None
    changed = _git(root, "status", "--porcelain", "--untracked-files=no")
    return head + ("-dirty" if changed else "")


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def tool_identity() -> dict[str, str | None]:
    return {"name": "kubeprobe", "version": tool_version(), "commit": git_commit()}
