"""Steps on remote hosts: real sshd "hosts" h1, h2, h3 (tests/sshhosts.py) and a real PostgreSQL.

Each test runs a flow whose steps go to the hosts over SSH and checks what the store, the
journal the steps write (the hosts share this machine's files) and the hosts' process tables
say: where each task ran, that arguments arrive intact, that limits hold across hosts, and that
faults (a host killed, a silent link, the coordinator killed or stopped) end cleanly, leave
nothing running, and let a recovery finish the run without running a success again.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import sequent as seq
from sequent.eventor import agent as agent_module

TESTS = str(Path(__file__).resolve().parent)
REPO = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, TESTS)
import remotefuncs  # noqa: E402
from elsewhere import Flows, gone, wait_for  # noqa: E402

OK, FAIL = seq.STEP_SUCCESS, seq.STEP_FAILURE

pytestmark = [pytest.mark.ssh, pytest.mark.timeout_seconds(120)]


class Remote(Flows):
    """Flows on the test hosts h1, h2, h3."""

    name, first, second = "remote", "h1", "h2"

    def __init__(self, hosts: Any, store: str, tmp_path: Path):
        super().__init__(store, tmp_path)
        self.hosts = hosts

    def config(self, hosts: dict | None = None, **extra: Any) -> dict:
        entries = {name: {"python": sys.executable, "env": {"PYTHONPATH": TESTS}} for name in ("h1", "h2", "h3")}
        for name, entry in (hosts or {}).items():
            entries[name] = {**entries.get(name, {}), **entry} if isinstance(entry, dict) else entry
        return super().config(ssh_config=self.hosts.config, ssh_alive_interval=1, ssh_alive_count=2,
                              HOSTS=entries, **extra)

    def no_sessions_left(self, timeout: float = 15.0) -> None:
        """Nothing of the run is left on any host: no agent, no task, no session."""
        for name in self.hosts.names:
            assert self.hosts.wait_no_sessions(name, timeout), \
                f"processes left on {name}: {sorted(self.hosts.session_pids(name))}"


@pytest.fixture
def remote(ssh_hosts: Any, postgres_database: str, tmp_path: Path) -> Remote:
    return Remote(ssh_hosts, postgres_database, tmp_path)


# ----------------------------------------------------------------------------------- running there


def test_a_flow_spread_over_three_hosts_runs_each_step_on_its_host(remote: Remote) -> None:
    flow = remote.flow()
    s1 = flow.add_step("s1", remotefuncs.where, args=(remote.journal, "one"), hosts=["h1"])
    s2 = flow.add_step("s2", remotefuncs.where, args=(remote.journal, "two"), hosts=["h2"], requires=[(s1, OK)])
    flow.add_step("s3", remotefuncs.where, args=(remote.journal, "three"), hosts=["h3"], requires=[(s2, OK)])
    assert flow.run() is True
    ran = [line.split("|") for line in remote.lines()]
    assert [(r[0], r[2], r[3]) for r in ran] == [("s1", "h1", "one"), ("s2", "h2", "two"), ("s3", "h3", "three")]
    assert {r[4] for r in ran} == {flow.run_id}  # the same SEQUENT_* variables as a local task
    tasks = remote.tasks(flow.run_id)
    for step, host in (("s1", "h1"), ("s2", "h2"), ("s3", "h3")):
        task = tasks[f"{step}/1/0"]
        assert (task.status, task.host) == ("success", host)
        assert task.owner.startswith(f"{host}:")  # the agent that ran it
        assert task.result == repr("|".join([step, "1", host, {"s1": "one", "s2": "two", "s3": "three"}[step],
                                            flow.run_id]))
        # its own log file, on its host, recorded in the store, with the local line format
        text = Path(task.logfile).read_text()
        assert re.search(rf"\]\[ {host} \]\[ Task-{step}\(1\) *\]\[ remote line from {step} on {host} \]", text)
    run_log = (remote.tmp / "logs" / f"remote-{flow.run_id}.log").read_text().splitlines()
    remote_lines = [line for line in run_log if "remote line from" in line]
    assert len(remote_lines) == 3 and re.search(r"\]\[ h2 \]\[ Task-s2\(1\) *\]\[", remote_lines[1])  # relayed
    remote.no_sessions_left()


def test_shell_metacharacters_in_arguments_reach_the_function_intact(remote: Remote) -> None:
    nasty = "$(touch {p}); `touch {p}` 'q' \"dq\" | & > < ; \\ \n * ~".format(p=remote.tmp / "pwned")
    flow = remote.flow()
    flow.add_step("s1", remotefuncs.where, args=(remote.journal, nasty), hosts=["h1"])
    assert flow.run() is True
    assert remote.tasks(flow.run_id)["s1/1/0"].result == repr("|".join(["s1", "1", "h1", nasty, flow.run_id]))
    assert not (remote.tmp / "pwned").exists()


def test_a_container_on_two_hosts_runs_a_copy_on_each_and_its_dependents_wait_for_both(remote: Remote) -> None:
    flow = remote.flow()
    box = flow.add_step("box", repeats=[1, 2], hosts=["h1", "h2"])
    box.add_step("inner", remotefuncs.where, args=(remote.journal, "in"))
    flow.add_step("after", remotefuncs.where, args=(remote.journal, "after"), hosts=["h3"],
                  requires=[(box, OK)])
    assert flow.run() is True
    ran = [line.split("|") for line in remote.lines()]
    assert sorted((r[0], r[1], r[2]) for r in ran[:-1]) == [
        ("box@h1_inner", "1.1", "h1"), ("box@h1_inner", "1.2", "h1"),
        ("box@h2_inner", "1.1", "h2"), ("box@h2_inner", "1.2", "h2")]
    assert ran[-1][:3] == ["after", "1", "h3"]  # only after every copy's iterations
    tasks = remote.tasks(flow.run_id)
    assert (tasks["box@h1/1/0"].host, tasks["box@h2/1/0"].host) == ("h1", "h2")  # each copy with its host
    assert all(tasks[k].status == "success" for k in tasks)


def test_a_step_with_two_hosts_runs_once_on_the_first_with_room_under_a_per_host_limit(remote: Remote) -> None:
    config = remote.config(hosts={"h1": {"max_concurrent": 1}, "h2": {"max_concurrent": 1}})
    flow = remote.flow(config=config)
    for n in range(4):
        flow.add_step(f"w{n}", remotefuncs.span, args=(remote.journal, 0.6), hosts=["h1", "h2"])
    assert flow.run() is True
    spans = [line.split() for line in remote.lines()]
    assert len(spans) == 4  # each task once
    by_host: dict[str, list[tuple[float, float]]] = {}
    for host, start, end in spans:
        by_host.setdefault(host, []).append((float(start), float(end)))
    assert set(by_host) == {"h1", "h2"}  # the second host took what the first had no room for
    for host, intervals in by_host.items():
        intervals.sort()
        assert all(a[1] <= b[0] for a, b in zip(intervals, intervals[1:])), f"{host} ran two at once"


def test_a_resource_pool_holds_across_hosts(remote: Remote) -> None:
    pool = seq.ResourcePool("one", policy={"resource_limit": 1})
    flow = remote.flow()
    for name, host in (("a", "h1"), ("b", "h2"), ("c", "h3")):
        flow.add_step(name, remotefuncs.span, args=(remote.journal, 0.4), hosts=[host], acquires=[(pool, 1)])
    assert flow.run() is True
    intervals = sorted((float(s), float(e)) for _, s, e in (line.split() for line in remote.lines()))
    assert len(intervals) == 3 and all(a[1] <= b[0] for a, b in zip(intervals, intervals[1:]))


def test_a_remote_failure_is_recorded_and_a_recovery_reruns_only_it(remote: Remote) -> None:
    flag = remote.tmp / "fixed"
    flow = remote.flow(run_id="rfail")
    s1 = flow.add_step("s1", remotefuncs.where, args=(remote.journal, "one"), hosts=["h1"])
    flow.add_step("s2", remotefuncs.fail_unless, args=(str(flag),), hosts=["h2"], requires=[(s1, OK)])
    assert flow.run() is False
    failed = remote.tasks("rfail")["s2/1/0"]
    assert (failed.status, failed.host) == ("failure", "h2")
    assert "ValueError: not fixed yet" in failed.error and "remotefuncs.py" in failed.error  # with the traceback
    flag.write_text("ok")
    again = remote.flow(run_id="rfail", run_mode=seq.RUN_RECOVER)
    s1 = again.add_step("s1", remotefuncs.where, args=(remote.journal, "one"), hosts=["h1"])
    again.add_step("s2", remotefuncs.fail_unless, args=(str(flag),), hosts=["h2"], requires=[(s1, OK)])
    assert again.run() is True
    assert len(remote.lines()) == 1  # s1 succeeded in the first attempt: never run again
    tasks = remote.tasks("rfail")
    assert tasks["s1/1/1"].skipped and tasks["s2/1/1"].status == "success"


# ------------------------------------------------------------------------------ refused up front


@pytest.mark.parametrize("func, why", [
    (lambda: None, "lambda"),
    (remotefuncs.make_closure(), "defined inside another function"),
])
def test_a_step_that_cannot_be_sent_is_refused_before_the_run_starts(remote: Remote, func: Any, why: str) -> None:
    flow = remote.flow()
    flow.add_step("s1", func, hosts=["h1"])
    with pytest.raises(seq.SequentError, match=rf"step 's1' runs on host\(s\) h1, but .*{why}"):
        flow.run()
    assert seq.list_runs(remote.store) == []  # nothing started, nothing recorded


def test_a_function_of_main_or_an_unpicklable_argument_is_refused(remote: Remote) -> None:
    main_func = type(remotefuncs.where)(remotefuncs.where.__code__, {"__name__": "__main__"}, "mainfunc")
    main_func.__module__ = "__main__"
    flow = remote.flow()
    flow.add_step("s1", main_func, hosts=["h1"])
    with pytest.raises(seq.SequentError, match=r"step 's1' .* defined in __main__"):
        flow.run()
    flow = remote.flow()
    flow.add_step("s2", remotefuncs.where, args=(remote.journal, open(os.devnull)), hosts=["h1"])
    with pytest.raises(seq.SequentError, match=r"step 's2' .* cannot be sent to another host"):
        flow.run()


def test_an_sqlite_store_with_a_remote_host_is_refused_at_run(remote: Remote, tmp_path: Path) -> None:
    for store in (str(tmp_path / "store.db"), ":memory:"):
        flow = seq.Sequent(name="remote", store=store, config=remote.config())
        flow.add_step("s1", remotefuncs.where, args=(remote.journal,), hosts=["h1"])
        with pytest.raises(seq.SequentError, match="other hosts cannot reach: give the flow a database every host"):
            flow.run()
    assert not (tmp_path / "store.db").exists() and remote.lines() == []


# ------------------------------------------------------------------------------ hosts that cannot serve


@pytest.mark.parametrize("host, entry, cause", [
    ("h1-badkey", {}, r"host 'h1-badkey': authentication was refused \(.*Permission denied"),
    ("nohost", {}, r"host 'nohost': it is unreachable"),
    ("h1", {"python": "/nonexistent/python3"}, r"host 'h1': its python '/nonexistent/python3' was not found"),
    ("h1", {"python": "/usr/bin/python3", "env": {}}, r"host 'h1': sequent is not installed for /usr/bin/python3"),
    ("h1", {"python": "/usr/bin/python3", "env": {"PYTHONPATH": REPO}},
     r"host 'h1': SQLAlchemy is not installed for /usr/bin/python3"),
])
def test_a_host_that_cannot_serve_is_a_clear_error_before_any_task_runs(remote: Remote, host: str, entry: dict,
                                                                         cause: str) -> None:
    if entry.get("python") == "/usr/bin/python3" and not os.path.exists("/usr/bin/python3"):
        pytest.skip("no system python3 to stand for a host without sequent")
    flow = remote.flow(config=remote.config(hosts={host: {"python": sys.executable, **entry}}))
    s1 = flow.add_step("s1", remotefuncs.where, args=(remote.journal, "local"))
    flow.add_step("s2", remotefuncs.where, args=(remote.journal,), hosts=[host], requires=[(s1, OK)])
    with pytest.raises(seq.SequentError, match=cause):
        flow.run()
    assert remote.lines() == []  # not even the local step ran
    assert seq.list_runs(remote.store) == []  # refused before the attempt was recorded
    remote.no_sessions_left()


def test_a_step_module_missing_on_the_host_is_an_error_before_any_task_runs(remote: Remote,
                                                                            monkeypatch: Any) -> None:
    here = remote.tmp / "onlyhere"
    here.mkdir()
    (here / "onlyhere_steps.py").write_text("def work():\n    return 'here'\n")
    monkeypatch.syspath_prepend(str(here))
    import onlyhere_steps  # importable on the coordinator, not on the hosts' PYTHONPATH

    flow = remote.flow()
    s1 = flow.add_step("s1", remotefuncs.where, args=(remote.journal, "local"))
    flow.add_step("s2", onlyhere_steps.work, hosts=["h3"], requires=[(s1, OK)])
    with pytest.raises(seq.SequentError, match=r"host 'h3': the agent cannot serve the run: the module "
                                               r"'onlyhere_steps' of its steps does not import there .*"
                                               r"ModuleNotFoundError"):
        flow.run()
    assert remote.lines() == []
    remote.no_sessions_left()


def test_a_version_mismatch_names_the_host_and_both_versions(remote: Remote, monkeypatch: Any) -> None:
    real = agent_module.versions
    monkeypatch.setattr(agent_module, "versions", lambda: {**real(), "sequent": "0.0.1"})
    flow = remote.flow()
    flow.add_step("s1", remotefuncs.where, args=(remote.journal,), hosts=["h2"])
    with pytest.raises(seq.SequentError, match=rf"host 'h2': version mismatch: sequent {seq.__version__} there "
                                               rf"\(.*\), 0.0.1 on the coordinator"):
        flow.run()
    assert remote.lines() == []


# ----------------------------------------------------------------------------------------- faults


def test_a_host_killed_mid_task_fails_its_task_and_ends_the_run(remote: Remote) -> None:
    flow = remote.flow(run_id="hostdown")
    flow.add_step("s1", remotefuncs.pause, args=(remote.journal, 60), hosts=["h1"])
    flow.add_step("s2", remotefuncs.span, args=(remote.journal, 0.2), hosts=["h2"])
    killer = _when_started(remote, "start s1", lambda: remote.hosts.kill_sessions("h1"))
    started = time.monotonic()
    assert flow.run() is False
    killer.join()
    assert time.monotonic() - started < 30
    tasks = remote.tasks("hostdown")
    assert tasks["s1/1/0"].status == "failure" and "host 'h1' lost" in tasks["s1/1/0"].error
    assert tasks["s2/1/0"].status == "success"
    remote.no_sessions_left()


def test_a_silent_link_is_noticed_by_keepalives_and_nothing_is_left_running(remote: Remote) -> None:
    flow = remote.flow(run_id="silent")
    flow.add_step("s1", remotefuncs.pause, args=(remote.journal, 4), hosts=["h1"])
    paused: list = []
    killer = _when_started(remote, "start s1", lambda: paused.extend(remote.hosts.pause_link("h1")))
    started = time.monotonic()
    try:
        assert flow.run() is False
        took = time.monotonic() - started
    finally:
        killer.join()
        remote.hosts.resume_link("h1")
    assert took < 20  # 1 s x 2 keepalives, and some room
    task = remote.tasks("silent")["s1/1/0"]
    assert task.status == "failure" and "host 'h1' lost" in task.error
    remote.no_sessions_left(timeout=30)  # the agent lets the task end, finds the link gone, and exits
    assert "end s1" in remote.lines()  # the task itself was never killed by the link's loss


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_coordinator_stops_remote_tasks_and_their_children(remote: Remote, signum: int) -> None:
    run_id = f"signal{int(signum)}"
    proc = remote.coordinator(run_id, "child_sleep", [remote.journal, 120])
    wait_for(lambda: any(line.startswith("sleep ") for line in remote.lines()), 30, "the remote sleep")
    sleeper = int(next(line for line in remote.lines() if line.startswith("sleep ")).split()[1])
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0, out
    assert gone(sleeper, 10), "the task's own child is still running"
    [run] = [r for r in seq.list_runs(remote.store) if r.run_id == run_id]
    assert run.outcome == "interrupted"
    assert remote.tasks(run_id)["s1/1/0"].status == "failure"
    assert "s2" not in {key.split("/")[0] for key in remote.tasks(run_id)}  # nothing new started
    remote.no_sessions_left()


def test_a_task_that_ends_after_its_coordinator_was_killed_is_recorded_and_skipped_by_recovery(
        remote: Remote) -> None:
    proc = remote.coordinator("killed", "pause", [remote.journal, 3])
    wait_for(lambda: any(line.startswith("start s1") for line in remote.lines()), 30, "the remote task")
    proc.kill()
    proc.communicate(timeout=10)
    again = remote.flow(name="killed", run_id="killed", run_mode=seq.RUN_RECOVER)
    again.add_step("s1", remotefuncs.pause, args=(remote.journal, 3), hosts=["h1"])
    again.add_step("s2", remotefuncs.where, args=(remote.journal, "two"), hosts=["h2"],
                   requires=[(again.step_at("s1"), OK)])
    assert again.run() is True  # waited for the agent, which recorded s1 after the coordinator died
    assert [line for line in remote.lines() if line.startswith(("start", "end"))] == ["start s1 " +
                                                                                       remote.lines()[0].split()[2],
                                                                                       "end s1"]
    tasks = remote.tasks("killed")
    assert tasks["s1/1/0"].status == "success" and tasks["s1/1/0"].host == "h1"
    assert tasks["s1/1/1"].skipped and tasks["s2/1/1"].status == "success"
    remote.no_sessions_left()


def test_stop_on_exception_lets_the_other_hosts_tasks_finish_and_records_them(remote: Remote) -> None:
    flow = remote.flow(run_id="stop")
    flow.add_step("bad", remotefuncs.fail, args=("boom",), hosts=["h1"])
    flow.add_step("slow", remotefuncs.pause, args=(remote.journal, 1.5), hosts=["h2"])
    assert flow.run() is False
    tasks = remote.tasks("stop")
    assert tasks["bad/1/0"].status == "failure" and tasks["slow/1/0"].status == "success"
    remote.no_sessions_left()


# --------------------------------------------------------------------------------------- helpers


def _when_started(remote: Remote, prefix: str, action: Any) -> Any:
    """A thread that runs ``action`` once the journal has a line starting with ``prefix``."""
    import threading

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(line.startswith(prefix) for line in remote.lines()):
                time.sleep(0.2)
                action()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------------------- this machine


def test_a_step_on_localhost_or_this_hosts_name_runs_here_with_any_store(tmp_path: Path, flow_config: Any) -> None:
    import socket

    journal = str(tmp_path / "journal")
    flow = seq.Sequent(name="local", store=str(tmp_path / "store.db"), config=flow_config())
    flow.add_step("a", remotefuncs.where, args=(journal, "a"), hosts=["localhost"])
    flow.add_step("b", remotefuncs.where, args=(journal, "b"), hosts=[socket.gethostname()])
    box = flow.add_step("box", hosts=["localhost"])
    box.add_step("c", lambda: None)  # runs here: nothing has to be sent anywhere
    assert flow.run() is True
    assert sorted(line.split("|")[2] for line in Path(journal).read_text().splitlines()) == \
        [socket.gethostname()] * 2
    tasks = {t.step: t for t in seq.run_tasks(str(tmp_path / "store.db"), flow.run_id)}
    assert tasks["a"].owner is None and tasks["a"].pid != os.getpid()  # a local process task


def test_a_remote_task_past_its_timeout_is_stopped_with_its_children_and_fails_saying_so(remote: Remote) -> None:
    flow = remote.flow(config=remote.config(shutdown_grace=1.0))
    flow.add_step("s1", remotefuncs.child_sleep, args=(remote.journal, 120), hosts=["h1"],
                  config={"timeout": 2})
    assert flow.run() is False
    sleeper = int(next(line for line in remote.lines() if line.startswith("sleep ")).split()[1])
    assert gone(sleeper, 10), "the remote task's own child survived its timeout"
    task = remote.tasks(flow.run_id)["s1/1/0"]
    assert task.status == "failure" and task.error.startswith("timed out after 2 s: stopped"), task.error
    remote.no_sessions_left()
