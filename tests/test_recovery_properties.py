"""Property tests of RECOVERY: random step trees fail in attempt 0, are recovered, and are compared
with the reference model (SPEC A5, A6, B4.5).

Flows come from ``test_properties.flows()`` (the same generator as the execution properties: depth
<= 3, repeats, SUCCESS/FAILURE/COMPLETE requires AND-ed or OR-ed, stop_on_exception per flow and
per step, and failing sequences per processing step).  Here a step fails at its failing sequences
ONLY in attempt 0 (it reads ``SEQUENT_STEP_RECOVERY``); attempts 1 and 2 are recoveries of the same
run (``Sequent(..., run_mode=RUN_RECOVER, run_id=<attempt 0's run_id>)``, built again from the same
tree) in which nothing fails.  Thread tasks, a file store per example, instantaneous steps; each
step records (path, sequence, recovery, start, end) in a list under a lock.

The model.  Let ``expected`` be ``simulate()`` of the flow with NO failures (everything that can
run), ``succeeded0`` the occurrences that ran successfully in attempt 0, and ``R`` the steps whose
recovery map says ``STEP_SUCCESS -> STEP_RERUN`` (empty for the default map).  In a recovery with
no failures every task ends in success (run, or skipped as a success), so the recovery takes the
no-failure path through the flow: it creates exactly ``expected``, skips those that succeeded in
the attempt it recovers (unless their step is in ``R``), and runs the rest.  Hence:

    ran1 == expected - {o in succeeded0 : step(o) not in R}
    ran2 == {o in expected : step(o) in R}

"succeeded0 | ran1 == expected" would be true only without failure handlers: a step that requires
``(x, STEP_FAILURE)`` runs (and succeeds) in attempt 0 when x fails there, but is not in
``expected``, since in the recovery x succeeds.  The exact statement is therefore
``ran1 == expected - succeeded0``, hence ``expected <= succeeded0 | ran1`` (property 2 below; see
test_failure_handler_of_attempt_0_does_not_run_in_the_recovery).

The tests: default maps (properties 1-4), per-step ``{STEP_SUCCESS: STEP_RERUN}`` maps (P1-P3),
a recovery that fails again and is recovered (R1-R2), and two hand-made flows.  Example counts:
SEQUENT_RECOVERY_PROP_EXAMPLES, ..._RERUN_EXAMPLES, ..._TWICE_EXAMPLES, else 300, 200 and 150 under
the ``ci`` Hypothesis profile (around half a minute for the file), fewer under the default ``dev``
one (tests/conftest.py).

If a property fails, the output shows ``recovery_code``: a stand-alone program that runs the shrunk
flow's three attempts and prints what each ran and the task rows, and what each attempt ran here.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import threading
import time
import warnings
from dataclasses import replace
from typing import Optional

import pytest
from guard import restart
from hypothesis import HealthCheck, currently_in_test_context, event, given, note, settings
from hypothesis import strategies as st

import sequent
from refmodel import SUCCESS, FAILURE, Node, fails, possible_sequences, simulate
from test_properties import STATUS, StepFailed, _walk, check_execution, check_order, examples, flows

DEFAULT_EXAMPLES = examples("SEQUENT_RECOVERY_PROP_EXAMPLES", 300)
RERUN_EXAMPLES = examples("SEQUENT_RECOVERY_PROP_RERUN_EXAMPLES", 200)
TWICE_EXAMPLES = examples("SEQUENT_RECOVERY_PROP_TWICE_EXAMPLES", 150)


# -- steps, flows, runs ----------------------------------------------------------------------------

def _parse_seq(text: str) -> tuple:
    return tuple(int(x) for x in text.split("."))


def _usec(t: float) -> float:
    """A time as the history API gives it back (a datetime: microseconds), so that times recorded
    by steps and times read from the store compare on the same (monotone) rounding."""
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).timestamp()


def record_step(log: list, lock: threading.Lock, fail: frozenset, fail1: frozenset = frozenset()) -> None:
    """Thread-task body: record (path, sequence, recovery, start, end); fail when told to: at ``fail``
    in attempt 0 only (and at ``fail1`` in attempt 1 only, for the recovery-of-a-recovery property)."""
    start = time.time()
    name = os.environ["SEQUENT_STEP_NAME"]
    seq = _parse_seq(os.environ["SEQUENT_STEP_SEQUENCE"])
    recovery = os.environ["SEQUENT_STEP_RECOVERY"]
    end = time.time()
    with lock:
        log.append((name, seq, int(recovery), start, end))
    if (recovery == "0" and seq in fail) or (recovery == "1" and seq in fail1):
        raise StepFailed(f"{name} told to fail at {seq} in attempt {recovery}")


def build(flow: list[Node], flow_stop: bool, store: str, logdir: str, log: list, lock: threading.Lock,
          rerun: frozenset = frozenset(), fail1: Optional[dict] = None, **kwargs) -> sequent.Sequent:
    """The Sequent of a generated flow (as test_properties.build, with a file store, run kwargs and
    per-step recovery maps: steps whose path is in ``rerun`` get {STEP_SUCCESS: STEP_RERUN};
    ``fail1`` maps a path to the sequences where it fails in attempt 1)."""
    sq = sequent.Sequent(name="recprop", store=store,
                         config={"task_construct": "thread", "stop_on_exception": flow_stop,
                                 "LOGGING": {"logdir": logdir, "console": False, "logging_level": 30}},
                         **kwargs)

    def add(parent, nodes: list[Node], parent_path: str) -> None:
        made = []
        for node in nodes:
            path = f"{parent_path}_{node.name}" if parent_path else node.name
            pairs = tuple((made[i], STATUS[status]) for i, status in node.reqs)
            requires = sequent.or_(*pairs) if node.op == "or" else pairs
            config = {} if node.stop is None else {"stop_on_exception": node.stop}
            if node.is_container:
                step = parent.add_step(node.name, requires=requires, config=config, repeats=list(node.repeats))
                add(step, node.children, path)
            else:
                recovery = {sequent.STEP_SUCCESS: sequent.STEP_RERUN} if path in rerun else {}
                told = {"log": log, "lock": lock, "fail": node.fail, "fail1": (fail1 or {}).get(path, frozenset())}
                step = parent.add_step(node.name, func=record_step, requires=requires, config=config,
                                       recovery=recovery, kwargs=told)
            made.append(step)

    add(sq, flow, "")
    return sq


def recovery_code(flow: list[Node], flow_stop: bool, rerun: frozenset = frozenset(),
                  fail1: Optional[dict] = None) -> str:
    """A stand-alone program that runs attempt 0 of this flow, then recovers it twice (printed when a
    property fails): steps fail at their failing sequences in attempt 0 only (and at ``fail1`` in
    attempt 1 only)."""
    lines = ["import os, tempfile", "import sequent", "from sequent import STEP_SUCCESS, STEP_FAILURE, STEP_COMPLETE",
             "", "def step(fail=(), fail1=()):",
             "    seq, rec = os.environ['SEQUENT_STEP_SEQUENCE'], os.environ['SEQUENT_STEP_RECOVERY']",
             "    print('  ran', os.environ['SEQUENT_STEP_NAME'], seq)",
             "    if (rec == '0' and seq in fail) or (rec == '1' and seq in fail1):", "        raise Exception('told to fail')", "",
             "tmp = tempfile.mkdtemp()", "store = os.path.join(tmp, 'recprop.run.db')", "",
             "def build(**kwargs):",
             f"    flow = sequent.Sequent(name='recprop', store=store, config={{'task_construct': 'thread', "
             f"'stop_on_exception': {flow_stop}, 'LOGGING': {{'logdir': tmp, 'console': False}}}}, **kwargs)"]

    def add(parent: str, nodes: list[Node], parent_path: str) -> None:
        for node in nodes:
            path = f"{parent_path}_{node.name}" if parent_path else node.name
            reqs = ", ".join(f"({parent_path + '_' if parent_path else ''}{nodes[i].name}, STEP_{st_.upper()})"
                             for i, st_ in node.reqs)
            args = [repr(node.name)]
            if node.reqs:
                args.append(f"requires=sequent.or_({reqs})" if node.op == "or" else f"requires=({reqs},)")
            if node.stop is not None:
                args.append(f"config={{'stop_on_exception': {node.stop}}}")
            if node.is_container:
                args.append(f"repeats={node.repeats!r}")
            else:
                fail = sorted(".".join(map(str, s)) for s in node.fail)
                again = sorted(".".join(map(str, s)) for s in (fail1 or {}).get(path, ()))
                told = ([f"'fail': {fail!r}"] if fail else []) + ([f"'fail1': {again!r}"] if again else [])
                args[1:1] = ["func=step"] + ([f"kwargs={{{', '.join(told)}}}"] if told else [])
                if path in rerun:
                    args.append("recovery={STEP_SUCCESS: sequent.STEP_RERUN}")
            lines.append(f"    {path} = {parent}.add_step({', '.join(args)})")
            add(path, node.children, path)

    add("flow", flow, "")
    lines += ["    return flow", "",
              "first = build()", "print('attempt 0: run() ->', first.run())",
              "for attempt in (1, 2):",
              "    again = build(run_mode=sequent.RUN_RECOVER, run_id=first.run_id)",
              "    print(f'attempt {attempt}: run() ->', again.run())",
              "for t in sequent.run_tasks(store, first.run_id):",
              "    print(t.recovery, t.step, t.sequence, t.status, 'skipped' if t.skipped else '')"]
    return "\n".join(lines)


def without_failures(flow: list[Node]) -> list[Node]:
    """The flow with no failing sequence and no failing try."""
    return [replace(node, fail=frozenset(), fail_tries={}, children=without_failures(node.children)) for node in flow]


def processing_paths(flow: list[Node]) -> set:
    return {path for node, path, *_ in _walk(flow) if not node.is_container}


class Attempts:
    """Attempt 0 (fresh run), then recoveries of the same run, each built again from the same tree."""

    def __init__(self, flow: list[Node], flow_stop: bool, root: str, rerun: frozenset = frozenset(),
                 fail1: Optional[dict] = None):
        self.flow, self.flow_stop, self.rerun, self.fail1 = flow, flow_stop, rerun, fail1
        restart()  # the test's hang guard (conftest's no_hang) bounds each example, not all of them
        workdir = tempfile.mkdtemp(dir=root)
        self.store = os.path.join(workdir, "recprop.run.db")
        self.logdir = workdir
        self.lock = threading.Lock()
        self.run_id = None
        self.attempt = 0

    def build(self, log: list, **kwargs) -> sequent.Sequent:
        """The flow of this run, its steps recording into ``log``; ``kwargs`` go to Sequent()."""
        return build(self.flow, self.flow_stop, self.store, self.logdir, log, self.lock, self.rerun, self.fail1,
                     **kwargs)

    def check_records(self, records: list) -> None:
        """What every attempt's records show: the attempt's number, and no occurrence run twice."""
        wrong = [r for r in records if r[2] != self.attempt]
        assert not wrong, f"SEQUENT_STEP_RECOVERY is not {self.attempt} in attempt {self.attempt}: {wrong}"
        occurrences = [(p, s) for p, s, *_ in records]
        twice = sorted({o for o in occurrences if occurrences.count(o) > 1})
        assert not twice, f"attempt {self.attempt} ran more than once: {twice}"

    def run(self) -> tuple[list, bool]:
        """Run the next attempt; (its records, run()'s result)."""
        log: list = []
        if self.attempt == 0:
            sq = self.build(log)
            result = sq.run()
            self.run_id = sq.run_id
            assert self.run_id, "no run_id after run()"
        else:
            sq = self.build(log, run_mode=sequent.RUN_RECOVER, run_id=self.run_id)
            with warnings.catch_warnings():
                warnings.simplefilter("error", sequent.FlowChangedWarning)  # the tree is the same
                result = sq.run()
            assert sq.run_id == self.run_id, f"recovery changed the run_id: {sq.run_id!r} != {self.run_id!r}"
        records = list(log)
        self.check_records(records)
        _note(f"attempt {self.attempt} ran {sorted({(p, s) for p, s, *_ in records})}; run() -> {result}")
        self.attempt += 1
        return records, result

    def plan(self) -> dict:
        """The next recovery's plan (``sequent recover --dry-run``) for the processing steps:
        (path, sequence tuple) -> its action (skip, rerun or new); read before that recovery runs."""
        sq = self.build([])
        plan = sq.plan_recovery(self.run_id)
        assert plan.recovery == self.attempt, f"the plan is for attempt {plan.recovery}, not {self.attempt}"
        paths = processing_paths(self.flow)
        return {(e.step, _parse_seq(e.sequence)): e.action for e in plan.entries
                if e.step in paths and e.sequence is not None}

    def rows(self, recovery: int) -> dict:
        """(path, sequence tuple) -> TaskInfo of the processing steps' tasks of one attempt."""
        paths = processing_paths(self.flow)
        rows = {}
        for t in sequent.run_tasks(self.store, self.run_id, recovery=recovery):
            assert t.recovery == recovery
            if t.step in paths:
                key = (t.step, _parse_seq(t.sequence))
                assert key not in rows, f"two task rows for {key} in attempt {recovery}"
                rows[key] = t
        return rows


def _note(text: str) -> None:
    """hypothesis.note inside a property, nothing in a plain test."""
    if currently_in_test_context():
        note(text)


def _ran(records: list) -> set:
    return {(p, s) for p, s, *_ in records}


def _succeeded(flow: list[Node], records: list) -> set:
    """The occurrences of attempt 0's records that succeeded (whose last try did not fail)."""
    nodes = {path: node for node, path, *_ in _walk(flow) if not node.is_container}
    return {(p, s) for p, s, *_ in records if not fails(nodes[p], s)}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("recprop"))


