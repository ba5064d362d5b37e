#!/usr/bin/env python
"""The cost of a task on Dask: a chain of no-op steps run by sequent with ``task_construct: 'dask'``
against Dask's own submit-and-wait of the same no-op, on the same cluster, in the same run.

Run from the repository root with the venv's python::

    python benchmarks/dasktasks.py                        # starts its own Dask cluster and PostgreSQL
    python benchmarks/dasktasks.py --repeat 5 --json out.json
    python benchmarks/dasktasks.py --address tcp://scheduler:8786 --store postgresql+psycopg://...

Without ``--address`` it starts a scheduler and three workers w1, w2, w3 on this machine with
tests/daskcluster.py (their PYTHONPATH holds the repository, so they import this file as
``benchmarks.dasktasks``); without ``--store`` it starts a throwaway PostgreSQL cluster with
tests/pgserver.py; it stops both at the end.  Every measured run is a fresh subprocess of this file
(``_worker`` as first argument).  Measured, for a chain of N (``--n``, default 200) tasks:

- ``dask``: ``client.submit(noop, pure=False).result()`` N times in a row (the client's connection
  is made before the clock starts);
- ``sequent``: ``flow.run()`` of a flow with N no-op steps each requiring the one before,
  ``task_construct: 'dask'``, the store on PostgreSQL; ms per task is wall / N, and
  ``(wall(N) - wall(1)) / (N - 1)`` without the fixed cost of a run (the 1-step run: the store,
  the client's connection, the scheduler's settings read).

For comparison (``--no-compare`` skips them), to tell where the time goes: ``dask-fork``, Dask's own
chain of a task that forks a child which exits at once and waits for it (what a process of its own
per task costs on a worker), ``dask-1ms``, Dask's own chain with its client batching messages at
1 ms as sequent's client does (Dask's default is 10 ms), and ``sequent-thread``, the same flow with thread tasks on the same
store (the coordinator's and the store's own cost per task, no Dask).  Before measuring, every worker
imports this module, as Dask's own run makes it do: sequent unpickles a step's function in the
task's process, so a worker that never imported the module would import it again for every task.

The target: sequent's wall / N at most 2x Dask's own.  The exit code is 0 even when the target
fails (this is a report), 1 when a run failed, 2 when the cluster or the store could not be
started.  See benchmarks/README.rst.
"""

from __future__ import annotations

# Dask workers import this module (``benchmarks.dasktasks``) to find ``noop``: only os, sys and time here.
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
THIS = os.path.abspath(__file__)
GOAL_X = 2.0  # the goal: a task costs at most 2x Dask's own submit-and-wait
MODULE = "benchmarks.dasktasks"  # this file as the workers import it (the repository is on their PYTHONPATH)

if __package__:  # imported by the Dask workers as benchmarks.dasktasks (workers imports only os and sys)
    from benchmarks import workers
else:  # run as a script: this folder is first on sys.path
    import workers  # noqa: E402
Failed = workers.Failed


# ----------------------------------------------------------------------------------- the work

def noop():
    pass


def fork_noop():
    """For comparison: what a task's own process costs on a worker (fork, exit at once, wait)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child ends here
        os._exit(0)
    os.waitpid(pid, 0)


# ----------------------------------------------------------------------------------- the worker
# Runs in a fresh interpreter and prints one JSON object as its last line of output.

def _module():
    """This file imported as the Dask workers import it, so that its noop travels by reference."""
    import importlib

    return importlib.import_module(MODULE)


def worker(spec: dict) -> dict:
    if spec["what"].startswith("dask"):
        return dask_chain(spec)
    return sequent_chain(spec)


def dask_chain(spec: dict) -> dict:
    """Dask's own: submit the no-op (or, "dask-fork", fork_noop) and wait for its result, N times in a row."""
    import distributed

    bench = _module()
    n = spec["n"]
    func = bench.fork_noop if spec["what"] == "dask-fork" else bench.noop
    t0 = time.perf_counter()
    client = distributed.Client(spec["address"], timeout=10)
    connect = time.perf_counter() - t0
    if spec["what"] == "dask-1ms":  # the client batching sequent's own client uses
        from sequent.eventor.executors.dask import CLIENT_BATCH_INTERVAL

        client.scheduler_comm.interval = CLIENT_BATCH_INTERVAL
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            client.submit(func, pure=False).result()
        wall = time.perf_counter() - t0
    finally:
        client.close()
    return {"ok": True, "wall_s": wall, "connect_s": connect}


