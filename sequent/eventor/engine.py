"""The Eventor: build a program of events, steps and associations, then run it against a store."""

from __future__ import annotations

import datetime
import logging
import os
import shlex
import signal
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Union

from . import config as _config
from .conditions import Condition, simplify, to_condition
from .runlock import my_token
from .dburl import default_store_path, resolve_store
from . import attempts, runlock, summary
from .errors import EventorError, FlowChangedWarning, NoRunError
from .logs import HOST, RunLogging, flow_logger_name, task_logger_name
from .model import (DEFAULT_RECOVERY, Assoc, EventDef, PoolDef, Program, RunMode, StepConfig, StepDef,
                    StepReplay, StepStatus, TaskConstruct, capacity_problem, delay_problem, parse_sequence,
                    releases_problem, repeats_problem, sum_amounts)
from .outcome import RunEnd
from .runners import Inbox
from .text import DEPTH_LIMIT, RUN_ID_LIMIT, name_problem

if TYPE_CHECKING:  # imported when a run starts: `import sequent` stays light
    from .coordinator import Coordinator
    from .store import Store

EventRef = Union[EventDef, str]
_NO_KWARGS: Mapping[str, Any] = {}  # shared by the steps without kwargs; never changed
_NO_TRIGGERS: Mapping[StepStatus, tuple[str, ...]] = {}  # shared by the steps that trigger nothing; never changed
StepRef = Union[StepDef, str]


def calling_module() -> Optional[str]:
    """The file of the first frame outside this package: the user's program."""
    return _config.caller_outside_package()[1]


def flow_name(name: str, program_file: Optional[str], fallback: str) -> str:
    """A flow's name: ``name``, else the calling program's file name, else ``fallback``."""
    base = os.path.basename(program_file) if program_file else ""
    return name or (base if base and not base.startswith("<") else fallback)


def run_names_problem(name: str, run_id: Optional[str]) -> Optional[str]:
    """Why the store cannot keep a flow's ``name`` or ``run_id`` (None when it can); Sequent and Eventor ask."""
    return name_problem(name, "flow name") or (
        None if run_id is None else name_problem(run_id, "run_id", RUN_ID_LIMIT))


def _pool_key(pool: Any) -> Optional[str]:
    """The engine keys a step's pools by name: a name, or anything with a str ``name``."""
    name = pool if isinstance(pool, str) else getattr(pool, "name", None)
    return name if isinstance(name, str) else None


def timeout_problem(config: StepConfig) -> Optional[str]:
    """Why a step's ``timeout`` cannot be kept (None when it can): a thread cannot be stopped."""
    if config.timeout is not None and config.task_construct in (TaskConstruct.thread, TaskConstruct.invoke):
        return (f"a timeout ({config.timeout:g} s) needs task_construct 'process' (or a remote host or Dask): "
                f"a {config.task_construct.value} task cannot be stopped while it runs")
    return None


