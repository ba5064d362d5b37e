"""Property tests of issue 13: parallel iterations, retries and the item of an iteration, checked
against the reference model (tests/refmodel.py), and then recovered.

Flows come from ``test_properties.flows(fanout=True)``: the execution properties' generator
(depth <= 3, repeats, SUCCESS/FAILURE/COMPLETE requires AND-ed or OR-ed, stop_on_exception per
flow and per step, failing sequences) plus containers running 1, 2, 3 or any number (0) of
iterations at once over items that are numbers or file names, processing steps with 0..2
retries (sometimes with a short delay and a backoff), and sequences whose first 1..retries+1
tries fail.  Every step states the new config keys (``parallel_iterations``, ``retries``,
``item_arg_name``; see test_properties.step_config).  Thread tasks, a SQLite file store per
example; each try records (path, sequence, attempt, SEQUENT_STEP_TRY, the item keyword,
SEQUENT_STEP_ITEM, ``flow.get_step_item()``, start, end) and sleeps PAUSE seconds, so that
iterations running at once overlap in the records.

Example counts: SEQUENT_FANOUT_PROP_EXAMPLES and SEQUENT_FANOUT_RECOVERY_PROP_EXAMPLES, else 300 and
150 under the ``ci`` Hypothesis profile, fewer under the default ``dev`` one (tests/conftest.py).

If a property fails, the output shows ``flow_code``: a stand-alone program that builds and runs
the shrunk flow.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple, Optional

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import sequent
from refmodel import (FAILURE, SUCCESS, Node, fails, in_stopped, item_of, iteration_windows, iterations_reached,
                      possible_sequences, simulate, stopped_frames, tries, try_fails, window)
from test_properties import (ITEM_ARG, StepFailed, _walk, build, check_execution, check_order, examples, flow_code,
                             flows, most_at_once)
from test_recovery_properties import Attempts, _check_order_attempt, _check_plan, _ran, without_failures

FANOUT_EXAMPLES = examples("SEQUENT_FANOUT_PROP_EXAMPLES", 300)
RECOVERY_EXAMPLES = examples("SEQUENT_FANOUT_RECOVERY_PROP_EXAMPLES", 150)
PAUSE = 0.002  # seconds each try sleeps: iterations that run at once overlap in the records


class _NoItem:
    """The item keyword was not passed."""

    def __repr__(self) -> str:
        return "<no item keyword>"


NO_ITEM = _NoItem()


class Raised(NamedTuple):
    """What ``flow.get_step_item()`` raised instead of returning."""
    error: str


class Try(NamedTuple):
    """One try of a step at a sequence, as the step saw it."""
    path: str
    seq: tuple
    recovery: int
    try_number: Optional[int]  # SEQUENT_STEP_TRY, None when missing or not a number
    item: object  # the item keyword (NO_ITEM: not passed)
    env_item: Optional[str]  # SEQUENT_STEP_ITEM
    api_item: object  # flow.get_step_item() (Raised: it raised)
    start: float
    end: float


def _parse_seq(text: str) -> tuple:
    return tuple(int(x) for x in text.split("."))


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def fanout_step(log: list, lock, holder: dict, fail: frozenset, fail_tries: dict, fail_tries1: dict,
                item: object = NO_ITEM) -> None:
    """Thread-task body: record the try, then raise when told to: in attempt 0 at ``fail`` (every try)
    and at the first ``fail_tries[seq]`` tries; in attempt 1 at the first ``fail_tries1[seq]`` tries."""
    start = time.time()
    env = os.environ
    name, seq = env["SEQUENT_STEP_NAME"], _parse_seq(env["SEQUENT_STEP_SEQUENCE"])
    recovery = int(env["SEQUENT_STEP_RECOVERY"])
    try_number = _int(env.get("SEQUENT_STEP_TRY"))
    try:
        api_item = holder["flow"].get_step_item()
    except Exception as exc:
        api_item = Raised(repr(exc))
    time.sleep(PAUSE)
    with lock:
        log.append(Try(name, seq, recovery, try_number, item, env.get("SEQUENT_STEP_ITEM"), api_item, start,
                       time.time()))
    tried = try_number or 1
    if recovery == 0 and (seq in fail or tried <= fail_tries.get(seq, 0)):
        raise StepFailed(f"{name} told to fail at {seq}, try {tried}")
    if recovery == 1 and tried <= fail_tries1.get(seq, 0):
        raise StepFailed(f"{name} told to fail at {seq}, try {tried} of attempt 1")


class FanoutAttempts(Attempts):
    """test_recovery_properties.Attempts for fanout flows: built with test_properties.build(fanout=True),
    each try recorded (several records per occurrence); ``fail_tries1`` maps a path to the sequences
    whose first tries fail in attempt 1."""

    def __init__(self, flow: list[Node], flow_stop: bool, root: str, fail_tries1: Optional[dict] = None):
        super().__init__(flow, flow_stop, root)
        self.fail_tries1 = fail_tries1 or {}
        self.paths = {id(node): path for node, path, *_ in _walk(flow)}

    def build(self, log: list, **kwargs) -> sequent.Sequent:
        holder: dict = {}

        def told(node: Node) -> dict:
            return {"log": log, "lock": self.lock, "holder": holder, "fail": node.fail, "fail_tries": node.fail_tries,
                    "fail_tries1": self.fail_tries1.get(self.paths[id(node)], {})}

        sq = build(self.flow, self.flow_stop, "thread", self.logdir, fanout_step, told, store=self.store,
                   name="fanprop", fanout=True, **kwargs)
        holder["flow"] = sq
        return sq

    def check_records(self, records: list) -> None:
        wrong = [r for r in records if r.recovery != self.attempt]
        assert not wrong, f"SEQUENT_STEP_RECOVERY is not {self.attempt} in attempt {self.attempt}: {wrong}"
        keys = [(r.path, r.seq, r.try_number) for r in records]
        twice = sorted({k for k in keys if keys.count(k) > 1}, key=repr)
        assert not twice, f"attempt {self.attempt} ran a try more than once: {twice}"


# -- checking an attempt ---------------------------------------------------------------------------

def _nodes(flow: list[Node]) -> dict[str, Node]:
    return {path: node for node, path, *_ in _walk(flow)}


def collapse(records: list) -> list[tuple]:
    """One (path, seq, first start, last end) per occurrence, from its tries."""
    spans: dict = {}
    for r in records:
        t0, t1 = spans.get((r.path, r.seq), (r.start, r.end))
        spans[(r.path, r.seq)] = (min(t0, r.start), max(t1, r.end))
    return [(p, s, t0, t1) for (p, s), (t0, t1) in spans.items()]


def check_tries(flow: list[Node], records: list, expected_tries, stopped: set = frozenset()) -> dict:
    """T1. every occurrence that ran made exactly tries 1..``expected_tries(path, node, seq)``, one
    after the other (by start time; each began after the one before had ended), SEQUENT_STEP_TRY
    telling each which it is; except that in a ``stopped`` frame (or one nested in one) a task may
    have ended at an earlier try, its next one not started (refmodel's docstring, Retries).
    Returns how many tries each occurrence made."""
    nodes = _nodes(flow)
    by_occurrence: dict = {}
    for r in records:
        by_occurrence.setdefault((r.path, r.seq), []).append(r)
    made: dict = {}
    for (path, seq), done in sorted(by_occurrence.items()):
        done.sort(key=lambda r: r.start)
        n = expected_tries(path, nodes[path], seq)
        got = [r.try_number for r in done]
        cut = in_stopped(path, seq, stopped) and len(got) < n and got == list(range(1, len(got) + 1))
        assert cut or got == list(range(1, n + 1)), (
            f"{path} at {seq} made tries {got} (SEQUENT_STEP_TRY in start order), the model says 1..{n}")
        for before, after in zip(done, done[1:]):
            assert after.start >= before.end, f"{path} at {seq}: try {after.try_number} began before try {before.try_number} ended"
        made[(path, seq)] = len(got)
    return made


def check_items(flow: list[Node], records: list) -> None:
    """I1. a try inside a container got its innermost container's item for its iteration as the
    ``item`` keyword (equal, of the same type), as SEQUENT_STEP_ITEM (its ``str``) and from
    ``flow.get_step_item()``; a step at the root, which sets no item_arg_name, got no keyword."""
    for r in records:
        if "_" not in r.path:
            assert r.item is NO_ITEM, f"{r.path} (at the root, no item_arg_name) got the item keyword {r.item!r}"
            continue
        item = item_of(flow, r.path, r.seq)
        where = f"{r.path} at {r.seq} (try {r.try_number}, attempt {r.recovery})"
        assert type(r.item) is type(item) and r.item == item, f"{where} got the item keyword {r.item!r}, not {item!r}"
        assert r.env_item == str(item), f"{where} had SEQUENT_STEP_ITEM {r.env_item!r}, not {str(item)!r}"
        assert type(r.api_item) is type(item) and r.api_item == item, (
            f"{where}: flow.get_step_item() gave {r.api_item!r}, not {item!r}")


def check_rows(flow: list[Node], rows: dict, made: dict) -> None:
    """S1. the attempt's processing task rows are what ran (``made``: occurrence -> tries made), each
    ended success or failure as its last try did."""
    executed = set(made)
    assert set(rows) == executed, (f"task rows differ from what ran: rows only {sorted(set(rows) - executed)}, "
                                   f"ran only {sorted(executed - set(rows))}")
    nodes = _nodes(flow)

    def last_try_failed(path: str, seq: tuple) -> bool:
        return try_fails(nodes[path], seq, made[(path, seq)])

    wrong = sorted((k, t.status) for k, t in rows.items() if t.status != (FAILURE if last_try_failed(*k) else SUCCESS))
    assert not wrong, f"task rows whose status is not their last try's: {wrong}"


def check_fanout_attempt(flow: list[Node], flow_stop: bool, records: list, result: bool, rows: dict) -> set:
    """A first attempt of a fanout flow against the model: T1 (tries), I1 (items), S1 (rows), and
    test_properties' properties 1-6 on the occurrences (each spanning its tries) -- among them
    the executed set within the parallel containers' windows, run()'s result, and at most N
    iterations at once.  Returns the stopped frames."""
    check_items(flow, records)
    spans = collapse(records)
    stopped = check_execution(flow, flow_stop, spans, result)
    made = check_tries(flow, records, lambda path, node, seq: tries(node, seq), stopped)
    check_order(flow, spans)
    check_rows(flow, rows, made)
    return stopped


def _label(flow: list[Node], records: list, stopped: set) -> None:
    """What the example exercised (hypothesis' statistics: pytest --hypothesis-show-statistics)."""
    executed = {(r.path, r.seq) for r in records}
    reached = iterations_reached(executed)
    windows = iteration_windows(flow, reached)
    event("stopped by a failure" if stopped else "no stop")
    event("a parallel container ran past its first failing iteration"
          if any(reached.get(k, 0) > low for k, (low, high) in windows.items()) else "no iteration past a failure")
    event("a try was retried" if any(r.try_number and r.try_number > 1 for r in records) else "no retry")
    nodes = _nodes(flow)
    spans = collapse(records)
    overlapped = False
    for (path, seq) in windows:
        if nodes[path].parallel != 1:
            inside = {}
            for p, s, t0, t1 in spans:
                if p.startswith(path + "_") and s[:len(seq)] == seq:
                    k = s[len(seq)]
                    a, b = inside.get(k, (t0, t1))
                    inside[k] = (min(a, t0), max(b, t1))
            overlapped = overlapped or most_at_once(inside)[0] > 1
    event("iterations overlapped" if overlapped else "no overlap seen")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("fanprop"))


# -- the properties --------------------------------------------------------------------------------

@settings(max_examples=FANOUT_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows(fanout=True))
def test_fanout_runs_match_model(root, flow_and_stop):
    """A run of a fanout flow matches the model: T1 (each task made its failed tries + 1 tries, at
    most retries + 1, numbered by SEQUENT_STEP_TRY; fewer only in a frame stopped by a failure), I1 (each task got its item), S1 (final
    statuses), and properties 1-6 of test_properties (what runs, within the windows of the parallel
    containers; run()'s result; requires before starts; at most N iterations at once)."""
    flow, flow_stop = flow_and_stop
    note(flow_code(flow, flow_stop, fanout=True))
    attempts = FanoutAttempts(flow, flow_stop, root)
    records, result = attempts.run()
    note(f"tries: {sorted((r.path, r.seq, r.try_number) for r in records)}; run() -> {result}")
    stopped = check_fanout_attempt(flow, flow_stop, records, result, attempts.rows(0))
    _label(flow, records, stopped)


@st.composite
def fanout_flows_with_recovery_tries(draw):
    """A fanout flow and, per processing step with retries, the sequences whose first 1..retries tries
    fail in attempt 1 (so that everything still succeeds there)."""
    flow, flow_stop = draw(flows(fanout=True))
    seqs = possible_sequences(flow)
    fail_tries1 = {}
    for node, path, *_ in _walk(flow):
        if not node.is_container and node.retries and seqs[path]:
            fail_tries1[path] = draw(st.dictionaries(st.sampled_from(seqs[path]), st.integers(1, node.retries),
                                                     max_size=2))
    return flow, flow_stop, fail_tries1


@settings(max_examples=RECOVERY_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fanout_flows_with_recovery_tries())
def test_fanout_recovery_matches_model(root, flow_stop_tries):
    """Random failures per item and per try in attempt 0, then recoveries.  Checks:

    0. attempt 0 matches the model (as test_fanout_runs_match_model);
    1. attempt 1 runs exactly ``expected - succeeded0`` (``expected``: the model with no failures,
       every iteration of every container; ``succeeded0``: what succeeded in attempt 0, after its
       retries): a fan-out reruns exactly its items that failed (or were not reached) and skips
       those that succeeded; the plan said so; run() returns True;
    2. tries start afresh: in attempt 1, whatever attempt 0 used up, each task makes tries
       1..fail_tries1 + 1 (fail_tries1 <= retries: all succeed), and gets its item again;
    3. attempt 1's processing rows are ``expected``, all success, skipped exactly for
       ``expected & succeeded0``; requires and iteration overlap hold (skipped tasks at their times);
    4. attempt 2 executes nothing and returns True.
    """
    flow, flow_stop, fail_tries1 = flow_stop_tries
    note(flow_code(flow, flow_stop, fanout=True))
    note(f"first tries failing in attempt 1: {fail_tries1}")
    nofail = without_failures(flow)
    expected, _ = simulate(nofail)
    attempts = FanoutAttempts(flow, flow_stop, root, fail_tries1)

    records0, result0 = attempts.run()
    rows0 = attempts.rows(0)
    check_fanout_attempt(flow, flow_stop, records0, result0, rows0)
    succeeded0 = {k for k, t in rows0.items() if t.status == "success"}  # checked: as its last try ended
    event("attempt 0 failed" if not result0 else "attempt 0 succeeded")

    plan1 = attempts.plan()
    records1, result1 = attempts.run()
    ran1 = _ran(records1)
    rows1 = attempts.rows(1)
    _check_plan(plan1, rows1, ran1)
    assert ran1 == expected - succeeded0, (
        f"1: attempt 1 ran {sorted(ran1)}, the model says {sorted(expected - succeeded0)} (ran again after "
        f"succeeding: {sorted(ran1 & succeeded0)}; not rerun: {sorted(expected - succeeded0 - ran1)})")
    assert result1 is True, f"1: attempt 1's run() returned {result1}"
    check_tries(flow, records1, lambda path, node, seq: fail_tries1.get(path, {}).get(seq, 0) + 1)
    check_items(flow, records1)
    assert set(rows1) == expected, f"3: attempt 1's task rows {sorted(rows1)} are not {sorted(expected)}"
    bad = sorted(k for k, t in rows1.items() if t.status != "success")
    assert not bad, f"3: attempt 1 task rows not success: {bad}"
    skipped1 = {k for k, t in rows1.items() if t.skipped}
    assert skipped1 == expected & succeeded0, (
        f"3: attempt 1 skipped {sorted(skipped1)}, expected {sorted(expected & succeeded0)}")
    _check_order_attempt(nofail, [(p, s, 1, t0, t1) for p, s, t0, t1 in collapse(records1)], rows1)
    fanned = {p.rpartition("_")[0] for p, _ in expected if "_" in p}
    mixed = any({p for p, _ in ran1 if p.startswith(c + "_")} and {p for p, _ in skipped1 if p.startswith(c + "_")}
                for c in fanned)
    event("a container reran some items and skipped others" if mixed else "no container with both")
    event("attempt 0 used up retries that attempt 1 started afresh"
          if any(r.try_number and r.try_number > 1 for r in records0) and records1 else "no afresh retry to see")

    records2, result2 = attempts.run()
    assert not records2, f"4: attempt 2 executed {sorted(_ran(records2))}"
    assert result2 is True, f"4: attempt 2's run() returned {result2}"


def test_recovery_reruns_exactly_the_failed_items_and_tries_afresh(root):
    """The issue's promise on a hand-made fan-out: t runs over four files, all at once, with one
    retry; every try fails on f2, the first try on f3.  Attempt 0 fails (f2); the recovery runs t
    again for exactly the items that did not succeed (f2, and any the failure kept from starting),
    each from try 1 with its item, skips the rest, then runs load."""
    t = Node("t", retries=1, fail=frozenset({(1, 2)}), fail_tries={(1, 3): 1})
    flow = [Node("c", repeats=["f1", "f2", "f3", "f4"], parallel=0, children=[t]), Node("load", reqs=[(0, SUCCESS)])]
    attempts = FanoutAttempts(flow, True, root)
    records0, result0 = attempts.run()
    assert result0 is False
    rows0 = attempts.rows(0)
    check_fanout_attempt(flow, True, records0, result0, rows0)
    assert [r.try_number for r in records0 if r.seq == (1, 2)] == [1, 2]  # f2 used up its retry
    succeeded0 = {k for k, t in rows0.items() if t.status == "success"}
    assert ("c_t", (1, 2)) not in succeeded0 and ("c_t", (1, 1)) in succeeded0

    records1, result1 = attempts.run()
    assert result1 is True
    rerun = {("c_t", (1, k)) for k in range(1, 5)} - succeeded0
    assert sorted((r.path, r.seq, r.try_number, r.item) for r in records1) == sorted(
        [("c_t", s, 1, item_of(flow, p, s)) for p, s in rerun] + [("load", (1,), 1, NO_ITEM)])
    rows1 = attempts.rows(1)
    assert {k for k, row in rows1.items() if row.skipped} == succeeded0
    assert all(row.status == "success" for row in rows1.values())


# -- the model on hand-made flows --------------------------------------------------------------------

def test_model_counts_tries_and_failures_per_try():
    x = Node("x", retries=2, fail=frozenset({(1, 3)}), fail_tries={(1, 1): 2, (1, 2): 3})
    assert [tries(x, s) for s in ((1, 1), (1, 2), (1, 3), (1, 4))] == [3, 3, 3, 1]
    assert [fails(x, s) for s in ((1, 1), (1, 2), (1, 3), (1, 4))] == [False, True, True, False]
    plain = Node("y", fail=frozenset({(1,)}))  # no retries: one try, as before issue 13
    assert tries(plain, (1,)) == 1 and fails(plain, (1,)) and not fails(plain, (2,))


def test_model_window_of_a_parallel_container():
    assert window(4, [], 2) == (4, 4)  # no failure: every iteration runs
    assert window(4, [2, 3], 1) == (2, 2)  # sequential: a failed iteration ends the container
    assert window(6, [2, 5], 2) == (2, 5)  # the 2nd failing iteration bounds what may start
    assert window(6, [2], 3) == (2, 6)  # fewer failing than N: anything after may have run
    assert window(6, [2, 5], 0) == (2, 6)  # no limit


def test_model_parallel_container_runs_the_iterations_chosen_within_its_window():
    """c runs 4 iterations 2 at a time; x fails (unhandled) in iterations 1 and 3; d handles c."""
    c = Node("c", repeats=["a", "b", "c", "d"], parallel=2, children=[Node("x", fail=frozenset({(1, 1), (1, 3)}))])
    flow = [c, Node("d", reqs=[(0, FAILURE)]), Node("e", reqs=[(0, SUCCESS)])]
    assert simulate(flow) == ({("c_x", (1, 1)), ("d", (1,))}, True)  # no choice: the fewest, as sequentially
    assert iteration_windows(flow) == {("c", (1,)): (1, 3)}
    ran3 = {("c_x", (1, 1)), ("c_x", (1, 2)), ("c_x", (1, 3)), ("d", (1,))}
    assert simulate(flow, {("c", (1,)): 3}) == (ran3, True)
    assert simulate(flow, {("c", (1,)): 4})[0] == ran3  # clamped: iteration 4 never runs
    assert iterations_reached({("c_x", (1, 3)), ("d", (1,))}) == {("c", (1,)): 3}
    c.parallel = 1  # the default: exactly the original model
    assert simulate(flow, {("c", (1,)): 3}) == ({("c_x", (1, 1)), ("d", (1,))}, True)
    assert item_of(flow, "c_x", (1, 2)) == "b" and item_of(flow, "d", (1,)) is None


def test_model_windows_of_nested_containers_follow_the_iterations_kept():
    """Only iteration 1 of o runs (sequential, it fails), so only the inner container's first
    occurrence is reached; an iteration of i that ran past its failure counts."""
    inner = Node("i", repeats=[1, 2, 3], parallel=0, children=[Node("y", fail=frozenset({(1, 1, 1)}))])
    outer = Node("o", repeats=[1, 2], children=[inner])
    assert iteration_windows([outer]) == {("o", (1,)): (1, 1), ("o_i", (1, 1)): (1, 3)}
    executed = {("o_i_y", (1, 1, 1)), ("o_i_y", (1, 1, 3))}
    reached = iterations_reached(executed)
    assert reached == {("o", (1,)): 1, ("o_i", (1, 1)): 3}
    assert simulate([outer], reached) == ({("o_i_y", (1, 1, k)) for k in (1, 2, 3)}, False)


def test_model_stops_in_later_parallel_iterations_count():
    """With parallel iterations a frame after the first failing one may run, and its own stop
    excuses what it left out (stopped_frames looks at every iteration, not only up to the first
    failing one)."""
    c = Node("c", repeats=[1, 1], parallel=2,
             children=[Node("x", stop=True, fail=frozenset({(1, 1), (1, 2)})), Node("y")])
    assert stopped_frames([c], False, {("c_x", (1, 1)), ("c_x", (1, 2))}) == {("c", (1, 1)), ("c", (1, 2))}


def _tries_of(flow: list[Node], runs: Optional[dict] = None, start: float = 0.0, gap: float = 1.0) -> list:
    """Fake records of a correct run of ``flow``: every occurrence the model runs with ``runs``, its
    tries one after the other, each lasting 0.5, occurrences ``gap`` apart in sorted order."""
    nodes = _nodes(flow)
    out = []
    t = start
    for path, seq in sorted(simulate(flow, runs)[0]):
        item = item_of(flow, path, seq)
        for k in range(1, tries(nodes[path], seq) + 1):
            out.append(Try(path, seq, 0, k, NO_ITEM if "_" not in path else item,
                           None if "_" not in path else str(item), item, t, t + 0.5))
            t += 0.5
        t += gap
    return out


def test_checkers_reject_wrong_fanout_executions():
    """The new checks are not vacuous: a made-up correct execution passes, each kind of wrong one
    fails (with no engine involved, so this runs whatever the engine does)."""
    c = Node("c", repeats=[1, "f.csv", 3, 4], parallel=2,
             children=[Node("x", retries=1, fail=frozenset({(1, 1)}), fail_tries={(1, 2): 1, (1, 3): 2})])
    flow = [c, Node("d", reqs=[(0, FAILURE)])]  # x fails at 1.1 and (both tries) at 1.3; d handles c
    good = _tries_of(flow, {("c", (1,)): 3})
    check_tries(flow, good, lambda path, node, seq: tries(node, seq))
    check_items(flow, good)
    check_execution(flow, False, collapse(good), True)
    check_order(flow, collapse(good))

    def without(pred) -> list:
        return [r for r in good if not pred(r)]

    with pytest.raises(AssertionError, match="made tries"):  # the retry of 1.2 missing
        check_tries(flow, without(lambda r: r.seq == (1, 2) and r.try_number == 2),
                    lambda path, node, seq: tries(node, seq))
    with pytest.raises(AssertionError, match="made tries"):  # a try numbered 2 twice
        check_tries(flow, [r._replace(try_number=2) if r.seq == (1, 1) else r for r in good],
                    lambda path, node, seq: tries(node, seq))
    with pytest.raises(AssertionError, match="item keyword"):
        check_items(flow, [r._replace(item="1") if r.seq == (1, 1) else r for r in good])
    with pytest.raises(AssertionError, match="SEQUENT_STEP_ITEM"):
        check_items(flow, [r._replace(env_item="1.0") if r.seq == (1, 1) else r for r in good])
    with pytest.raises(AssertionError, match="get_step_item"):
        check_items(flow, [r._replace(api_item=Raised("AttributeError")) for r in good])
    # iteration 4 lies past the window (the 2nd failing iteration is 3): it should not have run
    past = _tries_of(flow, {("c", (1,)): 3}) + [Try("c_x", (1, 4), 0, 1, 4, "4", 4, 100.0, 100.5)]
    with pytest.raises(AssertionError, match="ran but should not have"):
        check_execution(flow, False, collapse(past), True)
    # iteration 2 left out while 3 ran: iterations start in order, a started one runs in full
    with pytest.raises(AssertionError, match="did not run but should have"):
        check_execution(flow, False, collapse(without(lambda r: r.seq == (1, 2))), True)
    # three iterations at once with parallel_iterations 2
    crowded = [r._replace(start=0.0, end=5.5) if r.path == "c_x" else r for r in good]
    with pytest.raises(AssertionError, match="3 iterations of c at \\(1,\\) ran at once"):
        check_order(flow, collapse(crowded))
    c.parallel = 3  # ... which parallel_iterations 3 allows
    check_order(flow, collapse(crowded))


def meet(barrier, met: list, item: object = NO_ITEM) -> None:
    """Thread-task body: wait (at most 10 s) until every party of ``barrier`` is there."""
    barrier.wait(timeout=10)  # raises BrokenBarrierError when the others never come
    met.append(item)


@pytest.mark.parametrize("parallel", [3, 0])
def test_parallel_iterations_run_at_the_same_time(tmp_path, parallel):
    """The properties see at most N iterations at once; this sees that they do run at once: the
    three iterations of a container with parallel_iterations 3 (or 0, no limit) meet at a barrier
    of three, which one iteration at a time never passes."""
    import threading

    barrier, met = threading.Barrier(3), []
    flow = sequent.Sequent(name="meet", store=str(tmp_path / "meet.run.db"),
                           config={"task_construct": "thread",
                                   "LOGGING": {"logdir": str(tmp_path), "console": False, "logging_level": 30}})
    c = flow.add_step("c", repeats=["x", "y", "z"], config={"parallel_iterations": parallel})
    c.add_step("m", func=meet, kwargs={"barrier": barrier, "met": met}, config={"item_arg_name": ITEM_ARG})
    assert flow.run() is True
    assert sorted(met) == ["x", "y", "z"]


class _Row(NamedTuple):
    status: str


def test_checkers_allow_a_retry_left_out_only_in_a_stopped_frame():
    """a (stop_on_exception) fails at the root, which stops the root frame; x inside c had failed
    its first try: its second may not start.  Then x made one try and its row says failure; outside
    a stopped frame the same records are wrong."""
    flow = [Node("a", stop=True, fail=frozenset({(1,)})),
            Node("c", repeats=["i"], children=[Node("x", retries=1, fail_tries={(1, 1): 1})])]
    records = [Try("a", (1,), 0, 1, NO_ITEM, None, None, 0.0, 0.5), Try("c_x", (1, 1), 0, 1, "i", "i", "i", 0.0, 0.5)]
    stopped = check_execution(flow, False, collapse(records), False)
    assert stopped == {("", (1,))}
    made = check_tries(flow, records, lambda path, node, seq: tries(node, seq), stopped)
    assert made == {("a", (1,)): 1, ("c_x", (1, 1)): 1}
    check_rows(flow, {("a", (1,)): _Row(FAILURE), ("c_x", (1, 1)): _Row(FAILURE)}, made)
    with pytest.raises(AssertionError, match="status is not their last try's"):
        check_rows(flow, {("a", (1,)): _Row(FAILURE), ("c_x", (1, 1)): _Row(SUCCESS)}, made)
    with pytest.raises(AssertionError, match="made tries"):  # no stop: x must retry
        check_tries(flow, records, lambda path, node, seq: tries(node, seq), set())
