"""SIGINT and SIGTERM end a run only after its cleanups.

The first signal raises `Interrupted` (a KeyboardInterrupt: pytest then tears the session
down, which runs the run-wide cleanups and the target's teardown) wherever the run is, except
inside a shielded section (a cleanup in progress, a journal record and its registration):
there it is held, and raised by `check()` once the section is over. Every later signal is
only acknowledged: the cleanups already under way are not cut short (SIGKILL still ends the
process; the journal then leaves the work to `kubeprobe sweep`).
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop (SIGINT/SIGTERM); its cleanups run on the way out."""

    def __init__(self, signame: str) -> None:
        super().__init__(f"kubeprobe: interrupted by {signame}")
        self.signame = signame


class InterruptGuard:
    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self.received: str | None = None    # the first signal's name
        self.raised = False
        self._shield = 0
        self._shield_lock = threading.Lock()   # controls run in worker threads
        self._previous: dict[int, object] = {}
        self._say = say or (lambda line: print(line, file=sys.stderr, flush=True))

    def install(self) -> bool:
        """Take over SIGINT and SIGTERM (main thread only); False where it cannot."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return True

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            self._say(f"kubeprobe: {name}: already stopping, the cleanups are running "
                      "(SIGKILL abandons them; `kubeprobe sweep` removes what is left)")
            return
        self.received = name
        if self._shield:
            self._say(f"kubeprobe: {name}: stopping once the current step is done")
            return
        self.raised = True
        raise Interrupted(name)

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """No Interrupted raised inside (held until `check()`)."""
        with self._shield_lock:
            self._shield += 1
        try:
            yield
        finally:
            with self._shield_lock:
                self._shield -= 1

    def check(self) -> None:
        """Raise the held interrupt, once, outside any shielded section."""
        if self.received and not self.raised and not self._shield:
            self.raised = True
            raise Interrupted(self.received)


def shielded(guard: InterruptGuard | None):
    return guard.shielded() if guard is not None else contextlib.nullcontext()