def sequent_chain(spec: dict) -> dict:
    """sequent: a chain of N no-op steps with task_construct 'dask' (or, "sequent-thread", 'thread': the
    coordinator's own cost with the same store, no Dask); only flow.run() is timed."""
    import sequent as seq

    __import__("distributed")  # one-time imports are not a task's cost
    import sequent.eventor.coordinator  # noqa: F401
    import sequent.eventor.executors  # noqa: F401
    import sequent.eventor.executors.dask  # noqa: F401

    bench = _module()
    n = spec["n"]
    construct = "thread" if spec["what"] == "sequent-thread" else "dask"
    config = {"task_construct": construct, "DASK": {"address": spec["address"]},
              "LOGGING": {"logdir": spec["logdir"], "console": False, "logging_level": 30}}
    flow = seq.Sequent(name=f"bench_dask_{construct}", store=spec["store"], config=config)
    prev = None
    for i in range(n):
        prev = flow.add_step(f"s{i}", func=bench.noop,
                             requires=((prev, seq.STEP_SUCCESS),) if prev is not None else ())
    t0 = time.perf_counter()
    ok = flow.run()
    wall = time.perf_counter() - t0
    tasks = seq.run_tasks(spec["store"], flow.run_id)
    done = [t for t in tasks if t.status == "success"]
    workers_used = sorted({t.host or "" for t in done})
    placed = "" not in workers_used if construct == "dask" else True  # a Dask task names its worker
    return {"ok": bool(ok) and len(done) == n and placed, "flow_ok": bool(ok), "done": len(done),
            "workers": workers_used, "wall_s": wall, "run_id": flow.run_id}


# ----------------------------------------------------------------------------------- the driver

def spawn(spec: dict, timeout: float = 300.0) -> dict:
    """Run one worker in a fresh interpreter; its JSON result, or raise Failed."""
    return workers.spawn(THIS, spec, timeout, f"{spec['what']} chain of {spec['n']}")


