#!/usr/bin/env python
"""The cost of a remote task: a chain of no-op steps on one remote host against the same chain run
locally (process tasks), both on the same PostgreSQL store.

Run from the repository root with the venv's python::

    python benchmarks/remote.py                      # starts its own sshd hosts and PostgreSQL (as root)
    python benchmarks/remote.py --repeat 5 --json out.json
    python benchmarks/remote.py --ssh-config ~/.ssh/config --host build1 --store postgresql+psycopg://...

Without ``--ssh-config`` it starts three sshd hosts on this machine with tests/sshhosts.py (they
share its file system) and uses --host (h1); without ``--store`` it starts a throwaway PostgreSQL cluster
with tests/pgserver.py; it stops both at the end.  Every run is a fresh subprocess of this file
(``_worker`` as first argument); only ``flow.run()`` is timed.  Each chain is run with N steps and
with 1 step: the 1-step run is the fixed cost of a run (the store, the launcher, and for the remote
chain the agent's start over SSH, on a connection of its own: each remote run waits until the
shared connection of the one before has closed), and ``(wall(N) - wall(1)) / (N - 1)`` the cost per
task without it.  The exit code is 0 even when the target fails (this is a report), 1 when a run failed, 2 when
the hosts or the store could not be started.  See benchmarks/README.rst.
"""

from __future__ import annotations

# The agent imports this module once, at its start (it holds the steps' function); what else the
# benchmark needs is imported where it is used, to keep that start as short as a user's module.
import os
import sys
import time

from workers import Failed  # noqa: E402 - this folder is first on sys.path
import workers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
THIS = os.path.abspath(__file__)
GOAL_MS = 10.0  # the goal: a remote task costs under 10 ms


# ----------------------------------------------------------------------------------- the work

def noop():
    pass


# ----------------------------------------------------------------------------------- the worker
# Runs in a fresh interpreter and prints one JSON object as its last line of output.

def worker(spec: dict) -> dict:
    import sequent as seq

    sys.path.insert(0, HERE)
    import remote  # this file as a module: its noop travels by reference ("remote.noop")

    import sequent.eventor.coordinator  # noqa: F401  (one-time imports are not a task's cost)
    import sequent.eventor.executors  # noqa: F401

    where, n = spec["where"], spec["n"]
    host = spec["host"] if where == "remote" else None
    config = {"task_construct": "process", "ssh_config": spec["ssh_config"],
              "LOGGING": {"logdir": spec["logdir"], "console": False, "logging_level": 30},
              "HOSTS": {spec["host"]: {"python": spec["python"],
                                       "env": {"PYTHONPATH": os.pathsep.join((HERE, REPO))}}}}
    flow = seq.Sequent(name=f"bench_remote_{where}", store=spec["store"], config=config)
    prev = None
    for i in range(n):
        prev = flow.add_step(f"s{i}", func=remote.noop, hosts=[host] if host else None,
                             requires=((prev, seq.STEP_SUCCESS),) if prev is not None else ())
    t0 = time.perf_counter()
    ok = flow.run()
    wall = time.perf_counter() - t0
    tasks = seq.run_tasks(spec["store"], flow.run_id)
    done = [t for t in tasks if t.status == "success"]
    hosts = sorted({t.host or "" for t in done})
    right_place = hosts == [host] if host else host not in hosts
    return {"ok": bool(ok) and len(done) == n and right_place, "flow_ok": bool(ok), "done": len(done),
            "hosts": hosts, "wall_s": wall, "run_id": flow.run_id}


# ----------------------------------------------------------------------------------- the driver

def spawn(spec: dict, timeout: float = 300.0) -> dict:
    """Run one worker in a fresh interpreter; its JSON result, or raise Failed."""
    return workers.spawn(THIS, spec, timeout, f"{spec['where']} chain of {spec['n']}")


