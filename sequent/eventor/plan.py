"""What a recovery would do, decided without doing it: each recorded task skipped or run again, and why.

A recovery compares the program with what an earlier attempt recorded, task by task (a step at a
sequence): a processing step is skipped when its step's recovery map says so for its recorded
status (by default: success is skipped, every other status runs again); a container always runs
again, and its iterations decide task by task; a step the attempt never reached runs when its
requires hold.  :func:`recovery_plan` reads the same rows a recovery reads, with the same checks
(:func:`sequent.eventor.attempts.prepare`), from a store opened read-only: it changes nothing.
Each decision holds when the recovery reaches the task: a task whose requires no longer hold (a
handler of a failure that now succeeds) is neither skipped nor run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from . import attempts
from .errors import EventorError, NoRunError
from .model import DEFAULT_RECOVERY, Program, RunMode, StepReplay, StepStatus, parse_sequence

if TYPE_CHECKING:
    from .engine import Eventor

#: The decisions: what the recovery does with a task.
SKIP, RERUN, REPLAY, NEW = "skip", "rerun", "replay", "new"


@dataclass(frozen=True)
class PlanEntry:
    """One task of the plan: a step at a sequence, what was recorded of it, and what will happen."""

    step: str
    sequence: Optional[str]  # None for a step no attempt recorded: its sequences are not known yet
    kind: str  # 'step' or 'container'
    recorded: Optional[str]  # the status recorded (None: never reached)
    attempt: Optional[int]  # the attempt that recorded it
    action: str  # skip, rerun, replay (a container: its iterations decide), new (never reached)
    why: str


@dataclass(frozen=True)
class RecoveryPlan:
    """The plan for recovering ``run_id``: the attempt it would be, the one compared with, its entries."""

    flow: str
    run_id: str
    store: str
    recovery: int  # the number the recovery's attempt would get
    based_on: int
    outcome: str  # how the run's latest attempt ended
    entries: tuple[PlanEntry, ...]

    def counts(self) -> dict[str, int]:
        """How many tasks each action covers."""
        out: dict[str, int] = {}
        for entry in self.entries:
            out[entry.action] = out.get(entry.action, 0) + 1
        return out


def recovery_plan(eventor: "Eventor", run_id: Optional[str] = None, recovery_run: Optional[int] = None) -> RecoveryPlan:
    """The plan for recovering ``run_id`` (the flow's latest run when None) with ``eventor``'s program."""
    from .store import Store

    target = eventor._store_target()
    if target.is_memory:
        raise EventorError(f"cannot recover flow {eventor.name!r} from an in-memory store (':memory:'): its runs "
                           f"end with the process")
    if target.is_sqlite:
        import os

        import sqlalchemy as sa

        path = sa.engine.make_url(target.url).database
        if not path or not os.path.exists(path):
            raise NoRunError(f"no store at {target.display}: flow {eventor.name!r} has no run to recover")
    store = Store(target, busy_timeout=float(eventor.config.get("busy_timeout", 10.0)), readonly=True).open()
    try:
        if run_id is None:
            run_id = None if store.empty else store.latest_run(eventor.name)
            if run_id is None:
                raise NoRunError(f"no run of flow {eventor.name!r} to recover in store {target.display}")
        elif store.empty or store.get_run(run_id) is None:
            raise NoRunError(f"no run {run_id!r} to recover in store {target.display}")
        shape = [[s.name, s.scope, "container" if s.is_container else "step"] for s in eventor.program.step_list]
        recovery, previous, _delays, based_on = attempts.prepare(
            store, run_id=run_id, flow=eventor.name, mode=RunMode.recover, recovery_run=recovery_run, shape=shape)
        outcome = store.get_run(run_id).status
    finally:
        store.dispose()
    return RecoveryPlan(flow=eventor.name, run_id=run_id, store=target.display, recovery=recovery,
                        based_on=int(based_on or 0), outcome=outcome,
                        entries=tuple(plan_entries(eventor.program, previous)))


def plan_entries(program: Program, previous: dict[tuple[str, str], tuple[str, int]]) -> list[PlanEntry]:
    """Each task of the program's steps, in the program's order and by sequence: the recorded ones
    decided by their status, the others new.  A step's sequences are known before the run when the
    containers around it repeat over a list, tuple or range; otherwise only the recorded ones are,
    and a step with none recorded is one entry without a sequence.  Tasks of steps the program no
    longer has are left out (a recovery ignores them)."""
    by_step: dict[str, dict[str, tuple[str, int]]] = {}
    for (step, seq), state in previous.items():
        by_step.setdefault(step, {})[seq] = state
    expected = _sequences(program)
    entries: list[PlanEntry] = []
    for step in program.step_list:
        kind = "container" if step.is_container else "step"
        recorded = by_step.get(step.name, {})
        seqs = set(recorded) | set(expected.get(step.name) or ())
        if not seqs:
            entries.append(PlanEntry(step.name, None, kind, None, None, NEW,
                                     "not recorded by the attempt compared with: runs if its requires hold "
                                     "(its iterations are known when it runs)"))
            continue
        for seq in sorted(seqs, key=_order):
            if seq in recorded:
                status, attempt = recorded[seq]
                entries.append(_decide(step.name, kind, step.recovery, seq, status, attempt))
            else:
                entries.append(PlanEntry(step.name, seq, kind, None, None, NEW,
                                         "not recorded by the attempt compared with: runs if its requires hold"))
    return entries


def _sequences(program: Program) -> dict[str, Optional[list[str]]]:
    """Every step's sequences when the containers around it repeat over a list, tuple or range (None
    when one repeats over something only known when it runs).  Root steps run at sequence 1; the steps
    of a container at sequence S run at S.1, S.2, ... one per iteration."""
    known: dict[str, Optional[list[str]]] = {}

    def of(name: str) -> Optional[list[str]]:
        if name in known:
            return known[name]
        known[name] = None  # a loop of scopes (refused by validate) ends here
        step = program.steps[name]
        if step.scope is None:
            known[name] = ["1"]
            return known[name]
        outer = program.steps.get(step.scope)
        outer_seqs = of(step.scope) if outer is not None else None
        count = len(outer.repeats) if outer is not None and isinstance(outer.repeats, (list, tuple, range)) else None
        if outer_seqs is None or count is None:
            return None
        known[name] = [f"{seq}.{k}" for seq in outer_seqs for k in range(1, count + 1)]
        return known[name]

    for step in program.step_list:
        of(step.name)
    return known


def _decide(step: str, kind: str, recovery: dict, seq: str, status: str, attempt: int) -> PlanEntry:
    if kind == "container":
        return PlanEntry(step, seq, kind, status, attempt, REPLAY,
                         f"recorded {status} in attempt {attempt}; a container always runs again, its "
                         f"iterations decide task by task")
    try:
        recorded = StepStatus[status]
    except KeyError:
        recorded = None
    replay = recovery.get(recorded, StepReplay.rerun) if recorded is not None else StepReplay.rerun
    default = DEFAULT_RECOVERY.get(recorded, StepReplay.rerun) if recorded is not None else StepReplay.rerun
    rule = f"recovery map: {status} -> {replay.name}" + ("" if replay is default else " (the step's own)")
    action = SKIP if replay is StepReplay.skip else RERUN
    return PlanEntry(step, seq, kind, status, attempt, action, f"recorded {status} in attempt {attempt}; {rule}")


def _order(seq: str) -> tuple:
    try:
        return tuple(parse_sequence(seq))
    except Exception:
        return (seq,)