class Bench(workers.ServiceBench):

    # -- what the runs need ---------------------------------------------------------------

    def cluster(self) -> str:
        """The scheduler's address: given, or a scheduler and workers w1, w2, w3 started here."""
        import tempfile

        if self.args.address:
            return self.args.address
        daskcluster = workers.tests_module("daskcluster")
        why = daskcluster.available()
        if why is not None:
            raise Failed(f"cannot start a Dask cluster here: {why}; give --address")
        directory = tempfile.mkdtemp(prefix="sequent-bench-dask-")
        self.started.append((daskcluster.stop, directory))
        t0 = time.perf_counter()
        cluster = daskcluster.start(directory)
        self.say(f"Started a Dask scheduler at {cluster.address} and workers {', '.join(cluster.names)} in "
                 f"{directory} ({time.perf_counter() - t0:.1f} s)")
        return cluster.address


    def prepare_workers(self, address: str) -> list:
        """Import this module in every worker process, and return the workers' names.

        Dask's own run unpickles the no-op in the worker process (its module is imported there
        once), while sequent unpickles it in each task's process, forked from the worker: with the
        module imported in the worker beforehand, both sides start alike, whichever ran first."""
        import distributed

        def load(name: str) -> None:  # sent by value (a function of the script); returns no module
            import importlib

            importlib.import_module(name)

        client = distributed.Client(address, timeout=10)
        try:
            client.run(load, MODULE)
            return sorted(str(w.get("name")) for w in client.scheduler_info()["workers"].values())
        finally:
            client.close()

    # -- measuring ------------------------------------------------------------------------

    def measure(self, address: str, store: str, logdir: str) -> None:
        import statistics

        a = self.args
        base = {"address": address, "store": store, "logdir": logdir}
        kinds = [("dask", a.n), ("sequent", a.n), ("sequent", 1)]
        if not a.no_compare:
            kinds += [("dask-fork", a.n), ("dask-1ms", a.n), ("sequent-thread", a.n), ("sequent-thread", 1)]
        walls: dict = {kind: [] for kind in kinds}
        connects: list = []
        spawn({**base, "what": "dask", "n": a.n})  # warm-up, not counted: caches on every side
        spawn({**base, "what": "sequent", "n": 1})
        for _ in range(a.repeat):  # interleaved, so that a drift of the machine touches both alike
            for what, n in kinds:
                r = spawn({**base, "what": what, "n": n})
                walls[(what, n)].append(r["wall_s"])
                if what == "dask":
                    connects.append(r["connect_s"])
                self.results["runs"].append({"what": what, "n": n, "wall_s": r["wall_s"],
                                             "workers": r.get("workers")})
        for what, n in kinds:
            if n == 1:
                continue
            wall = statistics.median(walls[(what, n)])
            row = {"n": n, "wall_s": wall, "ms_per_task": wall / n * 1e3, "runs_s": walls[(what, n)]}
            if what == "dask":
                row["connect_s"] = statistics.median(connects)
            if what.startswith("sequent"):
                one = statistics.median(walls[(what, 1)])
                row.update({"wall_1_s": one, "ms_per_task_after_start": max(0.0, wall - one) / (n - 1) * 1e3,
                            "runs_1_s": walls[(what, 1)]})
            self.results["rows"][what] = row

    def report(self) -> None:
        a, rows = self.args, self.results["rows"]
        runs = "one run" if a.repeat == 1 else f"median of {a.repeat} runs"
        dask, sq = rows["dask"], rows["sequent"]
        self.say()
        self.say(f"A chain of {a.n} no-op tasks on the same Dask cluster, {runs} each, each run a fresh subprocess;")
        self.say(f"ms/task = wall / {a.n}; after start = (wall(N) - wall(1)) / (N - 1), without the fixed cost of a "
                 f"run (the 1-step run).")
        self.say()
        self.say(f"{'what':<50} {'N':>5} {'wall s':>8} {'ms/task':>8} {'1-step run s':>13} "
                 f"{'ms/task after start':>20}")
        labels = [("dask", "dask: submit(noop).result()"),
                  ("sequent", "sequent: task_construct 'dask', PostgreSQL")]
        if "dask-fork" in rows:
            labels += [("dask-fork", "for comparison: dask, a task that forks once"),
                       ("dask-1ms", "for comparison: dask, client batching at 1 ms"),
                       ("sequent-thread", "for comparison: sequent thread tasks, same store")]
        for what, label in labels:
            r = rows[what]
            one = f"{r['wall_1_s']:>13.3f} {r['ms_per_task_after_start']:>20.2f}" if "wall_1_s" in r else \
                f"{'':>13} {'':>20}"
            self.say(f"{label:<50} {r['n']:>5} {r['wall_s']:>8.3f} {r['ms_per_task']:>8.2f} {one}")
        ratio = sq["ms_per_task"] / dask["ms_per_task"]
        ratio_after = sq["ms_per_task_after_start"] / dask["ms_per_task"]
        self.results["ratio"] = {"x_dask": ratio, "x_dask_after_start": ratio_after}
        self.say()
        self.say(f"sequent over Dask's own, per task: {ratio:.2f}x (+{sq['ms_per_task'] - dask['ms_per_task']:.2f} ms); "
                 f"after start: {ratio_after:.2f}x (+{sq['ms_per_task_after_start'] - dask['ms_per_task']:.2f} ms)")
        self.say(f"Dask's client connection: {dask['connect_s'] * 1e3:.0f} ms once per run (not in its wall)")
        if "dask-fork" in rows:
            self.say(f"A fork on the worker adds {rows['dask-fork']['ms_per_task'] - dask['ms_per_task']:.2f} ms to a "
                     f"Dask task; the coordinator and the store cost "
                     f"{rows['sequent-thread']['ms_per_task_after_start']:.2f} ms per thread task after start")
        self.say()
        self.say("Targets:")
        self.target(f"sequent ms per task / Dask's (chain of {a.n}, wall / N)", ratio, GOAL_X, "x")

    def main(self) -> int:
        import tempfile

        self.begin("Dask")
        code = 0
        try:
            address = self.cluster()
            store = self.store()
            names = self.prepare_workers(address)
        except Exception as exc:
            self.failed(exc)
            code = 2
        if code == 0:
            import dask
            import distributed

            self.results["meta"].update({"dask": dask.__version__, "distributed": distributed.__version__,
                                         "workers": names})
            self.say(f"Dask {distributed.__version__}, workers {', '.join(names)}; store: "
                     f"{store.split('@')[-1] if '@' in store else store} (PostgreSQL); logging: WARNING, no console")
            try:
                with tempfile.TemporaryDirectory(prefix="sequent-bench-dask-logs-") as logdir:
                    self.measure(address, store, logdir)
                self.report()
            except Failed as exc:
                self.failed(exc)
                code = 1
        return self.finish(code)


def main(argv=None) -> int:
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    if workers.worker_call(argv, worker):
        return 0
    parser = argparse.ArgumentParser(description="The cost per task on Dask (see benchmarks/README.rst).")
    parser.add_argument("--address", help="a Dask scheduler's address whose workers import this repository "
                                          "(default: start a scheduler and workers w1, w2, w3 here with "
                                          "tests/daskcluster.py)")
    parser.add_argument("--store", help="a PostgreSQL URL the workers reach (default: start a throwaway cluster "
                                        "on 127.0.0.1 with tests/pgserver.py, which only workers on this "
                                        "machine reach)")
    parser.add_argument("--n", type=int, default=200, help="tasks in the chain (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, metavar="R",
                        help="run each chain R times and report the median (default: %(default)s)")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the rows for comparison (a Dask task that forks, sequent thread tasks)")
    parser.add_argument("--json", metavar="PATH", help="also write every number as JSON to PATH")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.n < 2:
        parser.error("--repeat must be at least 1 and --n at least 2")
    return workers.run_bench(Bench(args))


if __name__ == "__main__":
    sys.exit(main())
