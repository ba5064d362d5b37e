#!/usr/bin/env python
"""Inject faults into real runs, recover them, and count what went wrong.

Run from the repository root with the venv's python, as root for every kind::

    python benchmarks/faults.py                      # every kind, the default counts (about 7 minutes on 2 cores)
    python benchmarks/faults.py --quick              # two faults per kind (under a minute)
    python benchmarks/faults.py --kinds sigkill,pg-restart --count 10 --seed 7 --json out.json

Per fault: a flow runs in a fresh coordinator process (this same file, ``_flow`` as first
argument) whose steps journal ``start``/``done`` lines with their pid; the fault is injected at
a seeded moment; the run is then recovered (``RUN_RECOVER`` with its run_id) until it succeeds,
at most MAX_RECOVERIES times; the journal and the store are then checked.  See
benchmarks/README.rst.  Exit code: 0 when every must-be-zero column is 0, 1 when one is not,
2 when the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()

KINDS = ("sigkill", "sigterm", "programs", "disk-full", "db-locked", "pg-restart")
DEFAULT_COUNTS = {"sigkill": 100, "sigterm": 100, "programs": 20, "disk-full": 20, "db-locked": 6,
                  "pg-restart": 20}
QUICK_COUNT = 2
DESCRIPTIONS = {
    "sigkill": "coordinator SIGKILLed",
    "sigterm": "coordinator SIGTERMed",
    "programs": "steps run programs (sleep); coordinator SIGKILLed or SIGTERMed",
    "disk-full": "the file system of the store and logs fills up (tmpfs with a size limit)",
    "db-locked": "another connection holds the SQLite store's write lock past busy_timeout",
    "pg-restart": "the PostgreSQL server restarts (fast) under the run",
}
#: The columns that must be 0; the others say how a fault surfaced.
ZERO_COLUMNS = ("successes_rerun", "steps_lost", "unfinishable", "orphans", "hangs")

MARK_VAR = "SEQUENT_FAULTS_MARK"   # set in every coordinator's environment: its processes inherit it
STEP_SLEEP = 0.03                  # seconds each step works
PROGRAM_STEP_SLEEP = 0.1           # ... in the programs kind, where faults hit steps at work
SHUTDOWN_GRACE = 2.0               # the flows' shutdown_grace
MAX_RECOVERIES = 4                 # recoveries tried before a run counts as unfinishable
ORPHAN_GRACE = 7.0                 # seconds a dead coordinator's processes get to end (launcher: 5 s)
RUN_DEADLINE = 60.0                # seconds a coordinator may take before it counts as hung
FAULT_DEADLINE = 30.0              # seconds after a fault the faulted coordinator may take to end
BUSY_TIMEOUT = 1.0                 # busy_timeout given to the flows, when sequent knows the key
SQLITE_BUSY_DEFAULT = 10.0         # the store's busy timeout when it does not
SMALL_FS_SIZE = "16m"              # the tmpfs of the disk-full kind
CONTAINERS = {"c", "c2"}
PROCESSING_TASKS = 17              # of the flow: 3 + 3 x 3 + 2 x 2 + 1

# exit codes of the _flow child
EXIT_OK, EXIT_FALSE, EXIT_SEQUENT_ERROR, EXIT_RAW_ERROR = 0, 1, 3, 4


# ----------------------------------------------------------------------------------- the flow (child)

def _note(path: str, line: str) -> None:
    """Append one line in one write (O_APPEND): lines of concurrent tasks never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def flow_main(spec: dict) -> int:
    """Run or recover the fault flow; the exit code says how run() ended (EXIT_*)."""
    sys.path.insert(0, str(REPO))
    import sequent as seq

    journal, sleep, programs = spec["journal"], float(spec["sleep"]), bool(spec["programs"])

    def work() -> None:
        name, sequence = os.environ["SEQUENT_STEP_NAME"], os.environ["SEQUENT_STEP_SEQUENCE"]
        attempt = os.environ["SEQUENT_STEP_RECOVERY"]
        _note(journal, f"start {name} {sequence} {attempt} {os.getpid()} {time.time():.6f}")
        if programs:  # a helper program kept running while the step works, and the work a program
            helper = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)
            try:
                subprocess.run(["sleep", str(sleep)], check=True, stdin=subprocess.DEVNULL)
            finally:
                helper.terminate()
                helper.wait()
        else:
            time.sleep(sleep)
        _note(journal, f"done {name} {sequence} {attempt} {os.getpid()}")

    config: dict[str, Any] = {"task_construct": spec["construct"], "shutdown_grace": SHUTDOWN_GRACE,
                              "LOGGING": {"logdir": spec["logdir"], "console": False}}
    if spec.get("busy_timeout") is not None:
        config["busy_timeout"] = spec["busy_timeout"]
    ok = seq.STEP_SUCCESS
    try:
        flow = seq.Sequent(name="faults", store=spec["store"], config=config, run_id=spec["run_id"],
                           run_mode=seq.RUN_RECOVER if spec["mode"] == "recover" else seq.RUN_RESTART)
        r1 = flow.add_step("r1", func=work)
        r2 = flow.add_step("r2", func=work, requires=((r1, ok),))
        r3 = flow.add_step("r3", func=work, requires=((r2, ok),))
        c = flow.add_step("c", repeats=[1, 2, 3], requires=((r3, ok),))
        p1 = c.add_step("p1", func=work)
        p2 = c.add_step("p2", func=work)
        c.add_step("d", func=work, requires=((p1, ok), (p2, ok)))
        c2 = flow.add_step("c2", repeats=[1, 2], requires=((c, ok),))
        q1 = c2.add_step("q1", func=work)
        c2.add_step("q2", func=work, requires=((q1, ok),))
        flow.add_step("z", func=work, requires=((c2, ok),))
        return EXIT_OK if flow.run() else EXIT_FALSE
    except seq.SequentError as exc:
        print(f"SequentError: {' '.join(str(exc).split())[:300]}", file=sys.stderr, flush=True)
        return EXIT_SEQUENT_ERROR
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: B036 - what the benchmark counts as a raw error
        traceback.print_exc()
        print(f"RAW-ERROR: {type(exc).__module__}.{type(exc).__qualname__}: {' '.join(str(exc).split())[:300]}",
              file=sys.stderr, flush=True)
        return EXIT_RAW_ERROR


