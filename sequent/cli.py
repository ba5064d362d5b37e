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
from collections.abc import Callable

from sequent._version import __version__

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

#: The sub-commands, in the order ``--help`` lists them.
COMMANDS: list[tuple[str, str, Configure, Run]] = []


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
    return int(run(args))
