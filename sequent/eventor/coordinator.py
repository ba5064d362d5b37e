"""The coordinator: a state machine driven by task completions and due delays.

One thread owns every piece of scheduling state.  Tasks run in executors (see
:mod:`.executors`), one per task construct, which the coordinator knows only through their
common interface.  It blocks on the inbox where in-process executors report (and, when an
executor has a file descriptor of its own, on one ``select`` over the inbox and those), with the
nearest due delay as timeout; it never sleeps a fixed interval and never rereads the
store.  A *round* applies what happened, lets everything that
can now start pass its gates, commits the round's store changes, and only then launches: a
task's start is never visible before the state it depends on is durable.

Containers run as iterations: an :class:`Iteration` is one pass of one container over its
steps (the root of the run is one too).  It counts what is pending inside it (tasks, delays,
child containers); when the count drops to zero the iteration is over, and the container
starts its next one or ends.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import signal
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from .context import TaskContext
from .model import Program, StepDef, StepReplay, StepStatus, TaskConstruct, format_sequence
from .outcome import OutcomeStatus, RunEnd, TaskOutcome
from .admission import Admission
from .containers import ContainerRuns
from .tasks import Iteration, Task, Timer
from .clock import Clock
from .runners import Inbox
from .signals import SignalCatcher
from .history import error_line
from .summary import DROPPED, FAILURE, RUNNING, SKIPPED, SUCCESS, WAITING, Failure, Tally, failure_handlers
from .text import ERROR_LIMIT, RESULT_LIMIT, TRACEBACK_LIMIT, exception_text, item_text, storable

if TYPE_CHECKING:
    from .executors import Executor
    from .progress import Progress
    from .store import RunWriter


#: A task's lifecycle: every change of its status goes through Coordinator._move, which checks it
#: here, records it, and fires the step's triggers for the new status.  A task is created
#: ``ready`` (firing READY).  Then:
#:
#: ========  ========  ==============================================================
#: from      to        when (what fires)
#: ========  ========  ==============================================================
#: ready     allocate  it waits for resource pools (nothing fires)
#: ready     active    it starts, or a container starts its first iteration (ACTIVE)
#: allocate  active    its pools were granted and it starts (ACTIVE)
#: ready     success   a recovery skips it: it succeeded before (ACTIVE, then SUCCESS)
#: active    success   it ended well (SUCCESS)
#: active    failure   it ended badly (FAILURE fires only where a sibling handles it;
#:                     otherwise the failure propagates, see Coordinator._failed)
#: ========  ========  ==============================================================
#:
#: ``fueled`` is the original's status between allocate and active, which no task enters here:
#: it stays in StepStatus because recovery maps of the original's programs may name it.
#: ``complete`` is never a task's status: in requires and recovery maps it means success or failure.
MOVES: dict[StepStatus, frozenset[StepStatus]] = {
    StepStatus.ready: frozenset({StepStatus.allocate, StepStatus.active, StepStatus.success}),
    StepStatus.allocate: frozenset({StepStatus.active}),
    StepStatus.active: frozenset({StepStatus.success, StepStatus.failure}),
}

#: Where a move puts a task in the run's tally (see summary.Tally); allocate keeps it waiting.
_TALLIED = {StepStatus.active: RUNNING, StepStatus.success: SUCCESS, StepStatus.failure: FAILURE}


class Coordinator(ContainerRuns):
    """Runs one attempt of a program to its end; :meth:`run` returns the outcome."""

    def __init__(self, program: Program, writer: RunWriter, *, logger: logging.Logger, run_id: str,
                 recovery: int, envvar_prefix: str, max_concurrent: int, task_logger: Callable[[str, str], str],
                 executors: Optional[Mapping[TaskConstruct, Executor]] = None,
                 remotes: Optional[Mapping[str, Executor]] = None, inbox: Optional[Inbox] = None,
                 on_task_start: Callable[[str], None] = lambda name: None,
                 on_task_end: Callable[[str], None] = lambda name: None, max_loops: int = -1,
                 previous: Optional[Mapping[tuple[str, str], tuple[str, int]]] = None,
                 previous_delays: Optional[Mapping[tuple[str, str], float]] = None,
                 lease: Any = None, grace: float = 10.0, clock: Optional[Clock] = None,
                 progress: Optional[Progress] = None,
                 previous_retries: Optional[Mapping[tuple[str, str], tuple[int, float]]] = None,
                 previous_items: Optional[Mapping[tuple[str, str], str]] = None):
        self.program = program
        self.clock = clock or Clock()
        self.now = self.clock.time  # wall time: records and delays
        self.mono = self.clock.monotonic  # grace periods
        self.writer = writer
        self.log = logger
        self.run_id = run_id
        self.recovery = recovery
        self.prefix = envvar_prefix
        self.task_logger = task_logger
        self.executors: Mapping[TaskConstruct, Executor] = executors or {}
        self.on_task_start = on_task_start
        self.on_task_end = on_task_end
        self.max_loops = max_loops
        self.previous = previous or {}
        self.previous_delays = previous_delays or {}
        self.previous_retries = previous_retries or {}  # tries an attempt killed in a retry's wait left
        self.previous_items = previous_items or {}  # (container, sequence) -> the item's text as recorded
        self.items_changed: dict[str, list[str]] = {}  # container -> its iterations whose item changed
        self.lease = lease  # the run lock's lease (runlock.Lease): checked before anything starts
        self.lost = False  # another coordinator took the run over: nothing more starts here
        self.grace = grace
        self.signal: Optional[int] = None  # the first SIGINT/SIGTERM the loop acted on
        self.kill_at: Optional[float] = None  # when running tasks get SIGKILL after a signal

        # program indexes
        dependents: dict[str, list] = {}
        for ev in program.events.values():
            if ev.condition is not None:
                for ref in set(ev.condition.refs()):
                    dependents.setdefault(ref, []).append(ev)
        self.dependents: dict[str, tuple] = {ref: tuple(evs) for ref, evs in dependents.items()}

        self.root = Iteration(None, (), None)
        self.open_iterations: dict[tuple[str, tuple], Iteration] = {}
        self.fired: dict[tuple, set[str]] = {}
        self.seen: set[tuple[str, tuple]] = set()
        self.ids = itertools.count(1)
        self.ready: deque[Task] = deque()
        self.admission = Admission(self.executors, program.pools, max_concurrent, writer, remotes)
        self.deadlock: Optional[str] = None
        self.running: dict[int, Task] = {}
        self.timers: list = []
        self.timer_order = itertools.count()
        self.deadlines: dict[int, Timer] = {}  # task id -> the timeout (or kill) timer of its running try
        self.retrying: dict[int, tuple[str, str]] = {}  # task id -> (error, traceback) of its last failed try
        self.to_launch: list[Task] = []
        self.inbox = inbox if inbox is not None else Inbox()
        self.signals = SignalCatcher(self.inbox)  # SIGINT and SIGTERM stop the run gracefully
        self.incomplete = False
        self.rounds = 0
        self.tally = Tally()  # counts by state and the failures, for the progress line and the summary
        self.progress = progress  # the live line on a terminal; None elsewhere (then it costs one check a round)
        self._handlers: dict[str, tuple[str, ...]] = {}  # step -> the steps its failure starts

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> RunEnd:
        """Run to the end; returns how it ended (never error: that is an exception)."""
        selector: Optional[selectors.BaseSelector] = None
        watched = [ex for ex in self.admission.everyone if ex.fileno() is not None]
        if watched:  # else a blocking get on the inbox is all the waiting needed
            selector = selectors.DefaultSelector()
            selector.register(self.inbox.wake_on_put(), selectors.EVENT_READ, None)
            for ex in watched:
                selector.register(ex.fileno(), selectors.EVENT_READ, ex)
        self.signals.install()
        try:
            for name, seq in self.program.initial:
                self._fire(name, seq)
            self._settle()
            self._show_progress()
            while self.root.pending > 0:
                if self._stalled():
                    break
                self._round(selector)
        finally:
            if selector is not None:
                selector.close()
        if self.lost:
            return RunEnd.lost
        if self.signal is not None:
            return RunEnd.interrupted
        if self.root.failed:
            return RunEnd.failure
        return RunEnd.incomplete if self.incomplete else RunEnd.success

    @property
    def abandons(self) -> bool:
        """True when tasks still running at the end are given up (the run was stopped or lost)."""
        return self.signal is not None or self.lost

    def _stalled(self) -> bool:
        """Nothing runs and nothing is due, yet work is pending: only resources can hold it back.

        Such a run can never move again, so it ends with an error naming the pools and the
        waiting steps instead of waiting forever.
        """
        if self.running or self.inbox or self.kill_at is not None or any(not t.cancelled for *_, t in self.timers):
            return False
        self.deadlock = self.admission.deadlock_report()
        self.log.error("%s", self.deadlock)
        self.root.failed = True
        return True

    def restore_signals(self) -> None:
        """Put back the handlers run() replaced; the engine calls it once the run's end is recorded,
        so a signal arriving meanwhile is still caught (and acted on afterwards, see late_signal)."""
        self.signals.restore()

    @property
    def late_signal(self) -> Optional[int]:
        """The first SIGINT/SIGTERM received at all, even after the loop ended."""
        return self.signals.first

    def _interrupt(self, signum: int) -> None:
        """First signal: start nothing new, ask running tasks to stop; later: kill them now."""
        name = signal.Signals(signum).name
        if self.signal is None:
            self.signal = signum
            self.log.warning("Received %s: no new task starts; running tasks are asked to stop "
                             "(killed after %.1f s)", name, self.grace)
            self._stop(self.root)
            self._signal_tasks(signal.SIGTERM)
            self.kill_at = self.mono() + self.grace
        else:
            self.log.warning("Received %s again: killing running tasks", name)
            self.kill_at = self.mono()

    def _lose(self) -> None:
        """The run lock is someone else's now: start nothing more, stop what runs, end as lost."""
        if self.lost:
            return
        self.lost = True
        self.log.error("LOST THE RUN: another coordinator took run %r over (this one was paused or cut off "
                       "from the store for longer than the lock's stale limit); no task starts here any more "
                       "and running tasks are stopped (killed after %.1f s)", self.run_id, self.grace)
        self._stop(self.root)
        self._signal_tasks(signal.SIGTERM)
        if self.kill_at is None:
            self.kill_at = self.mono() + self.grace

    def _signal_tasks(self, signum: int) -> None:
        for ex in self.admission.everyone:
            ex.signal(signum)

    def _kill_overdue(self) -> None:
        if self.kill_at is None or self.mono() < self.kill_at:
            return
        self.kill_at = None
        self._signal_tasks(signal.SIGKILL)
        for task in [t for t in self.running.values() if t.executor.unkillable()]:
            # threads cannot be killed: record them as given up and stop waiting for them
            self._finished(TaskOutcome.failed(task.id, "abandoned: still running when the run was interrupted"))

    def _round(self, selector: Optional[selectors.BaseSelector]) -> None:
        """Wait for what happens next, apply it all, then settle (one commit, then launches)."""
        timeout = 0.0 if self.inbox else self._timeout()
        redraw = self.progress.wait() if self.progress is not None else None
        only_redraw = redraw is not None and (timeout is None or redraw < timeout)
        if only_redraw:  # the progress line has a change to show once its rate allows
            timeout = redraw
        if selector is None:
            arrived = self.clock.wait(self.inbox, timeout)
            woke = bool(arrived)
        else:
            events = self.clock.select(selector, timeout)
            for key, _ in events:
                ex = key.data
                if ex is not None:
                    for outcome in ex.collect():
                        self._finished(outcome)
                    if not ex.alive:  # its end is read; its descriptor would stay readable
                        selector.unregister(key.fileobj)
            arrived = self.inbox.take()
            woke = bool(events) or bool(arrived)
        if only_redraw and not woke:  # woken for the progress line only: not a round
            self._show_progress()
            return
        for item in arrived:
            if isinstance(item, TaskOutcome):
                self._finished(item)
            elif item[0] == "signal":
                self._interrupt(item[1])
            else:  # ("lost", None), from the lease's heartbeat
                self._lose()
        self._due_timers()
        self._kill_overdue()
        self.rounds += 1
        if 0 <= self.max_loops <= self.rounds and not self.root.stopping:
            self.log.info("Stopping after %d loops (max_loops)", self.rounds)
            self.incomplete = True
            self._stop(self.root)
        self._settle()
        self._show_progress()

    def _show_progress(self) -> None:
        """Show the run's progress on the live line, if there is one (it keeps to its rate)."""
        if self.progress is not None:
            self.progress.update(self.tally.steps, ((name, format_sequence(seq)) for name, seq in self.open_iterations))

    def _timeout(self) -> Optional[float]:
        """Seconds until the next thing the coordinator must do by itself (None: nothing)."""
        while self.timers and self.timers[0][2].cancelled:
            heapq.heappop(self.timers)
        waits = []
        if self.timers:
            waits.append(self.timers[0][0] - self.now())
        if self.kill_at is not None:
            waits.append(self.kill_at - self.mono())
        return max(0.0, min(waits)) if waits else None

    def _settle(self) -> None:
        """Let ready tasks through their gates, commit, then launch what started."""
        while True:
            while self.ready:
                task = self.ready.popleft()
                if task.iteration.halted():
                    self._drop(task)
                elif not task.step.is_container and self._replay(task) is StepReplay.skip:
                    self._skip(task)  # acquires nothing
                elif task.step.is_container and not task.step.acquires:
                    self._start_container(task)
                elif task.resume_at is not None:
                    self._push(Timer.for_task("retry", task.resume_at, task))
                else:
                    self.admission.admit(task)
            self.admission.dispatch(self._start_admitted, self._drop)  # a start may make more tasks ready
            if not self.ready:
                break
        # a task held back by a limit the user set is recorded as ready; one that only waits for
        # a free thread will start within moments, and its row is written then
        for task in self.admission.held():
            if not task.recorded:
                self._record(task)
        for task in self.admission.wanting:
            if task.status is not StepStatus.allocate:
                self._move(task, StepStatus.allocate)
        self.writer.commit()
        launch, self.to_launch = self.to_launch, []
        if launch and self.lease is not None and not self.lease.check():
            self._lose()  # paused past the lock's limit: these were replaced, so they must not start
            for task in launch:
                self._finished(TaskOutcome.failed(task.id, "not started: the run was taken over by another "
                                                  "coordinator"))
            self._settle()  # records them; nothing can start any more
            return
        for task in launch:
            self._launch(task)

    def _start_admitted(self, task: Task) -> None:
        if task.step.is_container:
            self._start_container(task)
        else:
            self._start(task)

    # -- recovery -------------------------------------------------------------------------------

    def _replay(self, task: Task) -> StepReplay:
        """What the step's recovery map says for the task's status in the run being recovered."""
        return self._replay_status(task.step, task.seq_str)

    def _replay_status(self, step: StepDef, seq_str: str) -> StepReplay:
        previous = self.previous.get((step.name, seq_str))
        if previous is None:
            return StepReplay.rerun
        return step.recovery.get(StepStatus[previous[0]], StepReplay.rerun)

    def _skip(self, task: Task) -> None:
        """Record a task as succeeded without running it, and go on as if it had."""
        self.log.debug("[ Step %s/%s ] Skipping task in recovery mode", task.step.name, task.seq_str)
        task.started = self.now()
        self._move(task, StepStatus.success, ended=task.started, skipped=True)
        self._release(task.iteration)

    # -- events ---------------------------------------------------------------------------------

    def _fire(self, name: str, seq: tuple) -> None:
        """Fire an event at a sequence, and everything that follows from it, once each."""
        work = deque([(name, seq)])
        while work:
            name, seq = work.popleft()
            fired = self.fired.get(seq)
            if fired is None:
                fired = self.fired[seq] = set()
            elif name in fired:
                continue
            fired.add(name)
            for assoc in self.program.assocs.get(name, ()):
                if assoc.delay > 0:
                    self._start_delay(assoc.target, assoc.target_is_step, seq, assoc.delay)
                elif assoc.target_is_step:
                    self._create(self.program.steps[assoc.target], seq)
                else:
                    work.append((assoc.target, seq))
            for dep in self.dependents.get(name, ()):
                if dep.name not in fired and dep.condition.holds(fired):
                    work.append((dep.name, seq))

    def _fire_status(self, task: Task, status: StepStatus) -> None:
        for name in task.step.triggers.get(status, ()):
            self._fire(name, task.seq)

    def _iteration_for(self, scope: Optional[str], seq: tuple) -> Optional[Iteration]:
        return self.root if scope is None else self.open_iterations.get((scope, seq))

    # -- delays ---------------------------------------------------------------------------------

    def _start_delay(self, target: str, is_step: bool, seq: tuple, seconds: float) -> None:
        scope = (self.program.steps[target] if is_step else self.program.events[target]).scope
        iteration = self._iteration_for(scope, seq)
        if iteration is None or iteration.halted():
            return
        seq_str = format_sequence(seq)
        if is_step and self.previous.get((target, seq_str)) is not None:
            step = self.program.steps[target]
            if not step.is_container and self._replay_status(step, seq_str) is StepReplay.skip:
                self._create(step, seq)  # it will be skipped: no need to wait for it
                return
        started = self.previous_delays.get((target, seq_str), self.now())  # a recovery waits what remains
        timer = Timer(started + seconds, target, is_step, seq, iteration)
        iteration.pending += 1
        heapq.heappush(self.timers, (timer.due, next(self.timer_order), timer))
        self.writer.delay(target, seq_str, seconds, started)

    def _due_timers(self) -> None:
        now = self.now()
        while self.timers and self.timers[0][0] <= now:
            timer = heapq.heappop(self.timers)[2]
            if timer.cancelled:
                continue
            if timer.kind != "delay":
                self._task_timer(timer)
                continue
            if timer.is_step:
                self._create(self.program.steps[timer.target], timer.seq)
            else:
                self._fire(timer.target, timer.seq)
            self._release(timer.iteration)

    def _push(self, timer: Timer) -> Timer:
        heapq.heappush(self.timers, (timer.due, next(self.timer_order), timer))
        return timer

    def _task_timer(self, timer: Timer) -> None:
        """A task's timer is due: its next try may start, or its try ran past the step's timeout."""
        task = timer.task
        assert task is not None
        if timer.kind == "retry":
            task.resume_at = None
            if task.status is not StepStatus.active:  # a recovery continues the tries of a killed attempt
                self.admission.admit(task)
            else:
                self.admission.readmit(task)
            return
        if self.running.get(task.id) is not task or task.try_number != timer.try_number:
            return  # that try ended meanwhile
        if timer.kind == "timeout":
            self.deadlines.pop(task.id, None)
            task.timed_out = task.try_number
            timeout = task.step.config.timeout
            self.log.warning("Step %s [%s] timed out after %g s (try %d): stopping it (SIGTERM, then SIGKILL "
                             "after %g s)", task.step.name, task.seq_str, timeout, task.try_number, self.grace)
            if task.executor.signal_task(task.id, signal.SIGTERM):
                self.deadlines[task.id] = self._push(Timer.for_task("kill", self.now() + self.grace, task))
            else:
                self.log.error("Step %s [%s]: its %s task cannot be stopped; it runs on", task.step.name,
                               task.seq_str, task.step.config.task_construct.value)
        elif timer.kind == "kill":
            self.deadlines.pop(task.id, None)
            task.executor.signal_task(task.id, signal.SIGKILL)

    # -- tasks ----------------------------------------------------------------------------------

    def _create(self, step: StepDef, seq: tuple) -> None:
        key = (step.name, seq)
        if key in self.seen:
            return
        iteration = self._iteration_for(step.scope, seq)
        if iteration is None:
            self.log.warning("[ Step %s/%s ] not started: its container has no iteration %s running",
                             step.name, format_sequence(seq), format_sequence(seq))
            return
        if iteration.halted():
            return
        self.seen.add(key)
        task = Task(next(self.ids), step, seq, iteration, self.now())
        if self.previous_retries and step.config.retries:
            left = self.previous_retries.get((step.name, task.seq_str))
            if left is not None and left[0] < 1 + step.config.retries:  # killed while waiting for its next try
                task.try_number, task.resume_at = left[0] + 1, left[1]
        self.tally.counts(step)[WAITING] += 1
        iteration.pending += 1
        self.ready.append(task)
        self._fire_status(task, StepStatus.ready)

    def _move(self, task: Task, status: StepStatus, **values: Any) -> None:
        """The one way a task changes status: a legal move (see MOVES), recorded, its triggers fired."""
        if status not in MOVES.get(task.status, ()):
            raise AssertionError(f"{task!r}: no move from {task.status.name} to {status.name}")
        skipped = task.status is StepStatus.ready and status is StepStatus.success
        if status is not StepStatus.allocate:
            counts = self.tally.counts(task.step)
            counts[RUNNING if task.status is StepStatus.active else WAITING] -= 1
            counts[SKIPPED if skipped else _TALLIED[status]] += 1
        task.status = status
        self._record(task, **values)
        if skipped or status is StepStatus.active:
            self._fire_status(task, StepStatus.active)
        if status is StepStatus.success:
            self._fire_status(task, StepStatus.success)

    def _record(self, task: Task, **values: Any) -> None:
        if task.host is not None:
            values.setdefault("host", task.host)
        if not task.recorded and task.iteration.item is not None:
            values["item"] = item_text(task.iteration.item)
        self.writer.task(task.step.name, task.seq_str, task.status.name, created=task.created,
                         started=task.started, new=not task.recorded, **values)
        task.recorded = True

    def _start(self, task: Task) -> None:
        task.try_started = self.now()
        task.host = task.executor.host
        self.running[task.id] = task
        self.admission.started(task)
        self.to_launch.append(task)
        # an agent records a later try itself when it claims it: the coordinator must not write it first
        tries = {"tries": task.try_number, "retry_at": None} if task.try_number > 1 else {}
        if tries and task.executor.remote:
            tries = {"retry_at": None}
        if task.status is not StepStatus.active:  # its first start in this attempt (from ready or allocate)
            task.started = task.try_started
            self._move(task, StepStatus.active, **tries)
        else:  # its next try
            self.retrying.pop(task.id, None)
            self._record(task, **tries)

    def _context(self, task: Task) -> TaskContext:
        logger_name = self.task_logger(task.step.name, task.seq_str)
        p = self.prefix
        env = {f"{p}STEP_NAME": task.step.name, f"{p}STEP_SEQUENCE": task.seq_str,
               f"{p}STEP_RECOVERY": str(self.recovery), f"{p}LOGGER_NAME": logger_name,
               f"{p}RUN_ID": self.run_id, f"{p}STEP_TRY": str(task.try_number)}
        item = task.iteration.item
        if item is not None:
            env[f"{p}STEP_ITEM"] = _item_str(item)
        return TaskContext(task.step.name, task.seq_str, self.recovery, logger_name, self.run_id, env,
                           try_number=task.try_number, final_try=task.try_number > task.step.config.retries,
                           item=item)

    def _launch(self, task: Task) -> None:
        if task.id not in self.running:  # ended meanwhile (its executor refused it)
            return
        ctx = self._context(task)
        if not task.executor.remote:  # a remote task's log file is where it runs
            self.on_task_start(ctx.logger_name)
        self.log.debug("[ Task %s/%s ] Attempting to run", task.step.name, task.seq_str)
        timeout = task.step.config.timeout
        if timeout is not None:
            self.deadlines[task.id] = self._push(Timer.for_task("timeout", self.now() + timeout, task))
        try:
            task.executor.submit(task.id, task.step, ctx)
        except Exception as exc:  # the task fails, never the coordinator (e.g. an item that does not pickle)
            self.inbox.put(TaskOutcome.failed(task.id, f"could not be started: {exception_text(exc)} (a process "
                                              f"task's context, its item included, must pickle)", host=task.host))

    def _finished(self, outcome: TaskOutcome) -> None:
        task = self.running.pop(outcome.task_id, None)
        if task is None:
            return
        deadline = self.deadlines.pop(task.id, None)
        if deadline is not None:
            deadline.cancelled = True
        result, error, tb = outcome.result, outcome.error, outcome.traceback
        if result or error or tb:  # whatever a task sent, it must be storable and loggable
            result = storable(result, RESULT_LIMIT)
            error = storable(error, ERROR_LIMIT)
            tb = storable(tb, TRACEBACK_LIMIT, keep_ends=True)
        status = StepStatus.success if outcome.status is OutcomeStatus.success else StepStatus.failure
        timed_out = status is StepStatus.failure and task.timed_out == task.try_number
        if timed_out:
            error = f"timed out after {task.step.config.timeout:g} s: stopped ({error or 'no error text'})"
        config = task.step.config
        retry = status is StepStatus.failure and task.try_number <= config.retries and not self._stops(task)
        self.admission.ended(task, keep_pools=retry)
        remote = task.executor.remote
        if config.retries or task.try_number > 1:  # each try is recorded (the first write wins: an agent's)
            self.writer.try_ended(task.step.name, task.seq_str, task.try_number, started=task.try_started,
                                  ended=outcome.ended, host=outcome.host or task.host, pid=outcome.pid,
                                  error=(error + ("\n" + tb if tb else "")) or None, timed_out=timed_out,
                                  owner=outcome.owner)
        try:
            if retry:
                self._retry_later(task, outcome, error, tb)
                return
            self.log.info("[ Task %s/%s ] Completed, status: %s", task.step.name, task.seq_str, status.name)
            # a remote task's agent records its end itself; this write applies only if it could not
            self._move(task, status, ended=outcome.ended, pid=outcome.pid, host=outcome.host or task.host,
                       result=result or None, error=(error + ("\n" + tb if tb else "")) or None,
                       fenced=remote, **({"owner": outcome.owner, "logfile": outcome.logfile} if outcome.owner else {}))
            if status is StepStatus.failure:
                self._failed(task, error, tb)  # its lines go to the task's own log file too
        finally:
            if not remote:
                self.on_task_end(self.task_logger(task.step.name, task.seq_str))
        self._release(task.iteration)

    def _stops(self, task: Task) -> bool:
        """True when nothing more may start for ``task``: no retry then (its last try's failure is its own)."""
        return self.signal is not None or self.lost or task.iteration.halted()

    def _retry_later(self, task: Task, outcome: TaskOutcome, error: str, tb: str) -> None:
        """A try failed and tries are left: record it, and start the next one after the step's delay
        (durable: the task's row holds the try count and when the next one is due)."""
        config = task.step.config
        wait = config.retry_wait(task.try_number)
        due = self.now() + wait
        line = error_line(error + ("\n" + tb if tb else "")) or "no error text"
        self.log.warning("Step %s [%s] try %d of %d failed: %s; trying again in %g s", task.step.name, task.seq_str,
                         task.try_number, config.retries + 1, line, wait)
        self._record(task, tries=task.try_number, retry_at=due, pid=outcome.pid,
                     error=(error + ("\n" + tb if tb else "")) or None)
        self.retrying[task.id] = (error, tb)
        task.try_number += 1
        task.timed_out = None
        self._push(Timer.for_task("retry", due, task))

    def _give_up(self, task: Task) -> None:
        """A task waiting for its next try that will not get it (its iteration stops): its last
        try's failure is its failure."""
        error, tb = self.retrying.pop(task.id, ("not tried again: the run stopped around it", ""))
        self.admission.give_back(task)
        self._move(task, StepStatus.failure, ended=self.now(), error=(error + ("\n" + tb if tb else "")) or None)
        self._failed(task, error, tb)

    def _failed(self, task: Task, error: str, tb: str) -> None:
        """Report a failure, then either hand it to whoever handles it or treat it as unhandled.

        The report names the step, its sequence and the error's line (then the traceback); a
        processing step's goes to its own log file too.  The tally notes the failure for the
        run's summary, unless it is a container's that an unhandled failure inside it caused.
        """
        step = task.step
        handled = step.handles_failure
        level = logging.ERROR if (not handled or step.config.stop_on_exception) else logging.WARNING
        if step.is_container:
            log, line, detail = self.log, error, ""
        else:
            own = task.executor is not None and not task.executor.remote  # a remote task's file is on its host
            log = logging.getLogger(self.task_logger(step.name, task.seq_str)) if own else self.log
            line = error_line(error + ("\n" + tb if tb else "")) or "no error text"
            detail = _traceback_text(tb) if tb else (error.strip() if error.strip() != line else "")
        how = f", handled by {', '.join(self._failure_handlers(step))}" if handled else ""
        log.log(level, "%s %s [%s] failed%s: %s", "Container" if step.is_container else "Step", step.name,
                task.seq_str, how, line)
        if detail:
            log.log(level, "%s", detail)
        if not (step.is_container and task.id in self.tally.caused):
            handlers, via = self._handled_by(task)
            self.tally.failed(Failure(step.name, task.seq_str, step.is_container, line, handlers, via))
        if handled:
            self._fire_status(task, StepStatus.failure)
            return
        iteration = task.iteration
        iteration.failed = True
        if iteration.owner is not None:  # the container's own failure follows from this one
            self.tally.caused.add(iteration.owner.id)
        if task.step.config.stop_on_exception:
            if iteration is self.root:
                self.log.info("Stopping running processes")
            self._stop(iteration)

    def _failure_handlers(self, step: StepDef) -> tuple[str, ...]:
        """The steps a failure of ``step`` starts (worked out at its first failure, then kept)."""
        found = self._handlers.get(step.name)
        if found is None:
            found = self._handlers[step.name] = failure_handlers(self.program, step, self.dependents)
        return found

    def _handled_by(self, task: Task) -> tuple[tuple[str, ...], Optional[str]]:
        """Who handles a failure of ``task``: its step's handlers, else those of the nearest container
        around it whose failure is handled (named too), else nobody: ((), None)."""
        if task.step.handles_failure:
            return self._failure_handlers(task.step), None
        iteration = task.iteration
        while iteration.owner is not None:
            outer = iteration.owner.step
            if outer.handles_failure:
                return self._failure_handlers(outer), outer.name
            iteration = iteration.owner.iteration
        return (), None

    def _drop(self, task: Task) -> None:
        """Forget a task that will not start (its iteration stopped); its row, if any, stays as it is."""
        self._tally_dropped(task)
        self._release(task.iteration)

    def _tally_dropped(self, task: Task) -> None:
        counts = self.tally.counts(task.step)
        counts[RUNNING if task.status is StepStatus.active else WAITING] -= 1
        counts[DROPPED] += 1

    def _release(self, iteration: Iteration) -> None:
        iteration.pending -= 1
        if iteration.pending == 0 and iteration.owner is not None:
            self._iteration_over(iteration)

    def _stop(self, iteration: Iteration) -> None:
        """No new task starts inside ``iteration``: drop what waits there; what runs finishes."""
        iteration.stopping = True
        dropped: list = self.admission.withdraw(iteration)
        for _, _, timer in self.timers:
            if not timer.cancelled and timer.kind in ("delay", "retry") and timer.iteration.within(iteration):
                timer.cancelled = True
                dropped.append(timer.task if timer.kind == "retry" else timer)
        whole_run = self.signal is not None or self.lost or self.incomplete
        for item in dropped:
            if isinstance(item, Task) and item.status is StepStatus.active and not whole_run:
                self._give_up(item)  # it waited for its next try
                self._release(item.iteration)
                continue
            if isinstance(item, Task):
                # a run that stops keeps a task waiting for its next try as recorded (active, its count
                # and time): a recovery goes on with its tries
                self._tally_dropped(item)
            self._release(item.iteration)


def _item_str(item: object) -> str:
    """An item as SEQUENT_STEP_ITEM holds it: its str(), never raising."""
    try:
        return str(item)
    except Exception:
        return item_text(item)


def _traceback_text(tb: str) -> str:
    """A task's traceback as Python prints it, its header included."""
    tb = tb.strip("\n")
    return tb if tb.startswith("Traceback") else "Traceback (most recent call last):\n" + tb
