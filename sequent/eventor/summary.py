"""The end of a run in the user's words: counts per status, the failures, and how to recover.

The coordinator keeps a :class:`Tally` as its tasks move (a few integer updates per move, and a
note per failure); when the attempt is over, :func:`summary_lines` turns it into the lines the
run log ends with, and :func:`recover_hint` into the command that recovers a failed run.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from .model import Program, StepDef, StepStatus

#: Where a task is in its life, as the tally counts it (indexes of Tally.steps and Tally.containers).
WAITING, RUNNING, SUCCESS, SKIPPED, FAILURE, DROPPED = range(6)

#: Failures of each kind (unhandled, handled) the summary names; it counts the others.
SHOWN = 10

#: Outcomes of an attempt after which the run can be recovered.
RECOVERABLE = frozenset({"failure", "incomplete", "interrupted", "error"})


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed task as the summary names it: the step, its sequence and the line naming the error."""

    step: str
    sequence: str
    container: bool
    line: str  # the error's first line (``ValueError: bad input``)
    handled_by: tuple[str, ...] = ()  # the steps its failure starts; empty: unhandled
    via: Optional[str] = None  # the container around it whose failure is handled, if not its own

    @property
    def where(self) -> str:
        return f"{'container' if self.container else 'step'} {self.step} [{self.sequence}]"

    @property
    def handler(self) -> str:
        """Who handles it: ``cleanup``, or ``cleanup (through the failure of container s1)``."""
        through = f" (through the failure of container {self.via})" if self.via else ""
        return ", ".join(self.handled_by) + through


class Tally:
    """What happened to a run's tasks so far: counts by state, and the first failures of each kind.

    A container that fails because of an unhandled failure inside it is counted, not noted: the
    summary names the failure inside, not each container around it.
    """

    __slots__ = ("steps", "containers", "unhandled", "handled", "noted", "caused")

    def __init__(self) -> None:
        self.steps = [0] * 6  # processing steps, by WAITING .. DROPPED
        self.containers = [0] * 6
        self.unhandled: list[Failure] = []  # the first SHOWN
        self.handled: list[Failure] = []  # the first SHOWN
        self.noted = [0, 0]  # failures noted: unhandled, handled
        self.caused: set[int] = set()  # ids of container tasks whose iteration had an unhandled failure

    def counts(self, step: StepDef) -> list[int]:
        """The counts ``step``'s tasks go to (containers apart)."""
        return self.containers if step.is_container else self.steps

    def failed(self, note: Failure) -> None:
        """Note a failure the summary names (the first SHOWN of each kind are kept)."""
        kind = 1 if note.handled_by else 0
        self.noted[kind] += 1
        kept = self.handled if kind else self.unhandled
        if len(kept) < SHOWN:
            kept.append(note)


def failure_handlers(program: Program, step: StepDef, dependents: Mapping[str, Sequence[Any]]) -> tuple[str, ...]:
    """The steps that the failure of ``step`` can start: through its failure events, the events whose
    conditions name them and the associations of all those (``dependents``: event name -> the events
    whose condition refers to it).  When they start no step: the failure events (``event NAME``)."""
    seen: set[str] = set()
    steps: dict[str, None] = {}
    work = deque(_failure_events(step))
    while work:
        name = work.popleft()
        if name in seen:
            continue
        seen.add(name)
        for assoc in program.assocs.get(name, ()):
            if assoc.target_is_step:
                steps[assoc.target] = None
            else:
                work.append(assoc.target)
        work.extend(ev.name for ev in dependents.get(name, ()))
    return tuple(steps) or tuple(f"event {name}" for name in _failure_events(step))


def _failure_events(step: StepDef) -> tuple[str, ...]:
    """The events a failure of ``step`` fires."""
    return tuple(step.triggers.get(StepStatus.failure, ()))


def store_argument(store: Any, databases: Mapping, display: str, is_memory: bool) -> Optional[str]:
    """How ``--store`` names the run's store: its DATABASES key as the flow named it, else its display
    form (a SQLite file's absolute path, or a URL whose password is masked); None in memory."""
    if is_memory:
        return None
    if isinstance(store, str) and store in (databases or {}):
        return store
    return display


def recover_hint(program_file: Optional[str], run_id: str, store: Optional[str]) -> list[str]:
    """The lines that say how to recover ``run_id``: the ``sequent recover`` command (when the flow has a
    file and a store that outlives the process), then the same from Python."""
    if store is None:
        return [f"Run {run_id!r} cannot be recovered: its store is in memory (':memory:'); give the flow "
                f"a file or database store to make its runs recoverable"]
    lines = []
    if program_file and not (program_file.startswith("<") and program_file.endswith(">")):
        command = ["sequent", "recover", os.path.abspath(program_file), run_id, "--store", store]
        lines.append("Recover with: " + " ".join(shlex.quote(part) for part in command))
    lines.append(f"{'Or from' if lines else 'Recover from'} Python: run the flow again with "
                 f"run_mode=RUN_RECOVER, run_id={run_id!r}")
    return lines


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _counts(counts: list[int], outcome: str) -> str:
    """``5 succeeded, 2 skipped (succeeded before), 1 failed, 3 not started``; empty parts left out."""
    parts = []
    for index, words in ((SUCCESS, "succeeded"), (SKIPPED, "skipped (succeeded before)"), (FAILURE, "failed")):
        if counts[index]:
            parts.append(f"{counts[index]} {words}")
    if counts[WAITING] + counts[DROPPED]:
        parts.append(f"{counts[WAITING] + counts[DROPPED]} not started")
    if counts[RUNNING]:
        parts.append(f"{counts[RUNNING]} {'given up while running' if outcome != 'success' else 'running'}")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def summary_lines(tally: Tally, *, outcome: str, run_id: str, flow: str, recovery: int, seconds: float,
                  hint: Sequence[str], show: Optional[str] = None) -> list[tuple[int, str]]:
    """The run's summary as (level, line) pairs: INFO for a success; for any other outcome WARNING,
    and ERROR for each unhandled failure.  ``hint``: how to recover (written unless it succeeded);
    ``show``: the ``sequent show`` command that lists every failure, named when some are left out."""
    ok = outcome == "success"
    level = logging.INFO if ok else logging.WARNING
    attempt = f" (recovery {recovery})" if recovery else ""
    lines = [(level, f"Summary: run {run_id!r} of flow {flow!r}{attempt} ended with {outcome} "
                     f"in {_duration(seconds)}")]
    steps, containers = _counts(tally.steps, outcome), _counts(tally.containers, outcome)
    counted = f"Tasks: {steps or 'none ran'}" + (f"; containers: {containers}" if containers else "")
    lines.append((level, counted))
    lines += [(logging.ERROR, f"Unhandled failure: {f.where}: {f.line}") for f in tally.unhandled]
    lines += [(logging.WARNING, f"Handled failure: {f.where}, handled by {f.handler}: {f.line}")
              for f in tally.handled]
    left = sum(tally.noted) - len(tally.unhandled) - len(tally.handled)
    if left > 0:
        where = f": {show}" if show else ""
        lines.append((level, f"... and {_plural(left, 'more failure')} not listed here{where}"))
    if not ok and outcome in RECOVERABLE:
        lines += [(level, line) for line in hint]
    return lines

