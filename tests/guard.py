"""A hung run must fail its test, not stall the suite: SIGALRM interrupts the coordinator's wait."""

import contextlib
import signal


@contextlib.contextmanager
def alarm(seconds: int, what: str = "the test", error: type = TimeoutError):
    """Raise ``error`` in the main thread when the body has not ended within ``seconds``."""
    def ring(signum, frame):
        raise error(f"{what} did not finish within {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
