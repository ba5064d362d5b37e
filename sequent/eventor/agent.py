"""The agent: runs one attempt's tasks on a remote host, for the coordinator that started it over SSH.

Started by :data:`sequent.eventor.ssh.BOOTSTRAP` (``python -c``), it speaks length-prefixed pickles
(:mod:`.wire`) on the session's standard input and output:

====================================  ==========================================================
coordinator to agent                  agent to coordinator
====================================  ==========================================================
``("hello", versions)``               ``("hello", versions, problem)``: a problem ends the agent
``("run", settings)``                 ``("ready", hostname)`` or ``("error", text)``
``("task", id, step, seq, ctx, blob)``  ``("done", outcome fields)`` once it ended
``("signal", signum)``                ``("log", record)``: every record of a task, for the run log
``("signal_task", id, signum, try)``  (one task's process group, if it still runs that try)
``("ping",)`` (the link is alive)
end of file: finish
====================================  ==========================================================

Each task runs as a local process task does, in its own process group forked by a
:class:`~.launcher.ProcessLauncher`, with the same environment, logger and line format; its log
file is on this host.  The agent records who runs each task, and its end, in the shared store
itself, with writes that apply only while the task is still active (the first final write wins):
the coordinator writes the same end the same way, so whichever of them survives records it, and a
task that ends after the coordinator died is still recorded.  At end of file, or when the link
stays silent, it starts nothing more, lets running tasks end (or, serving a Dask worker that
died, stops them), records them, and exits.

With retries, a task's row stays active across its tries: the agent claims each try with its
number (a later try may take over the claim of an earlier one), and when a try that is not the
last fails it records the try (``record_try``) and leaves the row active: the coordinator retries.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import platform
import queue
import select
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

from . import runlock, wire
from .context import TaskContext
from .logs import HOST, RunLogging, current_task_label
from .model import StepConfig, StepDef
from .outcome import OutcomeStatus, TaskOutcome
from .runners import Outcome, run_step

#: The largest log record sent on whole; a longer message is cut (a datagram has a size limit).
RECORD_LIMIT = 60_000


def versions() -> dict[str, Optional[str]]:
    """What must match between a coordinator and its agents: Python (major.minor), sequent, SQLAlchemy."""
    from .._version import __version__

    try:
        import sqlalchemy
        sa_version: Optional[str] = sqlalchemy.__version__
    except ImportError:
        sa_version = None
    return {"python": platform.python_version(), "sequent": __version__, "sqlalchemy": sa_version,
            "executable": sys.executable}


def _minor(version: Optional[str]) -> Optional[str]:
    return ".".join(version.split(".")[:2]) if version else version


def version_problem(mine: dict, theirs: dict) -> Optional[str]:
    """Why this agent cannot work for a coordinator with ``theirs`` versions (None: it can)."""
    if mine["sqlalchemy"] is None:
        return f"SQLAlchemy is not installed for {mine['executable']} there (pip install sequent on that host)"
    for key, name, same in (("python", "Python", _minor), ("sequent", "sequent", str),
                            ("sqlalchemy", "SQLAlchemy", _minor)):
        if same(mine[key]) != same(theirs[key]):
            return (f"version mismatch: {name} {mine[key]} there ({mine['executable']}), {theirs[key]} on the "
                    f"coordinator; install the same versions on every host")
    return None


def record_data(record: logging.LogRecord, formatter: Optional[logging.Formatter]) -> dict:
    """A log record as plain data another process can rebuild it from (logging.makeLogRecord): the
    message formatted and cut to RECORD_LIMIT, the traceback as text, this host's name and the
    task's label (see :func:`plain_record` for one whose ``extra`` values do not pickle)."""
    data = dict(record.__dict__)
    data["msg"] = record.getMessage()[:RECORD_LIMIT]
    data["args"] = None
    if record.exc_info and formatter is not None:
        data["exc_text"] = formatter.formatException(record.exc_info)
    for key in ("exc_text", "stack_info"):
        if data.get(key):
            data[key] = data[key][-RECORD_LIMIT:]  # the end of a traceback says most
    data["exc_info"] = None
    data["host"] = HOST
    label = current_task_label()
    if label:
        data["processName"] = label
    return data


