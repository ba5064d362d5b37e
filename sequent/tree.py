"""The step tree users build: containers, processing steps, events and their requires.

Everything that can be checked from one node is checked here, at ``add_step`` time, so a
mistake is reported on the line that made it.  Whole-tree checks live in the translator.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Union

from .errors import SequentError
from .resources import step_amounts
from .eventor.config import validate_step_config
from .eventor.errors import EventorError
from .eventor.model import StepReplay, StepStatus, delay_problem, repeats_problem
from .eventor.text import DEPTH_LIMIT, NAME_LIMIT, name_problem

if TYPE_CHECKING:  # pragma: no cover
    from .flow import Sequent

_NAME = re.compile(r"\w+")
REQUIRABLE = (StepStatus.ready, StepStatus.active, StepStatus.success, StepStatus.failure, StepStatus.complete)
RECOVERY_KEYS = REQUIRABLE


class Pair:
    """A requirement on one sibling: ``(step, status)``."""

    __slots__ = ("step", "status")

    def __init__(self, step: "Step", status: StepStatus):
        self.step, self.status = step, status

    def __repr__(self) -> str:
        return f"({self.step.path}, {self.status.name})"


class AllOf:
    """Every requirement holds (a tuple or list of requires means the same)."""

    __slots__ = ("items",)

    def __init__(self, items: Iterable[Any]):
        self.items = tuple(items)

    def __repr__(self) -> str:
        return f"and_{self.items!r}"


class AnyOf(AllOf):
    """At least one requirement holds."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"or_{self.items!r}"


def or_(*items: Any) -> AnyOf:
    """Requires that hold when any of ``items`` holds (each a ``(step, status)``, an event or a group)."""
    return AnyOf(items)


def and_(*items: Any) -> AllOf:
    """Requires that hold when all of ``items`` hold; the same as putting them in a tuple."""
    return AllOf(items)


Requires = Union[Pair, AllOf, AnyOf]


class Event:
    """A named, reusable group of requires, made by ``add_event`` on a flow or container."""

    def __init__(self, owner: "Node", requires: Requires, number: int):
        self.owner = owner
        self.requires = requires
        self.name = f"{owner.path or 'flow'}.event{number}"

    def __repr__(self) -> str:
        return f"<sequent.Event {self.name} requires={self.requires!r}>"


_NO_CHILDREN: tuple = ()
_NO_NAMES: Mapping[str, Any] = {}  # never written: replaced by a dict of its own on the first child


class Node:
    """What the flow and its container steps share: children and events."""

    __slots__ = ("children", "_child_names", "_events", "path", "flow", "__weakref__")

    path: str
    flow: "Sequent"

    def _init_node(self) -> None:
        # most steps never get children: they share empty containers until their first child
        self.children: list[Step] = _NO_CHILDREN  # type: ignore[assignment]
        self._child_names: dict[str, Step] = _NO_NAMES
        self._events: Any = ()  # the Event objects add_event made here (a list from the first one)

    @property
    def events(self) -> tuple["Event", ...]:
        """The events :meth:`add_event` made on this flow or container, in order."""
        return tuple(self._events)

    @property
    def where(self) -> str:
        return f"container {self.path!r}" if self.path else "the flow"

    def add_event(self, requires: Any) -> Event:
        """A reusable group of requires on this container's steps, to use in a sibling's ``requires``."""
        if requires is None:
            raise SequentError(f"add_event on {self.where} needs requires")
        event = Event(self, AllOf(()), len(self._events) + 1)
        event.requires = parse_requires(requires, self, f"event {event.name}")
        if not self._events:
            self._events = []
        self._events.append(event)
        return event

    def add_step(self, name: str, func: Optional[Callable] = None, args: Iterable = (),
                 kwargs: Optional[Mapping] = None, requires: Any = (), delay: float = 0,
                 acquires: Any = None, releases: Any = None, config: Optional[Mapping] = None,
                 recovery: Optional[Mapping] = None, repeats: Any = (1,), hosts: Optional[Iterable[str]] = None,
                 import_module: Any = None, import_file: Optional[str] = None) -> "Step":
        """Add a step here; it becomes a container as soon as a step is added to it.

        ``func(*args, **kwargs)`` is what a processing step runs; ``repeats`` is how often a
        container runs its steps (an iterable, or a callable returning an iterator; a ``None``
        item ends it early); ``requires`` says on which siblings' statuses the step waits.
        ``hosts`` names the hosts (``config['HOSTS']`` tags or ssh destinations) a step runs on: a
        processing step runs once, on the first of them with free capacity; a container on several
        hosts is copied once per host, each copy running all its iterations there.  Steps inside a
        container inherit its host and may not name their own.  ``import_module`` and
        ``import_file`` are checked and carried to the engine for compatibility, and not used.
        """
        return Step(self, name, func=func, args=args, kwargs=kwargs, requires=requires, delay=delay,
                    acquires=acquires, releases=releases, config=config, recovery=recovery, repeats=repeats,
                    hosts=hosts, import_module=import_module, import_file=import_file)


