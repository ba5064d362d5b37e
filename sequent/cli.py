"""The ``sequent`` command line.

``sequent --version`` prints the installed version; without a sub-command the
help is printed.  Sub-commands register themselves in :data:`COMMANDS`; each
one is a ``(name, help, configure, run)`` tuple where ``configure`` adds the
sub-command's arguments to its parser and ``run`` receives the parsed
namespace and returns the exit status.

Importing this module has no side effects: nothing is configured, opened or
printed until :func:`main` is called.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from collections.abc import Callable

from sequent._version import __version__

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

def _when(value: "datetime | None") -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain aligned columns (the optional ``rich`` display is not needed for this)."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def _configure_runs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="the store: a SQLite path, a SQLAlchemy URL or a DATABASES key")
    parser.add_argument("--flow", help="only the runs of this flow")
    parser.add_argument("--config", help="a YAML configuration file (for DATABASES keys)")


def _runs(args: argparse.Namespace) -> int:
    from . import list_runs  # imported late: `sequent --version` stays fast

    runs = list_runs(args.store, flow=args.flow, config=args.config)
    print(_table(["RUN_ID", "FLOW", "RECOVERIES", "STARTED", "ENDED", "OUTCOME"],
                 [[r.run_id, r.flow, str(r.recoveries), _when(r.started), _when(r.ended), r.outcome] for r in runs]))
    return 0


def _configure_tasks(parser: argparse.ArgumentParser) -> None:
    _configure_runs(parser)
    parser.add_argument("run_id", help="the run whose tasks to list")
    parser.add_argument("--recovery", type=int, help="only this attempt (0 is the first run)")


def _tasks(args: argparse.Namespace) -> int:
    from . import run_tasks

    tasks = run_tasks(args.store, args.run_id, recovery=args.recovery, config=args.config)
    print(_table(["STEP", "SEQUENCE", "RECOVERY", "STATUS", "STARTED", "ENDED", "ERROR"],
                 [[t.step, t.sequence, str(t.recovery), t.status + (" (skipped)" if t.skipped else ""),
                   _when(t.started), _when(t.ended), (t.error or "").splitlines()[0] if t.error else ""]
                  for t in tasks]))
    return 0


#: The sub-commands, in the order ``--help`` lists them.
COMMANDS: list[tuple[str, str, Configure, Run]] = [
    ("runs", "list the runs kept in a store", _configure_runs, _runs),
    ("tasks", "list the tasks of one run", _configure_tasks, _tasks),
]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for the ``sequent`` command."""
    parser = argparse.ArgumentParser(
        prog="sequent",
        description="Run and inspect sequent flows.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"sequent {__version__}",
        help="print the version and exit",
    )
    if COMMANDS:
        commands = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name, help_text, configure, run in COMMANDS:
            sub = commands.add_parser(name, help=help_text, description=help_text)
            configure(sub)
            sub.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``sequent`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status instead of exiting, so that it can be called from
    tests; the console script and ``python -m sequent`` pass it to
    :class:`SystemExit`.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as stop:  # --version, --help and usage errors
        code = stop.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 0
    from .errors import SequentError

    try:
        return int(run(args))
    except SequentError as exc:
        print(f"sequent: {exc}", file=sys.stderr)
        return 1