def plain_record(data: dict) -> dict:
    """A record's data with every value that is not a plain scalar as its repr (it then pickles)."""
    return {k: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v) for k, v in data.items()}


class _Forward(logging.Handler):
    """Sends each record, as plain data, to the agent as one datagram (tasks and agent alike)."""

    def __init__(self, sock: socket.socket):
        super().__init__()
        self.sock = sock

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = record_data(record, self.formatter)
            try:
                payload = pickle.dumps(data, wire.PROTOCOL)
            except Exception:  # an ``extra`` value that does not pickle travels as its repr
                payload = pickle.dumps(plain_record(data), wire.PROTOCOL)
            self.sock.send(payload)
        except Exception:
            self.handleError(record)


def _run_child(step_index: int, sequence: tuple, payload: dict) -> Outcome:
    """In the task process: the task's environment and log file, then its function (loaded here, so
    a function that cannot be imported on this host is the task's failure, with its traceback)."""
    ctx: TaskContext = payload["ctx"]
    os.environ.update(ctx.env)
    prefix = next((key[:-len("STEP_NAME")] for key in ctx.env if key.endswith("STEP_NAME")), "SEQUENT_")
    os.environ[prefix + "HOST"] = _AGENT_HOST  # where it runs, as the flow names it (h1, or a Dask worker)
    _AGENT_LOGS.task_started(ctx.logger_name)
    spec = pickle.loads(payload["blob"])
    step = StepDef(name=ctx.step, func=spec["func"], args=spec["args"], kwargs=spec["kwargs"],
                   config=StepConfig(sequence_arg_name=spec["sequence_arg_name"],
                                     pass_logger_to_task=spec["pass_logger_to_task"],
                                     item_arg_name=spec.get("item_arg_name")))
    return run_step(step, ctx)


@dataclass
class _Running:
    """A task the agent runs: what it records about the task's try when it ends."""

    step: str
    seq: str
    logger: str  # its logger's name ('' when unknown)
    try_number: int = 1
    final_try: bool = True
    started: float = 0.0
    ran: bool = True  # False: its claim was refused, so it never ran here (nothing of ours to record)
    signalled: bool = False  # the coordinator stopped it on its own (a timeout): it records the end itself


_AGENT_LOGS: Any = None  # the agent's RunLogging, inherited by its task processes
_AGENT_HOST = ""  # the host's name as the flow gives it, inherited by its task processes


