"""Property tests: random step trees run by sequent, checked against the reference model.

Hypothesis generates a flow (``flows()``): depth <= 3, every container with 1..4 children, each
child a processing step or a container; containers repeat 0..3 times (a ``None`` item ends the
loop there); each child may require 0..2 EARLIER siblings with STEP_SUCCESS, STEP_FAILURE or
STEP_COMPLETE, AND-ed by a tuple or OR-ed by ``sequent.or_``; processing steps raise at some of
their sequences; steps and containers sometimes set ``stop_on_exception``; the flow's own
``stop_on_exception`` is True or False.  Every step function records (SEQUENT_STEP_NAME,
SEQUENT_STEP_SEQUENCE, monotonic start, monotonic end) and raises when told to.

The model (``tests/refmodel.py``) gives the set of occurrences that run with stop_on_exception
off everywhere, and run()'s boolean.  With stop_on_exception on, what a failure prevents
depends on timing, so the comparison is then an inclusion whose slack is exactly the frames
(iterations, or the root) where such a failure happened; see ``check_execution``.

``flows(fanout=True)`` draws issue 13's fields too (tests/test_fanout_properties.py): more and
longer containers, which run 1, 2, 3 or any number (0) of iterations at once over items that are
numbers or file names;
processing steps retry up to 0..2 times (sometimes with a short delay and a backoff), and the first
1..retries+1 tries of some of their sequences fail.  ``check_execution`` and ``check_order`` hold
for those flows too: the model's window of the iterations a parallel container may have run is
resolved from the execution (refmodel.iterations_reached), and property 6 becomes "at most N
iterations at once".

If a property fails, the output shows ``flow_code``: a stand-alone program that builds the
shrunk flow.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time

import pytest
from guard import restart
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import sequent
from refmodel import (COMPLETE, container_failed, FAILURE, SUCCESS, Node, child_path, fails, frames_of, iterations,
                      iterations_reached, occurrences_within, possible_sequences, requires_hold, simulate,
                      stopped_frames)


def examples(variable: str, full: int) -> int:
    """A property test's example count: ``$variable`` when set, else ``full`` capped by the Hypothesis
    profile's max_examples (tests/conftest.py: ``ci`` runs ``full``, the default ``dev`` fewer)."""
    value = os.environ.get(variable)
    return int(value) if value else min(full, settings.default.max_examples)


MAX_DEPTH = 3  # root children are at depth 1; a node at depth 3 is a processing step
# SEQUENT_PROP_EXAMPLES=5000 searches harder (the full counts keep the file well under a minute)
THREAD_EXAMPLES = examples("SEQUENT_PROP_EXAMPLES", 1000)
PROCESS_EXAMPLES = examples("SEQUENT_PROP_PROCESS_EXAMPLES", 15)
STATUS = {SUCCESS: sequent.STEP_SUCCESS, FAILURE: sequent.STEP_FAILURE, COMPLETE: sequent.STEP_COMPLETE}
NAMES = "abcd"  # no '_' in names, so flattened paths never collide
ITEM_ARG = "item"  # fanout flows: the keyword a step inside a container gets its item as
FILE_ITEMS = ("in1.csv", "in 2.csv", "x")  # fanout flows: items that are not numbers


class StepFailed(Exception):
    """What a step told to fail raises."""


# -- generating flows ----------------------------------------------------------------------------

@st.composite
def _children(draw, depth: int, fanout: bool = False) -> list[Node]:
    nodes: list[Node] = []
    for i in range(draw(st.integers(1, 4))):
        node = Node(NAMES[i])
        if depth < MAX_DEPTH and draw(st.integers(0, 1 if fanout else 2)) == 0:
            if fanout:  # more containers, more iterations (a None, ending the loop, only at times)
                node.repeats = draw(st.lists(st.one_of(st.integers(1, 9), st.sampled_from(FILE_ITEMS)), max_size=4))
                node.repeats += draw(st.sampled_from(([], [], [], [None], [None, 1])))
                node.parallel = draw(st.sampled_from((1, 2, 3, 0)))
            else:
                node.repeats = draw(st.lists(st.one_of(st.integers(1, 9), st.none()), max_size=3))
            node.children = draw(_children(depth + 1, fanout))
        elif fanout:
            node.retries = draw(st.integers(0, 2))
            if node.retries and draw(st.integers(0, 3)) == 0:  # sometimes a (short) delay between tries
                node.retry_delay, node.retry_backoff = 0.002, draw(st.sampled_from((1.0, 2.0)))
        count = draw(st.integers(0, min(2, i)))
        earlier = draw(st.permutations(range(i)))[:count] if count else []
        node.reqs = [(j, draw(st.sampled_from((SUCCESS, FAILURE, COMPLETE)))) for j in earlier]
        node.op = draw(st.sampled_from(("and", "or"))) if count == 2 else "and"
        node.stop = draw(st.sampled_from((None, None, False, True)))
        nodes.append(node)
    return nodes


