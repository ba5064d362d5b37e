#!/usr/bin/env python
"""Benchmark the sequent engine against the cost of the work it cannot avoid.

Run from the repository root with the venv's python::

    python benchmarks/run.py            # thread N <= 10,000, process N <= 1,000, 100,000-task scale run
    python benchmarks/run.py --quick    # N <= 1,000, no scale run
    python benchmarks/run.py --smoke    # N = 10 only, few repetitions (< 30 s)
    python benchmarks/run.py --json results.json

Every measurement runs in a fresh subprocess of this same file (``_worker`` as first argument),
so each flow's peak memory is its own.  See benchmarks/README.rst for what is measured.
The exit code is 0 even when a target fails (this is a report); it is 1 when a run failed
(a flow returned False, did not run every step, or a worker crashed or timed out).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from workers import Failed  # noqa: E402 - this folder is first on sys.path
import workers  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THIS = os.path.abspath(__file__)

SHAPES = ("independent", "chain", "container", "nested")
MODES = ("thread", "process")
K = 10  # chained steps inside a container
SCALE_N = 100_000
SCALE_BUDGET = 240.0  # seconds the 100,000-task chain may be projected to take, or it is skipped


# ----------------------------------------------------------------------------------- the work

def noop():
    pass


_STAMPS: dict = {}


def stamp(i):
    start = time.perf_counter()
    _STAMPS[i] = (start, time.perf_counter())


# ----------------------------------------------------------------------------------- workers
# Each runs in a fresh interpreter and prints one JSON object as its last line of output.

def _peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def nested_split(n: int) -> tuple[int, int]:
    """(a, b) with a * b * K == n and a the divisor of n / K closest to (and at most) its square root."""
    m = max(1, n // K)
    a = max(d for d in range(1, math.isqrt(m) + 1) if m % d == 0)
    return a, m // a


def shape_detail(shape: str, n: int) -> str:
    if shape == "container":
        return f"R={n // K} x K={K}"
    if shape == "nested":
        a, b = nested_split(n)
        return f"a={a} x b={b} x K={K}"
    return ""


def _flow(mode: str, tmp: str, name: str):
    import sequent as seq

    config = {"task_construct": mode,
              "LOGGING": {"logdir": tmp, "console": False, "logging_level": 30}}
    return seq.Sequent(name=name, store=os.path.join(tmp, f"{name}.run.db"), config=config)


def _chain(parent, k: int, func=noop, kwargs_of=None):
    import sequent as seq

    prev = None
    for i in range(k):
        requires = ((prev, seq.STEP_SUCCESS),) if prev is not None else ()
        kwargs = kwargs_of(i) if kwargs_of else None
        prev = parent.add_step(f"s{i}", func=func, kwargs=kwargs or {}, requires=requires)
    return prev


def build(shape: str, mode: str, n: int, tmp: str):
    """The flow of ``shape`` with ``n`` runs of ``noop``; also the names of its container steps."""
    flow = _flow(mode, tmp, f"bench_{shape}")
    containers: set = set()
    if shape == "independent":
        for i in range(n):
            flow.add_step(f"s{i}", func=noop)
    elif shape == "chain":
        _chain(flow, n)
    elif shape == "container":
        c = flow.add_step("c", repeats=list(range(1, n // K + 1)))
        _chain(c, K)
        containers = {"c"}
    elif shape == "nested":
        a, b = nested_split(n)
        outer = flow.add_step("outer", repeats=list(range(1, a + 1)))
        inner = outer.add_step("inner", repeats=list(range(1, b + 1)))
        _chain(inner, K)
        containers = {"outer", "outer_inner"}
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return flow, containers


def worker_flow(spec: dict) -> dict:
    import sequent as seq

    shape, mode, n = spec["shape"], spec["mode"], spec["n"]
    # One-time imports are not the engine's per-step cost: load them before timing, as the floors
    # import sqlite3 before theirs. Process mode leaves SQLAlchemy to run(), which imports it only
    # after forking the task launcher (so the launcher stays small, as in a user's program).
    import sequent.eventor.coordinator  # noqa: F401
    import sequent.eventor.executors  # noqa: F401
    if mode == "thread":
        import sequent.eventor.store  # noqa: F401
    with tempfile.TemporaryDirectory(prefix="sequent-bench-") as tmp:
        t0 = time.perf_counter()
        flow, containers = build(shape, mode, n, tmp)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ok = flow.run()
        wall = time.perf_counter() - t0
        peak = _peak_mb()
        store = os.path.join(tmp, f"bench_{shape}.run.db")
        tasks = seq.run_tasks(store, flow.run_id)
        done = sum(1 for t in tasks if t.step not in containers and t.status == "success")
    return {"ok": bool(ok) and done == n, "flow_ok": bool(ok), "steps_done": done, "wall_s": wall,
            "build_s": build_s, "peak_mb": peak}


def _floor_db(tmp: str):
    import sqlite3

    db = sqlite3.connect(os.path.join(tmp, "floor.db"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, status TEXT, started REAL, ended REAL)")
    db.commit()

    def before(i):
        db.execute("INSERT INTO tasks VALUES (?, 'active', ?, NULL)", (i, time.time()))
        db.commit()

    def after(i):
        db.execute("UPDATE tasks SET status = 'success', ended = ? WHERE id = ?", (time.time(), i))
        db.commit()

    return db, before, after


def worker_floor(spec: dict) -> dict:
    kind, how, n = spec["kind"], spec["how"], spec["n"]
    with tempfile.TemporaryDirectory(prefix="sequent-floor-") as tmp:
        db, before, after = _floor_db(tmp)
        ok = True
        if kind == "thread":
            from concurrent.futures import ThreadPoolExecutor, as_completed

            with ThreadPoolExecutor() as pool:
                t0 = time.perf_counter()
                if how == "serial":
                    for i in range(n):
                        before(i)
                        pool.submit(noop).result()
                        after(i)
                else:
                    futures = {}
                    for i in range(n):
                        before(i)
                        futures[pool.submit(noop)] = i
                    for fut in as_completed(futures):
                        fut.result()
                        after(futures[fut])
                wall = time.perf_counter() - t0
        else:
            import multiprocessing

            ctx = multiprocessing.get_context("fork")
            t0 = time.perf_counter()
            if how == "serial":
                for i in range(n):
                    before(i)
                    p = ctx.Process(target=noop)
                    p.start()
                    p.join()
                    ok = ok and p.exitcode == 0
                    after(i)
            else:
                procs = []
                for i in range(n):
                    before(i)
                    p = ctx.Process(target=noop)
                    p.start()
                    procs.append(p)
                for i, p in enumerate(procs):
                    p.join()
                    ok = ok and p.exitcode == 0
                    after(i)
            wall = time.perf_counter() - t0
        rows = db.execute("SELECT count(*) FROM tasks WHERE status = 'success'").fetchone()[0]
        db.close()
    return {"ok": ok and rows == n, "wall_s": wall, "per_call_us": wall / n * 1e6, "peak_mb": _peak_mb()}


def worker_hop(spec: dict) -> dict:
    n = spec["n"]
    with tempfile.TemporaryDirectory(prefix="sequent-hop-") as tmp:
        flow = _flow("thread", tmp, "bench_hop")
        _chain(flow, n, func=stamp, kwargs_of=lambda i: {"i": i})
        ok = flow.run()
    hops = [(_STAMPS[i + 1][0] - _STAMPS[i][1]) * 1e3 for i in range(n - 1) if i in _STAMPS and i + 1 in _STAMPS]
    ok = bool(ok) and len(hops) == n - 1
    hops.sort()
    return {"ok": ok, "hops": len(hops), "median_ms": statistics.median(hops) if hops else None,
            "p95_ms": hops[min(len(hops) - 1, math.ceil(0.95 * len(hops)) - 1)] if hops else None}


WORKERS = {"flow": worker_flow, "floor": worker_floor, "hop": worker_hop}

IMPORT_CODE = ("import time\nt = time.perf_counter()\nimport {modules}\n"
               "print(time.perf_counter() - t)\n")


# ----------------------------------------------------------------------------------- driver

def spawn(spec: dict, timeout: float) -> dict:
    """Run one worker in a fresh interpreter; its JSON result, or raise Failed."""
    return workers.spawn(THIS, spec, timeout)


def measure_import(modules: str, times: int, timeout: float) -> list:
    samples = []
    for _ in range(times):
        proc = subprocess.run([sys.executable, "-c", IMPORT_CODE.format(modules=modules)], capture_output=True,
                              text=True, timeout=timeout, env=workers.worker_env(), cwd=tempfile.gettempdir())
        if proc.returncode != 0:
            raise Failed(f"import {modules} failed: {proc.stderr.strip().splitlines()[-1:]}")
        samples.append(float(proc.stdout.strip().splitlines()[-1]) * 1e3)
    return samples


def fmt_us(us: float) -> str:
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}"


def floor_key(shape: str, mode: str) -> str:
    return f"{mode}_{'all' if shape == 'independent' else 'serial'}"


class Bench:
    def __init__(self, args):
        self.args = args
        self.results: dict = {"meta": {}, "floors": {}, "rows": [], "hop": None, "import": None,
                              "targets": [], "failures": [], "phases": {}}
        self.failures: list = self.results["failures"]
        self.timeout = 60.0 if args.smoke else 900.0

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def phase(self, name: str, seconds: float) -> None:
        self.results["phases"][name] = round(seconds, 2)

    # -- floors ---------------------------------------------------------------------------

    def floors(self) -> None:
        n, reps = (100, 1) if self.args.smoke else (1000, 3)
        t0 = time.perf_counter()
        self.say(f"Floors: the same no-op, N = {n} calls, two committed SQLite WAL writes per call "
                 f"(INSERT before, UPDATE after; synchronous=NORMAL);")
        self.say(f"per call, {'median of 3 fresh subprocesses' if reps > 1 else 'one fresh subprocess'} each:")
        labels = {"thread_serial": "ThreadPoolExecutor, submit + wait, one call at a time",
                  "thread_all": "ThreadPoolExecutor, all submitted, results written as completed",
                  "process_serial": "fork Process per call, start + join, one at a time",
                  "process_all": "fork Process per call, all started, then joined"}
        for kind in MODES:
            for how in ("serial", "all"):
                key = f"{kind}_{how}"
                try:
                    samples = [spawn({"worker": "floor", "kind": kind, "how": how, "n": n}, self.timeout)["per_call_us"]
                               for _ in range(reps)]
                except Failed as exc:
                    self.fail(str(exc))
                    continue
                per_call = statistics.median(samples)
                self.results["floors"][key] = {"n": n, "runs": reps, "per_call_us": per_call, "samples_us": samples}
                spread = f" [runs {min(samples):,.0f} .. {max(samples):,.0f}]" if reps > 1 else ""
                self.say(f"  {key:<15} {fmt_us(per_call):>8} us/call   {labels[key]}{spread}")
        self.say()
        self.phase("floors", time.perf_counter() - t0)

    # -- flows ----------------------------------------------------------------------------

    HEADER = (f"{'mode':<8} {'shape':<12} {'N':>7}  {'detail':<19} {'wall s':>8} {'us/step':>9} "
              f"{'floor us':>9} {'x floor':>8} {'peak MB':>8}")

    def run_flow(self, shape: str, mode: str, n: int):
        runs = []
        try:
            for _ in range(self.args.repeat):
                runs.append(spawn({"worker": "flow", "shape": shape, "mode": mode, "n": n}, self.timeout))
        except Failed as exc:
            self.fail(str(exc))
            self.say(f"{mode:<8} {shape:<12} {n:>7}  FAILED")
            return None
        r = sorted(runs, key=lambda run: run["wall_s"])[(len(runs) - 1) // 2]  # the median run
        r = dict(r, peak_mb=max(run["peak_mb"] for run in runs))
        us = r["wall_s"] / n * 1e6
        floor = self.results["floors"].get(floor_key(shape, mode), {}).get("per_call_us")
        ratio = us / floor if floor else None
        row = {"shape": shape, "mode": mode, "n": n, "detail": shape_detail(shape, n), "wall_s": r["wall_s"],
               "us_per_step": us, "floor": floor_key(shape, mode), "floor_us": floor, "x_floor": ratio,
               "peak_mb": r["peak_mb"], "build_s": r["build_s"], "wall_runs": [run["wall_s"] for run in runs]}
        self.results["rows"].append(row)
        self.say(f"{mode:<8} {shape:<12} {n:>7}  {row['detail']:<19} {r['wall_s']:>8.3f} {fmt_us(us):>9} "
                 f"{fmt_us(floor) if floor else '-':>9} {f'{ratio:.2f}' if ratio else '-':>8} "
                 f"{r['peak_mb']:>8.1f}")
        return row

    def flows(self) -> None:
        a = self.args
        sizes = {"thread": (10,) if a.smoke else (10, 100, 1000) if a.quick else (10, 100, 1000, 10_000),
                 "process": (10,) if a.smoke else (10, 100, 1000)}
        runs = "one fresh subprocess" if a.repeat == 1 else f"median of {a.repeat} fresh subprocesses"
        self.say(f"Flows: {runs} per row; only flow.run() is timed; us/step = wall / N;")
        self.say("x floor = us/step over the floor per call (independent: all-at-once floor, others: serial);")
        self.say("peak MB = ru_maxrss of the coordinator process (process mode: tasks and launcher not counted).")
        self.say()
        self.say(self.HEADER)
        for mode in MODES:
            t0 = time.perf_counter()
            for n in sizes[mode]:
                for shape in SHAPES:
                    self.run_flow(shape, mode, n)
            self.phase(mode, time.perf_counter() - t0)

    def scale(self) -> None:
        t0 = time.perf_counter()
        self.run_flow("independent", "thread", SCALE_N)
        chain10k = self.row("chain", "thread", 10_000)
        projected = chain10k["wall_s"] * SCALE_N / 10_000 * 1.2 if chain10k else None
        if projected is not None and projected <= SCALE_BUDGET:
            self.run_flow("chain", "thread", SCALE_N)
        else:
            why = f"projected {projected:.0f} s" if projected is not None else "no 10,000 chain to project from"
            self.say(f"{'thread':<8} {'chain':<12} {SCALE_N:>7}  skipped: {why} > budget {SCALE_BUDGET:.0f} s")
        self.phase("scale", time.perf_counter() - t0)

    def row(self, shape: str, mode: str, n: int):
        for r in self.results["rows"]:
            if (r["shape"], r["mode"], r["n"]) == (shape, mode, n):
                return r
        return None

    # -- hop and import -------------------------------------------------------------------

    def hop_and_import(self) -> None:
        t0 = time.perf_counter()
        n = 50 if self.args.smoke else 200
        self.say()
        try:
            r = spawn({"worker": "hop", "n": n}, self.timeout)
            self.results["hop"] = {"chain": n, "hops": r["hops"], "median_ms": r["median_ms"], "p95_ms": r["p95_ms"]}
            self.say(f"Dependency hop (thread mode, chain of {n}; start of step i+1 minus end of step i): "
                     f"median {r['median_ms']:.3f} ms, p95 {r['p95_ms']:.3f} ms")
        except Failed as exc:
            self.fail(str(exc))
        times = 3 if self.args.smoke else 7
        try:
            base = measure_import("sqlalchemy, yaml", times, self.timeout)
            ours = measure_import("sequent", times, self.timeout)
            b, o = statistics.median(base), statistics.median(ours)
            self.results["import"] = {"runs": times, "deps_ms": b, "sequent_ms": o, "added_ms": o - b,
                                      "deps_samples": base, "sequent_samples": ours}
            self.say(f"Import (median of {times} fresh interpreters): import sqlalchemy, yaml {b:.1f} ms; "
                     f"import sequent {o:.1f} ms; sequent adds {o - b:.1f} ms")
        except (Failed, subprocess.TimeoutExpired) as exc:
            self.fail(str(exc))
        self.phase("hop+import", time.perf_counter() - t0)

    # -- targets --------------------------------------------------------------------------

    def target(self, name: str, value, limit: float, unit: str, missing: str = "") -> None:
        if value is None:
            verdict, shown = "SKIP", missing or "not measured"
        else:
            verdict, shown = ("PASS" if value <= limit else "FAIL"), f"{value:.2f}{unit} (limit {limit:g}{unit})"
        self.results["targets"].append({"target": name, "value": value, "limit": limit, "result": verdict})
        self.say(f"  {verdict}  {name:<44} {shown}")

    def targets(self) -> None:
        self.say()
        self.say("Targets (ratios from this run):")
        full = "needs the default run (not --quick/--smoke)"
        for mode, limit in (("thread", 3.0), ("process", 1.5)):
            for shape in SHAPES:
                r = self.row(shape, mode, 1000)
                self.target(f"{mode} {shape} N=1000 us/step vs floor", r["x_floor"] if r else None, limit, "x",
                            "needs N=1000 (not --smoke)")
        big, small = self.row("independent", "thread", SCALE_N), self.row("independent", "thread", 10_000)
        self.target("linear: independent time 100k / 10k", big["wall_s"] / small["wall_s"] if big and small else None,
                    11.0, "x", full)
        chain_big, chain_small = self.row("chain", "thread", SCALE_N), self.row("chain", "thread", 10_000)
        if chain_big and chain_small:
            self.target("linear: chain time 100k / 10k", chain_big["wall_s"] / chain_small["wall_s"], 11.0, "x")
        peaks = [r["peak_mb"] for r in self.results["rows"] if r["n"] == SCALE_N]
        self.target("peak memory at 100,000 tasks", max(peaks) if peaks else None, 300.0, " MB", full)
        hop = self.results["hop"]
        self.target("dependency hop median", hop["median_ms"] if hop else None, 1.0, " ms")
        imp = self.results["import"]
        self.target("import sequent adds over sqlalchemy+yaml", imp["added_ms"] if imp else None, 30.0, " ms")

    def fail(self, message: str) -> None:
        self.failures.append(message)
        print(f"FAILED: {message}", file=sys.stderr, flush=True)

    # -- main -----------------------------------------------------------------------------

    def main(self) -> int:
        a = self.args
        start = time.perf_counter()
        what = "smoke" if a.smoke else "quick" if a.quick else "full"
        import_probe = subprocess.run([sys.executable, "-c", "import sequent; print(sequent.__version__, "
                                       "sequent.__file__)"], capture_output=True, text=True, env=workers.worker_env())
        version = import_probe.stdout.strip() or "unknown"
        self.results["meta"] = {"run": what, "python": platform.python_version(), "platform": platform.platform(),
                                "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "sequent": version, "k": K, "repeat": a.repeat,
                                "logging": "per-task INFO logging off (logging_level=30 WARNING, no console)",
                                "store": "SQLite file in a fresh temp dir per run (WAL, synchronous=NORMAL)"}
        self.say(f"sequent benchmark ({what}): Python {platform.python_version()} on {platform.platform()}, "
                 f"{os.cpu_count()} CPUs; sequent {version}")
        self.say("Each step calls a module-level no-op. Store: SQLite file in a fresh temp dir per run "
                 "(WAL, durable commits).")
        self.say("Logging: per-task INFO logging is off (LOGGING logging_level=30 WARNING, console False, "
                 "log files in the temp dir).")
        self.say(f"Load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other work on the "
                 f"machine makes every number noisier)")
        self.say()
        self.floors()
        self.flows()
        if not (a.quick or a.smoke):
            self.scale()
        self.hop_and_import()
        self.targets()
        total = time.perf_counter() - start
        self.phase("total", total)
        self.results["meta"]["loadavg_end"] = os.getloadavg()
        self.say()
        self.say(f"Load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        self.say("Time taken: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.results["phases"].items()))
        if self.failures:
            self.say(f"{len(self.failures)} run(s) FAILED (see stderr)")
        if a.json:
            with open(a.json, "w") as fh:
                json.dump(self.results, fh, indent=2)
        return 1 if self.failures else 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        spec = json.loads(argv[1])
        print(json.dumps(WORKERS[spec["worker"]](spec)), flush=True)
        return 0
    parser = argparse.ArgumentParser(description="Benchmark the sequent engine (see benchmarks/README.rst).")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="N up to 1000, no 100,000-task scale run")
    size.add_argument("--smoke", action="store_true", help="N = 10 only, few repetitions (under 30 s)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--repeat", type=int, default=1, metavar="R",
                        help="run each flow R times (each in a fresh subprocess) and report the median (default 1)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return Bench(args).main()


if __name__ == "__main__":
    sys.exit(main())
