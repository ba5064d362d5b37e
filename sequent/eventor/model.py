"""The program model: plain data describing events, steps, containers and associations.

An :class:`~sequent.eventor.Eventor` collects these while the program is built; the coordinator
then reads them, never changes them.  Sequences are tuples of positive ints inside the engine
(``(1, 2, 2)``) and strings (``'1.2.2'``) at its edges: env vars, logs and the store.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

from .conditions import Condition


class StepStatus(enum.IntEnum):
    """The states of a task, in lifecycle order; ``complete`` means success or failure."""

    ready = 1
    allocate = 2
    fueled = 3
    active = 4
    success = 5
    failure = 6
    complete = 7

    def __str__(self) -> str:  # the original's log lines read "TaskStatus.success"
        return f"TaskStatus.{self.name}"


class StepReplay(enum.IntEnum):
    """What recovery does with a task, by the status it had in the run being recovered."""

    rerun = 1
    skip = 2


class RunMode(enum.IntEnum):
    """How a run starts: afresh, as a recovery of an earlier run, or continuing its recovery."""

    restart = 1
    recover = 2
    continue_ = 3


class TaskConstruct(str, enum.Enum):
    """Where a processing step's function runs."""

    process = "process"  # its own OS process, forked from the task launcher
    thread = "thread"  # a worker thread of the coordinator's process
    invoke = "invoke"  # called by the coordinator itself, in its own thread
    dask = "dask"  # a process of its own on a worker of a Dask cluster


#: Statuses that end a task.
FINAL_STATUSES = frozenset({StepStatus.success, StepStatus.failure})

#: The default recovery map (B1.3): everything reruns except a success, which is skipped.
DEFAULT_RECOVERY: Mapping[StepStatus, StepReplay] = {
    StepStatus.ready: StepReplay.rerun,
    StepStatus.allocate: StepReplay.rerun,
    StepStatus.fueled: StepReplay.rerun,
    StepStatus.active: StepReplay.rerun,
    StepStatus.failure: StepReplay.rerun,
    StepStatus.success: StepReplay.skip,
}

Sequence = tuple  # tuple[int, ...]; kept as an alias for readability in signatures


def parse_sequence(value: Any) -> tuple[int, ...]:
    """Turn ``1``, ``'1.2'`` or ``(1, 2)`` into the engine's tuple form."""
    if isinstance(value, tuple):
        parts = value
    elif isinstance(value, int) and not isinstance(value, bool):
        parts = (value,)
    elif isinstance(value, str) and value:
        try:
            parts = tuple(int(p) for p in value.split("."))
        except ValueError:
            raise ValueError(f"bad sequence {value!r}: expected dot-separated integers like '1.2'")
    else:
        raise ValueError(f"bad sequence {value!r}: expected an int, 'N.N...' or a tuple of ints")
    if not parts or not all(isinstance(p, int) and p >= 0 for p in parts):
        raise ValueError(f"bad sequence {value!r}: parts must be non-negative integers")
    return tuple(parts)


def repeats_problem(repeats: Any) -> Optional[str]:
    """What is wrong with a container's ``repeats``, or None when it is usable on every run."""
    if repeats is None or callable(repeats):
        return None
    try:
        iterator = iter(repeats)
    except TypeError:
        return f"repeats must be iterable or a callable returning an iterator, got {repeats!r}"
    if iterator is repeats:
        return ("repeats is an iterator, which would be used up by the first run; pass a list, a range, "
                "or a callable returning a new iterator")
    return None


def delay_problem(delay: Any) -> Optional[str]:
    """What is wrong with a start ``delay``, or None for a number of seconds >= 0 (facade and engine alike)."""
    if not isinstance(delay, (int, float)) or isinstance(delay, bool) or delay < 0:
        return f"delay must be a number of seconds >= 0, got {delay!r}"
    return None


def _pool_name(pool: Any) -> str:
    """A pool's name: the pool is its name (the engine) or an object with a ``name`` (the facade)."""
    return pool if isinstance(pool, str) else pool.name


