"""What the tests of tasks run elsewhere (SSH hosts, Dask workers) share: a test's store, journal
and flows, waiting for something to happen, and a coordinator in a process of its own.

The step functions are in tests/remotefuncs.py; the hosts and workers share this machine's
files, so the journal the steps write is read here directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import sequent as seq
from procs import is_alive

TESTS = str(Path(__file__).resolve().parent)


class Flows:
    """A test's store, journal and configuration for flows whose tasks run elsewhere.

    Subclasses say how to reach where they run: :meth:`config`, and the two names the
    coordinator of :meth:`coordinator` puts its steps on.
    """

    name = "elsewhere"
    first, second = "", ""  # where coordinator() puts s1 and s2
    second_func = "where"  # the remotefuncs function s2 runs

    def __init__(self, store: str, tmp_path: Path):
        self.store = store
        self.tmp = tmp_path
        self.journal = str(tmp_path / "journal")

    def config(self, **extra: Any) -> dict:
        return {"shutdown_grace": 2.0, "agent_wait": 30,
                "LOGGING": {"logdir": str(self.tmp / "logs"), "console": False}, **extra}

    def flow(self, name: str = "", **kwargs: Any) -> seq.Sequent:
        config = kwargs.pop("config", None) or self.config()
        return seq.Sequent(name=name or self.name, store=self.store, config=config, **kwargs)

    def lines(self) -> list[str]:
        return Path(self.journal).read_text().splitlines() if os.path.exists(self.journal) else []

    def tasks(self, run_id: str) -> dict[str, Any]:
        """The run's tasks by ``step/sequence/recovery``."""
        return {f"{t.step}/{t.sequence}/{t.recovery}": t for t in seq.run_tasks(self.store, run_id)}

    def coordinator(self, run_id: str, func: str, args: list) -> subprocess.Popen:
        """A coordinator in a process of its own: s1 (remotefuncs.<func>) on the first place, then s2
        on the second, with this test's store and configuration; the run's name is its run_id."""
        script = textwrap.dedent(f"""
            import json, sys
            sys.path.insert(0, {TESTS!r})
            import remotefuncs
            import sequent as seq
            flow = seq.Sequent(name={run_id!r}, store={self.store!r}, config=json.loads(sys.argv[1]),
                               run_id={run_id!r})
            s1 = flow.add_step("s1", remotefuncs.{func}, args={args!r}, hosts=[{self.first!r}])
            flow.add_step("s2", remotefuncs.{self.second_func}, args=({self.journal!r}, "two"),
                          hosts=[{self.second!r}], requires=[(s1, seq.STEP_SUCCESS)])
            sys.exit(0 if flow.run() else 1)
        """)
        return subprocess.Popen([sys.executable, "-c", script, json.dumps(self.config())], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Return once ``predicate()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def gone(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` ended (a zombie has) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
