"""Translate a Sequent step tree into an Eventor program.

For each step ``P`` (path ``s1_s11_s111``) of a container ``C``:

- the event ``P_start`` starts it: without requires it is a *starter*, fired by ``C`` at the
  beginning of each iteration (by the run itself at sequence ``1`` for root steps); with
  requires its condition is made of sibling events such as ``s1_s11_success``;
- ``P_success``, ``P_failure`` (and ``P_ready``, ``P_active``) exist only when a sibling
  requires ``P`` with that status, so a failure nobody requires is *unhandled* (SPEC A5);
- a processing step becomes an engine step, a container an engine container whose iterations
  run at ``S.1``, ``S.2`` ... below the sequence ``S`` it started at.

Hosts: a processing step gets ``host=`` the tuple of its own hosts, else ``(h,)`` for the host
``h`` of its nearest container that names one, else None.  A container on one host ``h`` is
one engine container with ``host=h``.  A container on several hosts is *copied* once per host
``h``: the engine container ``P@h`` and every step below it renamed with that prefix
(``s1@h1_s11_s111``), all on ``h``.  The copies share ``P_start`` (and its delay), so they start
together, and each has its own status events (``P@h_success`` ...), made only when required.
A sibling's requires on ``P`` combines the copies: SUCCESS when every copy succeeded, COMPLETE
when every copy completed, FAILURE when every copy completed and one failed at least, READY and
ACTIVE when any copy reached it.  Copies exist only in the engine: the flow's tree, and so
``step_at`` and the paths users write, know only ``P``.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence, Union

from .errors import SequentError
from .eventor import Eventor
from .eventor.conditions import And, Condition, Or, Ref
from .eventor.config import merge
from .eventor.model import StepStatus
from .eventor.text import NAME_LIMIT
from .tree import AnyOf, Node, Pair, Requires, Step, pairs

#: The engine names of a step's copies (one name unless it is a container on several hosts).
Copies = Callable[[Step], Sequence[str]]


def event_name(step: Union[Step, str], status: StepStatus) -> str:
    """The event a step (or an engine step, by name) fires on reaching ``status``."""
    return f"{step if isinstance(step, str) else step.path}_{status.name}"


def _own_name(step: Step) -> Sequence[str]:
    return (step.path,)


def condition(requires: Requires, copies: Copies = _own_name) -> Condition:
    """The engine condition of a requires tree; COMPLETE is success or failure.

    ``copies`` gives the engine names of a required step: several for a container copied to
    several hosts, whose statuses then combine as the module's docstring says.
    """
    if isinstance(requires, Pair):
        return _pair_condition(copies(requires.step), requires.status)
    items = tuple(condition(item, copies) for item in requires.items)
    return Or(items) if isinstance(requires, AnyOf) else And(items)


def _pair_condition(names: Sequence[str], status: StepStatus) -> Condition:
    def ref(name: str, status: StepStatus) -> Ref:
        return Ref(event_name(name, status))

    def completed(name: str) -> Or:
        return Or((ref(name, StepStatus.success), ref(name, StepStatus.failure)))

    if len(names) == 1:
        return completed(names[0]) if status is StepStatus.complete else ref(names[0], status)
    if status is StepStatus.success:
        return And(tuple(ref(name, status) for name in names))
    if status is StepStatus.complete:
        return And(tuple(completed(name) for name in names))
    if status is StepStatus.failure:  # every copy completed, and one failed at least
        return And(tuple(completed(name) for name in names)
                   + (Or(tuple(ref(name, status) for name in names)),))
    return Or(tuple(ref(name, status) for name in names))  # READY, ACTIVE: as soon as one copy is


def _statuses(status: StepStatus, copied: bool) -> tuple[StepStatus, ...]:
    """The status events a requirement on ``status`` needs (of each copy, when ``copied``)."""
    if status is StepStatus.complete or (copied and status is StepStatus.failure):
        return (StepStatus.success, StepStatus.failure)
    return (status,)


def _check_acyclic(container: Node) -> None:
    """Siblings must not wait on each other in a circle (impossible through add_step; checked anyway)."""
    state: dict[Step, int] = {}

    def visit(step: Step, trail: list[Step]) -> None:
        if state.get(step) == 2:
            return
        if state.get(step) == 1:
            cycle = trail[trail.index(step):] + [step]
            raise SequentError(f"step {step.path!r}: requires form a cycle: "
                               + " -> ".join(s.path for s in cycle))
        state[step] = 1
        for pair in pairs(step.requires):
            if pair.step is step:
                raise SequentError(f"step {step.path!r} requires itself")
            visit(pair.step, trail + [step])
        state[step] = 2

    for child in container.children:
        visit(child, [])


def _requires_any(step: Step) -> bool:
    """Whether the step requires anything (its requires hold at least one ``(step, status)``)."""
    return next(iter(pairs(step.requires)), None) is not None


def translate(flow: Node, eventor: Eventor) -> None:
    """Add the whole tree of ``flow`` to ``eventor``: events, steps, containers, associations."""
    _translate_container(flow, eventor, scope=None, config={}, pools={})


def _copies(step: Step, name: str) -> list[tuple[str, Optional[str]]]:
    """The engine steps of ``step`` (named ``name`` in its container): ``(name, own host)`` each.

    A container on several hosts has one copy per host, ``name@host``; any other step is one.
    """
    if step.is_container and len(step.hosts) > 1:
        return [(f"{name}@{host}", host) for host in step.hosts]
    return [(name, step.hosts[0] if step.is_container and step.hosts else None)]


def _translate_container(container: Node, ev: Eventor, scope: Optional[str], config: dict, pools: dict,
                         rename: Optional[tuple[str, str]] = None, host: Optional[str] = None) -> list[str]:
    """Translate the children of ``container``; returns the start events of its starters.

    ``scope`` is the engine name of ``container`` (None for the flow); ``rename`` is
    ``(container path, scope)`` when they differ (inside a copy); ``host`` is the host the
    children inherit, if any.
    """
    # nothing here is kept per child for the whole loop but the statuses others require of it: a
    # container of 100,000 steps would hold some 300 bytes a step more while it is translated
    children = container.children
    if any(_requires_any(child) for child in children):
        _check_acyclic(container)

    def base(child: Step) -> str:
        return child.path if rename is None else rename[1] + child.path[len(rename[0]):]

    def names(child: Step) -> list[str]:
        return [name for name, _ in _copies(child, base(child))]

    required: dict[Step, tuple[StepStatus, ...]] = {}
    for child in children:
        for pair in pairs(child.requires):
            wanted = _statuses(pair.status, pair.step.is_container and len(pair.step.hosts) > 1)
            known = required.get(pair.step, ())
            required[pair.step] = known + tuple(status for status in wanted if status not in known)
    starters: list[str] = []
    for child in children:
        start = f"{base(child)}_start"  # one start event for all the copies
        if _requires_any(child):
            ev.add_event(start, condition(child.requires, names), scope=scope)
        else:
            ev.add_event(start, scope=scope)
            starters.append(start)
        child_config = merge(config, child.config) if child.config else config
        acquires, releases = _pools(ev, child.acquires, pools), _pools(ev, child.releases, pools)
        copies = _copies(child, base(child))
        for name, own_host in copies:
            _check_engine_name(ev, name, child)
            triggers = {}
            for status in sorted(required.get(child, ())):
                triggers[status] = (ev.add_event(event_name(name, status), scope=scope).name,)
            if child.is_container:
                on = own_host or host
                ev.add_container(name, repeats=child.repeats, starts=(), triggers=triggers,
                                 acquires=acquires, releases=releases, config=child_config, scope=scope,
                                 host=on)
                # parallel_iterations is the container's own: the containers inside it do not inherit it
                inner = child_config if "parallel_iterations" not in child_config else \
                    {k: v for k, v in child_config.items() if k != "parallel_iterations"}
                starts = _translate_container(child, ev, scope=name, config=inner, pools=pools,
                                              rename=None if name == child.path else (child.path, name),
                                              host=on)
                ev.set_starts(name, starts)
            else:
                hosts = child.hosts or ((host,) if host is not None else ())
                ev.add_step(name, func=child.func, args=child.args, kwargs=child.kwargs, triggers=triggers,
                            recovery=child.recovery, config=child_config, scope=scope,
                            acquires=acquires, releases=releases,
                            host=tuple(hosts) if hosts else None,
                            import_module=child.import_module or None, import_file=child.import_file)
        ev.add_assoc(start, *(name for name, _ in copies), delay=child.delay)
    if scope is None:
        for start in starters:
            ev.trigger_event(start, 1)
    return starters


def _check_engine_name(ev: Eventor, name: str, step: Step) -> None:
    """A copy's name (``s1@h1_s11``) fits the store and is not taken by another copy's step."""
    if name == step.path:
        return  # checked by the tree when the step was added
    where = f"step {step.path!r} (named {name[:80]!r} in the copy of its container on a host)"
    if len(name) > NAME_LIMIT:  # the tree checks this too; kept for a tree changed behind add_step
        raise SequentError(f"{where}: the name is {len(name)} characters long; the store keeps at most "
                           f"{NAME_LIMIT}: use shorter step or host names")
    if name in ev.program.steps:
        raise SequentError(f"{where}: another step of a copy has the same name, since one host's name is "
                           f"another's followed by '_' and a step name; rename the host or the step")


def _pools(ev: Eventor, amounts: Optional[tuple], seen: dict) -> Optional[list[tuple[str, int]]]:
    """Register each pool with the engine once and refer to it by name (unique per flow)."""
    if amounts is None:
        return None
    result = []
    for pool, count in amounts:
        if seen.setdefault(pool.name, pool) is not pool:
            raise SequentError(f"two different resource pools are named {pool.name!r}; a flow needs each "
                               f"pool's name to be its own: rename one, or use the same pool object")
        ev.add_resource_pool(pool.name, pool.limit)
        result.append((pool.name, count))
    return result


def describe(eventor: Eventor) -> Iterable[str]:
    """The translated program as text lines, for tests and for reading.

    ``event NAME = CONDITION`` (or just ``event NAME``), then ``step NAME [STATUS->EVENT, ...] on HOSTS``
    or ``container ...`` (the brackets when it fires events, ``on`` when it names hosts).
    """
    p = eventor.program
    for ev in p.events.values():
        yield f"event {ev.name}" + (f" = {ev.condition}" if ev.condition is not None else "")
    for step in p.step_list:
        kind = "container" if step.is_container else "step"
        trig = ", ".join(f"{s.name}->{'/'.join(e)}" for s, e in step.triggers.items())
        hosts = step.hosts
        yield f"{kind} {step.name}" + (f" [{trig}]" if trig else "") + (f" on {', '.join(hosts)}" if hosts else "")