class Step(Node):
    """A step of a flow: processing (it calls ``func``) or, once it has children, a container."""

    # import_module and import_file: carried for compatibility, not used (see Node.add_step)
    __slots__ = ("parent", "name", "func", "args", "kwargs", "delay", "repeats", "config", "recovery", "hosts",
                 "import_module", "import_file", "acquires", "releases", "requires")

    def __init__(self, parent: Node, name: str, *, func: Optional[Callable], args: Iterable,
                 kwargs: Optional[Mapping], requires: Any, delay: float, acquires: Any, releases: Any,
                 config: Optional[Mapping], recovery: Optional[Mapping], repeats: Any,
                 hosts: Optional[Iterable[str]], import_module: Any, import_file: Optional[str]):
        self._init_node()
        self.parent = parent
        self.flow = parent.flow
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise SequentError(f"bad step name {name!r} in {parent.where}: use letters, digits and '_' only")
        self.name = name
        self.path = f"{parent.path}_{name}" if parent.path else name
        label = f"step {self.path!r}"
        if len(self.path) > NAME_LIMIT:
            raise SequentError(f"{label[:60]}...: its flattened name is {len(self.path)} characters long; "
                               f"the store keeps at most {NAME_LIMIT}: use shorter names")
        depth, outer = 0, parent
        while isinstance(outer, Step):
            depth, outer = depth + 1, outer.parent
        if depth > DEPTH_LIMIT:
            raise SequentError(f"{label}: nested {depth} containers deep; at most {DEPTH_LIMIT} are allowed")
        if name in parent._child_names:
            raise SequentError(f"Attempting to add step, but name already used: {name!r} in {parent.where} "
                               f"(step {self.path!r})")
        clash = self.flow.step_at(self.path)
        if clash is not None:
            raise SequentError(f"{label}: its flattened name collides with step {clash.name!r} of "
                               f"{clash.parent.where}; rename one of them")
        if func is not None and not callable(func):
            raise SequentError(f"{label}: func must be callable, got {func!r}")
        self.func = func
        try:
            self.args = tuple(args)
        except TypeError:
            raise SequentError(f"{label}: args must be a tuple or list, got {args!r}") from None
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise SequentError(f"{label}: kwargs must be a mapping, got {kwargs!r}")
        self.kwargs = dict(kwargs) if kwargs else _NO_NAMES
        problem = delay_problem(delay)
        if problem:
            raise SequentError(f"{label}: {problem}")
        self.delay = float(delay)
        problem = repeats_problem(repeats)
        if problem:
            raise SequentError(f"{label}: {problem}")
        self.repeats = repeats
        try:
            self.config = validate_step_config(config, self.path)
        except EventorError as exc:
            raise SequentError(str(exc)) from None
        if func is not None:
            problem = _timeout_problem(parent, self.config)
            if problem:
                raise SequentError(f"{label}: {problem}")
        self.recovery = _parse_recovery(recovery, label)
        self.hosts = _parse_hosts(hosts, label, self.path, parent)
        if import_file is not None and not import_module:
            raise SequentError(f"{label}: import_file needs import_module too")
        self.import_module = tuple([import_module] if isinstance(import_module, str) else import_module or ())
        self.import_file = import_file
        self.acquires, self.releases = step_amounts(acquires, releases, label)
        self.requires = parse_requires(requires, parent, label)
        if parent.children is _NO_CHILDREN:
            parent.children, parent._child_names = [], {}
        parent.children.append(self)
        parent._child_names[name] = self
        self.flow.register_step(self)

    @property
    def is_container(self) -> bool:
        return bool(self.children)

    def __repr__(self) -> str:
        kind = "container" if self.children else "step"
        return f"<sequent {kind} {self.path}>"


def _timeout_problem(parent: Node, own: Mapping) -> Optional[str]:
    """Why the step's ``timeout`` (its own or its containers' or the flow's) cannot be kept: a thread
    or invoke task cannot be stopped while it runs (None when it can)."""
    def setting(key: str) -> Any:
        if key in own:
            return own[key]
        node: Any = parent
        while isinstance(node, Step):
            if key in node.config:
                return node.config[key]
            node = node.parent
        return node.flow.config.get(key)

    timeout = setting("timeout")
    construct = setting("task_construct")
    if timeout is None or construct not in ("thread", "invoke"):
        return None
    return (f"a timeout ({timeout:g} s) needs task_construct 'process' (or a remote host or Dask): a {construct} "
            f"task cannot be stopped while it runs")


