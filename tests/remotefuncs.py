"""Step functions the remote-host tests run on the sshd "hosts": importable there by reference
(the agent gets this folder on its PYTHONPATH), never from ``__main__``."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time

import sequent as seq

#: A flow object of the module's own: ``get_step_name()`` reads the running task, wherever it runs.
HELPER = seq.Sequent(name="remotefuncs")


def note(journal: str, line: str) -> None:
    """Append one line to a journal file in one write (the hosts share this machine's files)."""
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _ran(journal: str, text: str, place: str, kind: str) -> str:
    """Log a line (``<kind> line from STEP on PLACE``), journal and return where the task ran, what it
    got, and its identity as the task sees it."""
    name = HELPER.get_step_name()
    logging.getLogger(os.environ["SEQUENT_LOGGER_NAME"]).info("%s line from %s on %s", kind, name, place)
    line = "|".join([name, os.environ["SEQUENT_STEP_SEQUENCE"], place, text, os.environ["SEQUENT_RUN_ID"]])
    note(journal, line)
    return line


def _span(journal: str, seconds: float, place: str) -> None:
    """Journal start and end times with where it ran, to check how many ran at once where."""
    start = time.time()
    time.sleep(seconds)
    note(journal, f"{place} {start} {time.time()}")


def _pause(journal: str, seconds: float, *place: str) -> str:
    """Journal its start (with ``place`` when given), sleep, journal its end: a task that is still
    running when things go wrong."""
    note(journal, " ".join(["start", HELPER.get_step_name(), *place, str(os.getpid())]))
    time.sleep(seconds)
    note(journal, f"end {HELPER.get_step_name()}")
    return "paused"


def where(journal: str, text: str = "") -> str:
    """Where it ran, by the host's own name (see _ran)."""
    return _ran(journal, text, socket.gethostname(), "remote")


def span(journal: str, seconds: float) -> None:
    _span(journal, seconds, socket.gethostname())


def pause(journal: str, seconds: float) -> str:
    return _pause(journal, seconds)


def child_sleep(journal: str, seconds: float) -> None:
    """Start a `sleep` program (a grandchild of the agent) and wait for it: it must be stopped too."""
    proc = subprocess.Popen(["sleep", str(seconds)])
    note(journal, f"sleep {proc.pid}")
    proc.wait()


def fail(message: str) -> None:
    raise ValueError(message)


def fail_unless(flag: str) -> str:
    """Fail until the file ``flag`` exists (a fault fixed between a run and its recovery)."""
    if not os.path.exists(flag):
        raise ValueError("not fixed yet")
    return "fixed"


def make_closure() -> object:
    """A function another host cannot import: it is defined inside this one."""
    def inner() -> None:
        return None
    return inner


def worker_name() -> str:
    """The host or Dask worker running this task, as the flow names it (SEQUENT_HOST), else this host."""
    return os.environ.get("SEQUENT_HOST") or socket.gethostname()


def on_worker(journal: str, text: str = "") -> str:
    """Where it ran, by the Dask worker's name (see _ran)."""
    return _ran(journal, text, worker_name(), "dask")


def span_on_worker(journal: str, seconds: float) -> None:
    _span(journal, seconds, worker_name())


def pause_on_worker(journal: str, seconds: float) -> str:
    return _pause(journal, seconds, worker_name())
