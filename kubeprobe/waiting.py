"""Deadline-bounded polling, shared by the suite and the lab (no third-party imports)."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable


class WaitTimeout(TimeoutError):
    """The condition did not hold before the deadline; the message names what was awaited."""


def wait_for(condition: Callable[[], Any], deadline_s: float, what: str,
             interval_s: float = 0.2) -> Any:
    """Poll `condition` until it returns a truthy value (returned) or the deadline passes
    (WaitTimeout naming `what`). The interval is a poll period, not a sleep hiding a race."""
    end = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= end:
            raise WaitTimeout(f"timed out after {deadline_s:.0f}s waiting for {what}")
        threading.Event().wait(min(interval_s, max(0.0, end - time.monotonic())))
