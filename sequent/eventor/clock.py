"""The coordinator's sense of time, in one object so that tests can run it on a virtual clock.

Wall time stamps records and schedules delays (a recovery compares it across processes);
monotonic time measures grace periods; and the coordinator's waits between rounds go through
the clock too, so a virtual clock can jump to the next due moment instead of sleeping.
"""

from __future__ import annotations

import selectors
import time as _time
from typing import Any, Optional


class Clock:
    """The real clock."""

    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)

    def wait(self, inbox: Any, timeout: Optional[float]) -> list:
        """Block until the inbox has something or ``timeout`` passes; take what is there."""
        return inbox.wait(timeout)

    def select(self, selector: selectors.BaseSelector, timeout: Optional[float]) -> list:
        """Block until a registered descriptor is ready or ``timeout`` passes."""
        return selector.select(timeout)
