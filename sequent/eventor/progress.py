"""The live progress line of a run on a terminal: done, running, waiting and failed tasks, and the
iterations the containers are in, redrawn in place as tasks end.

It exists only when standard output is a terminal (see :func:`wanted`): :class:`LiveLine` owns
the terminal's last line, and the console's log handler prints each line above it (clear it,
print, draw it again).  :class:`Progress` is what the coordinator updates after each round, at
most ``rate`` times a second; it never reads the store and never writes to a file.  A task
process forked from the run prints its console lines over the live line (it clears it first);
the coordinator draws it again at its next update.  ``rich`` (the ``cli`` extra) draws the line
in colour when it is installed; without it the line is plain text.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from typing import IO, Any, Callable, Iterable, Optional, Sequence

from .summary import DROPPED, FAILURE, RUNNING, SKIPPED, SUCCESS, WAITING

#: Go back to the start of the line and erase it (every terminal sequent's progress is drawn on).
CLEAR = "\r\x1b[K"

Parts = Sequence[tuple[str, str]]  # (text, rich style; '' for none)


def wanted(stream: Any, enabled: bool = True) -> bool:
    """Whether a live line may be drawn on ``stream``: enabled, a terminal, and one that understands
    the line's control sequences (not TERM=dumb)."""
    if not enabled or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or closed
        return False


def _plain_drawer(stream: IO[str]) -> Callable[[Parts], None]:
    def draw(parts: Parts) -> None:
        width = shutil.get_terminal_size((80, 24)).columns - 1
        text = "".join(text for text, _ in parts)
        stream.write(CLEAR + (text if len(text) <= width else text[:max(width - 1, 0)] + "…"))
    return draw


def _rich_drawer(stream: IO[str]) -> Optional[Callable[[Parts], None]]:
    """A drawer that styles the line with rich, or None when rich is not installed."""
    try:
        from rich.console import Console
        from rich.text import Text
    except ImportError:
        return None
    console = Console(file=stream, highlight=False, markup=False, emoji=False)

    def draw(parts: Parts) -> None:
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        for part, style in parts:
            text.append(part, style=style or None)
        text.truncate(max(console.width - 1, 1), overflow="ellipsis")
        stream.write(CLEAR)
        console.print(text, end="", soft_wrap=True)
    return draw


class LiveLine:
    """The terminal's last line, kept for the progress; log lines are printed above it.

    Thread-safe in the process that made it (tasks on threads log while the coordinator draws).
    In a forked task process, :meth:`write_above` only clears the line before writing.
    """

    def __init__(self, stream: IO[str], *, use_rich: bool = True) -> None:
        self.stream = stream
        self.owner = os.getpid()
        self.lock = threading.RLock()
        self.parts: Optional[Parts] = None  # what is shown; None: nothing
        self.closed = False
        self._draw = (_rich_drawer(stream) if use_rich else None) or _plain_drawer(stream)

    def show(self, parts: Parts) -> None:
        """Draw ``parts`` in place of what the line showed (a terminal gone away ends the line)."""
        with self.lock:
            if self.closed:
                return
            self.parts = parts
            try:
                self._draw(parts)
                self.stream.flush()
            except (OSError, ValueError):  # the terminal closed (EIO, EPIPE) or the stream did
                self.parts, self.closed = None, True

    def write_above(self, text: str) -> None:
        """Write ``text`` (whole lines) above the live line, which is drawn again below it."""
        if os.getpid() != self.owner:  # a forked task: no live line of its own to draw again
            self.stream.write(CLEAR + text)
            self.stream.flush()
            return
        with self.lock:
            if self.parts is None:
                self.stream.write(text)
            else:
                self.stream.write(CLEAR + text)
                self._draw(self.parts)
            self.stream.flush()

    def close(self) -> None:
        """Erase the line for good: what is written afterwards goes where the line was."""
        if os.getpid() != self.owner:
            return
        with self.lock:
            shown, self.parts, self.closed = self.parts is not None and not self.closed, None, True
            if shown:
                try:
                    self.stream.write(CLEAR)
                    self.stream.flush()
                except (OSError, ValueError):
                    pass


class Progress:
    """The coordinator's side of the live line: what it shows, redrawn at most ``rate`` times a second.

    The coordinator calls :meth:`update` after each round; a change that comes too soon after the
    last drawing is drawn when :meth:`wait` says (the coordinator wakes for it), so the line never
    stays behind what happened.
    """

    def __init__(self, line: LiveLine, name: str, *, rate: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.line = line
        self.name = name
        self.every = 1.0 / rate
        self.clock = clock
        self.started = clock()
        self.last = float("-inf")
        self.pending = False

    def wait(self) -> Optional[float]:
        """Seconds until a change not drawn yet may be drawn; None when everything is drawn."""
        if not self.pending:
            return None
        return max(0.0, self.last + self.every - self.clock())

    def update(self, counts: Sequence[int], iterations: Iterable[tuple[str, str]]) -> None:
        """Something changed: draw it now, or when the rate allows (see :meth:`wait`)."""
        now = self.clock()
        if now - self.last < self.every:
            self.pending = True
            return
        self.pending = False
        self.last = now
        self.line.show(self.parts(counts, iterations, now - self.started))

    def parts(self, counts: Sequence[int], iterations: Iterable[tuple[str, str]], seconds: float) -> Parts:
        """The line: flow, counts of processing steps, the containers' current iterations, time."""
        done = counts[SUCCESS] + counts[SKIPPED]
        parts: list[tuple[str, str]] = [(f"{self.name}: ", "bold"), (f"{done} done", "green"), (", ", ""),
                                        (f"{counts[RUNNING]} running", "cyan"), (", ", ""),
                                        (f"{counts[WAITING]} waiting", ""), (", ", ""),
                                        (f"{counts[FAILURE]} failed", "bold red" if counts[FAILURE] else "")]
        if counts[DROPPED]:
            parts += [(", ", ""), (f"{counts[DROPPED]} not started", "yellow")]
        current = list(iterations)
        if current:
            shown = ", ".join(f"{name} {seq}" for name, seq in current[-3:])
            more = f" (+{len(current) - 3})" if len(current) > 3 else ""
            parts += [(" · in ", ""), (shown + more, "magenta")]
        minutes, secs = divmod(int(seconds), 60)
        parts += [(f" · {minutes}:{secs:02d}", "dim")]
        return parts

    def close(self) -> None:
        """Erase the line (the run is over)."""
        self.line.close()


def live_line(stream: Optional[IO[str]] = None, enabled: bool = True) -> Optional[LiveLine]:
    """A live line on ``stream`` (default: stdout) when :func:`wanted` says it may be drawn, else None."""
    stream = sys.stdout if stream is None else stream
    return LiveLine(stream) if wanted(stream, enabled) else None
