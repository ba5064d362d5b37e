"""What the benchmark scripts share: running one measurement in a fresh interpreter.

Each script runs itself as ``python SCRIPT _worker SPEC_JSON``; the worker prints its result as
one JSON line (with ``"ok": true``) last.  Imported by the scripts from this folder (a script's
own folder is first on sys.path); it imports only what the agent of a remote benchmark has loaded.
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Failed(Exception):
    """A worker timed out, exited badly or reported a failure."""


def worker_env() -> dict:
    """The environment of a worker: this checkout first on PYTHONPATH, no SEQUENT_CONFIG."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("SEQUENT_CONFIG", None)
    return env


def spawn(script: str, spec: dict, timeout: float, label: str = "") -> dict:
    """Run ``script``'s worker on ``spec`` in a fresh interpreter; its JSON result, or raise Failed."""
    import json
    import subprocess
    import tempfile

    label = label or str(spec)
    try:
        proc = subprocess.run([sys.executable, script, "_worker", json.dumps(spec)], capture_output=True, text=True,
                              timeout=timeout, env=worker_env(), cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        raise Failed(f"{label} timed out after {timeout:.0f} s") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise Failed(f"{label} exited with {proc.returncode}:\n{tail}")
    result = json.loads(lines[-1])
    if not result.get("ok"):
        raise Failed(f"{label} failed: {result}")
    return result


def tests_module(name: str):
    """A module of the tests folder that starts services (sshhosts, daskcluster, pgserver)."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def stop_on_term(signum, frame):
    """SIGTERM as SystemExit: the finally clauses run, so what a benchmark started is stopped."""
    raise SystemExit(128 + signum)


class ServiceBench:
    """What the benchmarks that start services of their own share: the results, the services started
    (stopped in reverse order at the end), a throwaway PostgreSQL, and the closing lines."""

    def __init__(self, args):
        self.args = args
        self.started: list = []  # (stop function, directory) of what this run started, stopped at the end
        self.results: dict = {"meta": {}, "runs": [], "rows": {}, "targets": [], "failures": []}

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def begin(self, what: str, **meta: object) -> None:
        """The opening lines (interpreter, machine, load) and the run's meta data (``meta`` added)."""
        import platform

        a = self.args
        self.say(f"sequent {what} benchmark: Python {platform.python_version()} on {platform.platform()}, "
                 f"{os.cpu_count()} CPUs")
        self.say(f"Load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        self.results["meta"] = {"python": platform.python_version(), "platform": platform.platform(),
                                "cpus": os.cpu_count(), "n": a.n, "repeat": a.repeat,
                                "loadavg_start": os.getloadavg(),
                                "logging": "WARNING, no console (per-task INFO logging off)", **meta}

    def target(self, name: str, value: float, limit: float, unit: str, *, width: int = 52,
               below: bool = False) -> None:
        """Record and print one target: PASS when ``value`` <= ``limit`` (< with ``below``)."""
        passed = value < limit if below else value <= limit
        verdict = "PASS" if passed else "FAIL"
        self.results["targets"].append({"target": name, "value": value, "limit": limit, "result": verdict})
        self.say(f"  {verdict}  {name:<{width}} {value:.2f}{unit} (goal {'<' if below else '<='} {limit:g}{unit})")

    def store(self) -> str:
        """The PostgreSQL URL: given (--store), or a throwaway cluster started here."""
        import tempfile
        import time

        if self.args.store:
            return self.args.store
        pgserver = tests_module("pgserver")
        why = pgserver.available()
        if why is not None:
            raise Failed(f"cannot start PostgreSQL here: {why}; give --store")
        directory = tempfile.mkdtemp(prefix="sequent-bench-pg-")
        self.started.append((pgserver.stop, directory))
        t0 = time.perf_counter()
        url = pgserver.start(directory)
        self.say(f"Started PostgreSQL in {directory} ({time.perf_counter() - t0:.1f} s)")
        return url

    def stop_started(self) -> None:
        import shutil

        while self.started:
            stop, directory = self.started.pop()
            try:
                stop(directory)
            except Exception as exc:  # report, and go on stopping the rest
                print(f"could not stop what runs in {directory}: {exc}", file=sys.stderr, flush=True)
            shutil.rmtree(directory, ignore_errors=True)

    def failed(self, exc: Exception) -> None:
        print(f"FAILED: {exc}", file=sys.stderr, flush=True)
        self.results["failures"].append(str(exc))

    def finish(self, code: int) -> int:
        """The closing lines (load average), the JSON file when asked for (--json); returns ``code``."""
        import json

        self.results["meta"]["loadavg_end"] = os.getloadavg()
        self.say()
        self.say(f"Load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if self.args.json:
            with open(self.args.json, "w") as fh:
                json.dump(self.results, fh, indent=2)
        return code


def worker_call(argv: list, worker) -> bool:
    """When ``argv`` asks for one measured run (``_worker SPEC``, as :func:`spawn` starts it), do it
    and print its result as the last line of JSON; False otherwise (the driver's own command line)."""
    import json

    if argv[:1] != ["_worker"]:
        return False
    print(json.dumps(worker(json.loads(argv[1]))), flush=True)
    return True


def run_bench(bench: "ServiceBench") -> int:
    """Run a driver to its end, SIGTERM included, stopping whatever it started; its exit status."""
    import signal

    signal.signal(signal.SIGTERM, stop_on_term)
    try:
        return bench.main()
    finally:
        bench.stop_started()
