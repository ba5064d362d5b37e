"""Translate a Sequent step tree into an Eventor program.

For each step ``P`` (path ``s1_s11_s111``) of a container ``C``:

- the event ``P_start`` starts it: without requires it is a *starter*, fired by ``C`` at the
  beginning of each iteration (by the run itself at sequence ``1`` for root steps); with
  requires its condition is made of sibling events such as ``s1_s11_success``;
- ``P_success``, ``P_failure`` (and ``P_ready``, ``P_active``) exist only when a sibling
  requires ``P`` with that status, so a failure nobody requires is *unhandled* (SPEC A5);
- a processing step becomes an engine step, a container an engine container whose iterations
  run at ``S.1``, ``S.2`` ... below the sequence ``S`` it started at.
"""

from __future__ import annotations

from typing import Iterable, Optional

from .errors import SequentError
from .eventor import Eventor
from .eventor.conditions import And, Condition, Or, Ref
from .eventor.config import merge
from .eventor.model import StepStatus
from .tree import AnyOf, Node, Pair, Requires, Step, pairs


def event_name(step: Step, status: StepStatus) -> str:
    return f"{step.path}_{status.name}"


def condition(requires: Requires) -> Condition:
    """The engine condition of a requires tree; COMPLETE is success or failure."""
    if isinstance(requires, Pair):
        if requires.status is StepStatus.complete:
            return Or((Ref(event_name(requires.step, StepStatus.success)),
                       Ref(event_name(requires.step, StepStatus.failure))))
        return Ref(event_name(requires.step, requires.status))
    items = tuple(condition(item) for item in requires.items)
    return Or(items) if isinstance(requires, AnyOf) else And(items)


def _statuses(status: StepStatus) -> tuple[StepStatus, ...]:
    return (StepStatus.success, StepStatus.failure) if status is StepStatus.complete else (status,)


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


def translate(flow: Node, eventor: Eventor) -> None:
    """Add the whole tree of ``flow`` to ``eventor``: events, steps, containers, associations."""
    _translate_container(flow, eventor, scope=None, config={}, pools={})


def _translate_container(container: Node, ev: Eventor, scope: Optional[str], config: dict,
                         pools: dict) -> list[str]:
    """Translate the children of ``container``; returns the start events of its starters."""
    child_pairs = {child: list(pairs(child.requires)) for child in container.children}
    if any(child_pairs.values()):
        _check_acyclic(container)
    required: dict[Step, set[StepStatus]] = {}
    for child in container.children:
        for pair in child_pairs[child]:
            required.setdefault(pair.step, set()).update(_statuses(pair.status))
    starters: list[str] = []
    for child in container.children:
        triggers = {}
        for status in sorted(required.get(child, ())):
            triggers[status] = (ev.add_event(event_name(child, status), scope=scope).name,)
        start = f"{child.path}_start"
        if child_pairs[child]:
            ev.add_event(start, condition(child.requires), scope=scope)
        else:
            ev.add_event(start, scope=scope)
            starters.append(start)
        child_config = merge(config, child.config) if child.config else config
        acquires, releases = _pools(ev, child.acquires, pools), _pools(ev, child.releases, pools)
        if child.is_container:
            ev.add_container(child.path, repeats=child.repeats, starts=(), triggers=triggers,
                             acquires=acquires, releases=releases, config=child_config, scope=scope)
            starts = _translate_container(child, ev, scope=child.path, config=child_config, pools=pools)
            ev.set_starts(child.path, starts)
        else:
            ev.add_step(child.path, func=child.func, args=child.args, kwargs=child.kwargs, triggers=triggers,
                        recovery=child.recovery, config=child_config, scope=scope,
                        acquires=acquires, releases=releases,
                        host=child.hosts[0] if child.hosts else None,
                        import_module=child.import_module or None, import_file=child.import_file)
        ev.add_assoc(start, child.path, delay=child.delay)
    if scope is None:
        for start in starters:
            ev.trigger_event(start, 1)
    return starters


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
    """The translated program as text lines, for tests and for reading (``name: condition``)."""
    p = eventor.program
    for ev in p.events.values():
        yield f"event {ev.name}" + (f" = {ev.condition}" if ev.condition is not None else "")
    for step in p.step_list:
        kind = "container" if step.is_container else "step"
        trig = ", ".join(f"{s.name}->{'/'.join(e)}" for s, e in step.triggers.items())
        yield f"{kind} {step.name}" + (f" [{trig}]" if trig else "")