class Agent:
    """One agent process: its channel to the coordinator, its launcher and its store connection."""

    def __init__(self, in_fd: int, out_fd: int):
        self.in_fd, self.out_fd = in_fd, out_fd
        self.inbuf = bytearray()
        self.pending: list = []  # frames read but not handled yet
        self.eof = False
        self.link_ok = True  # False once the coordinator stopped answering (or hung up)
        self.running: dict[int, _Running] = {}  # by task id
        self.launcher: Any = None
        self.store: Any = None
        self.token = f"{HOST}:{os.getpid()}:{time.time():.6f}"
        self.log: logging.Logger = logging.getLogger("sequent.agent")
        self.settings: dict = {}
        self.beat_stop = threading.Event()
        self.beat_thread: Optional[threading.Thread] = None
        self.log_r: Optional[socket.socket] = None
        self.orphaned_at: Optional[float] = None  # when the channel ended with tasks running (on_eof "kill")
        self.claims: queue.SimpleQueue = queue.SimpleQueue()  # tasks started, whose claim is not written yet
        self.claim_thread: Optional[threading.Thread] = None
        self.killed = False

    # -- the channel ----------------------------------------------------------------------------

    def send(self, message: Any) -> None:
        """Send a frame to the coordinator; a closed link is noted (what is recorded stays recorded)."""
        if not self.link_ok:
            return
        try:
            wire.write_all(self.out_fd, wire.encode(message))
        except OSError:  # the coordinator is gone: go on without it
            self.link_ok = False

    def receive(self, timeout: Optional[float]) -> list:
        """Frames that arrived within ``timeout`` (end of file sets ``eof``)."""
        ready, _, _ = select.select([self.in_fd], [], [], timeout)
        if not ready:
            return []
        chunk = os.read(self.in_fd, wire.CHUNK)
        if not chunk:
            self.eof = True
            return []
        self.inbuf += chunk
        return wire.take_messages(self.inbuf)

    def first_frame(self, kind: str) -> Any:
        """The next frame when it is a ``kind`` (blocking until it comes); None at end of file or
        for another kind (the coordinator speaks in this order only)."""
        while not self.pending and not self.eof:
            self.pending = self.receive(None)
        if not self.pending:
            return None
        frame = self.pending.pop(0)
        return frame if frame[0] == kind else None

    # -- the steps of its life -------------------------------------------------------------------

    def serve(self) -> int:
        """Greet, take the run, serve it; the exit status (0: the agent's end is normal)."""
        hello = self.first_frame("hello")
        if hello is None:
            return 0
        mine = versions()
        problem = version_problem(mine, hello[1])
        self.send(("hello", {**mine, "hostname": HOST, "pid": os.getpid()}, problem))
        if problem:
            return 0
        run = self.first_frame("run")
        if run is None:
            return 0
        try:
            self.begin(run[1])
        except Exception as exc:
            self.send(("error", str(exc) if type(exc) is RuntimeError else f"{type(exc).__name__}: {exc}"))
            self.finish()
            return 0
        self.send(("ready", HOST))
        try:
            self.loop()
        finally:
            self.finish()
        return 0

    def begin(self, settings: dict) -> None:
        """Logging, the launcher (forked before any database connection), then the store."""
        global _AGENT_LOGS, _AGENT_HOST
        self.settings = settings
        _AGENT_HOST = str(settings["host"])
        self.log_r, log_w = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        logs = RunLogging(settings["logger_name"], settings["logging"])
        logs.make_logdir()
        self.log = logs.start_on_agent(_Forward(log_w))
        _AGENT_LOGS = logs
        for module in settings.get("imports", ()):  # once here, so no task imports them again
            try:
                importlib.import_module(module)
            except BaseException as exc:
                raise RuntimeError(f"the module {module!r} of its steps does not import there (python "
                                   f"{sys.executable}, sys.path {sys.path[:4]}...): {type(exc).__name__}: {exc}")
        from .launcher import ProcessLauncher

        self.launcher = ProcessLauncher(_run_child, name=f"sequent-agent-{settings['host']}",
                                        private_fds=(self.in_fd, self.out_fd, self.log_r.fileno()))
        self.launcher.start()
        from .store import Store

        self.store = Store(settings["target"], busy_timeout=settings["busy_timeout"]).open()
        self.store.agent_started(token=self.token, run_id=settings["run_id"], recovery=settings["recovery"],
                                 host=settings["host"], hostname=HOST, pid=os.getpid())
        # their own connections, opened by the threads themselves: the agent is ready meanwhile
        self.beat_thread = threading.Thread(target=self._beat, daemon=True, name="sequent-agent-heartbeat")
        self.beat_thread.start()
        if not settings.get("claim_first"):  # claims off the path of a task's start and end
            self.claim_thread = threading.Thread(target=self._claim, daemon=True, name="sequent-agent-claims")
            self.claim_thread.start()

    def _claim(self) -> None:
        """Record who runs each task started (a thread: a task may start, and even end, meanwhile)."""
        from .store import Store

        store = None
        try:
            store = Store(self.settings["target"], busy_timeout=self.settings["busy_timeout"]).open()
            while True:
                item = self.claims.get()
                if item is None:
                    return
                self.claim(*item, store=store)
        except Exception as exc:  # the ends are recorded all the same, with their owner
            self.log.warning("agent on %s: cannot record who runs its tasks: %s", HOST, exc)
        finally:
            if store is not None:
                store.close()

    def _beat(self) -> None:
        conn = None
        try:
            conn = self.store.connect()
            while not self.beat_stop.wait(runlock.HEARTBEAT_EVERY):
                try:
                    self.store.agent_beat(conn, self.token)
                except Exception as exc:  # the store is away for now: beat again later
                    self.log.warning("agent on %s: heartbeat failed: %s", HOST, exc)
        except Exception as exc:  # no connection for it: the agent counts as stale after a while
            self.log.warning("agent on %s: cannot beat: %s", HOST, exc)
        finally:
            try:
                if conn is not None:
                    conn.close()
            except Exception:
                pass

    def loop(self) -> None:
        """Serve frames and task ends until the coordinator is gone and no task runs."""
        silent_for = float(self.settings["link_timeout"])
        heard = time.monotonic()
        frames, self.pending = self.pending, []
        while True:
            for frame in frames:
                heard = time.monotonic()
                self.handle(frame)
            if self.eof or not self.link_ok:
                if not self.running:
                    return
                self.stop_orphans()
            elif time.monotonic() - heard > silent_for:
                self.log.warning("agent on %s: nothing heard from the coordinator for %.0f s: starting nothing "
                                 "more; running tasks finish and are recorded", HOST, silent_for)
                self.link_ok = False
            watch = [self.launcher.fileno(), self.log_r.fileno()]
            if not (self.eof or not self.link_ok):
                watch.append(self.in_fd)
            ready, _, _ = select.select(watch, [], [], 1.0)
            frames = []
            if self.in_fd in ready:
                frames = self.receive(0)
            self.relay_logs()  # first: a task's records are sent before its end (they are in the socket by then)
            if self.launcher.fileno() in ready or not self.launcher.alive:
                for outcome in self.launcher.collect():
                    self.ended(outcome)
                if not self.launcher.alive and self.running:
                    for task_id in list(self.running):
                        self.ended(TaskOutcome.failed(task_id, "the agent's task launcher died"))

    def stop_orphans(self) -> None:
        """With on_eof "kill", the tasks of a dead channel get SIGTERM, then SIGKILL after the grace."""
        if self.settings.get("on_eof") != "kill":
            return
        now = time.monotonic()
        if self.orphaned_at is None:
            self.orphaned_at = now
            self.log.warning("agent on %s: its channel ended: stopping its %d running task(s)", HOST, len(self.running))
            self.launcher.signal_tasks(signal.SIGTERM)
        elif now - self.orphaned_at > float(self.settings.get("grace", 10.0)) and not self.killed:
            self.killed = True
            self.launcher.signal_tasks(signal.SIGKILL)

    def handle(self, frame: tuple) -> None:
        kind = frame[0]
        if kind == "task":
            _, task_id, step, seq, ctx, blob = frame
            entry = self.running[task_id] = _Running(step, seq, ctx.logger_name, ctx.try_number, ctx.final_try,
                                                     time.time())
            # A cluster may send a task again: only the claim's winner runs it.  A later try is claimed
            # first too: it takes over the claim of the try before it, maybe another host's.
            if self.settings.get("claim_first") or ctx.try_number > 1:
                if self.claim(step, seq, ctx) is False:
                    entry.ran = False
                    self.ended(TaskOutcome.failed(task_id, f"not run by the agent on {self.settings['host']!r}: the "
                                                  f"task is no longer active, or another worker ran it already (the "
                                                  f"cluster sent it again after a worker died)"))
                    return
                self.launcher.launch(task_id, 0, (), {"ctx": ctx, "blob": blob})
            else:  # sent once: the claim only records who runs it, by another thread while it starts
                self.launcher.launch(task_id, 0, (), {"ctx": ctx, "blob": blob})
                self.claims.put((step, seq, ctx))
        elif kind == "signal":
            if self.launcher.running:
                self.launcher.signal_tasks(frame[1])
        elif kind == "signal_task":
            _, task_id, signum, try_number = frame
            entry = self.running.get(task_id)
            if entry is not None and entry.ran and entry.try_number == try_number:
                entry.signalled = self.launcher.signal_task(task_id, signum) or entry.signalled
        # "ping" only says the link is alive

    def claim(self, step: str, seq: str, ctx: TaskContext, store: Any = None) -> Optional[bool]:
        """Record in the store that this agent runs the task, with its log file (None: the store failed)."""
        try:
            return (store or self.store).claim_task(
                self.settings["run_id"], self.settings["recovery"], step, seq, owner=self.token, pid=None,
                logfile=_AGENT_LOGS.task_log_path(ctx.logger_name), try_number=ctx.try_number)
        except Exception as exc:  # its end is recorded all the same
            self.log.warning("agent on %s: could not record that it runs %s/%s: %s", HOST, step, seq, exc)
            return None

    def ended(self, outcome: TaskOutcome) -> None:
        """Tell the coordinator how a task's try ended, and record it in the store.

        The end of the task (a success, or the failure of its last try) is written with a write that
        applies only while the task is active, as the coordinator writes it, so the order does not
        matter for what is kept, and whichever of them survives records it; the coordinator hears
        first, which saves it a round trip to the store per task.  A failed try that is not the last
        is recorded as a try, and the task stays active for the coordinator to retry.  A task the
        coordinator stopped on its own (a timeout) is left to it while the link lives: its record
        says why (the agent only sees a signal)."""
        entry = self.running.pop(outcome.task_id, None)
        if entry is None:
            return
        if self.orphaned_at is not None and outcome.status is not OutcomeStatus.success:
            why = self.settings.get("eof_why") or "the agent's channel ended"
            outcome.error = f"{why}; the task was stopped ({outcome.error})"
        status = "success" if outcome.status is OutcomeStatus.success else "failure"
        error = (outcome.error + ("\n" + outcome.traceback if outcome.traceback else "")) or None
        outcome.host = self.settings["host"]
        if entry.ran:  # whichever final write wins records who ran it, and where its log file is
            outcome.owner = self.token
            outcome.logfile = _AGENT_LOGS.task_log_path(entry.logger) if entry.logger else None
        self.send(("done", {name: getattr(outcome, name) for name in TaskOutcome.__slots__}))
        if not entry.ran or (entry.signalled and self.link_ok):
            return
        if status == "failure" and not entry.final_try:
            self._write(entry, "try", lambda: self.store.record_try(
                self.settings["run_id"], self.settings["recovery"], entry.step, entry.seq, entry.try_number,
                started=entry.started, ended=outcome.ended, host=self.settings["host"], pid=outcome.pid,
                owner=self.token, error=error, timed_out=False))
            return
        recorded = self._write(entry, "end", lambda: self.store.finish_task(
            self.settings["run_id"], self.settings["recovery"], entry.step, entry.seq, status=status,
            ended=outcome.ended, pid=outcome.pid, host=self.settings["host"], result=outcome.result or None,
            error=error, owner=self.token,
            logfile=_AGENT_LOGS.task_log_path(entry.logger) if entry.logger else None))
        if recorded is False and not self.link_ok:  # (with a live link the coordinator may have written it)
            self.log.warning("[ Task %s/%s ] its end (%s) came after the task was ended elsewhere: "
                             "discarded (the first recorded end stands)", entry.step, entry.seq, status)

    def _write(self, entry: _Running, what: str, write: Any) -> Any:
        """Run a store write about a task (``what``: 'end' or 'try'), up to 3 times; its value (None
        when every time failed, each logged)."""
        for attempt in range(3):
            try:
                return write()
            except Exception as exc:
                self.log.error("agent on %s: could not record %s of %s/%s (write %d of 3): %s", HOST,
                               "the end" if what == "end" else f"try {entry.try_number}", entry.step, entry.seq,
                               attempt + 1, exc)
                time.sleep(1.0)
        return None

    def relay_logs(self) -> None:
        assert self.log_r is not None
        while True:
            try:
                data = self.log_r.recv(1 << 20, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            try:
                self.send(("log", pickle.loads(data)))
            except Exception:  # a record that does not load is dropped, never the agent
                pass

    def finish(self) -> None:
        """Stop the launcher (tasks ended by now, or stopped), record the agent's end, close."""
        if self.launcher is not None:
            for outcome in self.launcher.stop(grace=float(self.settings.get("grace", 10.0))):
                self.ended(outcome)
        if self.log_r is not None:
            self.relay_logs()
        self.beat_stop.set()
        if self.beat_thread is not None:
            self.beat_thread.join(5.0)
        if self.claim_thread is not None:
            self.claims.put(None)
            self.claim_thread.join(5.0)
        if self.store is not None:
            try:
                self.store.agent_ended(self.token)
            except Exception as exc:
                self.log.warning("agent on %s: could not record its end: %s", HOST, exc)
            self.store.close()


def main() -> None:
    """Entry point (from the bootstrap): keep the channel to ourselves, then serve."""
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)  # a task reading stdin reads nothing, never the channel
    os.dup2(2, 1)  # what a task prints goes to the session's stderr, never into the channel
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator stops tasks through frames
    code = Agent(in_fd, out_fd).serve()
    sys.stdout.flush()
    sys.exit(code)
