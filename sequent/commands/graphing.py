"""``sequent graph``: a flow's steps and requires as Mermaid or Graphviz DOT, from a flow file or a run.

``sequent graph FLOW.py [-- ARGS]`` draws the flow the file defines (``ARGS`` go to its
``build_flow(argv)``); ``sequent graph STORE RUN_ID`` (or ``--latest``) draws the graph the run
recorded, each node coloured by how its step ended.  ``--format json`` prints the graph's data
(:mod:`sequent.graph`) with the run's statuses.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Optional

from . import NOTHING, OK, USAGE, Command, CommandError, print_json

FORMATS = ("mermaid", "dot", "json")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="FLOW.py|STORE",
                        help="a flow file, or the store (a SQLite path, a SQLAlchemy URL or a DATABASES key)")
    parser.add_argument("run_id", nargs="?", metavar="RUN_ID", help="the run to draw (with a store)")
    parser.add_argument("--latest", action="store_true", help="the store's newest run")
    parser.add_argument("--config", help="a YAML configuration file (for DATABASES keys)")
    parser.add_argument("--format", choices=FORMATS, default="mermaid",
                        help="mermaid (the default), dot (Graphviz) or json (the graph's data)")
    parser.epilog = "Arguments after -- go to the flow file's build_flow(argv)."


def run(args: argparse.Namespace) -> int:
    flow_args = list(getattr(args, "flow_args", None) or ())
    if args.source.endswith(".py"):
        if args.latest or args.run_id:
            raise CommandError(f"sequent graph {args.source} draws the flow, not a run: name a store "
                               f"to draw a run (sequent graph STORE RUN_ID)")
        graph, statuses = _flow_file_graph(args.source, flow_args), None
    else:
        if flow_args:
            raise CommandError("arguments after -- go to a flow file (sequent graph FLOW.py -- ARGS), not to a store")
        graph, statuses = stored_graph(args.source, args.run_id, args.latest, args.config)
    if args.format == "json":
        print_json({"graph": graph, "statuses": statuses})
        return OK
    from ..graph import to_dot, to_mermaid

    draw = to_dot if args.format == "dot" else to_mermaid
    sys.stdout.write(draw(graph, statuses))
    return OK


def _flow_file_graph(path: str, argv: list[str]) -> dict:
    from ..flowfile import load_flow
    from ..graph import flow_graph

    return flow_graph(load_flow(path, argv))


def one_run(run_id: Optional[str], latest: bool, command: str) -> Optional[str]:
    """The RUN_ID given to a reading command (None with --latest); a usage error unless exactly one is named."""
    if latest and run_id:
        raise CommandError(f"sequent {command}: name a RUN_ID or --latest, not both")
    if not latest and not run_id:
        raise CommandError(f"sequent {command}: name the run: STORE RUN_ID, or STORE --latest")
    return None if latest else run_id


def read_run(store: str, run_id: Optional[str], latest: bool, config: Optional[str]) -> Any:
    """The run's :class:`~sequent.runs.RunDetail`; exit status 3 when there is no such store or run."""
    from ..errors import NoRunError, SequentError
    from ..runs import run_detail

    try:
        return run_detail(store, run_id, latest=latest, config=config)
    except NoRunError as exc:
        raise CommandError(str(exc), NOTHING) from None
    except SequentError as exc:
        raise CommandError(str(exc), USAGE) from None


def stored_graph(store: str, run_id: Optional[str], latest: bool, config: Optional[str]) -> tuple[dict, dict]:
    """The graph a run recorded and each of its steps' outcome (its shape without requires from an old store)."""
    from ..graph import drawable, step_statuses, with_not_started

    detail = read_run(store, one_run(run_id, latest, "graph"), latest, config)
    graph, note = drawable(detail.graph, detail.shape, detail.run.flow)
    if note:
        print(f"sequent: run {detail.run.run_id}: {note}", file=sys.stderr)
    return graph, with_not_started(graph, step_statuses(detail.tasks))


COMMANDS: list[Command] = [
    ("graph", "draw a flow's steps and requires (Mermaid or DOT), from a flow file or a stored run",
     configure, run),
]
