"""A hung run must fail its test, not stall the suite: SIGALRM interrupts the coordinator's wait.

Every test runs inside one guard (the autouse ``no_hang`` fixture of tests/conftest.py); a test
may open a shorter one around a single run (``with alarm(8, "the run", Hung): ...``).  Guards
nest: the inner one rings at its own deadline, and when it ends the outer one is armed again for
what is left of its own time (or of the inner one's, when that was longer: a longer inner guard
extends the outer one rather than being cut short by it).
"""

import contextlib
import math
import signal
import time

_active: list = []  # the guards open in this process, innermost last: [seconds, deadline]


@contextlib.contextmanager
def alarm(seconds: int, what: str = "the test", error: type = TimeoutError):
    """Raise ``error`` in the main thread when the body has not ended within ``seconds``."""
    def ring(signum, frame):
        raise error(f"{what} did not finish within {seconds} s")

    left = signal.alarm(0)  # an outer alarm (ours or not): its seconds left, 0 if none
    started = time.monotonic()
    outer_deadline = started + left if left else None
    guard = [seconds, started + seconds]
    old = signal.signal(signal.SIGALRM, ring)
    _active.append(guard)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        _active.remove(guard)
        signal.signal(signal.SIGALRM, old)
        if outer_deadline is not None:
            deadline = max(outer_deadline, guard[1])
            if _active:
                _active[-1][1] = max(_active[-1][1], deadline)
            signal.alarm(max(1, math.ceil(deadline - time.monotonic())))


def restart() -> None:
    """Give the innermost guard its full time again, from now (a property test calls it for each
    example, so that its guard bounds one example rather than all of them)."""
    if _active:
        guard = _active[-1]
        guard[1] = time.monotonic() + guard[0]
        signal.alarm(guard[0])