def _parse_recovery(recovery: Optional[Mapping], label: str) -> dict[StepStatus, StepReplay]:
    if recovery is None:
        return {}
    if not isinstance(recovery, Mapping):
        raise SequentError(f"{label}: recovery must be a mapping of status to STEP_RERUN/STEP_SKIP")
    result = {}
    for status, replay in recovery.items():
        if not isinstance(status, StepStatus) or status not in RECOVERY_KEYS:
            raise SequentError(f"{label}: bad recovery status {status!r}; use STEP_READY, STEP_ACTIVE, "
                               f"STEP_SUCCESS, STEP_FAILURE or STEP_COMPLETE")
        if not isinstance(replay, StepReplay):
            raise SequentError(f"{label}: recovery of {status.name} must be STEP_RERUN or STEP_SKIP, got {replay!r}")
        result[status] = replay
    return result


def _host_owner(parent: Node) -> Optional["Step"]:
    """The nearest container at or above ``parent`` that names hosts, or None."""
    node: Any = parent
    while isinstance(node, Step):
        if node.hosts:
            return node
        node = node.parent
    return None


def _parse_hosts(hosts: Optional[Iterable[str]], label: str, path: str, parent: Node) -> tuple[str, ...]:
    """The step's own hosts, in order: names the store can keep, each once, none set by an ancestor too."""
    owner = _host_owner(parent)
    if owner is not None and len(owner.hosts) > 1:
        # the container is copied once per host: its steps are named <container>@<host>_... in the run
        longest = len(path) + 1 + max(len(host) for host in owner.hosts)
        if longest > NAME_LIMIT:
            raise SequentError(f"{label}: container {owner.path!r} runs a copy on each of its hosts, where "
                               f"this step's name ({owner.path}@<host>{path[len(owner.path):]}) is up to "
                               f"{longest} characters long; the store keeps at most {NAME_LIMIT}: "
                               f"use shorter names")
    if hosts is None:
        return ()
    if isinstance(hosts, str):
        hosts = [hosts]
    try:
        hosts = tuple(hosts)
    except TypeError:
        raise SequentError(f"{label}: hosts must be a list of host names, got {hosts!r}") from None
    seen: set[str] = set()
    for host in hosts:
        problem = name_problem(host, "a host name")
        if problem:
            raise SequentError(f"{label}: hosts: {problem}")
        if host in seen:
            raise SequentError(f"{label}: host {host!r} is named twice in hosts; name each host once")
        seen.add(host)
    if owner is not None and hosts:
        raise SequentError(f"{label}: Step ancestry has already assigned host ({owner.path!r})")
    return hosts


def parse_requires(value: Any, container: Node, label: str) -> AllOf:
    """Normalise a requires expression to Pair/AllOf/AnyOf nodes, checking every item."""

    def parse(item: Any) -> Requires:
        if isinstance(item, Step):
            raise SequentError(f"{label}: requires item {item.path!r} needs a status: write "
                               f"({item.name}, STEP_SUCCESS) or another STEP_* status")
        if isinstance(item, Event):
            if item.owner is not container:
                raise SequentError(f"{label}: requires {item.name}, an event of {item.owner.where}; "
                                   f"a step may only use events of its own container ({container.where})")
            return item.requires
        if isinstance(item, AnyOf):
            return AnyOf(parse(i) for i in item.items)
        if isinstance(item, AllOf):
            return AllOf(parse(i) for i in item.items)
        if isinstance(item, Mapping):
            return AllOf(pair(k, v) for k, v in item.items())
        if isinstance(item, (tuple, list)):
            if len(item) == 2 and isinstance(item[0], Step):
                return pair(item[0], item[1])
            return AllOf(parse(i) for i in item)
        raise SequentError(f"{label}: cannot use {item!r} in requires: expected (step, STATUS) pairs, "
                           f"events from add_event, or_(...)/and_(...), or tuples of these")

    def pair(step: Any, status: Any) -> Pair:
        if not isinstance(step, Step):
            raise SequentError(f"{label}: requires ({step!r}, {status!r}): the first item must be a step")
        if not isinstance(status, StepStatus) or status not in REQUIRABLE:
            raise SequentError(f"{label}: requires ({step.name}, {status!r}): the status must be STEP_READY, "
                               f"STEP_ACTIVE, STEP_SUCCESS, STEP_FAILURE or STEP_COMPLETE")
        if step.flow is not container.flow:
            raise SequentError(f"{label}: requires step {step.path!r} of another flow")
        if step.parent is not container:
            raise SequentError(f"{label}: requires step {step.path!r}, which is not its sibling "
                               f"(it belongs to {step.parent.where}, not {container.where}); a step may "
                               f"only require steps of its own container")
        return Pair(step, status)

    if value is None:
        return AllOf(())
    parsed = parse(value)
    return parsed if isinstance(parsed, AllOf) and not isinstance(parsed, AnyOf) else AllOf((parsed,))


def pairs(requires: Requires) -> Iterable[Pair]:
    """Every ``(step, status)`` in a requires tree."""
    if isinstance(requires, Pair):
        yield requires
    else:
        for item in requires.items:
            yield from pairs(item)