@st.composite
def flows(draw, fanout: bool = False) -> tuple[list[Node], bool]:
    """(the root's children, the flow's stop_on_exception), with failing sequences assigned; with
    ``fanout``, also parallel containers, retries and sequences whose first tries fail."""
    flow = draw(_children(1, fanout))
    seqs = possible_sequences(flow)
    for node, path, *_ in _walk(flow):
        if not node.is_container and seqs[path]:
            node.fail = draw(st.one_of(st.just(frozenset()), st.just(frozenset(seqs[path])),
                                       st.frozensets(st.sampled_from(seqs[path]), max_size=2)))
            if fanout:
                node.fail_tries = draw(st.dictionaries(st.sampled_from(seqs[path]),
                                                       st.integers(1, node.retries + 1), max_size=3))
    return flow, draw(st.booleans())


def _walk(flow: list[Node], parent_path: str = "", depth: int = 1):
    """(node, path, depth, siblings) for every node."""
    for node in flow:
        path = child_path(parent_path, node.name)
        yield node, path, depth, flow
        yield from _walk(node.children, path, depth + 1)


def flow_code(flow: list[Node], flow_stop: bool, construct: str = "thread", fanout: bool = False) -> str:
    """A stand-alone program that builds and runs this flow (printed when a property fails); with
    ``fanout``, with the fields of issue 13 (parallel iterations, retries, failing tries, items)."""
    lines = ["import os, tempfile", "import sequent", "from sequent import STEP_SUCCESS, STEP_FAILURE, STEP_COMPLETE",
             ""]
    if fanout:
        lines += [f"def step(fail=(), fail_tries={{}}, {ITEM_ARG}=None):",
                  "    seq, tried = os.environ['SEQUENT_STEP_SEQUENCE'], int(os.environ['SEQUENT_STEP_TRY'])",
                  f"    print('ran', os.environ['SEQUENT_STEP_NAME'], seq, 'try', tried, 'item', repr({ITEM_ARG}))",
                  "    if seq in fail or tried <= fail_tries.get(seq, 0):", "        raise Exception('told to fail')", ""]
    else:
        lines += ["def step(fail=()):",
                  "    seq = os.environ['SEQUENT_STEP_SEQUENCE']",
                  "    print('ran', os.environ['SEQUENT_STEP_NAME'], seq)",
                  "    if seq in fail:", "        raise Exception('told to fail')", ""]
    lines += [
             f"flow = sequent.Sequent(name='prop', store=':memory:', config={{'task_construct': {construct!r}, "
             f"'stop_on_exception': {flow_stop}, 'LOGGING': {{'logdir': tempfile.mkdtemp(), 'console': False}}}})"]

    def add(parent: str, nodes: list[Node], parent_path: str) -> None:
        for node in nodes:
            path = child_path(parent_path, node.name)
            var = path or "flow"
            reqs = ", ".join(f"({child_path(parent_path, nodes[i].name)}, STEP_{s.upper()})" for i, s in node.reqs)
            args = [repr(node.name)]
            if node.reqs:
                args.append(f"requires=sequent.or_({reqs})" if node.op == "or" else f"requires=({reqs},)")
            config = step_config(node, bool(parent_path), fanout)
            if config:
                args.append(f"config={config!r}")
            if node.is_container:
                args.append(f"repeats={node.repeats!r}")
            else:
                fail = sorted(".".join(map(str, s)) for s in node.fail)
                told = {"fail": fail} if fail else {}
                if node.fail_tries:
                    told["fail_tries"] = {".".join(map(str, s)): k for s, k in sorted(node.fail_tries.items())}
                args[1:1] = ["func=step"] + ([f"kwargs={told!r}"] if told else [])
            lines.append(f"{var} = {parent}.add_step({', '.join(args)})")
            add(var, node.children, path)

    add("flow", flow, "")
    lines.append("print('run() ->', flow.run())")
    return "\n".join(lines)