def _attempt0(attempts: Attempts) -> set:
    """Run attempt 0, check it against the execution model (test_properties.check_execution), and
    return what succeeded in it."""
    flow, flow_stop = attempts.flow, attempts.flow_stop
    records0, result0 = attempts.run()
    check_execution(flow, flow_stop, [(p, s, t0, t1) for p, s, _, t0, t1 in records0], result0)
    rows0 = attempts.rows(0)
    assert set(rows0) == _ran(records0), "attempt 0's task rows differ from what it ran"
    assert not any(t.skipped for t in rows0.values()), "attempt 0 skipped something"
    succeeded0 = _succeeded(flow, records0)
    event("attempt 0 failed" if not result0 else "attempt 0 succeeded")
    event("stop_on_exception left steps out of attempt 0" if simulate(flow)[0] - _ran(records0)
          else "attempt 0 ran all it could")
    event("attempt 0 did not reach some of what the no-failure flow runs"
          if simulate(without_failures(flow))[0] - _ran(records0) else "attempt 0 reached everything")
    return succeeded0


def _check_plan(plan: dict, rows: dict, ran: set) -> None:
    """The plan made before a recovery is what the recovery did with every task it reached (has a
    row for): it skipped exactly those the plan says skip and ran those the plan says rerun.  (A task
    whose requires no longer hold, e.g. a handler of a failure that now succeeds, is not reached.)"""
    reached = set(rows)
    skip = {k for k, action in plan.items() if action == "skip"}
    skipped = {k for k, t in rows.items() if t.skipped}
    assert skipped == skip & reached, f"the plan skips {sorted(skip & reached)}, the recovery skipped {sorted(skipped)}"
    rerun = {k for k, action in plan.items() if action == "rerun"}
    assert rerun & reached <= ran, f"the plan reruns {sorted((rerun & reached) - ran)}, which the recovery did not run"
    assert not skip & ran, f"the plan skips {sorted(skip & ran)}, which the recovery ran"


