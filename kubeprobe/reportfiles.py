"""The files a run leaves in its reports directory, and when it may replace them.

- Every file is written atomically: a temporary file in the same directory, fsync'd, then
  os.replace. A run killed mid-write leaves the previous file whole (and at worst a hidden
  `.<name>.*.tmp`), never half of a new one.
- report.html is rendered from the text written to results.json, read back: the numbers
  cannot differ.
- junit.xml: pytest's junitxml plugin writes into a temporary file of the directory (unless
  `--junitxml` names a file of the user's); it is moved into place with the other reports,
  or dropped.
- A run that cannot start (exit 2 before any control ran: a bad option, no cluster, a bad
  kubeconfig, the API server gone during setup, an interrupt) replaces results.json with a
  document saying why (`"cannot_start": true, "exit_status": 2, "error": "<line>"`) and
  leaves report.html and junit.xml as they were. The results.json they were rendered from is
  kept as results.previous.json first, and the new document names it (`"previous"`): a
  second run that cannot start keeps that file, so it always belongs to report.html.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubeprobe import auditor

RESULTS, REPORT, JUNIT, PREVIOUS = ("results.json", "report.html", "junit.xml",
                                    "results.previous.json")


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step: readers see the old file or the new one."""
    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def document_text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, default=str) + "\n"


@dataclass
class ReportFiles:
    directory: Path
    junit_temp: Path | None = None   # where junitxml writes this run's XML (None: not ours)
    published: bool = False          # this run wrote report.html

    def path(self, name: str) -> Path:
        return Path(self.directory) / name

    def claim_junit(self) -> str:
        """A temporary path for pytest's junitxml in the reports directory."""
        self.junit_temp = self.path(f".{JUNIT}.{os.getpid()}.tmp")
        return str(self.junit_temp)

    def publish(self, document: dict[str, Any]) -> dict[str, Any]:
        """results.json, then report.html from what results.json now says, then junit.xml.
        Returns the document as read back."""
        text = document_text(document)
        written = json.loads(text)
        write_atomically(self.path(RESULTS), text)
        write_atomically(self.path(REPORT), auditor.render(written))
        if self.junit_temp is not None and self.junit_temp.is_file():
            os.replace(self.junit_temp, self.path(JUNIT))
        self.published = True
        return written

    def cannot_start(self, document: dict[str, Any]) -> None:
        """results.json says why this run could not start; report.html and junit.xml stay
        (the results.json they came from is kept as results.previous.json)."""
        self.drop_junit()
        self._keep_previous()
        previous = self._previous_summary()
        if previous:
            document = {**document, "previous": previous}
        write_atomically(self.path(RESULTS), document_text(document))

    def drop_junit(self) -> None:
        if self.junit_temp is not None:
            with contextlib.suppress(OSError):
                self.junit_temp.unlink()

    def _keep_previous(self) -> None:
        current = self.path(RESULTS)
        if not current.is_file():
            return
        try:
            if json.loads(current.read_text()).get("cannot_start"):
                return   # results.previous.json already belongs to report.html
        except (ValueError, AttributeError, OSError):
            pass         # unreadable: still what report.html came from, if anything
        os.replace(current, self.path(PREVIOUS))

    def _previous_summary(self) -> dict[str, Any] | None:
        try:
            earlier = json.loads(self.path(PREVIOUS).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(earlier, dict):
            return None
        return {"results": PREVIOUS,
                "run_id": (earlier.get("environment") or {}).get("Run id"),
                "generated_at": earlier.get("generated_at"),
                "exit_status": earlier.get("exit_status"),
                "note": f"{REPORT} and {JUNIT} are that run's, left in place"}
