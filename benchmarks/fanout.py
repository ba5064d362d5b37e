#!/usr/bin/env python
"""The cost of a fan-out: one container repeated over N items, all at once, against N independent steps.

Run from the repository root with the venv's python::

    python benchmarks/fanout.py                 # N = 10,000, median of 3 runs per shape
    python benchmarks/fanout.py --repeat 5 --json out.json
    python benchmarks/fanout.py --n 100 --repeat 1   # a smoke run

Two flows of N no-op thread tasks each, on a SQLite file store with per-task logging off:
``fanout``, a container with ``repeats`` of N items and ``parallel_iterations: 0`` (no limit)
around one step that gets its item (``item_arg_name``), and ``independent``, N steps at the root,
each given its number as the same keyword.  Every run is a fresh subprocess of this file
(``_worker`` as first argument); the runs are interleaved; only ``flow.run()`` is timed.  The exit
code is 0 even when the target fails (this is a report), 1 when a run failed (a flow returned
False, a task did not succeed or did not get its item, a worker crashed or timed out, or the
engine does not know a config key the fan-out uses).  See benchmarks/README.rst.
"""

from __future__ import annotations

import os
import sys
import time

from workers import Failed  # noqa: E402 - this folder is first on sys.path
import workers  # noqa: E402

THIS = os.path.abspath(__file__)
SHAPES = ("independent", "fanout")
GOAL = 1.5  # the fan-out's time per task at most 1.5x the independent steps'
TIMEOUT = 600.0  # seconds one run may take

_SEEN: set = set()  # the items the steps got (thread tasks: this process)


# ----------------------------------------------------------------------------------- the work

def noop(item=None):
    _SEEN.add(item)


# ----------------------------------------------------------------------------------- the worker
# Runs in a fresh interpreter and prints one JSON object as its last line of output.

def worker(spec: dict) -> dict:
    """Build and run one flow of ``spec['shape']`` with ``spec['n']`` tasks; its numbers."""
    import resource
    import tempfile
    import warnings

    import sequent as seq
    from sequent.eventor.errors import ConfigWarning

    # an unknown key would be ignored with a warning, and the fan-out would run one item at a time
    warnings.simplefilter("error", ConfigWarning)
    import sequent.eventor.coordinator  # noqa: F401  (one-time imports are not a task's cost)
    import sequent.eventor.executors  # noqa: F401
    import sequent.eventor.store  # noqa: F401

    shape, n = spec["shape"], spec["n"]
    with tempfile.TemporaryDirectory(prefix="sequent-bench-fanout-") as tmp:
        store = os.path.join(tmp, f"bench_{shape}.run.db")
        flow = seq.Sequent(name=f"bench_{shape}", store=store,
                           config={"task_construct": "thread",
                                   "LOGGING": {"logdir": tmp, "console": False, "logging_level": 30}})
        t0 = time.perf_counter()
        if shape == "fanout":
            container = flow.add_step("c", repeats=list(range(n)), config={"parallel_iterations": 0})
            container.add_step("s", func=noop, config={"item_arg_name": "item"})
        else:
            for i in range(n):
                flow.add_step(f"s{i}", func=noop, kwargs={"item": i})
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ok = flow.run()
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        done = sum(1 for t in seq.run_tasks(store, flow.run_id) if t.step != "c" and t.status == "success")
    items = len(_SEEN) == n and _SEEN == set(range(n))
    return {"ok": bool(ok) and done == n and items, "flow_ok": bool(ok), "done": done, "items_ok": items,
            "wall_s": wall, "build_s": build_s, "peak_mb": peak}


# ----------------------------------------------------------------------------------- the driver

def spawn(spec: dict) -> dict:
    """Run one worker in a fresh interpreter; its JSON result, or raise Failed."""
    return workers.spawn(THIS, spec, TIMEOUT, f"{spec['shape']} of {spec['n']}")


class Bench(workers.ServiceBench):
    """Measures both shapes (no services to start: ServiceBench for its results and closing lines)."""

    def measure(self) -> None:
        import statistics

        a = self.args
        walls: dict = {shape: [] for shape in SHAPES}
        for _ in range(a.repeat):  # interleaved, so that a drift of the machine touches both alike
            for shape in SHAPES:
                r = spawn({"shape": shape, "n": a.n})
                walls[shape].append(r["wall_s"])
                self.results["runs"].append({"shape": shape, "n": a.n, "wall_s": r["wall_s"], "build_s": r["build_s"],
                                             "peak_mb": r["peak_mb"]})
        for shape in SHAPES:
            wall = statistics.median(walls[shape])
            self.results["rows"][shape] = {"n": a.n, "wall_s": wall, "ms_per_task": wall / a.n * 1e3,
                                           "runs_s": walls[shape]}

    def report(self) -> None:
        a, rows = self.args, self.results["rows"]
        runs = "one run" if a.repeat == 1 else f"median of {a.repeat} runs"
        self.say()
        self.say(f"N = {a.n} no-op thread tasks per flow, {runs} each, each run a fresh subprocess; ms/task = wall / N.")
        self.say("fanout: one container over N items, parallel_iterations 0, one step getting its item;")
        self.say("independent: N steps at the root, each given its number as the same keyword.")
        self.say()
        self.say(f"{'shape':<12} {'N':>7} {'wall s':>8} {'ms/task':>8}  runs s")
        for shape in SHAPES:
            r = rows[shape]
            self.say(f"{shape:<12} {r['n']:>7} {r['wall_s']:>8.3f} {r['ms_per_task']:>8.3f}  "
                     f"{' '.join(f'{w:.3f}' for w in r['runs_s'])}")
        ratio = rows["fanout"]["ms_per_task"] / rows["independent"]["ms_per_task"]
        self.results["ratio"] = ratio
        self.say()
        self.say(f"Fan-out over independent steps, per task: {ratio:.2f}x")
        self.say()
        self.say("Targets:")
        self.target(f"fan-out ms per task vs independent (N={a.n})", ratio, GOAL, "x", width=44)

    def main(self) -> int:
        self.begin("fan-out", store="SQLite file in a fresh temp dir per run")
        self.say("Store: SQLite file in a fresh temp dir per run; logging: WARNING, no console "
                 "(per-task INFO logging is off)")
        try:
            self.measure()
        except Failed as exc:
            self.failed(exc)
            return self.finish(1)
        self.report()
        return self.finish(0)


def main(argv=None) -> int:
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    if workers.worker_call(argv, worker):
        return 0
    parser = argparse.ArgumentParser(description="A fan-out against as many independent steps "
                                                 "(see benchmarks/README.rst).")
    parser.add_argument("--n", type=int, default=10_000, help="tasks in each flow (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, metavar="R",
                        help="run each flow R times and report the median (default: %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="also write every number as JSON to PATH")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.n < 1:
        parser.error("--repeat and --n must be at least 1")
    return workers.run_bench(Bench(args))


if __name__ == "__main__":
    sys.exit(main())