def _check_order_attempt(nofail: list[Node], records: list, rows: dict) -> None:
    """Property 4: requires order and iteration order in a recovery (test_properties.check_order on
    the no-failure flow), the skipped tasks placed at the times the store gives them."""
    ran = {(p, s): (_usec(t0), _usec(t1)) for p, s, _, t0, t1 in records}
    timed = [(p, s, t0, t1) for (p, s), (t0, t1) in ran.items()]
    for key, t in rows.items():
        if t.skipped:
            assert t.started is not None and t.ended is not None, f"skipped row {key} has no times"
            timed.append((key[0], key[1], t.started.timestamp(), t.ended.timestamp()))
    check_order(nofail, timed)


# -- the properties --------------------------------------------------------------------------------

@settings(max_examples=DEFAULT_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows())
def test_recovery_with_default_maps_matches_model(root, flow_and_stop):
    """Default recovery maps (success -> skip, everything else -> rerun).  Checks:

    0. attempt 0 itself matches the execution model (check_execution), and its task rows are what ran;
    1. nothing that succeeded in attempt 0 runs again in attempt 1;
    2. attempt 1 runs exactly ``expected - succeeded0`` (``expected``: the model's set with no
       failures), so ``expected <= succeeded0 | ran1``; run() returns the model's boolean (True);
       attempt 1's processing task rows are exactly ``expected``, all success, skipped exactly
       for ``expected & succeeded0``;
    3. attempt 2 executes nothing and returns True; its processing task rows are exactly
       ``expected``, each status 'success' with skipped=True;
    4. in attempt 1 requires hold before a step starts and the iterations of every container
       occurrence run in order (check_order, skipped tasks included at their recorded times).
    """
    flow, flow_stop = flow_and_stop
    note(recovery_code(flow, flow_stop))
    nofail = without_failures(flow)
    expected, expected_ok = simulate(nofail)
    attempts = Attempts(flow, flow_stop, root)

    succeeded0 = _attempt0(attempts)

    plan1 = attempts.plan()
    records1, result1 = attempts.run()
    ran1 = _ran(records1)
    _check_plan(plan1, attempts.rows(1), ran1)
    again = sorted(ran1 & succeeded0)
    assert not again, f"property 1: succeeded in attempt 0, ran again in attempt 1: {again}"
    missing = sorted(expected - succeeded0 - ran1)
    assert not missing, f"property 2: neither succeeded in attempt 0 nor ran in attempt 1: {missing}"
    extra = sorted(ran1 - expected)
    assert not extra, f"property 2: ran in attempt 1, not in the no-failure model: {extra}"
    assert result1 == expected_ok, f"property 2: attempt 1's run() returned {result1}, the model says {expected_ok}"
    rows1 = attempts.rows(1)
    assert set(rows1) == expected, (f"property 2: attempt 1's task rows {sorted(rows1)} are not the model's "
                                    f"{sorted(expected)}")
    not_success = sorted(k for k, t in rows1.items() if t.status != "success")
    assert not not_success, f"property 2: attempt 1 task rows not success: {not_success}"
    skipped1 = {k for k, t in rows1.items() if t.skipped}
    assert skipped1 == expected & succeeded0, (
        f"property 2: attempt 1 skipped {sorted(skipped1)}, expected {sorted(expected & succeeded0)}")
    _check_order_attempt(nofail, records1, rows1)

    records2, result2 = attempts.run()
    assert not records2, f"property 3: attempt 2 executed {sorted(_ran(records2))}"
    assert result2 is True, f"property 3: attempt 2's run() returned {result2}"
    rows2 = attempts.rows(2)
    assert set(rows2) == expected, f"property 3: attempt 2's task rows {sorted(rows2)} are not {sorted(expected)}"
    bad = sorted((k, t.status, t.skipped) for k, t in rows2.items() if t.status != "success" or not t.skipped)
    assert not bad, f"property 3: attempt 2 task rows not skipped successes: {bad}"
    event("handlers ran only in attempt 0" if succeeded0 - expected else "no attempt-0-only handler")