# -- running a flow --------------------------------------------------------------------------------

def _parse_seq(text: str) -> tuple:
    return tuple(int(x) for x in text.split("."))


def record_in_memory(log: list, lock: threading.Lock, fail: frozenset) -> None:
    """Thread-task body: record (path, sequence, start, end), then raise when told to."""
    start = time.monotonic()
    name, seq = os.environ["SEQUENT_STEP_NAME"], _parse_seq(os.environ["SEQUENT_STEP_SEQUENCE"])
    end = time.monotonic()
    with lock:
        log.append((name, seq, start, end))
    if seq in fail:
        raise StepFailed(f"{name} told to fail at {seq}")


def record_in_file(path: str, fail: frozenset) -> None:
    """Process-task body: one line appended with O_APPEND (atomic for a short write)."""
    start = time.monotonic()
    name, seq = os.environ["SEQUENT_STEP_NAME"], os.environ["SEQUENT_STEP_SEQUENCE"]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{name} {seq} {start!r} {time.monotonic()!r}\n".encode())
    finally:
        os.close(fd)
    if _parse_seq(seq) in fail:
        raise StepFailed(f"{name} told to fail at {seq}")


def step_config(node: Node, in_container: bool, fanout: bool) -> dict:
    """A generated node's step config.  A fanout flow states issue 13's keys on every step, defaults
    included (``parallel_iterations`` on containers; ``retries`` on processing steps, with the delay
    when there is one, and ``item_arg_name`` inside containers), so that no value comes by
    inheritance from a container's config."""
    config = {} if node.stop is None else {"stop_on_exception": node.stop}
    if fanout and node.is_container:
        config["parallel_iterations"] = node.parallel
    elif fanout:
        config["retries"] = node.retries
        if node.retry_delay:
            config.update(retry_delay=node.retry_delay, retry_backoff=node.retry_backoff)
        if in_container:
            config["item_arg_name"] = ITEM_ARG
    return config


def build(flow: list[Node], flow_stop: bool, construct: str, logdir: str, func, kwargs, *, store: str = ":memory:",
          name: str = "prop", fanout: bool = False, **run_kwargs) -> sequent.Sequent:
    """The Sequent for a generated flow; ``kwargs(node)`` gives each processing step's kwargs; with
    ``fanout``, every step states issue 13's config keys (see ``step_config``)."""
    sq = sequent.Sequent(name=name, store=store,
                         config={"task_construct": construct, "stop_on_exception": flow_stop,
                                 "LOGGING": {"logdir": logdir, "console": False, "logging_level": 30}},
                         **run_kwargs)

    def add(parent, nodes: list[Node]) -> None:
        made = []
        for node in nodes:
            pairs = tuple((made[i], STATUS[status]) for i, status in node.reqs)
            requires = sequent.or_(*pairs) if node.op == "or" else pairs
            config = step_config(node, parent is not sq, fanout)
            if node.is_container:
                step = parent.add_step(node.name, requires=requires, config=config, repeats=list(node.repeats))
                add(step, node.children)
            else:
                step = parent.add_step(node.name, func=func, kwargs=kwargs(node), requires=requires, config=config)
            made.append(step)

    add(sq, flow)
    return sq


def run_threads(flow: list[Node], flow_stop: bool, logdir: str) -> tuple[list, bool]:
    log: list = []
    lock = threading.Lock()
    sq = build(flow, flow_stop, "thread", logdir, record_in_memory,
               lambda node: {"log": log, "lock": lock, "fail": node.fail})
    result = sq.run()
    return list(log), result


def run_processes(flow: list[Node], flow_stop: bool, logdir: str) -> tuple[list, bool]:
    fd, path = tempfile.mkstemp(dir=logdir, suffix=".rec")
    os.close(fd)
    sq = build(flow, flow_stop, "process", logdir, record_in_file,
               lambda node: {"path": path, "fail": node.fail})
    result = sq.run()
    records = []
    with open(path) as f:
        for line in f:
            name, seq, start, end = line.split()
            records.append((name, _parse_seq(seq), float(start), float(end)))
    os.unlink(path)
    return records, result


