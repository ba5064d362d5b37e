"""``sequent runs``, ``tasks``, ``show`` and ``logs``: what a store says about its runs, read without changing it.

``runs`` lists the runs, newest first; ``tasks`` the task rows of one run; ``show`` where every
step and iteration of a run stands, and how to recover it; ``logs`` the run's log, or a task's log
and recorded error.  No store, or no such run: exit 3 (:data:`~sequent.commands.NOTHING`).
Tables are plain aligned text, times local, durations as ``1.23 s`` or ``2 min 3 s``; ``show`` and
``tasks`` add an ITEM column when a task works on an item of a repeated container, and a TRIES
column when a task took more than one try.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shlex
import sys
from typing import Any, Callable, Optional, TypeVar

from . import NOTHING, OK, USAGE, Command, CommandError, add_json_argument, add_store_arguments, print_json, table

_T = TypeVar("_T")

#: The outcomes a run can have, for ``runs --outcome``.
OUTCOMES = ("success", "failure", "incomplete", "interrupted", "error", "running", "abandoned")
_MANY = 8  # steps or sequences named in an error before "..."
_ITEM_WIDTH = 40  # characters of an item shown in a table


# --------------------------------------------------------------------------------------------- formatting

def local_time(value: Optional[datetime.datetime]) -> str:
    """A stored (UTC) time in the local time zone, to the second; '-' for none."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def human_duration(seconds: Optional[float]) -> str:
    """``0.42 s``, ``2 min 3 s``, ``1 h 5 min``, ``2 d 3 h``; '-' for none."""
    if seconds is None:
        return "-"
    if round(seconds, 2) < 60:
        return f"{seconds:.2f} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def _short(text: Optional[str], width: int = _ITEM_WIDTH) -> str:
    """One line of at most ``width`` characters ('...' where cut); '-' for none."""
    if text is None:
        return "-"
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 3] + "..."


def _columns(entries: list[dict], headers: list[str],
             cells: Callable[[dict], list[str]]) -> tuple[list[str], list[list[str]]]:
    """The headers and rows of a task table, with ITEM after SEQUENCE when any task has an item and
    TRIES after STATUS when any task took more than one try."""
    items = any(e["item"] is not None for e in entries)
    retried = any((e["tries"] or 0) > 1 for e in entries)
    rows = [cells(e) for e in entries]
    at_status = headers.index("STATUS") + 1
    if retried:
        headers = headers[:at_status] + ["TRIES"] + headers[at_status:]
        rows = [row[:at_status] + ["-" if e["tries"] is None else str(e["tries"])] + row[at_status:]
                for row, e in zip(rows, entries)]
    if items:
        at_item = headers.index("SEQUENCE") + 1
        headers = headers[:at_item] + ["ITEM"] + headers[at_item:]
        rows = [row[:at_item] + [_short(e["item"])] + row[at_item:] for row, e in zip(rows, entries)]
    return headers, rows


def _try_index(detail: Any) -> dict[tuple[str, str, int], list[Any]]:
    """The run's recorded tries by (step, sequence, attempt), each task's first try first."""
    index: dict[tuple[str, str, int], list[Any]] = {}
    for record in detail.tries:
        index.setdefault((record.step, record.sequence, record.recovery), []).append(record)
    for records in index.values():
        records.sort(key=lambda r: r.try_number)
    return index


def _named(items: list[str]) -> str:
    """A few names, then '...' when there are more."""
    shown = ", ".join(items[:_MANY])
    return shown + (", ..." if len(items) > _MANY else "")


def _read(read: Callable[[], _T]) -> _T:
    """Read the store; no store or no such run becomes exit 3 (other errors stay exit 2)."""
    from ..errors import NoRunError

    try:
        return read()
    except NoRunError as exc:
        raise CommandError(str(exc), NOTHING) from None


# --------------------------------------------------------------------------------------------- runs

def _configure_runs(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser)
    parser.add_argument("--flow", metavar="NAME", help="only the runs of this flow (simple or simple.py alike)")
    parser.add_argument("--outcome", choices=OUTCOMES, help="only the runs that ended so")
    parser.add_argument("--limit", type=int, metavar="N", help="only the N newest")
    add_json_argument(parser)


def _runs(args: argparse.Namespace) -> int:
    from ..runs import list_runs

    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit must be at least 1, got {args.limit}")
    runs = _read(lambda: list_runs(args.store, flow=args.flow, config=args.config))[::-1]  # newest first
    if args.outcome:
        runs = [r for r in runs if r.outcome == args.outcome]
    if args.limit is not None:
        runs = runs[:args.limit]
    if args.json:
        print_json([dataclasses.asdict(r) for r in runs])
        return OK
    if not runs:
        which = " and ".join(x for x in (f"of flow {args.flow!r}" if args.flow else "",
                                         f"with outcome {args.outcome}" if args.outcome else "") if x)
        print(f"No runs{' ' + which if which else ''} in store {args.store}.")
        return OK
    print(table(["RUN_ID", "FLOW", "RECOVERIES", "STARTED", "DURATION", "OUTCOME"],
                [[r.run_id, r.flow, str(r.recoveries), local_time(r.started), human_duration(r.duration), r.outcome]
                 for r in runs]))
    return OK


