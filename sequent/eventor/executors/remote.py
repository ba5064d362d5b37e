"""The executor of one remote host: one agent (:mod:`..agent`) per run, started over SSH.

The coordinator side of the channel: :meth:`RemoteExecutor.start` launches ``ssh`` with a fixed
argument list (:mod:`..ssh`); :meth:`RemoteExecutor.bind` checks the agent's versions and hands it
the attempt, raising a :class:`EventorError` that names the host and the cause when it cannot serve;
then a writer thread sends tasks, signals (to every task, or to one) and pings, and a reader thread
reports each task's end (already recorded in the store by the agent) and relays the tasks' log
records to the run log.
When the link ends, every task still running there fails as "host lost" (its agent may still
record a success first: the first final write wins).
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import queue
import select
import signal
import socket
import subprocess
import threading
import time
import types
from typing import Any, Callable, Optional

from .. import wire
from ..context import TaskContext
from ..errors import EventorError
from ..model import StepDef, TaskConstruct
from ..outcome import TaskOutcome
from ..text import item_text
from ..ssh import SshOptions, agent_argv, boot_frame, describe_failure
from .base import Executor, Report, RunInfo

#: Seconds bind() waits for an agent to answer (beyond ssh's own connect timeout): imports and a
#: database connection on a slow host.
READY_WITHIN = 60.0

#: Lines of an agent's stderr kept to explain its end.
STDERR_LINES = 40

_LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_local(host: str, own: str) -> bool:
    """A host name that means this machine: steps named so run here, without SSH."""
    if host in _LOCAL_NAMES or host == own or host == socket.gethostname():
        return True
    return host == socket.getfqdn() if "." in host else False


def _relay(data: dict) -> None:
    """A task's log record from its agent, into this process's logging (the run log)."""
    record = logging.makeLogRecord(data)
    logging.getLogger(record.name).handle(record)


class _NoMain(pickle.Pickler):
    """A pickler that refuses what only this process can load: functions and classes of __main__."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            if getattr(obj, "__module__", None) == "__main__":
                raise pickle.PicklingError(f"{obj.__qualname__} is defined in __main__ (the script itself), which "
                                           f"a remote host cannot import")
        return NotImplemented


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` for another host (PicklingError, TypeError... when it cannot be sent)."""
    import io

    buf = io.BytesIO()
    _NoMain(buf, wire.PROTOCOL).dump(obj)
    return buf.getvalue()


def step_spec(step: StepDef) -> dict:
    """What a remote task needs of its step: the function (by reference) and its arguments."""
    return {"func": step.func, "args": step.args, "kwargs": dict(step.kwargs),
            "sequence_arg_name": step.config.sequence_arg_name,
            "pass_logger_to_task": step.config.pass_logger_to_task, "item_arg_name": step.config.item_arg_name}


def task_blob(step: StepDef, ctx: TaskContext, where: str, task_id: int, report: Callable[[TaskOutcome], None],
              host: Optional[str]) -> Optional[bytes]:
    """The pickled step of a task sent to ``where``; None, after reporting the task failed, when it
    (or its item, which travels with the task and must pickle by reference too) cannot be sent."""
    try:
        blob = dumps(step_spec(step))
        if ctx.item is not None:
            dumps(ctx.item)
        return blob
    except Exception as exc:
        what = f"step {step.name!r}" if ctx.item is None else f"step {step.name!r} with its item {item_text(ctx.item)}"
        report(TaskOutcome.failed(task_id, f"cannot send {what} to {where}: {type(exc).__name__}: {exc}", host=host))
        return None


def sendable_problem(step: StepDef) -> Optional[str]:
    """Why a step cannot run on another host (None when it can): its function must be importable
    there by module and name, and its arguments picklable."""
    func = step.func
    if func is not None:
        qualname = getattr(func, "__qualname__", "")
        module = getattr(func, "__module__", None)
        if "<lambda>" in qualname:
            return "its function is a lambda, which another host cannot import: use a module-level function"
        if "<locals>" in qualname:
            return (f"its function {qualname} is defined inside another function, which another host cannot "
                    f"import: use a module-level function")
        if module == "__main__":
            return (f"its function {qualname} is defined in __main__ (the script itself), which another host "
                    f"cannot import: put it in a module installed there or on the agent's PYTHONPATH")
    try:
        dumps(step_spec(step))
    except Exception as exc:
        return f"it cannot be sent to another host: {type(exc).__name__}: {exc}"
    return None


class RemoteExecutor(Executor):
    """Runs tasks on one remote host through an agent started over SSH for this run."""

    construct = TaskConstruct.process
    remote = True
    #: What the agent does with running tasks when its channel ends: "finish" them (the coordinator
    #: died: what ends is still recorded), or "kill" them (the process it serves died).
    on_eof = "finish"
    #: With on_eof "kill": the reason its stopped tasks' errors give.
    eof_why = ""
    #: The agent claims a task in the store before it starts it, and runs only what it claimed: for
    #: a cluster that may send a task again (else it starts the task, then records who runs it).
    claim_first = False

    def __init__(self, host: str, destination: str, *, python: str = "python3", env: Optional[dict] = None,
                 workdir: Optional[str] = None, max_concurrent: Optional[int] = None,
                 options: SshOptions = SshOptions(), report: Report, imports: tuple[str, ...] | list[str] = (),
                 on_record: Optional[Any] = None, versions: Optional[dict] = None):
        self.host = host
        self.destination = destination
        self.python = python
        self.env = dict(env or {})
        self.workdir = workdir
        self.capacity = max_concurrent if max_concurrent and max_concurrent >= 1 else None
        self.options = options
        self.report = report
        self.imports = list(imports)  # the modules of its steps' functions, imported by the agent at its start
        self.on_record = on_record or _relay  # what becomes of a task's log record (data from the agent)
        self.versions = versions  # the coordinator's, which the agent must match (None: this process's)
        self.proc: Optional[subprocess.Popen] = None
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.write_lock = threading.Lock()  # one frame at a time into the agent's input
        self.running: dict[int, int] = {}  # task id -> the try it runs (a signal to one task names it)
        self.lock = threading.Lock()
        self.dead: Optional[str] = None  # why the link ended, once it did
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.log: Optional[logging.Logger] = None
        self.threads: list[threading.Thread] = []
        self.inbuf = bytearray()
        self.hostname: Optional[str] = None  # what the host calls itself (from the agent)

    @property
    def label(self) -> str:
        return f"host {self.host!r}" + (f" ({self.destination})" if self.destination != self.host else "")

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Launch ssh and the agent, and greet it (the answer is read in bind)."""
        from .. import agent

        argv = self.argv()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         start_new_session=True, bufsize=0)
        except OSError as exc:
            raise EventorError(f"{self.label}: cannot run the ssh client: {exc}") from None
        self._thread(self._read_stderr, "stderr")
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(boot_frame(self.env, self.workdir) +
                                  wire.encode(("hello", self.versions or agent.versions())))
        except OSError:  # it ended already: bind() says why
            pass

    def argv(self) -> list[str]:
        """The command that starts the agent: ssh to the host."""
        return agent_argv(self.destination, self.python, self.options)

    def _thread(self, target: Any, what: str) -> None:
        thread = threading.Thread(target=target, daemon=True, name=f"sequent-{self.host}-{what}")
        thread.start()
        self.threads.append(thread)

    def bind(self, run: RunInfo) -> None:
        """Check the agent's versions and give it the attempt; raises naming the host and the cause."""
        self.log = logging.getLogger(run.logger_name)
        deadline = time.monotonic() + self.options.connect_timeout + READY_WITHIN
        hello = self._answer(deadline, "hello")
        problem = hello[1] if hello[0] == "error" else hello[2]
        if problem:
            self._close()
            raise EventorError(f"{self.label}: {problem}")
        self.hostname = hello[1].get("hostname")
        link_timeout = self.options.alive_interval * self.options.alive_count * 2 + 5
        self._send_now(("run", {"target": run.target, "busy_timeout": run.busy_timeout, "run_id": run.run_id,
                                "recovery": run.recovery, "host": self.host, "logger_name": run.logger_name,
                                "logging": dict(run.logging), "grace": run.grace, "link_timeout": link_timeout,
                                "imports": self.imports, "on_eof": self.on_eof, "eof_why": self.eof_why,
                                "claim_first": self.claim_first}))
        ready = self._answer(deadline, "ready")
        if ready[0] == "error":
            self._close()
            raise EventorError(f"{self.label}: the agent cannot serve the run: {ready[1]}")
        self.log.info("Agent on host %s is ready (hostname %s, pid %s, python %s)", self.host, self.hostname,
                      hello[1].get("pid"), hello[1].get("executable"))
        self._thread(self._read, "reader")
        self._thread(self._write, "writer")

    def _answer(self, deadline: float, kind: str) -> tuple:
        """The agent's next frame (read here, before the reader thread exists); raises if none comes."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            frames = wire.take_messages(self.inbuf)
            if frames:
                frame, rest = frames[0], frames[1:]
                if rest:  # nothing else is sent before the answer: keep the order anyway
                    self.inbuf[:0] = b"".join(wire.encode(f) for f in rest)
                if frame[0] in (kind, "error"):
                    return frame
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                self._close()
                raise EventorError(f"{self.label}: no answer from the agent within "
                                   f"{self.options.connect_timeout + READY_WITHIN:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, wire.CHUNK)
                if not chunk:
                    raise EventorError(f"{self.label}: {self._why_ended()}")
                self.inbuf += chunk

    def _why_ended(self) -> str:
        """Why the agent's session ended, from ssh's exit status and stderr (waits a moment for both)."""
        assert self.proc is not None
        try:
            code: Optional[int] = self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            code = None
        for thread in self.threads:
            if thread.name.endswith("stderr"):
                thread.join(2.0)
        return describe_failure(code, "\n".join(self.stderr), self.python)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stderr.append(line)
            if self.log is not None and line:
                self.log.info("[ host %s ] %s", self.host, line)

    def _send_now(self, message: Any) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(wire.encode(message))
        except OSError:
            pass  # the reader notices the end

    def _write(self) -> None:
        """Send what the coordinator queued, and a ping whenever the link was quiet for a while."""
        assert self.proc is not None and self.proc.stdin is not None
        stdin = self.proc.stdin
        every = self.options.alive_interval
        try:
            while True:
                try:
                    item = self.outbox.get(timeout=every)
                except queue.Empty:
                    item = ("ping",)
                if item is None:
                    break
                with self.write_lock:
                    stdin.write(wire.encode(item) if not isinstance(item, bytes) else item)
        except OSError:
            pass
        finally:
            try:
                stdin.close()  # end of file: the agent finishes what runs and exits
            except OSError:
                pass

    def _read(self) -> None:
        """Report each task's end; at the end of the link, fail what still runs there."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        try:
            while True:
                for frame in wire.take_messages(self.inbuf):
                    self._frame(frame)
                chunk = os.read(fd, wire.CHUNK)
                if not chunk:
                    break
                self.inbuf += chunk
        except Exception as exc:  # a frame that does not load: the link is unusable
            self.stderr.append(f"unreadable message from the agent: {type(exc).__name__}: {exc}")
        why = self._why_ended()
        with self.lock:
            self.dead = why
            lost, self.running = sorted(self.running), {}
        for task_id in lost:
            self.report(TaskOutcome.failed(task_id, f"host {self.host!r} lost: {why}", host=self.host))
        if lost and self.log is not None:
            self.log.error("Lost the agent on host %s: %s", self.host, why)

    def _frame(self, frame: tuple) -> None:
        kind = frame[0]
        if kind == "done":
            outcome = TaskOutcome(**frame[1])
            with self.lock:
                self.running.pop(outcome.task_id, None)
            self.report(outcome)
        elif kind == "log":
            self.on_record(frame[1])

    # -- tasks ----------------------------------------------------------------------------------

    def submit(self, task_id: int, step: StepDef, ctx: TaskContext) -> None:
        blob = task_blob(step, ctx, f"host {self.host!r}", task_id, self.report, self.host)
        if blob is None:
            return
        if not self.submit_blob(task_id, ctx, blob):
            self.report(TaskOutcome.failed(task_id, f"host {self.host!r} lost: {self.dead}", host=self.host))

    def submit_blob(self, task_id: int, ctx: TaskContext, blob: bytes) -> bool:
        """Send a task whose step is already pickled (see step_spec); False when the agent is gone."""
        with self.lock:
            if self.dead is not None:
                return False
            self.running[task_id] = ctx.try_number
        self._send_task(wire.encode(("task", task_id, ctx.step, ctx.sequence, ctx, blob)))
        return True

    def _send_task(self, frame: bytes) -> None:
        """Queue a task's frame for the writer thread: the coordinator never blocks on the link."""
        self.outbox.put(frame)

    @property
    def alive(self) -> bool:
        return self.dead is None

    def signal(self, signum: int) -> None:
        if self.running:
            self.outbox.put(("signal", int(signum)))

    def signal_task(self, task_id: int, signum: int) -> bool:
        """Ask the agent to signal one task's process group.  The frame names the try it means, so
        that it never reaches a later try of the same task."""
        with self.lock:
            try_number = self.running.get(task_id)
            if self.dead is not None or try_number is None:
                return False
        self.outbox.put(("signal_task", task_id, int(signum), try_number))
        return True

    def stop(self, grace: float, *, abandon: bool) -> None:
        """End of file to the agent, then wait for it (its tasks were signalled when abandoned)."""
        if self.proc is None:
            return
        self.outbox.put(None)
        if not self.threads or self.threads[-1].name.endswith("stderr"):  # bind never ran: no writer
            self._close_stdin()
        try:
            self.proc.wait(timeout=grace + 15.0)
        except subprocess.TimeoutExpired:
            self._close()
        for thread in self.threads:
            thread.join(5.0)

    def _close_stdin(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def _close(self) -> None:
        """End the ssh client (the agent then sees end of file); SIGKILL when it does not go."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._close_stdin()
        for signum, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            try:
                self.proc.wait(timeout=0.5 if signum == signal.SIGTERM else 0)
                return
            except subprocess.TimeoutExpired:
                pass
            try:
                self.proc.send_signal(signum)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
