"""A reference model of how a sequent flow runs, written from SPEC A4/A5 and B2.3-B2.7, and from
issue 13 (parallel iterations, retries, the item of an iteration).

It does not import the library.  A flow is a list of :class:`Node` (the root's children); a
node with children is a container, one without is a processing step.  ``reqs`` name EARLIER
siblings by index, so requires never form a cycle and a single pass over the children in order
decides every sibling before anything that may require it.

Sequences are tuples: root steps run at ``(1,)``, iteration ``k`` of a container started at
``S`` runs its children at ``S + (k,)``.  An *occurrence* is ``(path, seq)``; a *frame* is one
iteration of a container, ``(container_path, seq)``, the root frame being ``('', (1,))``.  The
*item* of iteration ``k`` is ``repeats[k - 1]``; a processing occurrence's item is the item of the
iteration of its innermost enclosing container (:func:`item_of`; None at the root).

Retries.  A processing step makes tries 1, 2, ... at an occurrence until one succeeds or
``retries + 1`` tries were made.  Try ``t`` at sequence ``seq`` fails when ``seq`` is in ``fail``
(every try fails) or ``t <= fail_tries[seq]`` (the first ``fail_tries[seq]`` tries fail).  The
occurrence fails when its last try failed (:func:`fails`); it made :func:`tries` tries.  A failed
try that is retried is not a failure of the step: no requires, container or stop_on_exception sees
it.  When a stop_on_exception failure stops a frame (see :func:`stopped_frames`), a task in it (or
in a frame nested in it) whose next try has not started yet may end there, failed: a new try is
something new, which does not start in a stopped frame.  It then made tries ``1..j`` for some
``j`` below :func:`tries`, the last of them failed.  Nothing outside the stopped frames sees the
difference: the frame had failed already, so its container's status and ``run()``'s result stay
the model's, and nothing new starts inside it that the task's failure could start.  (The model is
about one attempt; that a recovery starts every task afresh at try 1 is the recovery tests'
business.)

Parallel iterations.  A container with ``parallel`` N (0: no limit; 1, the default: one after
another) starts its iterations in the order of ``repeats``, with at most N of them running at
once; an iteration that started runs its whole frame (as the model runs it, stop_on_exception
aside: see below); after the first unhandled failure in one of its iterations no new iteration
starts, the running ones finish, and the container fails.  Which iterations run then depends on
timing, within a window the model computes.  Let the model run every iteration's frame in full,
``failing`` be the iterations (in order) whose frame has an unhandled failure, and ``n`` the
number of iterations.  The iterations that run are always ``1..m`` (they start in order), where:

- no iteration is failing: ``m = n``;
- else ``k = failing[0] <= m <= h``, ``h`` being the N-th failing iteration, or ``n`` when fewer
  than N are failing or N is 0.  Iterations ``k+1..h`` may or may not have run; those after ``h``
  never run.  Why: an iteration ``j`` starts before the first unhandled failure happens (none
  starts after it), and the container cannot end before its first failing iteration started
  (before that, nothing failed), so ``m >= k``.  When ``j`` started, every failing iteration
  before it had started and not yet failed, so it was still running; those took at most N - 1
  of the N places, hence ``j <= h``.  With N = 1, ``h = k``: the original's rule, a failed
  iteration ends the container.  (``h`` can be far beyond ``k + N - 1``: with N = 2 and a slow
  failing iteration 1, iterations 2, 3, 4, ... may each run and succeed in the other place
  before iteration 1 fails.)

The container's status does not depend on ``m`` (it fails exactly when some iteration is
failing), so neither does anything outside it, nor ``run()``'s result.

The functions:

- :func:`simulate` runs the flow with ``stop_on_exception`` treated as False everywhere, each
  parallel container running the iterations ``runs`` chooses for it (its window's lower end, the
  sequential behaviour, when it chooses nothing; a choice outside the window is clamped to it).
  The set of occurrences it returns is everything that can run with those choices; since no other
  decision then depends on timing, it is exactly what a correct engine runs when it made those
  choices and no failure stopped anything.  Its boolean is ``run()``'s result, which neither
  choices nor stopping change (a stop only follows an unhandled failure, which fails its
  container anyway).  :func:`iterations_reached` reads the choices an actual execution made
  (per container occurrence, the last iteration inside which something ran);
  :func:`iteration_windows` gives every reached container occurrence's window.
- :func:`stopped_frames` reads an actual execution and returns the frames in which an
  unhandled failure happened whose effective ``stop_on_exception`` is True.  In those frames
  (and in the frames nested in them) a correct engine may have left out anything not yet
  started when the failure was processed; everywhere else it must run what :func:`simulate`
  runs with the choices the execution made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

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
    fail: frozenset = frozenset()  # processing only: the sequences at which every try raises
    parallel: int = 1  # containers only: iterations running at once (0: no limit)
    retries: int = 0  # processing only: tries after the first when a try fails
    fail_tries: dict = field(default_factory=dict)  # processing only: seq -> how many first tries raise
    retry_delay: float = 0.0  # processing only: passed to the engine; the model does not time tries
    retry_backoff: float = 1.0  # processing only: as retry_delay

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


def try_fails(node: Node, seq: tuple, try_number: int) -> bool:
    """Whether try ``try_number`` (1, 2, ...) of processing ``node`` at ``seq`` raises."""
    return seq in node.fail or try_number <= node.fail_tries.get(seq, 0)


def fails(node: Node, seq: tuple) -> bool:
    """Whether processing ``node`` at ``seq`` ends failed: its last try (``retries + 1``) raised."""
    return try_fails(node, seq, node.retries + 1)


def tries(node: Node, seq: tuple) -> int:
    """How many tries processing ``node`` makes at ``seq``: up to its first success, at most ``retries + 1``."""
    return next((t for t in range(1, node.retries + 1) if not try_fails(node, seq, t)), node.retries + 1)


def window(n: int, failing: list[int], parallel: int) -> tuple[int, int]:
    """(fewest, most) iterations a container with ``n`` iterations, these failing ones (in order) and
    ``parallel`` runs: its iterations 1..m run, for some m in that range (see the module docstring)."""
    if not failing:
        return n, n
    most = failing[parallel - 1] if 0 < parallel <= len(failing) else n
    return failing[0], most


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


# -- the model ----------------------------------------------------------------------------------

def simulate(flow: list[Node], runs: Optional[Mapping] = None) -> tuple[set, bool]:
    """Everything that runs with stop_on_exception off everywhere, and run()'s result.

    ``runs`` maps a container occurrence ``(path, seq)`` to how many of its iterations ran (see
    :func:`iterations_reached`); a container it does not name runs the fewest its window allows.
    """
    sim = _Simulation(runs)
    failed = sim.frame(flow, "", ROOT_SEQ, sim.executed)
    return sim.executed, not failed


def iteration_windows(flow: list[Node], runs: Optional[Mapping] = None) -> dict[tuple, tuple[int, int]]:
    """(fewest, most) iterations of every container occurrence that :func:`simulate` reaches with ``runs``."""
    sim = _Simulation(runs)
    sim.frame(flow, "", ROOT_SEQ, sim.executed)
    return sim.windows


def iterations_reached(executed: Iterable) -> dict[tuple, int]:
    """Per container occurrence ``(path, seq)``, the last iteration inside which an occurrence of
    ``executed`` is (container occurrences with nothing executed inside are left out)."""
    reached: dict[tuple, int] = {}
    for path, seq in executed:
        for frame_path, frame_seq in frames_of(path, seq):
            if frame_path:
                key = (frame_path, frame_seq[:-1])
                reached[key] = max(reached.get(key, 0), frame_seq[-1])
    return reached


class _Simulation:
    """One pass of the model: the occurrences it runs and the windows of the containers it reaches."""

    def __init__(self, runs: Optional[Mapping]):
        self.runs = runs or {}
        self.executed: set = set()
        self.windows: dict[tuple, tuple[int, int]] = {}

    def frame(self, children: list[Node], parent_path: str, seq: tuple, out: set,
              windows: Optional[dict] = None) -> bool:
        """Run one iteration (or the root) into ``out`` (and the windows of the containers it reaches
        into ``windows``); True when an unhandled failure happened in it."""
        windows = self.windows if windows is None else windows
        ended: dict[int, str] = {}
        failed = False
        for i, node in enumerate(children):  # requires point backwards: order decides everything
            if node.reqs and not requires_hold(node, ended):
                continue  # never starts in this iteration
            path = child_path(parent_path, node.name)
            if node.is_container:
                status = self.container(node, path, seq, out, windows)
            else:
                out.add((path, seq))
                status = FAILURE if fails(node, seq) else SUCCESS
            ended[i] = status
            if status == FAILURE and not handled(children, i):
                failed = True
        return failed

    def container(self, node: Node, path: str, seq: tuple, out: set, windows: dict) -> str:
        """Run a container occurrence: every iteration in full, then keep the first m of them."""
        frames: list[tuple[set, dict]] = []
        failing: list[int] = []
        for k in range(1, iterations(node.repeats) + 1):
            inside: set = set()
            nested: dict = {}
            if self.frame(node.children, path, seq + (k,), inside, nested):
                failing.append(k)
            frames.append((inside, nested))
        low, high = window(len(frames), failing, node.parallel)
        windows[(path, seq)] = (low, high)
        m = min(max(self.runs.get((path, seq), low), low), high)
        for inside, nested in frames[:m]:
            out |= inside
            windows.update(nested)
        return FAILURE if failing else SUCCESS


# -- reading an actual execution ---------------------------------------------------------------

def stopped_frames(flow: list[Node], flow_stop: bool, executed: Iterable) -> set:
    """Frames where an executed unhandled failure with effective stop_on_exception True happened.

    A processing occurrence failed when it ran at a sequence where it :func:`fails`; a container
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
            node_failed = any([_frame_failed(node.children, path, seq + (k,), stop, done, stopped)
                               for k in range(1, iterations(node.repeats) + 1)])  # every iteration: all stops
        else:
            node_failed = (path, seq) in done and fails(node, seq)
        if node_failed and not handled(children, i):
            failed = True
            if stop:
                stopped.add((parent_path, seq))
    return failed


def in_stopped(path: str, seq: tuple, stopped: set) -> bool:
    """Whether an occurrence lies in one of the ``stopped`` frames, or in a frame nested in one."""
    return any(f in stopped for f in frames_of(path, seq))


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


def find(flow: list[Node], path: str) -> Optional[Node]:
    """The node at ``path`` (``a_b_c``), or None."""
    nodes, node = flow, None
    for name in path.split("_"):
        node = next((n for n in nodes if n.name == name), None)
        if node is None:
            return None
        nodes = node.children
    return node


def item_of(flow: list[Node], path: str, seq: tuple) -> object:
    """The item a processing occurrence gets: that of its innermost enclosing container's iteration
    (``repeats[seq[-1] - 1]``), None for a step at the root."""
    parent, _, _ = path.rpartition("_")
    if not parent:
        return None
    container = find(flow, parent)
    assert container is not None and container.is_container, f"no container {parent!r} around {path!r}"
    return container.repeats[seq[-1] - 1]