@st.composite
def flows_and_reruns(draw):
    flow, flow_stop = draw(flows())
    rerun = draw(st.frozensets(st.sampled_from(sorted(processing_paths(flow)))))
    return flow, flow_stop, rerun


@settings(max_examples=RERUN_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows_and_reruns())
def test_recovery_with_rerun_maps_matches_model(root, flow_stop_rerun):
    """A random subset R of processing steps has recovery={STEP_SUCCESS: STEP_RERUN}.  Checks:

    P1 (per step): attempt 1 runs again exactly the occurrences of R's steps that succeeded in
       attempt 0 (and are in ``expected``); the others' successes are not run again;
    P2: attempt 1 runs exactly ``expected - {o in succeeded0: step(o) not in R}`` and returns True;
       its rows are all success, skipped exactly for ``{o in expected & succeeded0: step(o) not in R}``;
    P3: attempt 2 runs exactly R's occurrences in ``expected`` (success -> rerun still applies) and
       returns True; every other processing row of attempt 2 is a skipped success.
    (Attempt 0 is checked against the execution model as in the default-map test.)
    """
    flow, flow_stop, rerun = flow_stop_rerun
    note(recovery_code(flow, flow_stop, rerun))
    nofail = without_failures(flow)
    expected, expected_ok = simulate(nofail)
    attempts = Attempts(flow, flow_stop, root, rerun)

    succeeded0 = _attempt0(attempts)
    kept = {o for o in succeeded0 if o[0] not in rerun}  # what attempt 1 skips

    plan1 = attempts.plan()
    records1, result1 = attempts.run()
    ran1 = _ran(records1)
    _check_plan(plan1, attempts.rows(1), ran1)
    assert ran1 & succeeded0 == {o for o in succeeded0 & expected if o[0] in rerun}, (
        f"P1: successes of attempt 0 ran again: {sorted(ran1 & succeeded0)}; expected exactly those of "
        f"{sorted(rerun)}: {sorted(o for o in succeeded0 & expected if o[0] in rerun)}")
    assert ran1 == expected - kept, (f"P2: attempt 1 ran {sorted(ran1)}, the model says {sorted(expected - kept)} "
                                     f"(missing {sorted(expected - kept - ran1)}, extra {sorted(ran1 - (expected - kept))})")
    assert result1 == expected_ok, f"P2: attempt 1's run() returned {result1}, the model says {expected_ok}"
    rows1 = attempts.rows(1)
    assert set(rows1) == expected, f"P2: attempt 1's task rows {sorted(rows1)} are not {sorted(expected)}"
    assert all(t.status == "success" for t in rows1.values()), "P2: attempt 1 has task rows not success"
    assert {k for k, t in rows1.items() if t.skipped} == expected & kept, "P2: attempt 1 skipped the wrong tasks"

    plan2 = attempts.plan()
    records2, result2 = attempts.run()
    ran2 = _ran(records2)
    _check_plan(plan2, attempts.rows(2), ran2)
    assert ran2 == {o for o in expected if o[0] in rerun}, (
        f"P3: attempt 2 ran {sorted(ran2)}, expected {sorted(o for o in expected if o[0] in rerun)}")
    assert result2 is True, f"P3: attempt 2's run() returned {result2}"
    rows2 = attempts.rows(2)
    assert set(rows2) == expected, f"P3: attempt 2's task rows {sorted(rows2)} are not {sorted(expected)}"
    assert all(t.status == "success" and t.skipped == (k[0] not in rerun) for k, t in rows2.items()), (
        f"P3: attempt 2 rows: {sorted((k, t.status, t.skipped) for k, t in rows2.items())}")
    event("some rerun step succeeded in attempt 0" if any(o[0] in rerun for o in succeeded0 & expected)
          else "no rerun step succeeded in attempt 0")


