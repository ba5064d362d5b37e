"""``sequent report``: one run as a self-contained HTML page (see :mod:`sequent.report`)."""

from __future__ import annotations

import argparse
import os
import tempfile

from . import OK, USAGE, Command, CommandError, add_store_arguments
from .graphing import one_run, read_run


def configure(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser)
    parser.add_argument("run_id", nargs="?", metavar="RUN_ID", help="the run to report (or --latest)")
    parser.add_argument("--latest", action="store_true", help="the store's newest run")
    parser.add_argument("-o", "--output", metavar="FILE.html",
                        help="where to write the page (default: <flow>-<run_id>.html here)")


def run(args: argparse.Namespace) -> int:
    from ..report import build_report

    if getattr(args, "flow_args", None):
        raise CommandError("sequent report takes no arguments after --")
    detail = read_run(args.store, one_run(args.run_id, args.latest, "report"), args.latest, args.config)
    page = build_report(detail, store=shown_store(args.store), config=args.config)
    path = args.output or f"{detail.run.flow.removesuffix('.py')}-{detail.run.run_id}.html"
    write_file(path, page)
    print(path)
    return OK


def shown_store(store: str) -> str:
    """The store as the page may show it: a URL with its password masked."""
    if "://" not in store:
        return store  # a SQLite path or a DATABASES key
    try:
        from sqlalchemy.engine import make_url

        return make_url(store).render_as_string(hide_password=True)
    except Exception:
        return store.split("://", 1)[0] + "://..."


def write_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file renamed over it)."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, temp = tempfile.mkstemp(prefix=".sequent-report-", suffix=".html", dir=folder)
    except OSError as exc:
        raise CommandError(f"cannot write the report {path}: {exc.strerror or exc}", USAGE) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as out:
            out.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as exc:
        os.unlink(temp)
        raise CommandError(f"cannot write the report {path}: {exc.strerror or exc}", USAGE) from None


COMMANDS: list[Command] = [
    ("report", "write one run as a self-contained HTML page: summary, graph, timeline, failures", configure, run),
]