# --------------------------------------------------------------------------------------------- tasks

def _configure_tasks(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser)
    parser.add_argument("run_id", help="the run whose tasks to list")
    parser.add_argument("--recovery", type=int, help="only this attempt (0 is the first run)")
    add_json_argument(parser)


def _tasks(args: argparse.Namespace) -> int:
    from ..eventor.history import NOT_STARTED
    from ..runs import run_detail

    detail = _read(lambda: run_detail(args.store, args.run_id, config=args.config))
    tasks = [t for t in detail.tasks if args.recovery is None or t.recovery == args.recovery]
    missing = detail.not_started() if args.recovery is None else []
    tries = _try_index(detail)
    entries = [_task_data(t, tries.get((t.step, t.sequence, t.recovery), ())) for t in tasks]
    entries += [_not_started_data(step) for step in missing]
    if args.json:
        print_json(entries)
        return OK
    headers, rows = _columns(entries, ["STEP", "SEQUENCE", "RECOVERY", "STATUS", "STARTED", "ENDED", "ERROR"],
                             lambda e: [e["step"], e["sequence"] or "-",
                                        "-" if e["attempt"] is None else str(e["attempt"]),
                                        e["status"] + (" (skipped)" if e["skipped"] else "") if e["status"]
                                        else NOT_STARTED, local_time(e["started"]), local_time(e["ended"]),
                                        e["error_line"] or ""])
    print(table(headers, rows))
    return OK


def _task_data(task: Any, tries: Any = ()) -> dict:
    """A task as the JSON of ``show`` and ``tasks`` gives it, with its item, its number of tries
    (1 for a task that ran without a recorded number; None for one that did not run) and the
    tries recorded of it (``try_history``)."""
    from ..eventor.history import state_of

    ran = task.started is not None and not task.skipped
    return {"step": task.step, "sequence": task.sequence, "attempt": task.recovery, "state": state_of(task),
            "status": task.status, "skipped": task.skipped, "host": task.host, "pid": task.pid,
            "started": task.started, "ended": task.ended, "duration": task.duration,
            "error_line": task.error_line or None, "error": task.error, "logfile": task.logfile,
            "item": task.item, "tries": task.tries if task.tries is not None else (1 if ran else None),
            "try_history": [_try_data(t) for t in tries]}


def _try_data(record: Any) -> dict:
    return {"try": record.try_number, "started": record.started, "ended": record.ended,
            "duration": record.duration, "host": record.host, "pid": record.pid, "timed_out": record.timed_out,
            "error_line": record.error_line or None, "error": record.error}


def _not_started_data(step: str) -> dict:
    from ..eventor.history import NOT_STARTED

    return {"step": step, "sequence": None, "attempt": None, "state": NOT_STARTED, "status": None,
            "skipped": False, "host": None, "pid": None, "started": None, "ended": None, "duration": None,
            "error_line": None, "error": None, "logfile": None, "item": None, "tries": None, "try_history": []}


# --------------------------------------------------------------------------------------------- show

def _configure_show(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser)
    parser.add_argument("run_id", nargs="?", metavar="RUN_ID", help="the run to show")
    parser.add_argument("--latest", action="store_true", help="the newest run in the store (of --flow)")
    parser.add_argument("--flow", metavar="NAME", help="with --latest: the newest run of this flow")
    parser.add_argument("--failed", action="store_true", help="list the failed tasks only")
    add_json_argument(parser)