# ----------------------------------------------------------------------------------- processes

def _proc_status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    except OSError:
        return {}


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:80]
    except OSError:
        return "?"


def marked_alive(marker: str) -> dict[int, str]:
    """Live (not zombie) processes whose environment carries MARK_VAR=marker: pid -> command line."""
    needle = f"{MARK_VAR}={marker}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle + b"\0" not in env + b"\0":
            continue
        state = _proc_status(int(entry)).get("State", "X")[:1]
        if state not in ("Z", "X"):
            found[int(entry)] = _cmdline(int(entry))
    return found


def become_subreaper() -> bool:
    """Orphans of the flows become our children (and are reaped here) instead of init's."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


class Reaper:
    """Reaps the zombies adopted as subreaper, leaving the children that a Popen still waits for."""

    def __init__(self) -> None:
        self.tracked: set[int] = set()

    def reap(self) -> None:
        me = str(os.getpid())
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in self.tracked:
                continue
            status = _proc_status(int(entry))
            if status.get("PPid", "").strip() == me and status.get("State", "")[:1] == "Z":
                try:
                    os.waitpid(int(entry), os.WNOHANG)
                except ChildProcessError:
                    pass


# ----------------------------------------------------------------------------------- reading a run

@dataclass
class JournalLine:
    kind: str
    step: str
    sequence: str
    attempt: int
    pid: int
    time: float = 0.0


def read_journal(path: Path) -> list[JournalLine]:
    if not path.exists():
        return []
    found = []
    for text in path.read_text().splitlines():
        f = text.split()
        if len(f) >= 5 and f[0] in ("start", "done"):
            found.append(JournalLine(f[0], f[1], f[2], int(f[3]), int(f[4]), float(f[5]) if len(f) > 5 else 0.0))
    return found


def open_steps(journal: Path) -> set[tuple]:
    """(step, sequence, attempt) of the steps that started and are not done yet."""
    lines = read_journal(journal)
    done = {(line.step, line.sequence, line.attempt) for line in lines if line.kind == "done"}
    return {(line.step, line.sequence, line.attempt) for line in lines if line.kind == "start"} - done


def read_run(store: str, run_id: str) -> tuple[Optional[Any], list[Any]]:
    """(RunInfo or None, its task rows); (None, []) when the store does not hold the run."""
    import sequent as seq

    if "://" not in store and not os.path.exists(store):
        return None, []
    try:
        runs = [r for r in seq.list_runs(store) if r.run_id == run_id]
        return (runs[0], seq.run_tasks(store, run_id)) if runs else (None, [])
    except Exception as exc:  # noqa: BLE001 - a store that cannot be read holds no finished run
        print(f"faults: cannot read run {run_id} from {store}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None, []


# ----------------------------------------------------------------------------------- results

@dataclass
class Tally:
    """The counts of one kind of fault."""

    kind: str
    constructs: str = ""
    faults: int = 0             # injected while the coordinator ran
    missed: int = 0             # the run had ended before its moment
    successes_rerun: int = 0    # start lines of a step already recorded as a success
    steps_lost: int = 0         # steps never done, or recorded done without finishing
    unfinishable: int = 0       # runs not successful after MAX_RECOVERIES recoveries
    orphans: int = 0            # processes of a coordinator alive ORPHAN_GRACE s after it ended
    hangs: int = 0              # coordinators still running at their deadline
    raw_errors: int = 0         # coordinators that ended with an exception other than SequentError
    left_running: int = 0       # runs still marked running after their coordinator ended by itself
    recoveries: int = 0         # recoveries run in all
    seconds: float = 0.0
    skipped: Optional[str] = None
    notes: list = field(default_factory=list)

    def note(self, text: str, limit: int = 8) -> None:
        if len(self.notes) < limit:
            self.notes.append(text)


@dataclass
class Reference:
    duration: float   # seconds from starting the coordinator to its end
    first: float      # seconds from starting it to its first task's start
    keys: frozenset   # (step, sequence) of every processing task


# ----------------------------------------------------------------------------------- the benchmark

class Failed(Exception):
    """A kind of fault cannot be injected here (it is reported as skipped)."""


class Broken(Exception):
    """The benchmark cannot go on: a run without any fault failed."""


class Coordinator:
    """One _flow child: a coordinator in a session of its own, its output in files."""

    def __init__(self, bench: "Bench", spec: dict, directory: Path, label: str):
        self.bench, self.spec, self.label = bench, spec, label
        self.marker = f"{os.getpid()}-{label}-{os.urandom(3).hex()}"
        env = {**os.environ, "PYTHONPATH": str(REPO), MARK_VAR: self.marker}
        env.pop("SEQUENT_CONFIG", None)
        self.err_path = directory / f"{label}.stderr"
        with open(directory / f"{label}.stdout", "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, str(THIS), "_flow", json.dumps(spec)], env=env,
                                         cwd=directory, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         start_new_session=True)
        bench.reaper.tracked.add(self.proc.pid)
        bench.active.add(self)
        self.started = time.monotonic()

    def wait(self, timeout: float) -> bool:
        """Wait for the end; False (and the coordinator's session killed) if it hung."""
        try:
            self.proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        self.bench.reaper.tracked.discard(self.proc.pid)
        self.bench.active.discard(self)
        return True

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.bench.reaper.tracked.discard(self.proc.pid)
        self.bench.active.discard(self)
        kill_marked(self.marker, self.bench.reaper)

    def stderr_tail(self) -> str:
        """The error the coordinator ended with: its RAW-ERROR or SequentError line, else its last line."""
        try:
            lines = self.err_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        told = [line for line in lines if line.startswith(("RAW-ERROR:", "SequentError:"))]
        return (told or lines or [""])[-1][:240]

    def settle(self, tally: Tally, what: str) -> None:
        """Count and kill what of this coordinator outlived it by ORPHAN_GRACE seconds."""
        deadline = time.monotonic() + ORPHAN_GRACE
        while True:
            self.bench.reaper.reap()
            alive = marked_alive(self.marker)
            if not alive or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if alive:
            tally.orphans += len(alive)
            tally.note(f"{what}: {len(alive)} process(es) alive {ORPHAN_GRACE:.0f} s after the coordinator "
                       f"ended: " + "; ".join(f"{pid} {cmd!r}" for pid, cmd in sorted(alive.items())[:4]))
        kill_marked(self.marker, self.bench.reaper)


def kill_marked(marker: str, reaper: Reaper) -> None:
    """SIGKILL every live process carrying the marker, and wait until they are gone."""
    deadline = time.monotonic() + 10
    while True:
        alive = marked_alive(marker)
        if not alive or time.monotonic() >= deadline:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
        reaper.reap()


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.reaper = Reaper()
        self.active: set[Coordinator] = set()
        self.work = Path(tempfile.mkdtemp(prefix="sequent-faults-"))
        self.references: dict[tuple, Reference] = {}
        self.pg_dir: Optional[Path] = None
        self.pg_url: Optional[str] = None
        self.small_fs: Optional[Path] = None
        self.busy = self._busy_setting()

    @staticmethod
    def _busy_setting() -> tuple[Optional[float], float]:
        """(busy_timeout to configure, or None when sequent has no such key; the timeout in force)."""
        sys.path.insert(0, str(REPO))
        from sequent.eventor import config

        if "busy_timeout" in config.DEFAULTS:
            return BUSY_TIMEOUT, BUSY_TIMEOUT
        return None, SQLITE_BUSY_DEFAULT

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    # -- set-up of the kinds ----------------------------------------------------------------

    def pg_store(self) -> str:
        """A database of its own in a cluster of our own (restarted by the pg-restart faults)."""
        if self.pg_url is None:
            sys.path.insert(0, str(REPO / "tests"))
            import pgserver

            why = pgserver.available()
            if why:
                raise Failed(f"needs a PostgreSQL server: {why}")
            self.pg_dir = Path(tempfile.mkdtemp(prefix="sequent-faults-pg-"))
            try:
                self.pg_url = pgserver.start(self.pg_dir)
            except pgserver.PgServerError as exc:
                raise Failed(f"could not start PostgreSQL: {exc}") from None
        return self.pg_url

    def pg_restart(self) -> None:
        import pgserver

        pgserver.restart(self.pg_dir)

    def mount_small_fs(self) -> Path:
        if self.small_fs is None:
            if os.geteuid() != 0:
                raise Failed("needs root, to mount a tmpfs with a size limit")
            path = self.work / "small"
            path.mkdir()
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS_SIZE},mode=0755", "tmpfs",
                                   str(path)], capture_output=True, text=True, timeout=30)
            if done.returncode != 0:
                raise Failed(f"mount tmpfs failed: {done.stderr.strip()}")
            self.small_fs = path
        return self.small_fs

    def cleanup(self) -> None:
        """Stop whatever is left: coordinators and their processes, the file system, the cluster."""
        for coord in list(self.active):
            coord.kill()
        if self.small_fs is not None:
            if subprocess.run(["umount", str(self.small_fs)], capture_output=True, timeout=30).returncode != 0:
                subprocess.run(["umount", "-l", str(self.small_fs)], capture_output=True, timeout=30)
            self.small_fs = None
        if self.pg_dir is not None:
            import pgserver

            pgserver.stop(self.pg_dir)
            shutil.rmtree(self.pg_dir, ignore_errors=True)
            self.pg_dir = None
        self.reaper.reap()
        shutil.rmtree(self.work, ignore_errors=True)

    # -- one coordinator ---------------------------------------------------------------------

    def spec(self, directory: Path, store: str, run_id: str, construct: str, programs: bool, mode: str) -> dict:
        return {"store": store, "run_id": run_id, "construct": construct, "programs": programs, "mode": mode,
                "journal": str(directory / "journal"), "logdir": str(directory / "logs"),
                "sleep": PROGRAM_STEP_SLEEP if programs else STEP_SLEEP,
                "busy_timeout": self.busy[0]}

    def reference(self, construct: str, programs: bool, backend: str) -> Reference:
        """A whole run without faults: how long it takes, when its first task starts, its tasks."""
        key = (construct, programs, backend)
        if key not in self.references:
            directory = self.work / f"reference-{construct}-{int(programs)}-{backend}"
            directory.mkdir()
            store = self.pg_store() if backend == "postgresql" else str(directory / "store.db")
            run_id = f"reference-{construct}-{int(programs)}-{os.urandom(3).hex()}"
            coord = Coordinator(self, self.spec(directory, store, run_id, construct, programs, "restart"),
                                directory, "reference")
            t0 = coord.started
            if not coord.wait(RUN_DEADLINE) or coord.proc.returncode != 0:
                raise Broken(f"the reference run {key} (no fault) failed ({coord.proc.returncode}): "
                             f"{coord.stderr_tail()}")
            duration = time.monotonic() - t0
            kill_marked(coord.marker, self.reaper)
            starts = [line for line in read_journal(directory / "journal") if line.kind == "start"]
            wall_t0 = time.time() - (time.monotonic() - t0)
            first = min(line.time for line in starts) - wall_t0
            _, rows = read_run(store, run_id)
            keys = frozenset((r.step, r.sequence) for r in rows if r.step not in CONTAINERS)
            if len(keys) != PROCESSING_TASKS:
                raise Broken(f"the reference run {key} recorded {len(keys)} processing tasks, not {PROCESSING_TASKS}")
            self.references[key] = Reference(duration, max(0.0, first), keys)
        return self.references[key]

    # -- one fault ---------------------------------------------------------------------------

    def one_fault(self, kind: str, index: int, tally: Tally, construct: str, moment: float,
                  inject: Callable[[Coordinator], Optional[Callable[[], None]]], backend: str,
                  programs: bool, deadline: float) -> None:
        """Run the flow, inject the fault at ``moment`` s, recover until success, check the journal."""
        before = asdict(tally)
        directory = self.work / f"{kind}-{index}"
        directory.mkdir()
        base = self.small_fs / f"f{index}" if kind == "disk-full" else directory
        base.mkdir(exist_ok=True)
        store = self.pg_store() if backend == "postgresql" else str(base / "store.db")
        run_id = f"faults-{kind}-{index}-{os.urandom(3).hex()}"
        label = f"{kind} #{index} ({construct}, at {moment:.3f} s)"
        spec = self.spec(directory, store, run_id, construct, programs, "restart")
        spec["logdir"] = str(base / "logs")
        reference = self.reference(construct, programs, backend)

        coord = Coordinator(self, spec, directory, "run")
        while time.monotonic() - coord.started < moment and coord.proc.poll() is None:
            time.sleep(0.002)
        if programs:  # from the moment on, wait for a step at work: its programs are what may be orphaned
            until = time.monotonic() + 3
            while not open_steps(directory / "journal") and coord.proc.poll() is None and time.monotonic() < until:
                time.sleep(0.002)
        undo: Optional[Callable[[], None]] = None
        if coord.proc.poll() is None:
            undo = inject(coord)
            tally.faults += 1
            injected = True
        else:
            tally.missed += 1
            injected = False
        ended = coord.wait(deadline)
        if undo is not None:
            undo()
        if not ended:
            tally.hangs += 1
            tally.note(f"{label}: the faulted coordinator was still running {deadline:.0f} s later")
        coord.settle(tally, label)
        self._classify(coord, tally, label, store, run_id, killed=not ended)

        attempts = 0
        run, _ = read_run(store, run_id)
        while (run is None or run.outcome != "success") and attempts < MAX_RECOVERIES:
            mode = "recover" if run is not None else "restart"
            if run is None and read_journal(directory / "journal"):
                tally.note(f"{label}: steps ran in a run the store does not hold")
            attempts += 1
            rec = Coordinator(self, dict(spec, mode=mode), directory, f"recovery{attempts}")
            if not rec.wait(RUN_DEADLINE):
                tally.hangs += 1
                tally.note(f"{label}: recovery {attempts} still running {RUN_DEADLINE:.0f} s later")
            rec.settle(tally, f"{label} recovery {attempts}")
            self._classify(rec, tally, f"{label} recovery {attempts}", store, run_id, killed=False)
            run, _ = read_run(store, run_id)
        tally.recoveries += attempts
        self._check(directory / "journal", store, run_id, reference, tally, label)
        if self.args.verbose:
            found = {k: v - before[k] for k, v in asdict(tally).items()
                     if k in ZERO_COLUMNS + ("raw_errors", "left_running") and v != before[k]}
            self.say(f"    {label}: {'injected' if injected else 'missed'}, exit {coord.proc.returncode}, "
                     f"{attempts} recoveries, final {run.outcome if run else None}; found {found or 'nothing'}")
        if not injected and attempts:
            tally.note(f"{label}: not injected (the run had ended) yet {attempts} recoveries were needed")
        if kind == "disk-full":
            shutil.rmtree(base, ignore_errors=True)

    def _classify(self, coord: Coordinator, tally: Tally, label: str, store: str, run_id: str,
                  killed: bool) -> None:
        """How a coordinator that ended by itself surfaced the fault: a raw error, a run left running."""
        code = coord.proc.returncode
        if code == EXIT_RAW_ERROR:
            tally.raw_errors += 1
            tally.note(f"{label}: {coord.stderr_tail()}")
        elif code == EXIT_SEQUENT_ERROR:
            tally.note(f"{label}: {coord.stderr_tail()}")
        if killed or code is None or code == -signal.SIGKILL:
            return
        run, _ = read_run(store, run_id)
        if run is not None and run.outcome in ("running", "abandoned"):
            tally.left_running += 1
            tally.note(f"{label}: the coordinator ended ({code}) leaving the run marked running")

    def _check(self, journal: Path, store: str, run_id: str, reference: Reference, tally: Tally,
               label: str) -> None:
        """The journal against the store: no success started again, every step done, the run finished."""
        lines = read_journal(journal)
        run, rows = read_run(store, run_id)
        if run is None or run.outcome != "success":
            tally.unfinishable += 1
            tally.note(f"{label}: after {MAX_RECOVERIES} recoveries the run is "
                       f"{run.outcome if run is not None else 'not in the store'}")
        succeeded: dict[tuple, int] = {}  # (step, sequence) -> first attempt that recorded a success
        for row in rows:
            if row.status == "success":
                key = (row.step, row.sequence)
                succeeded[key] = min(succeeded.get(key, row.recovery), row.recovery)
        for line in lines:
            key = (line.step, line.sequence)
            if line.kind == "start" and key in succeeded and succeeded[key] < line.attempt:
                tally.successes_rerun += 1
                tally.note(f"{label}: {line.step}/{line.sequence} started again in attempt {line.attempt} "
                           f"after its success in attempt {succeeded[key]}")
        done = {(line.step, line.sequence, line.attempt) for line in lines if line.kind == "done"}
        final = max((row.recovery for row in rows), default=-1)
        final_status = {(row.step, row.sequence): row.status for row in rows if row.recovery == final}
        lost = set()
        for key in reference.keys:
            if final_status.get(key) != "success" or not any((key[0], key[1], a) in done for a in range(final + 1)):
                lost.add(key)
        for row in rows:
            key = (row.step, row.sequence)
            if (row.status == "success" and not row.skipped and key in reference.keys
                    and (row.step, row.sequence, row.recovery) not in done):
                lost.add(key)
                tally.note(f"{label}: {row.step}/{row.sequence} recorded a success in attempt {row.recovery} "
                           f"but never finished there")
        if lost:
            tally.steps_lost += len(lost)
            tally.note(f"{label}: steps lost: {', '.join(f'{s}/{q}' for s, q in sorted(lost)[:6])}")

    # -- the kinds ---------------------------------------------------------------------------

    def moments(self, kind: str, count: int, constructs: tuple[str, ...], programs: bool,
                backend: str) -> list[tuple[str, float]]:
        """(construct, seconds after the start) per fault: seeded, stratified over each construct's run."""
        plan = []
        per = {c: len(range(i, count, len(constructs))) for i, c in enumerate(constructs)}
        for i in range(count):
            construct = constructs[i % len(constructs)]
            ref = self.reference(construct, programs, backend)
            lo, hi = max(0.0, ref.first - 0.1), ref.duration
            rng = random.Random(f"{self.args.seed}-{kind}-{i}")
            j = i // len(constructs)
            plan.append((construct, lo + (hi - lo) * (j + rng.random()) / per[construct]))
        return plan

    def run_kind(self, kind: str, count: int) -> Tally:
        tally = Tally(kind)
        t0 = time.monotonic()
        try:
            self._run_kind(kind, count, tally)
        except Failed as exc:
            tally.skipped = str(exc)
        tally.seconds = time.monotonic() - t0
        return tally

    def _run_kind(self, kind: str, count: int, tally: Tally) -> None:
        programs = kind == "programs"
        constructs = ("process",) if programs else ("process", "thread")
        backend = "postgresql" if kind == "pg-restart" else "sqlite"
        tally.constructs = "+".join(constructs)
        deadline = FAULT_DEADLINE
        if kind == "disk-full":
            self.mount_small_fs()
        if backend == "postgresql":
            self.pg_store()
        for index, (construct, moment) in enumerate(self.moments(kind, count, constructs, programs, backend)):
            if kind == "sigkill":
                inject = signaller(signal.SIGKILL)
            elif kind == "sigterm":
                inject = signaller(signal.SIGTERM)
            elif kind == "programs":
                inject = signaller(signal.SIGKILL if index % 2 == 0 else signal.SIGTERM)
            elif kind == "disk-full":
                inject = self.filler(index)
            elif kind == "db-locked":
                inject = self.locker(index)
                deadline = FAULT_DEADLINE + self.busy[1]
            elif kind == "pg-restart":
                inject = self.restarter()
            else:
                raise Failed(f"unknown kind {kind!r}")
            self.one_fault(kind, index, tally, construct, moment, inject, backend, programs, deadline)
            self.reaper.reap()

    def filler(self, index: int) -> Callable[[Coordinator], Callable[[], None]]:
        """Fill the small file system to the last byte; undo: remove the filler."""
        def inject(coord: Coordinator) -> Callable[[], None]:
            path = self.small_fs / f"filler-{index}"
            chunk = b"\0" * 65536
            with open(path, "wb", buffering=0) as f:
                for size in (65536, 4096, 512, 1):
                    try:
                        while True:
                            f.write(chunk[:size])
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
            return lambda: path.unlink(missing_ok=True)
        return inject

    def locker(self, index: int) -> Callable[[Coordinator], Callable[[], None]]:
        """Take the SQLite store's write lock and keep it past the busy timeout; undo: nothing left."""
        hold = self.busy[1] + 1.5

        def inject(coord: Coordinator) -> Callable[[], None]:
            conn = sqlite3.connect(coord.spec["store"], timeout=5, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                until = time.monotonic() + hold
                while time.monotonic() < until and coord.proc.poll() is None:
                    time.sleep(0.01)
                conn.execute("ROLLBACK")
            except sqlite3.OperationalError as exc:  # the coordinator held it the whole 5 s
                print(f"faults: db-locked #{index}: could not take the lock: {exc}", file=sys.stderr)
            finally:
                conn.close()
            return lambda: None
        return inject

    def restarter(self) -> Callable[[Coordinator], Callable[[], None]]:
        def inject(coord: Coordinator) -> Callable[[], None]:
            import pgserver

            try:
                self.pg_restart()
            except pgserver.PgServerError as exc:
                raise Failed(f"restarting PostgreSQL failed: {exc}") from None
            return lambda: None
        return inject

    # -- main --------------------------------------------------------------------------------

    HEADER = (f"{'kind':<11} {'tasks':<15} {'faults':>6} {'missed':>6} {'successes':>9} {'steps':>5} "
              f"{'unfinish-':>9} {'orphan':>6} {'hangs':>5} {'raw':>6} {'left':>7} {'recov-':>6} {'time':>6}")
    HEADER2 = (f"{'':<11} {'':<15} {'':>6} {'':>6} {'rerun':>9} {'lost':>5} {'able':>9} {'procs':>6} {'':>5} "
               f"{'errors':>6} {'running':>7} {'eries':>6} {'s':>6}")

    def row(self, t: Tally) -> str:
        if t.skipped:
            return f"{t.kind:<11} skipped: {t.skipped}"
        return (f"{t.kind:<11} {t.constructs:<15} {t.faults:>6} {t.missed:>6} {t.successes_rerun:>9} "
                f"{t.steps_lost:>5} {t.unfinishable:>9} {t.orphans:>6} {t.hangs:>5} {t.raw_errors:>6} "
                f"{t.left_running:>7} {t.recoveries:>6} {t.seconds:>6.1f}")

    def main(self) -> int:
        a = self.args
        subreaper = become_subreaper()
        kinds = a.kinds
        counts = {k: a.count if a.count is not None else QUICK_COUNT if a.quick else DEFAULT_COUNTS[k]
                  for k in kinds}
        if a.quick and a.count is None and self.busy[0] is None:
            counts["db-locked"] = min(counts.get("db-locked", 0), 1)  # each costs the 10 s busy timeout
        self.say(f"sequent fault injection ({'quick' if a.quick else 'full'}, seed {a.seed}): Python "
                 f"{platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs, "
                 f"{'root' if os.geteuid() == 0 else 'not root'}")
        self.say(f"Flow: {PROCESSING_TASKS} processing tasks (a chain of 3, a container x3 of 2 parallel steps and "
                 f"a join, a container x2 of a chain of 2, a last step), each working {STEP_SLEEP} s "
                 f"({PROGRAM_STEP_SLEEP} s in programs); "
                 f"shutdown_grace {SHUTDOWN_GRACE} s.")
        busy = (f"busy_timeout {self.busy[0]} s" if self.busy[0] is not None
                else f"no busy_timeout key: the store's {SQLITE_BUSY_DEFAULT:.0f} s")
        self.say(f"Per fault: inject at a seeded moment, then recover (at most {MAX_RECOVERIES} times) until the "
                 f"run succeeds; {busy}; orphans counted {ORPHAN_GRACE:.0f} s after a coordinator ends"
                 f"{'' if subreaper else ' (not a subreaper: orphans are left to init)'}.")
        self.say()
        results = []
        try:
            for kind in kinds:
                self.say(f"  {kind}: {counts[kind]} x {DESCRIPTIONS[kind]} ...")
                results.append(self.run_kind(kind, counts[kind]))
        finally:
            self.cleanup()
        self.say()
        self.say(self.HEADER)
        self.say(self.HEADER2)
        for t in results:
            self.say(self.row(t))
        self.say()
        self.say("Must be 0: successes rerun, steps lost, unfinishable, orphan procs, hangs. How faults "
                 "surfaced: raw errors (an exception other than SequentError out of run()), left running (the run "
                 "still marked running after its coordinator ended by itself; SIGKILL not counted).")
        for t in results:
            for text in t.notes:
                self.say(f"  {t.kind}: {text}")
        bad = {t.kind: {c: getattr(t, c) for c in ZERO_COLUMNS if getattr(t, c)} for t in results}
        bad = {k: v for k, v in bad.items() if v}
        skipped = {t.kind: t.skipped for t in results if t.skipped}
        self.say()
        self.say("RESULT: " + ("every must-be-zero column is 0" if not bad else
                               "NOT ZERO: " + "; ".join(f"{k} {v}" for k, v in bad.items()))
                 + (f"; skipped: {', '.join(skipped)}" if skipped else ""))
        if a.json:
            with open(a.json, "w") as fh:
                json.dump({"seed": a.seed, "quick": a.quick, "zero_columns": list(ZERO_COLUMNS),
                           "busy_timeout": self.busy[0], "kinds": {t.kind: asdict(t) for t in results},
                           "ok": not bad}, fh, indent=2)
        return 1 if bad else 0


def signaller(signum: int) -> Callable[[Coordinator], Callable[[], None]]:
    def inject(coord: Coordinator) -> Callable[[], None]:
        try:
            os.kill(coord.proc.pid, signum)
        except ProcessLookupError:
            pass
        return lambda: None
    return inject


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_flow"]:
        return flow_main(json.loads(argv[1]))
    parser = argparse.ArgumentParser(description="Inject faults into sequent runs (see benchmarks/README.rst).")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_COUNT} faults per kind (a smoke test)")
    parser.add_argument("--count", type=int, metavar="N", help="faults per kind (default: per kind, see README)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault moments (default 1)")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated kinds, of {', '.join(KINDS)} (default: all)")
    parser.add_argument("--json", metavar="PATH", help="also write the counts as JSON to PATH")
    parser.add_argument("-v", "--verbose", action="store_true", help="print one line per fault")
    args = parser.parse_args(argv)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown or not args.kinds:
        parser.error(f"unknown kinds {unknown}; known: {', '.join(KINDS)}")
    if args.count is not None and args.count < 1:
        parser.error("--count must be at least 1")
    if not sys.platform.startswith("linux"):
        print("faults: needs Linux (/proc, prctl)", file=sys.stderr)
        return 2
    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # so that Bench.main's cleanup runs

    signal.signal(signal.SIGTERM, stop)
    bench = Bench(args)
    try:
        return bench.main()
    except Broken as exc:
        print(f"faults: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