@st.composite
def flows_failing_twice(draw):
    """A flow (failing in attempt 0) and, per processing step, the sequences where it fails in attempt 1."""
    flow, flow_stop = draw(flows())
    fail1 = {}
    for path, seqs in sorted(possible_sequences(flow).items()):
        if seqs:
            fail1[path] = draw(st.one_of(st.just(frozenset()), st.just(frozenset(seqs)),
                                         st.frozensets(st.sampled_from(seqs), max_size=2)))
    return flow, flow_stop, fail1


@settings(max_examples=TWICE_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows_failing_twice())
def test_recovery_of_a_failed_recovery_matches_model(root, flow_stop_fail1):
    """Beyond the brief: steps fail in attempt 0 (at ``fail``) AND in attempt 1 (at ``fail1``);
    attempt 2 has no failures and recovers attempt 1, the immediately previous one (SPEC B4.5 2).
    Checks:

    R1: attempt 1 runs nothing that succeeded in attempt 0, and is a correct execution of the flow
        whose failures are ``fail1`` except where attempt 0 succeeded (those are skipped, i.e.
        instantaneous successes): test_properties.check_execution on attempt 1's runs plus its
        skipped rows, including run()'s boolean;
    R2: attempt 2 runs exactly ``expected - succeeded``, where ``succeeded`` holds the tasks whose
        last recorded status over attempts 0 and 1 is success (a recovery consults every earlier
        attempt, not only the previous one: a task attempt 1 never reached keeps attempt 0's
        success), returns True, and its processing rows are ``expected``, all success, skipped
        exactly for ``expected & succeeded``.
    """
    flow, flow_stop, fail1 = flow_stop_fail1
    note(recovery_code(flow, flow_stop, fail1=fail1))
    expected, _ = simulate(without_failures(flow))
    attempts = Attempts(flow, flow_stop, root, fail1=fail1)

    succeeded0 = _attempt0(attempts)

    records1, result1 = attempts.run()
    ran1 = _ran(records1)
    assert not ran1 & succeeded0, f"R1: succeeded in attempt 0, ran again in attempt 1: {sorted(ran1 & succeeded0)}"
    rows1 = attempts.rows(1)
    skipped1 = {k for k, t in rows1.items() if t.skipped}
    assert skipped1 <= succeeded0, f"R1: attempt 1 skipped what had not succeeded: {sorted(skipped1 - succeeded0)}"
    assert {k for k, t in rows1.items() if not t.skipped} == ran1, "R1: attempt 1's rows differ from what it ran"
    # attempt 1 as a fresh run of the flow failing at fail1, where what succeeded in attempt 0 cannot fail
    def refail(nodes: list[Node], parent_path: str = "") -> list[Node]:
        out = []
        for node in nodes:
            path = f"{parent_path}_{node.name}" if parent_path else node.name
            fail = frozenset(s for s in fail1.get(path, ()) if (path, s) not in succeeded0)
            out.append(replace(node, fail=fail, children=refail(node.children, path)))
        return out

    flow1 = refail(flow)
    executed1 = [(p, s, 0.0, 0.0) for p, s, *_ in records1] + [(p, s, 0.0, 0.0) for p, s in skipped1]
    check_execution(flow1, flow_stop, executed1, result1)
    last = {k: t.status for k, t in attempts.rows(0).items()}
    last.update({k: t.status for k, t in rows1.items()})
    succeeded = {k for k, status in last.items() if status == "success"}
    event("attempt 1 failed" if not result1 else "attempt 1 succeeded")

    records2, result2 = attempts.run()
    ran2 = _ran(records2)
    assert ran2 == expected - succeeded, (f"R2: attempt 2 ran {sorted(ran2)}, the model says "
                                          f"{sorted(expected - succeeded)}")
    assert result2 is True, f"R2: attempt 2's run() returned {result2}"
    rows2 = attempts.rows(2)
    assert set(rows2) == expected, f"R2: attempt 2's task rows {sorted(rows2)} are not {sorted(expected)}"
    assert all(t.status == "success" for t in rows2.values()), "R2: attempt 2 has task rows not success"
    assert {k for k, t in rows2.items() if t.skipped} == expected & succeeded, "R2: attempt 2 skipped the wrong tasks"