def sum_amounts(value: Any, what: str, pool_of: Callable[[Any], Any], kind: str) -> tuple[tuple[Any, int], ...]:
    """``[(pool, count), ...]`` checked, each pool's counts summed, in first-seen order.

    The one check of a step's ``acquires``/``releases``, for the facade (pools are ResourcePool
    objects) and the engine (pools are names): ``pool_of`` maps an item's pool to the key it is
    summed under, or to None when it is no pool; ``kind`` says what a pool must be.  Raises
    ValueError saying what is wrong; each caller puts the step's name in front.
    """
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{what} must be a list of (pool, count) pairs, got {value!r}")
    totals: dict[Any, int] = {}
    for item in value:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"{what} item {item!r} is not a (pool, count) pair")
        pool, count = item
        key = pool_of(pool)
        if key is None:
            raise ValueError(f"{what} names {pool!r}, which is not {kind}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"{what} count for pool {_pool_name(key)!r} must be an int >= 1, got {count!r}")
        totals[key] = totals.get(key, 0) + count
    return tuple(totals.items())


def capacity_problem(acquires: tuple[tuple[Any, int], ...], limit_of: Callable[[Any], int]) -> Optional[str]:
    """Which summed acquire asks a pool for more than it holds (the step could never start), or None."""
    for pool, count in acquires:
        limit = limit_of(pool)
        if limit >= 1 and count > limit:
            return (f"acquires {count} from resource pool {_pool_name(pool)!r}, which holds only {limit}: "
                    f"it could never start")
    return None


def releases_problem(acquires: tuple[tuple[Any, int], ...],
                     releases: Optional[tuple[tuple[Any, int], ...]]) -> Optional[str]:
    """Which summed release gives a pool back more than the step acquires from it, or None."""
    held = dict(acquires)
    for pool, count in releases or ():
        if count > held.get(pool, 0):
            return (f"releases {count} to resource pool {_pool_name(pool)!r} but acquires only "
                    f"{held.get(pool, 0)} from it")
    return None


@functools.lru_cache(maxsize=4096)
def format_sequence(seq: tuple[int, ...]) -> str:
    """Render a sequence tuple as the original's dotted string (shared: many tasks share one)."""
    return ".".join(map(str, seq))


@dataclass(frozen=True)
class StepConfig:
    """The per-step settings the engine acts on (flow defaults merged with the step's own)."""

    task_construct: TaskConstruct = TaskConstruct.process
    max_concurrent: int = -1
    stop_on_exception: bool = True
    sequence_arg_name: Optional[str] = None
    pass_logger_to_task: bool = False
    item_arg_name: Optional[str] = None  # the keyword that gets the item of the innermost repeated container
    parallel_iterations: int = 1  # containers: iterations at once (0: no limit)
    retries: int = 0  # tries after the first
    retry_delay: float = 0.0  # seconds before the first retry
    retry_backoff: float = 1.0  # factor on the delay after each retry
    timeout: Optional[float] = None  # seconds a try may run (process tasks)

    def retry_wait(self, try_number: int) -> float:
        """Seconds to wait after try ``try_number`` failed, before the next one."""
        return self.retry_delay * self.retry_backoff ** (try_number - 1)


@dataclass(eq=False, slots=True)
class EventDef:
    """A named event; with a condition it fires by itself once the condition holds."""

    name: str
    condition: Optional[Condition] = None
    scope: Optional[str] = None  # the container whose iterations this event lives in
    index: int = -1  # position in the program, set when added


@dataclass(eq=False, slots=True)
class StepDef:
    """A processing step (calls ``func``) or, with ``repeats`` set, a container step.

    A container's task runs its iterations: each one fires ``starts`` at the sequence
    ``S.k`` and ends when nothing started inside it is pending any more.
    """

    name: str
    func: Optional[Callable[..., Any]] = None
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    triggers: Mapping[StepStatus, tuple[str, ...]] = field(default_factory=dict)
    config: StepConfig = field(default_factory=StepConfig)
    recovery: Mapping[StepStatus, StepReplay] = field(default_factory=lambda: dict(DEFAULT_RECOVERY))
    hosts: tuple[str, ...] = ()  # where it may run, by name: the first with room (none: here)
    acquires: tuple[tuple[str, int], ...] = ()  # (pool, count): all taken at once before the start
    releases: Optional[tuple[tuple[str, int], ...]] = None  # given back at the end; None: as acquired
    scope: Optional[str] = None  # the container this step belongs to (None: the root)
    # container steps only
    is_container: bool = False
    repeats: Any = None  # an iterable, or a callable returning an iterator
    starts: tuple[str, ...] = ()  # events fired at the start of every iteration
    # carried for compatibility, not used: ``func`` is called as given, nothing is imported for it
    import_module: Optional[tuple[str, ...]] = None
    import_file: Optional[str] = None
    index: int = -1  # position in the program, set when added

    @property
    def host(self) -> Optional[str]:
        """The first host it may run on (None: the coordinator's)."""
        return self.hosts[0] if self.hosts else None

    @property
    def handles_failure(self) -> bool:
        """True when a failure of this step fires an event (someone depends on it)."""
        return bool(self.triggers.get(StepStatus.failure))


@dataclass(eq=False)
class PoolDef:
    """A counting semaphore shared by the steps that acquire from it; ``limit`` < 1 is unlimited."""

    name: str
    limit: int


@dataclass(frozen=True, slots=True)
class Assoc:
    """When ``event`` fires at a sequence, start ``target`` (a step or an event) there, after ``delay``."""

    event: str
    target: str
    target_is_step: Optional[bool]  # None: a name, resolved when the run starts
    delay: float = 0.0


class Program:
    """Everything an Eventor was told: events, steps, associations and the events to fire first."""

    def __init__(self) -> None:
        self.events: dict[str, EventDef] = {}
        self.steps: dict[str, StepDef] = {}
        self.step_list: list[StepDef] = []  # by index; process tasks are named by index
        self.assocs: dict[str, Union[list[Assoc], tuple[Assoc, ...]]] = {}  # lists while built, tuples once validated
        self.initial: list[tuple[str, tuple[int, ...]]] = []
        self.pools: dict[str, PoolDef] = {}

    def add_event(self, event: EventDef) -> EventDef:
        event.index = len(self.events)
        self.events[event.name] = event
        return event

    def add_step(self, step: StepDef) -> StepDef:
        step.index = len(self.step_list)
        self.steps[step.name] = step
        self.step_list.append(step)
        return step

    @property
    def has_steps_of(self) -> set[TaskConstruct]:
        """The task constructs that processing steps of this program use."""
        return {s.config.task_construct for s in self.step_list if not s.is_container}