def new_run_id() -> str:
    """A run_id that is unique, sorts by start time and reads as one: ``20261126-183412-123456-3f9a``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S-%f-") + os.urandom(2).hex()


class _Made:
    """The files and folders a run is about to create, noted before it creates them, so that a run
    refused after that removes them again: only what did not exist before, and a folder only empty."""

    def __init__(self) -> None:
        self.files: list[str] = []
        self.folders: list[str] = []
        self.store: list[str] = []  # a new SQLite store file and its companions

    def file(self, path: str) -> None:
        if not os.path.lexists(path):
            self.files.append(path)

    def folder(self, path: str) -> None:
        """Note ``path`` and those of its parents that do not exist yet."""
        path = os.path.abspath(path)
        while not os.path.lexists(path):
            self.folders.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent

    def store_file(self, path: str) -> None:
        """Note a SQLite store file (and the journal files SQLite keeps beside it) if it is new."""
        if not os.path.lexists(path):
            self.folder(os.path.dirname(os.path.abspath(path)))
            companions = [path + end for end in ("-wal", "-shm", "-journal")]
            self.store = [path] + [p for p in companions if not os.path.lexists(p)]

    def remove(self, *, store: bool) -> None:
        """Remove the noted files (the store's only with ``store``), then the noted folders left empty."""
        for path in self.files + (self.store if store else []):
            try:
                os.remove(path)
            except OSError:  # gone already, or not ours to remove after all
                pass
        for path in sorted(set(self.folders), key=lambda p: p.count(os.sep), reverse=True):
            try:
                os.rmdir(path)  # only an empty folder goes
            except OSError:
                pass


def _name(ref: Any, what: str) -> str:
    if isinstance(ref, str):
        return ref
    name = getattr(ref, "name", None)
    if isinstance(name, str):
        return name
    raise EventorError(f"expected {what} or its name, got {ref!r}")


class Eventor:
    """A program of events and steps, and the means to run it durably.

    Build it with :meth:`add_event`, :meth:`add_step`, :meth:`add_container` and
    :meth:`add_assoc`; say which events fire first with :meth:`trigger_event`; then
    :meth:`run` it.  Every run is kept in the store under its ``run_id``.
    """

    def __init__(self, name: str = "", store: Any = "", run_mode: RunMode = RunMode.restart,
                 recovery_run: Optional[int] = None, run_id: Optional[str] = None,
                 config: Any = None, config_tag: Optional[str] = None, host: Optional[str] = None,
                 program_file: Optional[str] = None):
        self.program_file = program_file or calling_module()
        self.name = flow_name(name, self.program_file, "eventor")
        problem = run_names_problem(self.name, run_id) or (None if host is None else name_problem(host, "host"))
        if problem:
            raise EventorError(problem)
        self.config = _config.load_config(config, config_tag)
        self.store = store
        self.run_mode = RunMode(run_mode)
        self.recovery_run = recovery_run
        self.run_id: Optional[str] = run_id
        self._run_id_given = run_id is not None  # else each restart gets a new one
        self.host = host or HOST
        self.program = Program()
        self.recovery = 0
        self._step_defaults = {k: self.config[k] for k in _config.STEP_KEYS}
        self._configs: dict[tuple, StepConfig] = {}
        self._sequences: dict[tuple, tuple] = {}
        #: The flow's steps and requires as its builder describes them (JSON data, or its text, kept with
        #: each attempt for ``sequent graph`` and ``sequent report``); None: the program's own shape only.
        self.graph: Union[str, Mapping[str, Any], None] = None

    # -- building -------------------------------------------------------------------------------

    def add_event(self, name: str, expr: Any = None, *, scope: Optional[str] = None) -> EventDef:
        """Add an event; with ``expr`` (events, names, ``or_``/``and_``, tuples meaning and) it fires by itself."""
        if not isinstance(name, str) or not name:
            raise EventorError(f"an event needs a non-empty name, got {name!r}")
        condition = None if expr is None else simplify(self._condition(expr, name))
        existing = self.program.events.get(name)
        if existing is not None:
            if existing.condition == condition and existing.scope == scope:
                return existing
            raise EventorError(f"event {name!r} is already defined with another expression")
        return self.program.add_event(EventDef(name, condition, scope))

    def _condition(self, expr: Any, name: str) -> Condition:
        try:
            return to_condition(expr)
        except TypeError as exc:
            raise EventorError(f"event {name!r}: {exc}") from None

    def _step_config(self, config: Optional[Mapping], name: str) -> StepConfig:
        try:  # many steps share a config: make each distinct one once
            key = tuple(sorted(config.items())) if config else ()
            cached = self._configs.get(key)
        except TypeError:  # an unhashable value: validation below says what is wrong
            key, cached = None, None
        if cached is not None:
            return cached
        values = dict(self._step_defaults)
        values.update(_config.validate_step_config(config, name))
        made = StepConfig(task_construct=TaskConstruct(values["task_construct"]),
                          max_concurrent=int(values["max_concurrent"]),
                          stop_on_exception=bool(values["stop_on_exception"]),
                          sequence_arg_name=values["sequence_arg_name"],
                          pass_logger_to_task=bool(values["pass_logger_to_task"]),
                          item_arg_name=values["item_arg_name"],
                          parallel_iterations=int(values["parallel_iterations"]),
                          retries=int(values["retries"]), retry_delay=float(values["retry_delay"]),
                          retry_backoff=float(values["retry_backoff"]),
                          timeout=None if values["timeout"] is None else float(values["timeout"]))
        if key is not None:
            self._configs[key] = made
        return made

    def _triggers(self, triggers: Optional[Mapping], name: str) -> Mapping[StepStatus, tuple[str, ...]]:
        if not triggers:
            return _NO_TRIGGERS
        result: dict[StepStatus, tuple[str, ...]] = {}
        for status, events in triggers.items():
            try:
                status = StepStatus(status)
            except ValueError:
                raise EventorError(f"step {name!r}: unknown status {status!r} in triggers") from None
            if isinstance(events, (EventDef, str)):
                events = (events,)
            names = tuple(_name(e, "an event") for e in events)
            targets = (StepStatus.success, StepStatus.failure) if status is StepStatus.complete else (status,)
            for target in targets:
                result[target] = result.get(target, ()) + tuple(n for n in names if n not in result.get(target, ()))
        return result

    def _recovery(self, recovery: Optional[Mapping], name: str) -> Mapping[StepStatus, StepReplay]:
        if not recovery:
            return DEFAULT_RECOVERY  # shared: the engine never changes a step's map
        result = dict(DEFAULT_RECOVERY)
        given = dict(recovery or {})
        complete = given.pop(StepStatus.complete, None)
        for status, replay in given.items():
            try:
                result[StepStatus(status)] = StepReplay(replay)
            except ValueError:
                raise EventorError(f"step {name!r}: bad recovery entry {status!r}: {replay!r}") from None
        if complete is not None:
            for status in (StepStatus.success, StepStatus.failure):
                if status not in given:
                    result[status] = StepReplay(complete)
        return result

    def _check_new_step(self, name: str, scope: Optional[str]) -> None:
        if not isinstance(name, str) or not name:
            raise EventorError(f"a step needs a non-empty name, got {name!r}")
        problem = name_problem(name, "step name")
        if problem:
            raise EventorError(problem)
        if name in self.program.steps:
            raise EventorError(f"step {name!r} is already defined")
        depth, outer = 0, self.program.steps.get(scope) if scope is not None else None
        while outer is not None:
            depth += 1
            outer = self.program.steps.get(outer.scope) if outer.scope is not None else None
        if depth > DEPTH_LIMIT:
            raise EventorError(f"step {name!r} would be nested {depth} containers deep; "
                               f"at most {DEPTH_LIMIT} are allowed")

    def add_step(self, name: str, func: Optional[Callable] = None, args: Iterable = (),
                 kwargs: Optional[Mapping] = None, triggers: Optional[Mapping] = None,
                 host: Union[str, Iterable[str], None] = None, acquires: Any = None, releases: Any = None,
                 recovery: Optional[Mapping] = None, config: Optional[Mapping] = None,
                 import_file: Optional[str] = None, import_module: Any = None,
                 *, scope: Optional[str] = None) -> StepDef:
        """Add a processing step: ``func(*args, **kwargs)`` runs once per sequence it is started at.

        ``host`` is a host name or a list of them: each task runs on the first with room (a name
        of this machine, or none, runs it here; others through an agent over SSH, see config
        ``HOSTS``).  ``import_module`` and ``import_file`` are accepted for compatibility and not
        used: ``func`` travels by reference and is imported where it runs.
        """
        self._check_new_step(name, scope)
        if func is not None and not callable(func):
            raise EventorError(f"step {name!r}: func must be callable, got {func!r}")
        step = StepDef(name=name, func=func, args=tuple(args), kwargs=dict(kwargs) if kwargs else _NO_KWARGS,
                       triggers=self._triggers(triggers, name), config=self._step_config(config, name),
                       recovery=self._recovery(recovery, name), hosts=self._hosts(host, name), scope=scope,
                       **self._step_amounts(acquires, releases, name),
                       import_module=tuple(import_module) if import_module else None, import_file=import_file)
        problem = timeout_problem(step.config)
        if problem:
            raise EventorError(f"step {name!r}: {problem}")
        return self.program.add_step(step)

    def add_container(self, name: str, repeats: Any = (1,), starts: Iterable[EventRef] = (),
                      triggers: Optional[Mapping] = None, acquires: Any = None, releases: Any = None,
                      config: Optional[Mapping] = None, *, scope: Optional[str] = None,
                      host: Optional[str] = None) -> StepDef:
        """Add a container step: each item of ``repeats`` is one iteration firing ``starts`` at ``S.k``.

        An iteration ends when nothing started inside it is pending; a ``None`` item or the end
        of ``repeats`` ends the container.  Containers always replay in recovery.  ``starts`` may
        also be given later with :meth:`set_starts`.  ``host`` is recorded with its tasks (the
        facade gives each copy of a container on several hosts its own); the container's steps
        say where they run themselves.
        """
        self._check_new_step(name, scope)
        problem = repeats_problem(repeats)
        if problem:
            raise EventorError(f"container {name!r}: {problem}")
        rerun = {status: StepReplay.rerun for status in DEFAULT_RECOVERY}
        step = StepDef(name=name, triggers=self._triggers(triggers, name), config=self._step_config(config, name),
                       recovery=rerun, hosts=self._hosts(host, name), scope=scope,
                       **self._step_amounts(acquires, releases, name),
                       is_container=True, repeats=repeats, starts=self._event_names(starts))
        return self.program.add_step(step)

    @staticmethod
    def _hosts(host: Union[str, Iterable[str], None], step: str) -> tuple[str, ...]:
        """A step's host names as a tuple, each checked (none: it runs here)."""
        if host is None:
            return ()
        names = (host,) if isinstance(host, str) else tuple(host)
        for name in names:
            problem = name_problem(name, "host") if isinstance(name, str) and name else "a host name must be a non-empty str"
            if problem:
                raise EventorError(f"step {step!r}: {problem} (got {name!r})")
        return names

    def set_starts(self, container: StepRef, starts: Iterable[EventRef]) -> StepDef:
        """Say which events ``container`` fires at the start of each iteration, replacing those given before.

        For a builder that adds a container before the steps and events inside it, as the facade's
        translator does: it learns the starting events only once the container's steps are added.
        """
        name = _name(container, "a container")
        step = self.program.steps.get(name)
        if step is None or not step.is_container:
            raise EventorError(f"set_starts: {name!r} is not a container of this program")
        step.starts = self._event_names(starts)
        return step

    @staticmethod
    def _event_names(events: Iterable[EventRef]) -> tuple[str, ...]:
        return tuple(_name(e, "an event") for e in events)

    def add_resource_pool(self, name: str, limit: int) -> PoolDef:
        """Add a pool of ``limit`` interchangeable resources (< 1: unlimited) that steps acquire."""
        problem = name_problem(name, "a resource pool's name")
        if problem:
            raise EventorError(problem)
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise EventorError(f"resource pool {name!r}: limit must be an int, got {limit!r}")
        existing = self.program.pools.get(name)
        if existing is not None:
            if existing.limit != limit:
                raise EventorError(f"resource pool {name!r} is already defined with limit {existing.limit}")
            return existing
        pool = PoolDef(name, limit)
        self.program.pools[name] = pool
        return pool

    @classmethod
    def _step_amounts(cls, acquires: Any, releases: Any, step: str) -> dict[str, Any]:
        """A step's ``acquires`` and ``releases`` (None: as acquired), as StepDef keywords."""
        return {"acquires": cls._amounts(acquires, step, "acquires"),
                "releases": None if releases is None else cls._amounts(releases, step, "releases")}

    @staticmethod
    def _amounts(value: Any, step: str, what: str) -> tuple[tuple[str, int], ...]:
        """Normalise ``[(pool, count), ...]`` (a pool or its name), summing repeated pools."""
        try:
            return sum_amounts(value or (), what, _pool_key, "a resource pool")
        except ValueError as exc:
            raise EventorError(f"step {step!r}: {exc}") from None

    def add_assoc(self, event: EventRef, *targets: Union[StepRef, EventRef], delay: float = 0) -> None:
        """When ``event`` fires at a sequence, start each target step, or fire each target event, there."""
        problem = delay_problem(delay)
        if problem:
            raise EventorError(f"association of {_name(event, 'an event')!r}: {problem}")
        ev = _name(event, "an event")
        for target in targets:
            # a name is looked up when the run starts, so steps may be added after their association
            name = _name(target, "a step or an event")
            is_step = (True if isinstance(target, StepDef) or name in self.program.steps else
                       False if isinstance(target, EventDef) or name in self.program.events else None)
            assocs = self.program.assocs.get(ev)
            if not isinstance(assocs, list):  # none yet, or made a tuple by validate()
                assocs = self.program.assocs[ev] = list(assocs or ())
            assocs.append(Assoc(ev, name, is_step, float(delay)))

    def trigger_event(self, event: EventRef, sequence: Any = 1) -> None:
        """Fire ``event`` at ``sequence`` when the run starts."""
        try:
            seq = parse_sequence(sequence)
        except ValueError as exc:
            raise EventorError(str(exc)) from None
        seq = self._sequences.setdefault(seq, seq)  # one tuple for the many starters at '1'
        self.program.initial.append((_name(event, "an event"), seq))

    # -- checking -------------------------------------------------------------------------------

    def validate(self) -> None:
        """Check that every name the program uses is defined; raises EventorError naming the first."""
        p = self.program
        for ev in p.events.values():
            if ev.condition is not None:
                for ref in ev.condition.refs():
                    if ref not in p.events:
                        raise EventorError(f"event {ev.name!r} refers to unknown event {ref!r}")
        for name, assocs in p.assocs.items():
            if name not in p.events:
                raise EventorError(f"association of unknown event {name!r}")
            # resolved, and kept as a tuple: a large flow has one list per event otherwise
            assocs = p.assocs[name] = tuple(a if a.target_is_step is not None else
                                            Assoc(a.event, a.target, a.target in p.steps, a.delay) for a in assocs)
            for a in assocs:
                if a.target_is_step and a.target not in p.steps:
                    raise EventorError(f"event {name!r} is associated with unknown step {a.target!r}")
                if not a.target_is_step and a.target not in p.events:
                    raise EventorError(f"event {name!r} is associated with unknown step or event {a.target!r}")
        for step in p.step_list:
            for events in step.triggers.values():
                for ev in events:
                    if ev not in p.events:
                        raise EventorError(f"step {step.name!r} triggers unknown event {ev!r}")
            for ev in step.starts:
                if ev not in p.events:
                    raise EventorError(f"container {step.name!r} starts unknown event {ev!r}")
            self._validate_amounts(step)
            if step.scope is not None and not (step.scope in p.steps and p.steps[step.scope].is_container):
                raise EventorError(f"step {step.name!r} is scoped in {step.scope!r}, which is not a container")
            outer, seen = step.scope, {step.name}
            while outer is not None:
                if outer in seen:
                    raise EventorError(f"step {step.name!r} is scoped in a loop of containers through {outer!r}")
                seen.add(outer)
                outer = p.steps[outer].scope if outer in p.steps else None
            if len(seen) > DEPTH_LIMIT + 1:
                raise EventorError(f"step {step.name!r} is nested {len(seen) - 1} containers deep; "
                                   f"at most {DEPTH_LIMIT} are allowed")
        for name, _ in p.initial:
            if name not in p.events:
                raise EventorError(f"trigger_event of unknown event {name!r}")

    def _validate_amounts(self, step: StepDef) -> None:
        """The step's pools exist, hold what it acquires, and get back no more than it took."""
        pools = self.program.pools
        for name, _ in step.acquires:
            if name not in pools:
                raise EventorError(f"step {step.name!r} acquires from unknown resource pool {name!r}")
        problem = (capacity_problem(step.acquires, lambda name: pools[name].limit)
                   or releases_problem(step.acquires, step.releases))
        if problem:
            raise EventorError(f"step {step.name!r} {problem}")

    def fingerprint(self) -> str:
        """A digest of the program's shape (steps, containers, events), to notice a changed flow."""
        import hashlib  # only when a run starts

        digest = hashlib.sha256()
        for step in self.program.step_list:
            digest.update(f"{step.name}|{step.scope}|{step.is_container}\n".encode())
        for ev in self.program.events.values():
            digest.update(f"{ev.name}|{ev.scope}|{ev.condition}\n".encode())
        return digest.hexdigest()[:16]

    # -- running --------------------------------------------------------------------------------

    def run(self, max_loops: int = -1) -> bool:
        """Run the program to its end; True when no failure was left unhandled and nothing is left.

        With ``max_loops`` >= 0 the coordinator stops after that many rounds: running tasks
        finish, nothing new starts, and the run counts as incomplete (False).  SIGINT or SIGTERM
        stop it the same way, ask running tasks to stop, record them, and are then re-raised.
        """
        self.validate()
        from . import hosts as placing  # imported when a run starts

        remote_names = placing.remote_hosts(self.program, self.host)
        if remote_names:  # refused before anything starts: a store other hosts cannot reach, unsendable steps
            placing.check_remote(self.program, remote_names, self.host, self._store_target())
        uses_dask = TaskConstruct.dask in self.program.has_steps_of
        if uses_dask:
            placing.check_dask(self.program, self.config, self._store_target(), remote_names)
        self._check_store()  # what the store refuses is refused before anything is created
        store: Optional[Store] = None
        locked: Optional[str] = None  # the lock's token, once taken
        lease: Optional[runlock.Lease] = None
        beat_conn = None
        logs: Optional[RunLogging] = None
        from .executors import ExecutorSetup, RunInfo, make_executors  # imported when a run starts

        inbox = Inbox()
        executors = make_executors(self._local_constructs(remote_names) - {TaskConstruct.dask}, ExecutorSetup(
            name=self.name, steps=self.program.step_list, report=inbox.put,
            on_task_start=lambda name: logs.task_started(name) if logs is not None else None))
        remotes = placing.remote_executors(remote_names, self.config, inbox.put, self.program) if remote_names else {}
        if uses_dask:  # one cluster connection; an executor for unpinned tasks, one per pinned worker
            from .executors.dask import dask_executors

            unpinned, pinned = dask_executors(self.program, self.config, inbox.put)
            if unpinned is not None:
                executors[TaskConstruct.dask] = unpinned
            remotes.update(pinned)
        started: list = []  # the executors started, stopped in reverse order
        # executors start before the store is opened (and so before SQLAlchemy is even imported,
        # for a restart): one that forks then holds no database connection, and is small to fork from
        outcome: RunEnd = RunEnd.failure
        attempt: Optional[tuple[str, int]] = None  # (run_id, recovery) once its row is written and not yet ended
        recorded = False  # the attempt's start is in the store: from then on, what the run made stays
        made = _Made()  # what it creates until then, removed if it is refused before
        began = time.monotonic()
        coordinator: Optional[Coordinator] = None
        doing = "opening it"
        try:
            if self.run_mode is RunMode.restart:
                self.run_id = self.run_id if self._run_id_given else new_run_id()
            run_id = self.run_id
            logger_name = flow_logger_name(self.name, run_id)
            logs = RunLogging(logger_name, self.config["LOGGING"])
            made.folder(logs.logdir)
            made.file(logs.run_log_path)
            log = logs.start()
            log.info("Process PID: %s; run_id: '%s'.", os.getpid(), run_id)
            for ex in [*executors.values(), *remotes.values()]:  # remote agents start side by side
                started.append(ex)
                ex.start()
            doing = "opening it"
            target = self._store_target()
            if target.is_sqlite and not target.is_memory and not target.display.startswith("file:"):
                made.store_file(target.display)
            store = self._open_store(target)
            # lock first, then read: what a recovery reads is then what it runs against
            doing = "taking the run's lock"
            token = my_token(next((ex.holder_pid for ex in started if ex.holder_pid is not None), None))
            attempts.take_lock(store, self.run_id, self.host, token, float(self.config["shutdown_grace"]), log)
            locked = token
            runlock.ACTIVE.add(run_id)
            if self.run_mode is not RunMode.restart and store.version >= 2:
                doing = "waiting for the agents of earlier attempts"
                attempts.wait_for_agents(store, run_id, float(self.config.get("agent_wait", 60.0)), log)
            doing = "reading the run"
            self.recovery, previous, previous_delays, based_on = attempts.prepare(
                store, run_id=run_id, flow=self.name, mode=self.run_mode, recovery_run=self.recovery_run,
                shape=self._shape())
            retries_left, items = ({}, {}) if based_on is None else (
                store.previous_retries(run_id, based_on), store.previous_items(run_id, based_on))
            log.info("Eventor store file: %s", target.display)
            if remotes or uses_dask:  # each agent checks its versions and reaches the store before anything is recorded
                doing = "starting the remote agents"
                run_info = RunInfo(target=target, busy_timeout=store.busy_timeout, run_id=run_id,
                                   recovery=self.recovery, logger_name=logger_name, logging=logs.settings,
                                   grace=float(self.config["shutdown_grace"]))
                for ex in started:
                    ex.bind(run_info)
            if self.recovery:
                log.info("Recovering run %r: attempt %d, compared with attempt %d", run_id, self.recovery, based_on)
            doing = "recording the attempt's start"
            store.start_attempt(run_id=run_id, flow=self.name, program=self.program_file, host=self.host,
                                mode=self.run_mode.name, recovery=self.recovery, based_on=based_on,
                                fingerprint=self.fingerprint(), steps=self._shape(), graph=self.graph,
                                logging=logs.where())
            recorded = True
            attempt = (run_id, self.recovery)
            from . import coordinator as coordinating  # imported when a run starts

            coordinator = coordinating.Coordinator(
                self.program, store.writer(run_id, self.recovery, self.host), logger=log, run_id=run_id,
                recovery=self.recovery, envvar_prefix=self.config["envvar_prefix"],
                max_concurrent=self.config["max_concurrent"],
                task_logger=lambda step, seq: task_logger_name(logger_name, step, seq),
                executors=executors, remotes=remotes, inbox=inbox, on_task_start=logs.task_started, on_task_end=logs.task_ended,
                max_loops=max_loops, previous=previous, previous_delays=previous_delays,
                grace=float(self.config["shutdown_grace"]), progress=self._progress(logs),
                previous_retries=retries_left, previous_items=items)
            if not store.is_memory:  # nobody else can reach an in-memory store, so it needs no lease
                beat_conn = store.connect()
                lease = runlock.Lease(lambda: store.beat(beat_conn, run_id, token), logger=log,
                                      on_lost=lambda: coordinator.inbox.put(("lost", None)))
                coordinator.lease = lease
                lease.start()
            doing = "recording the run's progress"
            outcome = coordinator.run()
            if lease is not None:
                lease.stop()
            doing = "recording the attempt's end"
            store.end_attempt(run_id, self.recovery, outcome.value, close_run=outcome is not RunEnd.lost)
            attempt = None
            if outcome is RunEnd.lost:
                raise EventorError(
                    f"run {run_id!r}: this coordinator lost the run to another one (it was paused, or cut off "
                    f"from store {target.display}, for longer than the lock's limit of {runlock.STALE_AFTER:g} s); "
                    f"it started nothing after that and stopped its running tasks. The run goes on under the "
                    f"coordinator that took it over: see its history")
            if coordinator.deadlock:
                raise EventorError(f"run {run_id!r}: {coordinator.deadlock}")
        except Exception as exc:
            fault = store is not None and not isinstance(exc, EventorError) and store.is_fault(exc)
            if attempt is not None:
                outcome = RunEnd.error
                attempts.close_after_error(store, attempt, lost=lease is not None and lease.lost,
                                           logger=logging.getLogger(logs.logger_name) if logs else None)
            if fault:
                advice = (f"the run is kept: recover it with run_id {self.run_id!r} once the store is fixed"
                          if attempt is not None else "")
                raise store.fault(exc, doing, advice) from exc
            raise
        finally:
            if logs is not None:
                logs.end_progress()  # the tasks are over: what follows prints where the live line was
            if lease is not None:
                lease.stop()
            abandon = coordinator.abandons if coordinator is not None else False
            for ex in reversed(started):
                ex.stop(float(self.config["shutdown_grace"]), abandon=abandon)
            inbox.close()
            if beat_conn is not None:
                try:
                    beat_conn.close()
                except Exception:  # a connection already lost
                    pass
            if locked is not None:
                runlock.ACTIVE.discard(self.run_id)
                try:
                    store.open().release_lock(self.run_id, locked)
                except Exception:  # the store went away: the lock is released when found stale
                    pass
            if store is not None:
                store.close()
            if logs is not None:
                if recorded:
                    if coordinator is not None:
                        self._summarize(logs, coordinator, outcome, time.monotonic() - began)
                    logging.getLogger(logs.logger_name).info("Processing finished with: %s", outcome)
                logs.stop()
            if not recorded:  # refused (or failed) before the store holds anything of it: leave nothing
                made.remove(store=bool(made.store) and not self._holds_runs())
            if coordinator is not None:
                coordinator.restore_signals()
        if coordinator is not None and coordinator.late_signal is not None:
            self._reraise(coordinator.late_signal)
        return outcome is RunEnd.success

    @staticmethod
    def _reraise(signum: int) -> None:
        """After a graceful stop, let the signal do what it would have done to the program."""
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        os.kill(os.getpid(), signum)  # the handler in place before run() (by default: exit)

    def _shape(self) -> list[list]:
        """The flow's shape as stored with each attempt: [step, container, kind] per step."""
        return [[s.name, s.scope, "container" if s.is_container else "step"] for s in self.program.step_list]

    def _local_constructs(self, remote_names: list[str]) -> set[TaskConstruct]:
        """The task constructs of the processing steps that may run here (all, without remote hosts)."""
        if not remote_names:
            return self.program.has_steps_of
        remote = set(remote_names)
        return {s.config.task_construct for s in self.program.step_list
                if not s.is_container and (not s.hosts or any(h not in remote for h in s.hosts))}

    def _store_target(self) -> Any:
        """Where the run's store is (resolved, not opened)."""
        return resolve_store(self.store, self.config.get("DATABASES") or {}, default_store_path(self.program_file))

    def _open_store(self, target: Any = None) -> Store:
        from .store import Store  # SQLAlchemy is imported here, when a run starts

        return Store(target or self._store_target(),
                     busy_timeout=float(self.config.get("busy_timeout", 10.0)),
                     mode=int(self.config.get("store_mode", 0o600))).open()

    def _reader(self, target: Any) -> Optional[Store]:
        """The store opened to read only, creating nothing; None when there is no store there yet."""
        from .store import Store

        if target.is_memory:
            return None
        if target.is_sqlite and not target.display.startswith("file:") and not os.path.exists(target.display):
            return None
        reader = Store(target, busy_timeout=float(self.config.get("busy_timeout", 10.0)), readonly=True).open()
        if reader.empty:
            reader.dispose()
            return None
        return reader

    def _check_store(self) -> None:
        """Refuse, before anything is created (no store file, no log), a recovery that the store
        already says no to: of a run it does not hold, of another flow's run, of an attempt it does
        not have, with a flow that cannot match it, or of a run another coordinator runs now.  Sets
        the run_id of a recovery of the flow's latest run.

        The run checks all this again once it holds the run's lock (``attempts``); this only spares
        a refused recovery its files.  A new run does not look at the store before its executors
        started: opening the store first (SQLAlchemy then loaded in the process the launcher forks
        from) would cost each of its process tasks; a new run refused later (its run_id is taken)
        removes what it created.
        """
        if self.run_mode is RunMode.restart:
            return
        target = self._store_target()
        if target.is_memory:
            from .store import Store

            attempts.find_run(Store(target), self.run_id, self.name)  # refuses: nothing outlives the process
        reader = self._reader(target)
        if reader is None:
            looked_for = f"run {self.run_id!r}" if self.run_id else f"run of flow {self.name!r}"
            raise NoRunError(f"no {looked_for} to recover in store {target.display} (it holds no runs)")
        try:
            self._check_run(reader)
        except Exception as exc:
            if not isinstance(exc, EventorError) and reader.is_fault(exc):
                raise reader.fault(exc, "reading it") from exc
            raise
        finally:
            reader.dispose()

    def _check_run(self, reader: Store) -> None:
        """What :meth:`_check_store` asks of a store that holds runs."""
        where = reader.target.display
        self.run_id = attempts.find_run(reader, self.run_id, self.name)
        run = attempts.check_run(reader, self.run_id, self.name)
        from .schema import SCHEMA_VERSION

        if reader.version < SCHEMA_VERSION:  # an older store: the run checks it once it brought it up to date
            return
        with warnings.catch_warnings():  # the run itself warns of a changed flow, once
            warnings.simplefilter("ignore", FlowChangedWarning)
            attempts.check_attempt(reader, run, self.recovery_run, self._shape())
        holder = reader.lock_holder(self.run_id)
        if holder is not None and not runlock.is_stale(holder) and runlock.draining(holder) is None:
            raise EventorError(f"run {self.run_id!r} in store {where} is being run by "
                               f"{runlock.describe(holder)}; wait for it to end")

    def _holds_runs(self) -> bool:
        """Whether the run's store holds a run (of anyone): a store this run made is removed only when not."""
        try:
            reader = self._reader(self._store_target())
        except Exception:  # unreadable: keep it
            return True
        if reader is None:
            return False
        try:
            return bool(reader.list_runs())
        except Exception:
            return True
        finally:
            reader.dispose()

    def _progress(self, logs: RunLogging) -> Any:
        """The coordinator's side of the live progress line, when the run has one (on a terminal)."""
        if logs.live is None:
            return None
        from .progress import Progress

        return Progress(logs.live, self.name)

    def _summarize(self, logs: RunLogging, coordinator: Coordinator, outcome: RunEnd, seconds: float) -> None:
        """End the run log with the run's summary: counts, failures and, unless it succeeded, how to recover."""
        try:
            target = self._store_target()
            store = summary.store_argument(self.store, self.config.get("DATABASES") or {}, target.display,
                                           target.is_memory)
            run_id = str(self.run_id)
            show = f"sequent show {shlex.quote(store)} {shlex.quote(run_id)} --failed" if store else None
            lines = summary.summary_lines(coordinator.tally, outcome=outcome.value, run_id=run_id, flow=self.name,
                                          recovery=self.recovery, seconds=seconds,
                                          hint=summary.recover_hint(self.program_file, run_id, store), show=show)
            logs.summary(lines, alert=outcome is not RunEnd.success)
        except Exception as exc:  # the summary must never hide how the run ended
            logging.getLogger(logs.logger_name).warning("Could not write the run's summary: %s", exc)

    def close(self) -> None:
        """Nothing stays open between runs; kept for the original's API."""

    def __repr__(self) -> str:
        return f"<Eventor {self.name!r} run_id={self.run_id!r}: {len(self.program.steps)} steps>"
