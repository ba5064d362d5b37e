"""Placement on hosts, as a property: fake host executors, a virtual clock, random flows.

Steps name random lists of hosts (remote ones, and this machine), hosts have random
``max_concurrent`` limits and the run a random one, tasks last random (virtual) times.  Whatever
the draw, each task runs exactly once, on one of its hosts, and on the first of them that had
room when it started; no host ever runs more than its limit and the run never more than its own.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from typing import Any, Optional

from hypothesis import given, strategies as st

from sequent.eventor import Eventor
from sequent.eventor.coordinator import Coordinator
from sequent.eventor.executors import Executor
from sequent.eventor.model import TaskConstruct
from sequent.eventor.outcome import OutcomeStatus, RunEnd, TaskOutcome
from sequent.eventor.runners import Inbox

HOSTS = ("h1", "h2", "h3", "localhost")


class Cluster:
    """The fake hosts and a virtual clock: when the coordinator waits, the earliest task ends."""

    def __init__(self) -> None:
        self.t = 0.0
        self.ending: list[tuple[float, int, int, "FakeHost"]] = []  # (end, order, task id, host)
        self.order = itertools.count()
        self.executors: list[FakeHost] = []
        self.starts: list[dict] = []  # one per submit: what every host ran at that moment

    def time(self) -> float:
        return self.t

    monotonic = time

    def wait(self, inbox: Inbox, timeout: Optional[float]) -> list:
        items = inbox.take()
        if items or not self.ending:
            return items
        end, _, task_id, host = heapq.heappop(self.ending)
        self.t = max(self.t, end)
        host.running.discard(task_id)
        host.report(TaskOutcome(task_id, OutcomeStatus.success, ended=self.t, host=host.host))
        return inbox.take()

    def select(self, selector: Any, timeout: Optional[float]) -> list:
        raise AssertionError("fake hosts report through the inbox")


class FakeHost(Executor):
    """A host that runs each task for the duration its step's name says (``s<i>_<tenths>``)."""

    construct = TaskConstruct.process

    def __init__(self, cluster: Cluster, report: Any, host: Optional[str], capacity: Optional[int]):
        self.cluster, self.report, self.host, self.capacity = cluster, report, host, capacity
        self.running: set[int] = set()
        cluster.executors.append(self)

    def submit(self, task_id: int, step: Any, ctx: Any) -> None:
        self.cluster.starts.append({"step": step.name, "on": self.host or "localhost", "at": self.cluster.t,
                                    "busy": {ex.host or "localhost": len(ex.running) for ex in self.cluster.executors}})
        self.running.add(task_id)
        seconds = int(step.name.rsplit("_", 1)[1]) / 10
        heapq.heappush(self.cluster.ending, (self.cluster.t + seconds, next(self.cluster.order), task_id, self))

    def stop(self, grace: float, *, abandon: bool) -> None:
        pass


class Writer:
    def task(self, *args: Any, **values: Any) -> None:
        pass

    delay = hold = unhold = task

    def commit(self) -> None:
        pass


steps_strategy = st.lists(
    st.tuples(st.lists(st.sampled_from(HOSTS), min_size=1, max_size=4, unique=True), st.integers(1, 20)),
    min_size=1, max_size=25)
limits_strategy = st.fixed_dictionaries({h: st.one_of(st.none(), st.integers(1, 3)) for h in HOSTS})


@given(steps=steps_strategy, limits=limits_strategy, run_limit=st.one_of(st.just(-1), st.integers(1, 5)))
def test_each_task_runs_once_on_the_first_of_its_hosts_with_room_within_every_limit(
        steps: list, limits: dict, run_limit: int) -> None:
    ev = Eventor(name="placement", config={"task_construct": "process"})
    ev.add_event("go")
    hosts_of = {}
    for i, (hosts, tenths) in enumerate(steps):
        name = f"s{i}_{tenths}"
        ev.add_step(name, host=tuple(hosts))
        ev.add_assoc("go", name)
        hosts_of[name] = hosts
    ev.trigger_event("go")
    ev.validate()
    cluster, inbox = Cluster(), Inbox()
    local = FakeHost(cluster, inbox.put, None, limits["localhost"])
    remotes = {h: FakeHost(cluster, inbox.put, h, limits[h]) for h in HOSTS if h != "localhost"}
    coordinator = Coordinator(ev.program, Writer(), logger=logging.getLogger("test-placement"), run_id="r",
                              recovery=0, envvar_prefix="SEQUENT_", max_concurrent=run_limit,
                              task_logger=lambda step, seq: f"test-placement.{step}_{seq}",
                              executors={TaskConstruct.process: local}, remotes=remotes, inbox=inbox,
                              clock=cluster)
    assert coordinator.run() is RunEnd.success

    assert sorted(s["step"] for s in cluster.starts) == sorted(hosts_of)  # each exactly once
    for start in cluster.starts:
        hosts, busy = hosts_of[start["step"]], start["busy"]
        assert start["on"] in hosts
        for earlier in hosts[:hosts.index(start["on"])]:  # every host before it had no room
            assert limits[earlier] is not None and busy[earlier] >= limits[earlier], start
        limit = limits[start["on"]]
        assert limit is None or busy[start["on"]] < limit, start  # room where it went
        if run_limit >= 1:
            assert sum(busy.values()) < run_limit, start