# -- checking an execution -------------------------------------------------------------------------

def check_execution(flow: list[Node], flow_stop: bool, records: list, result: bool) -> set:
    """The set and boolean properties; returns the stopped frames.

    1. no (path, sequence) ran twice;
    2. run() returned the model's boolean (stop_on_exception never changes it);
    3. nothing ran that the model (stop_on_exception off everywhere) does not run;
    4. everything the model runs did run, except inside a frame (an iteration or the root) where
       an unhandled failure with effective stop_on_exception True happened, or a frame nested in
       one: there, what had not started yet may be left out.  Without such a failure, 3 and 4
       make the executed set EXACTLY the model's.
    "The model" is refmodel.simulate with the iterations each parallel container ran as the
    execution shows them (the last one inside which something ran), clamped to the model's window:
    so an iteration past the window is extra (3), and one before the last that ran, or one that ran
    in part, misses something (4).  Sequential containers have no choice: the window is one value.
    """
    occurrences = [(p, s) for p, s, *_ in records]
    executed = set(occurrences)
    duplicates = sorted({o for o in occurrences if occurrences.count(o) > 1})
    assert not duplicates, f"ran more than once: {duplicates}"
    expected, expected_result = simulate(flow, iterations_reached(executed))
    assert result == expected_result, f"run() returned {result}, the model says {expected_result}"
    extra = executed - expected
    assert not extra, f"ran but should not have: {sorted(extra)}"
    stopped = stopped_frames(flow, flow_stop, executed)
    missing = {o for o in expected - executed if not any(f in stopped for f in frames_of(*o))}
    assert not missing, f"did not run but should have: {sorted(missing)} (stopped frames: {sorted(stopped)})"
    return stopped


def check_order(flow: list[Node], records: list) -> None:
    """The timing properties (thread mode: starts and ends on one monotonic clock).

    5. every execution inside a step X with requires (X itself, or any step nested in container X)
       started after the siblings of X that make X's requires true had ended with the required
       status: the expression, evaluated on the siblings ended before that start, is true.  A
       container sibling has ended when its last execution has, with failure when one of its
       iterations had an unhandled failure, with success when everything the model runs in it ran;
    6. the iterations of each sequential container occurrence (parallel 1) run one after the other:
       every execution of iteration k starts after every execution of iterations 1..k-1 has ended;
       those of a container with parallel N > 1 overlap at most N at a time (the span of an
       iteration, from the first start to the last end of the executions inside it, lies within
       the time it was running).
    """
    times = {(p, s): (t0, t1) for p, s, t0, t1 in records}
    executed = set(times)
    expected, _ = simulate(flow, iterations_reached(executed))

    def ended(node: Node, path: str, seq: tuple):
        """(end status or None, end time) of an occurrence as the run shows it."""
        if not node.is_container:
            if (path, seq) not in times:
                return None, math.inf
            return (FAILURE if fails(node, seq) else SUCCESS), times[(path, seq)][1]
        inside = occurrences_within(executed, path, seq)
        end = max((times[o][1] for o in inside), default=-math.inf)
        if container_failed(node, path, seq, executed):
            return FAILURE, end
        if set(inside) == set(occurrences_within(expected, path, seq)):
            return SUCCESS, end
        return None, math.inf

    def visit(nodes: list[Node], parent_path: str, seqs: list) -> None:
        for node in nodes:
            path = child_path(parent_path, node.name)
            for seq in seqs:
                inside = occurrences_within(executed, path, seq)
                if node.reqs and inside:
                    first = min(times[o][0] for o in inside)
                    done = {}
                    for i, _ in node.reqs:
                        status, end = ended(nodes[i], child_path(parent_path, nodes[i].name), seq)
                        if status is not None and end <= first:
                            done[i] = status
                    assert requires_hold(node, done), (
                        f"{path} at {seq} started at {first} before its requires held; siblings ended "
                        f"by then: { {nodes[i].name: s for i, s in done.items()} }")
                if node.is_container and node.parallel == 1:
                    previous_end = -math.inf
                    for k in range(1, iterations(node.repeats) + 1):
                        this = occurrences_within(executed, path, seq + (k,))
                        if this:
                            start = min(times[o][0] for o in this)
                            assert start >= previous_end, (
                                f"iteration {seq + (k,)} of {path} started before an earlier one ended")
                            previous_end = max(previous_end, max(times[o][1] for o in this))
                elif node.is_container and node.parallel > 1:
                    spans = {}
                    for k in range(1, iterations(node.repeats) + 1):
                        this = occurrences_within(executed, path, seq + (k,))
                        if this:
                            spans[k] = (min(times[o][0] for o in this), max(times[o][1] for o in this))
                    most, at_once = most_at_once(spans)
                    assert most <= node.parallel, (
                        f"{most} iterations of {path} at {seq} ran at once ({at_once}), parallel_iterations "
                        f"is {node.parallel}")
            if node.is_container:
                n = iterations(node.repeats)
                visit(node.children, path, [s + (k,) for s in seqs for k in range(1, n + 1)])

    visit(flow, "", [(1,)])


