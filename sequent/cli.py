"""The ``sequent`` command line.

``sequent --version`` prints the installed version; without a sub-command the
help is printed.  The sub-commands live in :mod:`sequent.commands`, one module
per group (:data:`MODULES`).  Exit statuses: 0 success, 1 the run failed, 2 a
usage or definition error, 3 no such run or nothing to recover; an error is
one line on stderr, never a traceback.

Importing this module has no side effects: nothing is configured, opened or
printed until :func:`main` is called.
"""

from __future__ import annotations

import argparse
import os
import sys

from sequent._version import __version__

#: The modules of the sub-commands, in the order ``--help`` lists them.
MODULES = ("running", "inspecting", "graphing", "reporting")


def commands() -> list:
    """Every sub-command, as (name, help, configure, run); see :mod:`sequent.commands`."""
    import importlib

    found = []
    for name in MODULES:
        found.extend(importlib.import_module(f"sequent.commands.{name}").COMMANDS)
    return found


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
    found = commands()
    if found:
        subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name, help_text, configure, run in found:
            sub = subparsers.add_parser(name, help=help_text, description=help_text)
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
    argv = list(sys.argv[1:] if argv is None else argv)
    flow_args: list[str] = []
    if "--" in argv:  # what follows goes to the flow file (sequent run FLOW.py -- ARGS)
        at = argv.index("--")
        argv, flow_args = argv[:at], argv[at + 1:]
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --version, --help and usage errors
        code = stop.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1
    args.flow_args = flow_args
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 0
    from .commands import USAGE, CommandError
    from .errors import SequentError

    try:
        return int(run(args))
    except CommandError as exc:
        _say_error(str(exc))
        return exc.status
    except SequentError as exc:
        _say_error(str(exc))
        return USAGE
    except KeyboardInterrupt:
        _say_error("interrupted")
        return 130
    except Exception as exc:  # never a traceback (SEQUENT_DEBUG=1 shows it)
        if os.environ.get("SEQUENT_DEBUG"):
            raise
        _say_error(f"{type(exc).__name__}: {exc} (SEQUENT_DEBUG=1 shows where)")
        return USAGE


def _say_error(message: str) -> None:
    """One line on stderr, whatever the message holds."""
    print("sequent: " + " ".join(message.split()), file=sys.stderr)
