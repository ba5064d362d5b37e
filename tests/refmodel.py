"""A reference model of how a sequent flow runs, written from SPEC A4/A5 and B2.3-B2.7.

It does not import the library.  A flow is a list of :class:`Node` (the root's children); a
node with children is a container, one without is a processing step.  ``reqs`` name EARLIER
siblings by index, so requires never form a cycle and a single pass over the children in order
decides every sibling before anything that may require it.

Sequences are tuples: root steps run at ``(1,)``, iteration ``k`` of a container started at
``S`` runs its children at ``S + (k,)``.  An *occurrence* is ``(path, seq)``; a *frame* is one
iteration of a container, ``(container_path, seq)``, the root frame being ``('', (1,))``.

Two functions carry the semantics:

- :func:`simulate` runs the flow sequentially with ``stop_on_exception`` treated as False
  everywhere: the set of occurrences it returns is everything that can run, and since no
  decision then depends on timing it is exactly what a correct engine runs when no failure
  stops anything.  Its boolean is ``run()``'s result, which stopping never changes (a stop
  only follows an unhandled failure, which fails its container anyway).
- :func:`stopped_frames` reads an actual execution and returns the frames in which an
  unhandled failure happened whose effective ``stop_on_exception`` is True.  In those frames
  (and in the frames nested in them) a correct engine may have left out anything not yet
  started when the failure was processed; everywhere else it must run what :func:`simulate`
  runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

SUCCESS, FAILURE, COMPLETE = "success", "failure", "complete"
ROOT_SEQ = (1,)


@dataclass
class Node:
    name: str
    children: list["Node"] = field(default_factory=list)  # empty: a processing step
    repeats: Optional[list] = None  # containers only
    op: str = "and"  # how ``reqs`` combine: 'and' (a tuple) or 'or' (sequent.or_)
    reqs: list[tuple[int, str]] = field(default_factory=list)  # (earlier sibling index, status)
    stop: Optional[bool] = None  # the node's own config stop_on_exception, None: not set
    fail: frozenset = frozenset()  # processing only: the sequences at which it raises

    @property
    def is_container(self) -> bool:
        return bool(self.children)


def child_path(parent_path: str, name: str) -> str:
    return f"{parent_path}_{name}" if parent_path else name


def iterations(repeats: Optional[list]) -> int:
    """How many iterations ``repeats`` gives: up to its end or its first None."""
    n = 0
    for item in repeats or ():
        if item is None:
            break
        n += 1
    return n


def handled(siblings: list[Node], index: int) -> bool:
    """A failure of siblings[index] is handled when a sibling requires it with FAILURE or COMPLETE."""
    return any(i == index and status in (FAILURE, COMPLETE) for s in siblings for i, status in s.reqs)


def effective_stop(node: Node, inherited: bool) -> bool:
    """The node's own value, else its container's (config is inherited down the tree), else the flow's."""
    return inherited if node.stop is None else node.stop


def item_holds(status: str, ended: Optional[str]) -> bool:
    """``ended`` is the sibling's end status ('success'/'failure') or None when it has not ended."""
    if ended is None:
        return False
    return status == COMPLETE or status == ended


def requires_hold(node: Node, ended: dict[int, str]) -> bool:
    values = [item_holds(status, ended.get(i)) for i, status in node.reqs]
    return any(values) if node.op == "or" else all(values)


# -- the sequential model ----------------------------------------------------------------------

def simulate(flow: list[Node]) -> tuple[set, bool]:
    """Everything that runs with stop_on_exception off everywhere, and run()'s result."""
    executed: set = set()
    failed = _run_frame(flow, "", ROOT_SEQ, executed)
    return executed, not failed


def _run_frame(children: list[Node], parent_path: str, seq: tuple, out: set) -> bool:
    """Run one iteration (or the root); True when an unhandled failure happened in it."""
    ended: dict[int, str] = {}
    failed = False
    for i, node in enumerate(children):  # requires point backwards: order decides everything
        if node.reqs and not requires_hold(node, ended):
            continue  # never starts in this iteration
        path = child_path(parent_path, node.name)
        if node.is_container:
            status = _run_container(node, path, seq, out)
        else:
            out.add((path, seq))
            status = FAILURE if seq in node.fail else SUCCESS
        ended[i] = status
        if status == FAILURE and not handled(children, i):
            failed = True
    return failed


def _run_container(node: Node, path: str, seq: tuple, out: set) -> str:
    for k in range(1, iterations(node.repeats) + 1):
        if _run_frame(node.children, path, seq + (k,), out):
            return FAILURE  # a failed iteration ends the container: no further iterations
    return SUCCESS


# -- reading an actual execution ---------------------------------------------------------------

def stopped_frames(flow: list[Node], flow_stop: bool, executed: Iterable) -> set:
    """Frames where an executed unhandled failure with effective stop_on_exception True happened.

    A processing occurrence failed when it ran at a sequence of its ``fail`` set; a container
    occurrence failed when one of its iterations had an unhandled failure.
    """
    done = set(executed)
    stopped: set = set()
    _frame_failed(flow, "", ROOT_SEQ, flow_stop, done, stopped)
    return stopped


def _frame_failed(children: list[Node], parent_path: str, seq: tuple, inherited: bool, done: set,
                  stopped: set) -> bool:
    failed = False
    for i, node in enumerate(children):
        path = child_path(parent_path, node.name)
        stop = effective_stop(node, inherited)
        if node.is_container:
            node_failed = any(_frame_failed(node.children, path, seq + (k,), stop, done, stopped)
                              for k in range(1, iterations(node.repeats) + 1))
        else:
            node_failed = (path, seq) in done and seq in node.fail
        if node_failed and not handled(children, i):
            failed = True
            if stop:
                stopped.add((parent_path, seq))
    return failed


def frames_of(path: str, seq: tuple) -> list[tuple[str, tuple]]:
    """The frames around an occurrence, innermost first: ('a_b_c', (1,2,1)) is in
    ('a_b', (1,2,1)), ('a', (1,2)) and the root ('', (1,))."""
    parts = path.split("_")
    return [("_".join(parts[:j]), seq[:j + 1]) for j in range(len(parts) - 1, -1, -1)]


def occurrences_within(executed: Iterable, path: str, seq: tuple) -> list:
    """The processing occurrences inside container occurrence (path, seq), or the occurrence itself."""
    prefix = path + "_"
    n = len(seq)
    return [(p, s) for p, s in executed if (p == path and s == seq) or (p.startswith(prefix) and s[:n] == seq)]


def possible_sequences(flow: list[Node]) -> dict[str, list[tuple]]:
    """For every processing step, every sequence it could run at (whatever fails)."""
    result: dict[str, list[tuple]] = {}

    def visit(children: list[Node], parent_path: str, seqs: list[tuple]) -> None:
        for node in children:
            path = child_path(parent_path, node.name)
            if node.is_container:
                visit(node.children, path,
                      [s + (k,) for s in seqs for k in range(1, iterations(node.repeats) + 1)])
            else:
                result[path] = list(seqs)

    visit(flow, "", [ROOT_SEQ])
    return result


def container_failed(node: Node, path: str, seq: tuple, executed: Iterable) -> bool:
    """Whether a container occurrence failed, read from what ran: one of its iterations had an
    unhandled failure."""
    done = set(executed)
    return any(_frame_failed(node.children, path, seq + (k,), False, done, set())
               for k in range(1, iterations(node.repeats) + 1))