def most_at_once(spans: dict) -> tuple[int, list]:
    """The most of the ``spans`` ({key: (start, end)}) that overlap at one instant, and their keys."""
    best: list = []
    for key, (start, _) in spans.items():  # the most overlapping at once always include one's start
        now = sorted(k for k, (s, e) in spans.items() if s <= start < e or k == key)
        if len(now) > len(best):
            best = now
    return len(best), best


# -- the properties --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("prop-logs"))


def _label(flow: list[Node], stopped: set) -> None:
    event("stopped by a failure" if stopped else "exact set compared")
    event(f"{sum(1 for n, *_ in _walk(flow) if n.is_container)} containers")


@settings(max_examples=THREAD_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows())
def test_thread_runs_match_model(logdir, flow_and_stop):
    """Properties 1-6 (see check_execution and check_order) with task_construct 'thread'."""
    restart()  # the hang guard bounds each example, not all of them
    flow, flow_stop = flow_and_stop
    note(flow_code(flow, flow_stop))
    records, result = run_threads(flow, flow_stop, logdir)
    note(f"executed: {sorted((p, s) for p, s, *_ in records)}; run() -> {result}")
    stopped = check_execution(flow, flow_stop, records, result)
    check_order(flow, records)
    _label(flow, stopped)


@settings(max_examples=PROCESS_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows())
def test_process_runs_match_model(logdir, flow_and_stop):
    """Properties 1-4 (the executed set and run()'s result) with task_construct 'process'."""
    restart()  # the hang guard bounds each example, not all of them
    flow, flow_stop = flow_and_stop
    note(flow_code(flow, flow_stop, "process"))
    records, result = run_processes(flow, flow_stop, logdir)
    note(f"executed: {sorted((p, s) for p, s, *_ in records)}; run() -> {result}")
    stopped = check_execution(flow, flow_stop, records, result)
    _label(flow, stopped)


# -- the model on hand-made flows (so that a model bug does not hide a library bug) -------------

def test_model_examples():
    step = lambda name, **kw: Node(name, **kw)  # noqa: E731
    # B2.7: s1 [1,2] { s11 [1,2] { s111 -> s112 }, s12 requires s11 }, s2 requires s1
    s11 = Node("s11", repeats=[1, 2], children=[step("s111"), step("s112", reqs=[(0, SUCCESS)])])
    s1 = Node("s1", repeats=[1, 2], children=[s11, step("s12", reqs=[(0, SUCCESS)])])
    flow = [s1, step("s2", reqs=[(0, SUCCESS)])]
    executed, ok = simulate(flow)
    assert ok and executed == {("s1_s11_s111", (1, i, j)) for i in (1, 2) for j in (1, 2)} | {
        ("s1_s11_s112", (1, i, j)) for i in (1, 2) for j in (1, 2)} | {("s1_s12", (1, 1)), ("s1_s12", (1, 2)),
                                                                       ("s2", (1,))}
    # an unhandled failure in iteration 1.2 ends s1 as failed; s2 requires its failure: handled
    s1 = Node("s1", repeats=[1, 2, 3], children=[step("x", fail=frozenset({(1, 2)}))])
    flow = [s1, step("s2", reqs=[(0, FAILURE)]), step("s3", reqs=[(0, SUCCESS)])]
    executed, ok = simulate(flow)
    assert ok and executed == {("s1_x", (1, 1)), ("s1_x", (1, 2)), ("s2", (1,))}
    # handled because b requires a with COMPLETE inside an or_ that is never true as a whole
    flow = [step("a", fail=frozenset({(1,)})), step("z", fail=frozenset({(1,)})),
            step("b", op="or", reqs=[(0, COMPLETE), (1, SUCCESS)])]
    assert simulate(flow) == ({("a", (1,)), ("z", (1,)), ("b", (1,))}, False)  # z is unhandled
    # None ends the loop; zero iterations succeed at once
    flow = [Node("c", repeats=[1, None, 1], children=[step("x")]), Node("e", repeats=[], children=[step("y")]),
            step("d", reqs=[(0, SUCCESS), (1, SUCCESS)])]
    assert simulate(flow) == ({("c_x", (1, 1)), ("d", (1,))}, True)
    # stopped frames: x (stop True by inheritance from c) fails unhandled in iteration 1.1
    c = Node("c", repeats=[1, 1], stop=True, children=[step("x", fail=frozenset({(1, 1)})), step("y")])
    flow = [c, step("d", reqs=[(0, FAILURE)])]
    assert stopped_frames(flow, False, {("c_x", (1, 1))}) == {("c", (1, 1))}
    assert frames_of("c_x", (1, 1)) == [("c", (1, 1)), ("", (1,))]