def _show(args: argparse.Namespace) -> int:
    from ..runs import run_detail

    if bool(args.run_id) == bool(args.latest):
        raise CommandError("give a RUN_ID or --latest" if not args.run_id else "give a RUN_ID or --latest, not both")
    if args.flow and not args.latest:
        raise CommandError("--flow goes with --latest (a RUN_ID names its run already)")
    detail = _read(lambda: run_detail(args.store, args.run_id, latest=args.latest, flow=args.flow,
                                      config=args.config))
    entries = _entries(detail)
    if args.failed:
        entries = [e for e in entries if e["state"] == "failure"]
    recover = _recovery(detail, args.store, args.config)
    if args.json:
        print_json({"run": dataclasses.asdict(detail.run), "store": args.store,
                    "attempts": [{k: v for k, v in dataclasses.asdict(a).items() if k != "graph"}
                                 | {"duration": a.duration} for a in detail.attempts],
                    "counts": detail.counts(), "duration": detail.duration, "tasks": entries,
                    "tries": [dataclasses.asdict(t) for t in detail.tries],
                    "iterations": [dataclasses.asdict(i) for i in detail.iterations], "recover": recover})
        return OK
    print(_summary(detail))
    print()
    if entries:
        print(table(*_columns(entries, ["STEP", "SEQUENCE", "ATTEMPT", "STATUS", "HOST", "STARTED", "DURATION",
                                        "ERROR"],
                              lambda e: [e["step"], e["sequence"] or "-",
                                         "-" if e["attempt"] is None else str(e["attempt"]), e["state"],
                                         e["host"] or "-", local_time(e["started"]), human_duration(e["duration"]),
                                         e["error_line"] or ""])))
    else:
        print("No failed tasks." if args.failed else "No tasks.")
    if recover is not None:
        print()
        if recover["command"]:
            print("To recover it, run:")
            print("  " + recover["command"])
        else:
            print("The program that ran it is not recorded, so there is no command to give. Recover it "
                  "from Python, building the flow as before:")
            print("  " + recover["python"])
    return OK


def _entries(detail: Any) -> list[dict]:
    """Every step and iteration where it stands now, in the flow's order, with steps never started."""
    from ..eventor.history import NOT_STARTED

    kinds = {step: (container, kind) for step, container, kind in detail.shape}
    tries = _try_index(detail)
    by_step: dict[str, list[Any]] = {}
    for task in detail.latest():
        by_step.setdefault(task.step, []).append(task)
    order = [step for step, _, _ in detail.shape] + [s for s in by_step if s not in kinds]
    entries = []
    for step in order:
        container, kind = kinds.get(step, (None, None))
        for task in by_step.get(step, ()):
            entries.append(_task_data(task, tries.get((task.step, task.sequence, task.recovery), ()))
                           | {"container": container, "kind": kind})
        if step not in by_step:
            entries.append(_not_started_data(step) | {"container": container, "kind": kind, "state": NOT_STARTED})
    return entries


def _summary(detail: Any) -> str:
    run = detail.run
    counts = detail.counts()
    done = ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "none"
    attempts = "; ".join(
        f"#{a.recovery} {a.mode}{'' if a.based_on is None else f' (based on #{a.based_on})'}, "
        f"{a.outcome or 'no end recorded'}, {human_duration(a.duration)}" for a in detail.attempts)
    fields = [("program", run.program or "not recorded"),
              ("started", f"{local_time(run.started)}" + (f" on host {run.host}" if run.host else "")),
              ("attempts", f"{len(detail.attempts)}: {attempts}" if detail.attempts else "none recorded"),
              ("tasks", done),
              ("duration", human_duration(detail.duration))]
    width = max(len(name) for name, _ in fields)
    return "\n".join([f"Run {run.run_id} of flow {run.flow}: {run.outcome}"]
                     + [f"  {name.ljust(width)}  {value}" for name, value in fields])


def _recovery(detail: Any, store: str, config: Optional[str]) -> Optional[dict]:
    """How to recover the run (None when it needs no recovery): the command, or the Python to write."""
    if not detail.recoverable:
        return None
    run = detail.run
    python = f"flow.run(run_mode=seq.RUN_RECOVER, run_id={run.run_id!r})  # store: {store}"
    program = run.program
    if not program or (program.startswith("<") and program.endswith(">")):
        return {"command": None, "python": python}
    words = ["sequent", "recover", program, run.run_id, "--store", store] + (["--config", config] if config else [])
    return {"command": " ".join(shlex.quote(w) for w in words), "python": python}


# --------------------------------------------------------------------------------------------- logs

def _configure_logs(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser)
    parser.add_argument("run_id", metavar="RUN_ID", help="the run")
    parser.add_argument("step", nargs="?", metavar="STEP[/SEQUENCE]",
                        help="a step (every sequence it ran at), or one of its sequences; without it, the run log")
    parser.add_argument("--json", action="store_true", help="print where the logs are, and the recorded errors, "
                        "as JSON instead of the logs")


def _logs(args: argparse.Namespace) -> int:
    from ..runs import run_detail

    detail = _read(lambda: run_detail(args.store, args.run_id, config=args.config))
    if not args.step:
        return _run_logs(detail, args.json)
    step, sequence = _which_step(detail, args.step)
    return _task_logs(detail, step, sequence, args.json)


