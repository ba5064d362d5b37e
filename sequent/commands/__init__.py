"""The sub-commands of ``sequent`` (see :mod:`sequent.cli`), one module per group, and what they share.

Each module has ``COMMANDS``, a list of ``(name, help, configure, run)``: ``configure`` adds the
sub-command's arguments to its parser; ``run`` gets the parsed namespace and returns the exit
status.  A command says what went wrong by raising :class:`CommandError` with the exit status
it means; :func:`sequent.cli.main` prints its message as one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from ..errors import SequentError

#: The exit statuses of every sub-command.
OK = 0  # the run succeeded, or the listing was printed
RUN_FAILED = 1  # the run (or the recovery) ended without success
USAGE = 2  # bad arguments, or a flow that cannot be defined or loaded
NOTHING = 3  # no such run, or nothing to recover

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]
Command = tuple[str, str, Configure, Run]


class CommandError(SequentError):
    """What a command could not do, and the exit status that says so."""

    def __init__(self, message: str, status: int = USAGE):
        super().__init__(message)
        self.status = status


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """STORE (a SQLite path, a SQLAlchemy URL or a DATABASES key) and --config, as every reading command takes."""
    parser.add_argument("store", help="the store: a SQLite path, a SQLAlchemy URL or a DATABASES key")
    parser.add_argument("--config", help="a YAML configuration file (for DATABASES keys)")


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain aligned columns, two spaces apart, no trailing blanks."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [headers, *rows])


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (datetimes as ISO 8601 strings)."""
    json.dump(data, sys.stdout, indent=2, default=_plain, ensure_ascii=False)
    sys.stdout.write("\n")


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
