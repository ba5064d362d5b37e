"""Catching SIGINT and SIGTERM for the length of a run, so that they stop it gracefully.

A caught signal becomes a message in the coordinator's inbox, handled between rounds like any
task's end; the first one received is kept, even after the loop ended, so the engine can let it
take its usual effect once the run's end is recorded.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Optional

from .runners import Inbox


class SignalCatcher:
    """Replaces the SIGINT and SIGTERM handlers while a run goes on (only possible in the main thread)."""

    def __init__(self, inbox: Inbox):
        self._inbox = inbox
        self._handlers: dict = {}
        self.first: Optional[int] = None  # the first signal received at all

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._handlers[signum] = signal.signal(signum, self._caught)

    def restore(self) -> None:
        """Put back the handlers install() replaced."""
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        self._handlers = {}

    def _caught(self, signum: int, _frame: Any) -> None:
        if self.first is None:
            self.first = signum  # kept even if the loop has already ended
        self._inbox.put(("signal", signum))
