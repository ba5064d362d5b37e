"""What an attempt at a run settles with the store around its rounds: who runs it, what earlier
attempts left for a recovery, and how it is closed after an error.

The order matters and is the engine's: take the run's lock first, then read, so that what a
recovery reads is what it runs against.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from typing import TYPE_CHECKING, Any, Optional

from . import runlock
from .errors import EventorError, FlowChangedWarning, NoRunError
from .model import RunMode
from .outcome import RunEnd

if TYPE_CHECKING:
    from .store import Store

#: Seconds a run that failed on its store keeps trying to record its end there.
CLOSE_TRIES_FOR = 5.0


def find_run(store: Store, run_id: Optional[str], flow: str) -> str:
    """For a recovery: the run to recover (the flow's latest when no run_id was given)."""
    if store.is_memory:
        looked_for = f"run {run_id!r}" if run_id else f"the latest run of flow {flow!r}"
        raise EventorError(f"cannot recover {looked_for} from an in-memory store (':memory:'): its runs "
                           f"end with the process; give the flow a file or database store")
    if run_id:
        return run_id
    latest = store.latest_run(flow)
    if latest is None:
        raise NoRunError(f"no run of flow {flow!r} to recover in store {store.target.display}")
    return latest


def wait_for_agents(store: Store, run_id: str, bound: float, log: logging.Logger) -> None:
    """For a recovery: wait (at most ``bound`` seconds) while agents of the run's earlier attempts
    still run tasks on remote hosts, so that what they finish is recorded before the recovery reads.

    An agent counts while its heartbeat is fresh (see runlock.STALE_AFTER); after the bound, the
    recovery decides from what is recorded, and a late end of an earlier attempt's task can no
    longer change anything (its row is that attempt's, and fenced).
    """
    deadline = time.monotonic() + bound
    announced = False
    while True:
        live = store.live_agents(run_id, runlock.STALE_AFTER)
        if not live:
            if announced:
                log.info("The agents of run %r have ended", run_id)
            return
        hosts = ", ".join(sorted({row.host for row in live}))
        if time.monotonic() >= deadline:
            log.warning("Agents of run %r are still running on host(s) %s after %.0f s (agent_wait): recovering "
                        "without waiting for them; what they still record is kept with their attempt", run_id,
                        hosts, bound)
            return
        if not announced:
            log.info("Waiting up to %.0f s (agent_wait) for agents of run %r still running tasks on host(s) %s",
                     bound, run_id, hosts)
            announced = True
        time.sleep(0.25)


def take_lock(store: Store, run_id: str, host: str, token: str, grace: float, log: logging.Logger) -> None:
    """Become the run's coordinator, or raise naming who is.

    A coordinator on this host that died while its launcher still stops its tasks is waited
    for (up to its shutdown grace and a margin): taking over sooner could run a task twice.
    """
    deadline = time.monotonic() + grace + 20.0
    waited = False
    while True:
        holder = store.take_lock(run_id, host, os.getpid(), token, runlock.is_stale)
        if holder is None:
            return
        helper = runlock.draining(holder)
        if helper is None or time.monotonic() >= deadline:
            what = (f"the tasks of its dead coordinator, still being stopped by process {helper}"
                    if helper is not None else runlock.describe(holder))
            raise EventorError(f"run {run_id!r} in store {store.target.display} is being run by "
                               f"{what}; wait for it to end")
        if not waited:
            log.info("Waiting for process %s to stop the tasks of run %r's dead coordinator", helper, run_id)
            waited = True
        time.sleep(0.05)


def prepare(store: Store, *, run_id: str, flow: str, mode: RunMode, recovery_run: Optional[int],
            shape: list) -> tuple[int, dict, dict, Optional[int]]:
    """The attempt's number and, for a recovery, what earlier attempts left: (recovery, task states,
    delays started, the attempt compared with).  Read with the run's lock held."""
    if mode is RunMode.restart:
        if store.get_run(run_id) is not None:
            raise EventorError(f"run_id {run_id!r} already exists in store {store.target.display}: recover it "
                               f"with run_mode=RUN_RECOVER, or start a new run with another run_id")
        return 0, {}, {}, None
    run = check_run(store, run_id, flow)
    based_on = check_attempt(store, run, recovery_run, shape)
    return (run.recovery + 1, store.previous_states(run_id, based_on), store.previous_delays(run_id, based_on),
            based_on)


def check_run(store: Store, run_id: str, flow: str) -> Any:
    """The run a recovery of ``flow`` recovers, or why it cannot: no such run, or another flow's."""
    where = store.target.display
    run = store.get_run(run_id)
    if run is None:
        raise NoRunError(f"no run {run_id!r} to recover in store {where}")
    if run.flow != flow:
        raise EventorError(f"run {run_id!r} in store {where} is a run of flow {run.flow!r}, not of flow "
                           f"{flow!r}: recover it with the flow that made it")
    return run


def check_attempt(store: Store, run: Any, recovery_run: Optional[int], shape: list) -> int:
    """The attempt a recovery of ``run`` compares with (its latest, or ``recovery_run``), or why it
    cannot: no such attempt, or a flow whose steps cannot match it (a changed flow only warns)."""
    where = store.target.display
    based_on = run.recovery if recovery_run is None else recovery_run
    earlier = store.attempt(run.run_id, based_on) if isinstance(based_on, int) else None
    if earlier is None:
        raise EventorError(f"run {run.run_id!r} in store {where} has no attempt {recovery_run!r} "
                           f"(its attempts are 0..{run.recovery})")
    check_shape(json.loads(earlier.steps or "[]"), shape, run.run_id, where)
    return based_on


def check_shape(stored: list, shape: list, run_id: str, where: str) -> None:
    """Recovery matches tasks by step name and sequence: refuse what cannot match, warn of the rest."""
    old = {name: (scope, kind) for name, scope, kind in stored}
    new = {name: (scope, kind) for name, scope, kind in shape}
    if old == new:
        return
    moved = sorted(n for n in old.keys() & new.keys() if old[n] != new[n])
    if moved or (old and not old.keys() & new.keys()):
        details = "; ".join(f"{n}: was {old[n][1]} in {old[n][0] or 'the flow'}, now {new[n][1]} in "
                            f"{new[n][0] or 'the flow'}" for n in moved) or "no step of it is in this flow"
        raise EventorError(f"cannot recover run {run_id!r} of store {where} with this flow: {details}")
    added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
    message = (f"recovering run {run_id!r} with a changed flow; tasks are matched by step name and "
               f"sequence. Added steps (they run): {', '.join(added) or 'none'}; removed steps (ignored): "
               f"{', '.join(removed) or 'none'}")
    warnings.warn(message, FlowChangedWarning, stacklevel=3)


def close_after_error(store: Optional[Store], attempt: tuple[str, int], *, lost: bool,
                      logger: Optional[logging.Logger]) -> None:
    """After an error mid-run: record the attempt as ended in error, if the store still allows it."""
    if store is None:
        return
    deadline = time.monotonic() + CLOSE_TRIES_FOR
    delay = 0.1
    while True:  # a restarted server or a released lock usually lets it through within seconds
        try:
            store.close()
            store.open().end_attempt(*attempt, RunEnd.error.value, close_run=not lost)
            return
        except Exception as exc:  # the store is still away: the run reads as abandoned until recovered
            if time.monotonic() + delay > deadline:
                if logger is not None:
                    logger.error("Could not record the end of run %r in its store: %s", attempt[0], exc)
                return
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