def test_checker_rejects_wrong_executions(logdir):
    """The checks are not vacuous: a real execution passes, each kind of corruption of it fails."""
    s11 = Node("s11", repeats=[1, 2], children=[Node("s111"), Node("s112", reqs=[(0, SUCCESS)])])
    s1 = Node("s1", repeats=[1, 2], children=[s11, Node("s12", reqs=[(0, SUCCESS)])])
    flow = [s1, Node("s2", reqs=[(0, SUCCESS)]), Node("s3", reqs=[(1, FAILURE)])]
    records, result = run_threads(flow, True, logdir)
    assert result is True and len(records) == 11
    check_execution(flow, True, records, result)
    check_order(flow, records)
    by_key = {(p, s): i for i, (p, s, *_) in enumerate(records)}

    def corrupted(change) -> list:
        copy = list(records)
        change(copy)
        return copy

    def moved(key, start) -> list:
        i = by_key[key]
        return corrupted(lambda r: r.__setitem__(i, (key[0], key[1], start, start)))

    bad_sets = {
        "missing": corrupted(lambda r: r.pop(by_key[("s1_s12", (1, 2))])),
        "extra": corrupted(lambda r: r.append(("s3", (1,), 0.0, 0.0))),
        "twice": corrupted(lambda r: r.append(r[0])),
    }
    for what, bad in bad_sets.items():
        with pytest.raises(AssertionError):
            check_execution(flow, True, bad, result)
    with pytest.raises(AssertionError, match="run\\(\\) returned"):
        check_execution(flow, True, records, False)
    end_of = {(p, s): t1 for p, s, _, t1 in records}
    # s1_s12 at 1.1 starting before s1_s11 (its requirement) had ended
    with pytest.raises(AssertionError, match="before its requires held"):
        check_order(flow, moved(("s1_s12", (1, 1)), end_of[("s1_s11_s112", (1, 1, 2))] - 1e-6))
    # iteration 1.1.2 of s1_s11 starting before iteration 1.1.1 had ended
    with pytest.raises(AssertionError, match="started before an earlier one ended"):
        check_order(flow, moved(("s1_s11_s111", (1, 1, 2)), end_of[("s1_s11_s112", (1, 1, 1))] - 1e-6))
    # a stop_on_exception failure excuses only its own frame: s111 (stop) fails at 1.2.1, which
    # stops iteration 1.2.1 of s1_s11; s11 and s1 (no stop) fail without stopping anything
    s11.children[0].fail, s11.children[0].stop = frozenset({(1, 2, 1)}), True
    s11.stop = s1.stop = False
    s11.children.append(Node("s113"))  # independent of s111: it may or may not have started
    expected, ok = simulate(flow)
    assert stopped_frames(flow, True, expected) == {("s1_s11", (1, 2, 1))} and not ok
    fake = [(p, s, 0.0, 0.0) for p, s in sorted(expected)]
    check_execution(flow, True, [r for r in fake if r[:2] != ("s1_s11_s113", (1, 2, 1))], ok)  # may be left out
    with pytest.raises(AssertionError, match="did not run but should have"):  # outside the stopped frame
        check_execution(flow, True, [r for r in fake if r[:2] != ("s1_s12", (1, 1))], ok)