class Bench(workers.ServiceBench):

    # -- what the runs need ---------------------------------------------------------------

    def hosts(self) -> tuple[str, str]:
        """(ssh_config, host): given, or three sshd hosts h1, h2, h3 started here."""
        import tempfile

        if self.args.ssh_config:
            return self.args.ssh_config, self.args.host
        sshhosts = workers.tests_module("sshhosts")
        why = sshhosts.available()
        if why is not None:
            raise Failed(f"cannot start sshd hosts here: {why}; give --ssh-config and --host")
        directory = tempfile.mkdtemp(prefix="sequent-bench-ssh-")  # short: ssh's ControlPath must stay short
        self.started.append((sshhosts.stop, directory))
        t0 = time.perf_counter()
        hosts = sshhosts.start(directory)
        self.say(f"Started sshd hosts {', '.join(hosts.names)} in {directory} ({time.perf_counter() - t0:.1f} s)")
        return hosts.config, self.args.host


    # -- measuring ------------------------------------------------------------------------

    def measure(self, ssh_config: str, host: str, store: str, logdir: str) -> None:
        import statistics

        a = self.args
        base = {"store": store, "ssh_config": ssh_config, "host": host, "python": a.python, "logdir": logdir}
        walls: dict = {(where, n): [] for where in ("local", "remote") for n in (a.n, 1)}
        from sequent.eventor.ssh import CONTROL_PERSIST

        spawn({**base, "where": "remote", "n": 1})  # warm-up, not counted: caches on both sides
        for _ in range(a.repeat):  # interleaved, so that a drift of the machine touches both alike
            for where in ("local", "remote"):
                for n in (a.n, 1):
                    if where == "remote":  # every remote run opens its own ssh connection, as a lone run does:
                        time.sleep(CONTROL_PERSIST + 0.5)  # the shared one of the run before has ended
                    r = spawn({**base, "where": where, "n": n})
                    walls[(where, n)].append(r["wall_s"])
                    self.results["runs"].append({"where": where, "n": n, "wall_s": r["wall_s"], "hosts": r["hosts"]})
        for where in ("local", "remote"):
            big, one = statistics.median(walls[(where, a.n)]), statistics.median(walls[(where, 1)])
            self.results["rows"][where] = {
                "n": a.n, "wall_s": big, "wall_1_s": one, "ms_per_task": big / a.n * 1e3,
                "ms_per_task_after_start": max(0.0, big - one) / (a.n - 1) * 1e3,
                "runs_s": walls[(where, a.n)], "runs_1_s": walls[(where, 1)]}

    def report(self, host: str) -> None:
        a, rows = self.args, self.results["rows"]
        runs = "one run" if a.repeat == 1 else f"median of {a.repeat} runs"
        self.say()
        self.say(f"A chain of {a.n} no-op steps (process tasks), {runs} each, each run a fresh subprocess;")
        self.say(f"ms/task = wall / {a.n}; after start = (wall(N) - wall(1)) / (N - 1), without the fixed cost of a")
        self.say("run (the 1-step run: store, launcher and, remote, the agent's start over SSH).")
        self.say()
        self.say(f"{'where':<18} {'N':>5} {'wall s':>8} {'ms/task':>8} {'1-step run s':>13} {'ms/task after start':>20}")
        for where, label in (("local", "local"), ("remote", f"remote host {host}")):
            r = rows[where]
            self.say(f"{label:<18} {r['n']:>5} {r['wall_s']:>8.3f} {r['ms_per_task']:>8.2f} {r['wall_1_s']:>13.3f} "
                     f"{r['ms_per_task_after_start']:>20.2f}")
        local, remote = rows["local"], rows["remote"]
        diff = remote["ms_per_task"] - local["ms_per_task"]
        diff_after = remote["ms_per_task_after_start"] - local["ms_per_task_after_start"]
        ratio = remote["ms_per_task"] / local["ms_per_task"] if local["ms_per_task"] else None
        self.results["difference"] = {"ms_per_task": diff, "ms_per_task_after_start": diff_after, "x_local": ratio}
        self.say()
        self.say(f"Remote over local, per task: +{diff:.2f} ms ({ratio:.2f}x local); after start: "
                 f"+{diff_after:.2f} ms; the agent's start: "
                 f"+{(remote['wall_1_s'] - local['wall_1_s']) * 1e3:.0f} ms once per run and host")
        self.say()
        self.say("Targets:")
        self.target(f"remote ms per task (chain of {a.n}, wall / N)", remote["ms_per_task"], GOAL_MS, " ms",
                    width=44, below=True)

    def main(self) -> int:
        import tempfile

        self.begin("remote")
        code = 0
        try:
            ssh_config, host = self.hosts()
            store = self.store()
        except Exception as exc:
            self.failed(exc)
            code = 2
        if code == 0:
            self.say(f"Store: {store.split('@')[-1] if '@' in store else store} (PostgreSQL); "
                     "logging: WARNING, no console")
            try:
                with tempfile.TemporaryDirectory(prefix="sequent-bench-remote-") as logdir:
                    self.measure(ssh_config, host, store, logdir)
                self.report(host)
            except Failed as exc:
                self.failed(exc)
                code = 1
        return self.finish(code)


def main(argv=None) -> int:
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    if workers.worker_call(argv, worker):
        return 0
    parser = argparse.ArgumentParser(description="The cost per remote task (see benchmarks/README.rst).")
    parser.add_argument("--ssh-config", help="the ssh configuration that reaches --host (default: start sshd "
                                             "hosts here with tests/sshhosts.py, as root)")
    parser.add_argument("--host", default="h1", help="the remote host (default: %(default)s)")
    parser.add_argument("--store", help="a PostgreSQL URL every host reaches (default: start a throwaway "
                                        "cluster on 127.0.0.1 with tests/pgserver.py, which only hosts on this "
                                        "machine reach)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter on the host; this folder and the repository go on its "
                             "PYTHONPATH (default: %(default)s)")
    parser.add_argument("--n", type=int, default=200, help="steps in the chain (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, metavar="R",
                        help="run each chain R times and report the median (default: %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="also write every number as JSON to PATH")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.n < 2:
        parser.error("--repeat must be at least 1 and --n at least 2")
    return workers.run_bench(Bench(args))


if __name__ == "__main__":
    sys.exit(main())
