"""One signal policy for the whole process: SIGINT and SIGTERM stop aerun cleanly wherever
they arrive.

Outside the training loop a signal raises `Interrupted` at once: every file aerun writes is
written to a temp file and renamed, so stopping anywhere leaves whole files and the temp
file is removed on the way out. Inside the loop (`graceful()`), the first signal only asks
the loop to stop after the current step, so it can write `last.pt`; a second one stops at once.

An exception raised inside a C extension's import can be swallowed there: torch's `import
numpy` from C clears any error, so a Ctrl-C during `import torch` was lost and the run went on
to the end. Such imports run `deferred()` (a signal is noted, not raised, and raised once
they are done), and a signal whose exception did not end the process is raised again on
entering `graceful()` (`pending`).
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager

from aerun.errors import Interrupted

log = logging.getLogger("aerun.signals")

HANDLED = (signal.SIGINT, signal.SIGTERM)


class SignalPolicy:
    def __init__(self):
        self.received: int | None = None  # the first signal seen inside graceful()
        self.pending: int | None = None  # a signal raised outside graceful(): the process should be ending
        self._deferring = 0
        self._deferred: int | None = None  # the first signal that came during deferred()
        self._graceful = 0
        self._installed = False

    def install(self) -> None:
        """Take over SIGINT/SIGTERM for this process (a no-op off the main thread)."""
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        for sig in HANDLED:
            signal.signal(sig, self._handle)
        self._installed = True

    def _handle(self, signum, frame):
        if self._deferring:
            self._deferred = self._deferred or signum
            return
        if self._graceful and self.received is None:
            self.received = signum
            log.warning("received %s: finishing the current step and writing a checkpoint "
                        "(press Ctrl-C again to stop at once)", signal.Signals(signum).name)
            return
        self.pending = signum
        raise Interrupted(signum)

    def raise_pending(self) -> None:
        """Raise a signal whose Interrupted something swallowed (see the module's docstring)."""
        if self.pending is not None:
            raise Interrupted(self.pending)

    @contextmanager
    def deferred(self):
        """SIGINT/SIGTERM wait until the block is over (noted, not lost): for imports of C
        extensions, which may swallow the exception a handler raises inside them. (Blocking the
        signal would not do: the kernel hands it to another thread that does not block it.)"""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
            if not self._deferring and self._deferred is not None:
                signum, self._deferred = self._deferred, None
                self._handle(signum, None)  # raises Interrupted here, in our code (a request inside graceful)

    @property
    def stop_requested(self) -> bool:
        return self.received is not None

    @contextmanager
    def graceful(self):
        """Within this block a first signal is a request (`stop_requested`), not an exception."""
        self.install()
        self.raise_pending()
        self._graceful += 1
        try:
            yield self
        finally:
            self._graceful -= 1
            if not self._graceful:
                self.received = None


POLICY = SignalPolicy()
