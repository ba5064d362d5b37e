"""Admission: which waiting tasks may start now.

A task ready to run waits here until every gate lets it through: its executor's capacity, its
step's own ``max_concurrent``, the run's ``max_concurrent``, and the resource pools it acquires.
Pools are granted all at once or not at all, first come first served per pool.  The coordinator
hands ready tasks to :meth:`Admission.admit`, asks :meth:`Admission.dispatch` to start what
may start, and reports every start and end; a run that can never move again gets its
deadlock report from :meth:`Admission.deadlock_report`.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Optional

from .model import PoolDef, StepDef, TaskConstruct

if TYPE_CHECKING:
    from .tasks import Iteration, Task
    from .executors import Executor
    from .store import RunWriter


class Admission:
    """The queues of tasks waiting to start, and the counts and pools that gate them."""

    def __init__(self, executors: Mapping[TaskConstruct, Executor], pools: Mapping[str, PoolDef],
                 max_concurrent: int, writer: RunWriter, remotes: Optional[Mapping[str, Executor]] = None):
        self.executors = executors
        self.remotes = remotes or {}
        self.everyone: list[Executor] = [*executors.values(), *self.remotes.values()]
        self.max_concurrent = max_concurrent if max_concurrent >= 1 else 0
        self.writer = writer
        # where each step may run: the executors of its hosts in order (one, mostly)
        self.placements: dict[StepDef, tuple[Executor, ...]] = {}
        # first come first served: tasks of steps with a limit of their own by step, the others in
        # one queue per placement (a task waits there while every executor of it is at capacity;
        # a round then looks at none of them)
        self.queues: dict[tuple[Executor, ...], deque[Task]] = {}
        self.limited: dict[StepDef, deque[Task]] = {}
        self.wanting: list[Task] = []  # tasks waiting for resource pools, in arrival order
        self.available: dict[str, Optional[int]] = {
            name: (pool.limit if pool.limit >= 1 else None) for name, pool in pools.items()}
        self.running = 0
        self.running_by_step: dict[StepDef, int] = {}
        self.running_in: dict[Executor, int] = {ex: 0 for ex in self.everyone}

    def placement(self, step: StepDef) -> tuple[Executor, ...]:
        """The executors that may run the step's tasks, in the order they are tried."""
        found = self.placements.get(step)
        if found is None:
            remotes = self.remotes
            if step.hosts and any(h in remotes for h in step.hosts):
                local = self.executors.get(step.config.task_construct)
                found = tuple(dict.fromkeys(ex for ex in (remotes.get(h, local) for h in step.hosts)
                                            if ex is not None))
            else:
                found = (self.executors[step.config.task_construct],)
            self.placements[step] = found
        return found

    def _free(self, placement: tuple[Executor, ...]) -> Optional[Executor]:
        """The first executor of ``placement`` with room (a lost host only when no other has room)."""
        fallback = None
        for ex in placement:
            if ex.capacity is None or self.running_in[ex] < ex.capacity:
                if ex.alive:
                    return ex
                fallback = fallback or ex
        return fallback

    # -- waiting --------------------------------------------------------------------------------

    def admit(self, task: Task) -> None:
        """Queue a ready task (a processing step, or a container that acquires pools)."""
        if task.step.acquires:
            self.wanting.append(task)
        else:
            self.readmit(task)

    def readmit(self, task: Task) -> None:
        """Queue a task for an executor and the limits (also for its next try: it keeps the pools
        it holds from its first one)."""
        step = task.step
        if step.config.max_concurrent >= 1:
            self.limited.setdefault(step, deque()).append(task)
        else:
            placement = self.placement(step)
            queue = self.queues.get(placement)
            if queue is None:
                queue = self.queues[placement] = deque()
            queue.append(task)

    def held(self) -> Iterable[Task]:
        """Tasks held back by a limit the user set (a step's or, when set, the run's)."""
        for queue in self.limited.values():
            yield from queue
        if self.max_concurrent:
            for queue in self.queues.values():
                yield from queue

    def withdraw(self, within: Iteration) -> list[Task]:
        """Take out every waiting task inside ``within`` (it stops): they will not start."""
        dropped: list[Task] = []
        for queue in (*self.queues.values(), *self.limited.values()):
            keep = [t for t in queue if not t.iteration.within(within)]
            dropped.extend(t for t in queue if t.iteration.within(within))
            queue.clear()
            queue.extend(keep)
        self.limited = {step: queue for step, queue in self.limited.items() if queue}
        dropped.extend(t for t in self.wanting if t.iteration.within(within))
        self.wanting = [t for t in self.wanting if not t.iteration.within(within)]
        return dropped

    # -- starting -------------------------------------------------------------------------------

    def _full(self) -> bool:
        return bool(self.max_concurrent) and self.running >= self.max_concurrent

    def _step_full(self, step: StepDef) -> bool:
        limit = step.config.max_concurrent
        if limit >= 1 and self.running_by_step.get(step, 0) >= limit:
            return True
        return self._free(self.placement(step)) is None

    @staticmethod
    def _start_on(task: Task, ex: Optional[Executor], start: Callable[[Task], None]) -> None:
        task.executor = ex
        start(task)

    def dispatch(self, start: Callable[[Task], None], drop: Callable[[Task], None]) -> None:
        """Start waiting tasks in FIFO order as far as the limits and pools allow.

        ``start`` starts a task (a processing step or a container); ``drop`` forgets one whose
        iteration stopped while it waited for pools.
        """
        for placement, queue in self.queues.items():
            while queue and not self._full():
                ex = placement[0] if len(placement) == 1 and placement[0].capacity is None else self._free(placement)
                if ex is None:
                    break
                self._start_on(queue.popleft(), ex, start)
        if self.limited:
            emptied = []
            for step, queue in self.limited.items():
                while queue and not self._step_full(step) and not self._full():
                    self._start_on(queue.popleft(), self._free(self.placement(step)), start)
                if not queue:
                    emptied.append(step)
            for step in emptied:
                del self.limited[step]
        if self.wanting:
            self._grant(start, drop)

    def _grant(self, start: Callable[[Task], None], drop: Callable[[Task], None]) -> None:
        """Grant pools all at once or not at all, first come first served per pool.

        Once a task waits on a pool, no later task takes from that pool, so a large request is
        served as soon as enough is free instead of being overtaken forever by small ones.  Only
        the steps inside a container that holds pools may pass (see :meth:`_inside_holder`).
        """
        blocked: set[str] = set()
        wanting, self.wanting = self.wanting, []
        for task in wanting:
            step = task.step
            if task.iteration.halted():
                drop(task)
                continue
            if not step.is_container and (self._full() or self._step_full(step)):
                self.wanting.append(task)  # the limits hold it back, not the pools: it blocks none
                continue
            if any((name in blocked and not self._inside_holder(task)) or
                   (self.available[name] is not None and self.available[name] < n) for name, n in step.acquires):
                blocked.update(name for name, _ in step.acquires)
                self.wanting.append(task)
                continue
            now = time.time()
            for name, n in step.acquires:
                if self.available[name] is not None:
                    self.available[name] -= n
                self.writer.hold(step.name, task.seq_str, name, n, now)
            task.holds = True
            self._start_on(task, None if step.is_container else self._free(self.placement(step)), start)

    @staticmethod
    def _inside_holder(task: Task) -> bool:
        """True inside a container that holds pools: it cannot end, and give them back, until its
        steps ran, so they may take what is free even when an earlier request waits for more."""
        iteration: Optional[Iteration] = task.iteration
        while iteration is not None and iteration.owner is not None:
            if iteration.owner.holds:
                return True
            iteration = iteration.parent
        return False

    # -- counting -------------------------------------------------------------------------------

    def started(self, task: Task) -> None:
        """A processing task started: it counts against every limit until it ends."""
        self.running += 1
        self.running_by_step[task.step] = self.running_by_step.get(task.step, 0) + 1
        self.running_in[task.executor] += 1

    def ended(self, task: Task, *, keep_pools: bool = False) -> None:
        """A processing task (or one try of it) ended: its limits are free again, and its pools given
        back unless ``keep_pools`` (it will be tried again)."""
        self.running -= 1
        self.running_by_step[task.step] -= 1
        self.running_in[task.executor] -= 1
        if not keep_pools:
            self.give_back(task)

    def give_back(self, task: Task) -> None:
        """Return what the step releases (by default all it acquired); the rest stays taken."""
        if not task.holds:
            return
        task.holds = False
        step = task.step
        releases = step.acquires if step.releases is None else step.releases
        now = time.time()
        for name, n in releases:
            if self.available[name] is not None:
                self.available[name] += n
            self.writer.unhold(step.name, task.seq_str, name, n, now)

    def deadlock_report(self) -> str:
        """Why the tasks waiting for pools can never start: the pools short, and who waits."""
        short = sorted({name for t in self.wanting for name, n in t.step.acquires
                        if self.available[name] is not None and self.available[name] < n})
        waiting = sorted({f"{t.step.name}/{t.seq_str}" for t in self.wanting})
        return (f"resource deadlock: steps {', '.join(waiting) or '(none)'} wait for resource pool(s) "
                f"{', '.join(short) or '(none)'} that nothing running or pending can release")