def _run_logs(detail: Any, as_json: bool) -> int:
    from ..eventor.history import log_files

    files = log_files(detail)
    if as_json:
        print_json({"run_id": detail.run.run_id, "run_logs": [
            {"path": path, "attempts": attempts, "exists": bool(path) and os.path.isfile(path)}
            for path, attempts in files]})
        return OK
    for path, attempts in files:
        which = _attempts_text(attempts)
        if path is None:
            print(f"({which} did not record where its logs went: a store written by an older sequent)")
            continue
        hosts = {a.host for a in detail.attempts if a.recovery in attempts and a.host}
        _print_file(f"run log of {which}", path, sorted(hosts))
    return OK


def _which_step(detail: Any, text: str) -> tuple[str, Optional[str]]:
    """STEP or STEP/SEQUENCE as (step, sequence or None); an unknown step is a usage error naming some known."""
    from ..eventor.history import known_steps

    steps = known_steps(detail)
    if text in steps:
        return text, None
    cut = text.rfind("/")
    while cut > 0:
        if text[:cut] in steps:
            return text[:cut], text[cut + 1:]
        cut = text.rfind("/", 0, cut)
    raise CommandError(f"run {detail.run.run_id} has no step {text!r} (its steps: {_named(steps) or 'none'})", USAGE)


def _task_logs(detail: Any, step: str, sequence: Optional[str], as_json: bool) -> int:
    rows = [t for t in detail.tasks if t.step == step]
    sequences = list(dict.fromkeys(t.sequence for t in rows))
    if sequence is not None and sequences:
        if sequence not in sequences:
            raise CommandError(f"step {step!r} of run {detail.run.run_id} has no sequence {sequence!r} "
                               f"(its sequences: {_named(sequences)})", USAGE)
        sequences = [sequence]
    if as_json:
        print_json({"run_id": detail.run.run_id, "tasks": [_task_log_data(detail, t) for t in rows
                                                           if t.sequence in sequences]})
        return OK
    if not sequences:
        print(f"Step {step} never started in run {detail.run.run_id}: it has no log.")
        return OK
    for i, seq_ in enumerate(sequences):
        if i:
            print()
        print(f"=== {step}/{seq_} ===")
        _print_task(detail, [t for t in rows if t.sequence == seq_])
    return OK


def _print_task(detail: Any, rows: list[Any]) -> None:
    """One task's log files (each once, with the attempts that wrote it), then the errors it recorded."""
    from ..eventor.history import state_of, task_log_path

    ran = [t for t in rows if t.started is not None and not t.skipped]
    files: dict[Optional[str], list[Any]] = {}
    for task in ran:
        files.setdefault(task_log_path(detail.attempt(task.recovery), task), []).append(task)
    if not ran:
        states = ", ".join(f"attempt {t.recovery}: {state_of(t)}" for t in rows)
        print(f"(no attempt ran it: {states})")
    for path, tasks in files.items():
        which = _attempts_text([t.recovery for t in tasks])
        if path is None:
            print(f"({which} did not record where its logs went: a store written by an older sequent)")
            continue
        hosts = sorted({t.host for t in tasks if t.host})
        _print_file(f"log file of {which}", path, hosts, remote=any(t.logfile for t in tasks))
    for task in rows:
        if task.error:
            print(f"--- error recorded by attempt {task.recovery} ({state_of(task)}) ---")
            print(task.error.rstrip("\n"))


def _task_log_data(detail: Any, task: Any) -> dict:
    from ..eventor.history import state_of, task_log_path

    path = task_log_path(detail.attempt(task.recovery), task) if task.started is not None else None
    return {"step": task.step, "sequence": task.sequence, "attempt": task.recovery, "state": state_of(task),
            "host": task.host, "log_file": path, "log_exists": bool(path) and os.path.isfile(path),
            "error_line": task.error_line or None, "error": task.error}


def _print_file(what: str, path: str, hosts: list[str], remote: bool = False) -> None:
    """A log file headed by what it is; a one-line note instead when it is elsewhere or gone."""
    from ..eventor.logs import HOST

    elsewhere = [h for h in hosts if h != HOST]
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        if remote or elsewhere:
            print(f"--- {what} is on host {', '.join(elsewhere or hosts)}, not on this machine: {path} ---")
        else:
            print(f"--- no {what} at {path}: nothing was logged there, or the file was removed ---")
        return
    except OSError as exc:
        print(f"--- cannot read the {what} at {path}: {exc.strerror or exc} ---")
        return
    print(f"--- {what}: {path} ---")
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")


def _attempts_text(attempts: list[int]) -> str:
    return ("attempt " if len(attempts) == 1 else "attempts ") + ", ".join(str(a) for a in attempts)


COMMANDS: list[Command] = [
    ("runs", "list the runs kept in a store, newest first", _configure_runs, _runs),
    ("show", "show where every step of a run stands, and how to recover it", _configure_show, _show),
    ("logs", "print a run's log, or a task's log and recorded error", _configure_logs, _logs),
    ("tasks", "list the task rows of one run, attempt by attempt", _configure_tasks, _tasks),
]
