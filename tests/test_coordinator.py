"""The coordinator on its own: a fake executor, a fake writer and a virtual clock.

Delays of an hour and grace periods run in no real time: the clock jumps to the next due moment
whenever the coordinator would wait, so these tests say what happens when, without sleeping.
"""

from __future__ import annotations

import signal
import time
from typing import Any, Optional

import pytest

from sequent.eventor import STEP_FAILURE, STEP_SUCCESS, Eventor
from sequent.eventor.coordinator import Coordinator
from sequent.eventor.executors import Executor
from sequent.eventor.model import StepStatus, TaskConstruct
from sequent.eventor.outcome import OutcomeStatus, RunEnd, TaskOutcome
from sequent.eventor.runners import Inbox

START = 1_000_000.0


class VirtualClock:
    """Time stands still until the coordinator waits; then it jumps by the whole timeout."""

    def __init__(self) -> None:
        self.t = START

    def time(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    def wait(self, inbox: Inbox, timeout: Optional[float]) -> list:
        items = inbox.take()
        if items:
            return items
        assert timeout is not None, 'the coordinator would wait forever: nothing runs and nothing is due'
        self.t += timeout
        return []

    def select(self, selector: Any, timeout: Optional[float]) -> list:
        raise AssertionError('the fake executor reports through the inbox')


class FakeExecutor(Executor):
    """Runs nothing: records what it is given; ends each task at once (``auto``: failing the steps in
    ``fail``) or leaves it running until it is killed."""

    construct = TaskConstruct.thread

    def __init__(self, report, clock: VirtualClock, *, auto: bool = True, fail: tuple[str, ...] = (),
                 killable: bool = True):
        self.report, self.clock, self.auto, self.fail, self.killable = report, clock, auto, fail, killable
        self.submitted: list[tuple[str, str, float]] = []  # (step, sequence, virtual time)
        self.running: set[int] = set()
        self.signals: list[tuple[int, float]] = []

    def submit(self, task_id, step, ctx) -> None:
        self.submitted.append((step.name, ctx.sequence, self.clock.t))
        if not self.auto:
            self.running.add(task_id)
        else:
            status = OutcomeStatus.failure if step.name in self.fail else OutcomeStatus.success
            self.report(TaskOutcome(task_id, status, ended=self.clock.t))

    def signal(self, signum: int) -> None:
        self.signals.append((signum, self.clock.t))
        if signum == signal.SIGKILL and self.killable:
            for task_id in sorted(self.running):
                self.report(TaskOutcome.failed(task_id, 'killed by signal 9 (SIGKILL)', signal=signal.SIGKILL,
                                               ended=self.clock.t))
            self.running.clear()

    def unkillable(self) -> bool:
        return not self.killable

    def stop(self, grace: float, *, abandon: bool) -> None:
        pass


class FakeWriter:
    """Keeps the last recorded state of each task, and the delays started."""

    def __init__(self) -> None:
        self.tasks: dict[tuple[str, str], dict] = {}
        self.delays: list[tuple[str, str, float, float]] = []
        self.commits = 0

    def task(self, step, sequence, status, **values) -> None:
        values.pop('new')
        self.tasks.setdefault((step, sequence), {}).update(status=status, **values)

    def delay(self, step, sequence, seconds, activated) -> None:
        self.delays.append((step, sequence, seconds, activated))

    def hold(self, *args) -> None:
        pass

    def unhold(self, *args) -> None:
        pass

    def commit(self) -> None:
        self.commits += 1


def coordinate(ev: Eventor, **executor_options) -> tuple[Coordinator, FakeExecutor, FakeWriter, VirtualClock]:
    """A coordinator over ``ev``'s program, with every step on one fake executor."""
    ev.validate()
    clock, inbox, writer = VirtualClock(), Inbox(), FakeWriter()
    executor = FakeExecutor(inbox.put, clock, **executor_options)
    import logging

    coordinator = Coordinator(ev.program, writer, logger=logging.getLogger('test-coordinator'), run_id='r',
                              recovery=0, envvar_prefix='SEQUENT_', max_concurrent=-1,
                              task_logger=lambda step, seq: f'test-coordinator.{step}_{seq}',
                              executors={TaskConstruct.thread: executor}, inbox=inbox, grace=30.0, clock=clock)
    return coordinator, executor, writer, clock


def thread_flow() -> Eventor:
    return Eventor(name='unit', config={'task_construct': 'thread'})


def one_step_flow(step: str) -> Eventor:
    """A flow of one step, started by the event 'go' at the run's start."""
    ev = thread_flow()
    ev.add_event('go')
    ev.add_step(step)
    ev.add_assoc('go', step)
    ev.trigger_event('go')
    return ev


def test_a_delay_of_an_hour_starts_its_step_an_hour_later_without_sleeping():
    ev = thread_flow()
    ev.add_event('go')
    ev.add_event('a_done')
    ev.add_step('a', triggers={STEP_SUCCESS: ('a_done',)})
    ev.add_step('b')
    ev.add_assoc('go', 'a')
    ev.add_assoc('a_done', 'b', delay=3600)
    ev.trigger_event('go')
    coordinator, executor, writer, clock = coordinate(ev)
    began = time.monotonic()
    assert coordinator.run() is RunEnd.success
    assert time.monotonic() - began < 5
    assert executor.submitted == [('a', '1', START), ('b', '1', START + 3600)]
    assert writer.delays == [('b', '1', 3600.0, START)]
    assert writer.tasks[('b', '1')]['status'] == 'success'


def test_delays_in_order_each_waited_once():
    ev = thread_flow()
    ev.add_event('go')
    for name, delay in (('late', 90), ('early', 10), ('middle', 45)):
        ev.add_step(name)
        ev.add_assoc('go', name, delay=delay)
    ev.trigger_event('go')
    coordinator, executor, _, clock = coordinate(ev)
    assert coordinator.run() is RunEnd.success
    assert [(name, t - START) for name, _, t in executor.submitted] == [('early', 10), ('middle', 45), ('late', 90)]
    assert clock.t == START + 90


@pytest.fixture
def restore_handlers():
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def test_a_task_still_running_after_the_grace_is_killed_at_its_end(restore_handlers):
    ev = one_step_flow('slow')
    coordinator, executor, writer, clock = coordinate(ev, auto=False)
    coordinator.inbox.put(('signal', signal.SIGTERM))
    try:
        assert coordinator.run() is RunEnd.interrupted
    finally:
        coordinator.restore_signals()
    assert executor.signals == [(signal.SIGTERM, START), (signal.SIGKILL, START + 30.0)]
    assert writer.tasks[('slow', '1')]['status'] == 'failure'
    assert 'SIGKILL' in writer.tasks[('slow', '1')]['error']


def test_a_task_that_cannot_be_killed_is_abandoned_after_the_grace(restore_handlers):
    ev = one_step_flow('stuck')
    coordinator, executor, writer, clock = coordinate(ev, auto=False, killable=False)
    coordinator.inbox.put(('signal', signal.SIGTERM))
    try:
        assert coordinator.run() is RunEnd.interrupted
    finally:
        coordinator.restore_signals()
    assert clock.t == START + 30.0
    assert writer.tasks[('stuck', '1')]['status'] == 'failure'
    assert 'abandoned' in writer.tasks[('stuck', '1')]['error']


def test_a_handled_failure_runs_its_handler_and_the_run_succeeds():
    ev = thread_flow()
    ev.add_event('go')
    ev.add_event('bad_failed')
    ev.add_step('bad', triggers={STEP_FAILURE: ('bad_failed',)})
    ev.add_step('handler')
    ev.add_assoc('go', 'bad')
    ev.add_assoc('bad_failed', 'handler')
    ev.trigger_event('go')
    coordinator, executor, writer, _ = coordinate(ev, fail=('bad',))
    assert coordinator.run() is RunEnd.success
    assert [name for name, _, _ in executor.submitted] == ['bad', 'handler']
    assert writer.tasks[('bad', '1')]['status'] == 'failure'


def test_an_illegal_move_is_refused():
    ev = one_step_flow('a')
    coordinator, _, _, _ = coordinate(ev)
    assert coordinator.run() is RunEnd.success
    from sequent.eventor.coordinator import Iteration, Task
    task = Task(99, ev.program.steps['a'], (1,), Iteration(None, (), None), START)
    with pytest.raises(AssertionError, match='no move from ready to failure'):
        coordinator._move(task, StepStatus.failure)