# -- hand-made flows: the model's claims checked by hand ---------------------------------------------

def test_seed_example_recovers_as_the_model_says(root):
    """The SPEC B4.5 worked example through the same machinery: s1 [1,2] { s11 [1,2] { s111 -> s112 },
    s12 requires s11 }, s2 requires s1; s111 fails at 1.2.2 in attempt 0.  Properties 1-3 by hand."""
    s11 = Node("s11", repeats=[1, 2], children=[Node("s111", fail=frozenset({(1, 2, 2)})),
                                                Node("s112", reqs=[(0, SUCCESS)])])
    s1 = Node("s1", repeats=[1, 2], children=[s11, Node("s12", reqs=[(0, SUCCESS)])])
    flow = [s1, Node("s2", reqs=[(0, SUCCESS)])]
    attempts = Attempts(flow, True, root)
    records0, result0 = attempts.run()
    assert result0 is False and len(records0) == 8
    records1, result1 = attempts.run()
    assert result1 is True
    assert [(p, s) for p, s, *_ in records1] == [("s1_s11_s111", (1, 2, 2)), ("s1_s11_s112", (1, 2, 2)),
                                                 ("s1_s12", (1, 2)), ("s2", (1,))]
    records2, result2 = attempts.run()
    assert result2 is True and records2 == []
    assert len(attempts.rows(2)) == 11 and all(t.skipped for t in attempts.rows(2).values())


def test_failure_handler_of_attempt_0_does_not_run_in_the_recovery(root):
    """Why property 2 is ``ran1 == expected - succeeded0`` rather than ``succeeded0 | ran1 == expected``:
    h requires (x, STEP_FAILURE); x fails in attempt 0, so h runs; in attempt 1 x succeeds, h does not run."""
    flow = [Node("x", fail=frozenset({(1,)})), Node("h", reqs=[(0, FAILURE)]), Node("y", reqs=[(0, SUCCESS)])]
    attempts = Attempts(flow, True, root)
    records0, result0 = attempts.run()
    assert _ran(records0) == {("x", (1,)), ("h", (1,))} and result0 is True  # the failure is handled
    records1, result1 = attempts.run()
    assert _ran(records1) == {("x", (1,)), ("y", (1,))} and result1 is True
    assert set(attempts.rows(1)) == simulate(without_failures(flow))[0] == {("x", (1,)), ("y", (1,))}
