"""``sequent run`` and ``sequent recover``: run a flow file, or recover one of its runs, without editing it.

A flow file defines a module-level ``Sequent`` object or a ``build_flow(argv)`` function
(:mod:`sequent.flowfile`); the arguments after ``--`` go to ``build_flow``.  ``recover --dry-run``
prints what the recovery would do with each task, and why, and changes nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import NOTHING, OK, RUN_FAILED, Command, CommandError, add_json_argument, print_json, table


def _flow_arguments(parser: argparse.ArgumentParser, *, run_id: bool = False) -> None:
    parser.add_argument("flow_file", metavar="FLOW.py", help="a Python file defining a flow (a module-level "
                        "Sequent object, or build_flow(argv) returning one)")
    if run_id:
        parser.add_argument("run_id", nargs="?", metavar="RUN_ID", help="the run to recover (default: the flow's "
                            "latest)")
    parser.add_argument("--store", help="the store to use instead of the flow's own: a SQLite path, a "
                        "SQLAlchemy URL or a DATABASES key")
    parser.add_argument("--config", help="a YAML file whose settings replace the flow's own")
    parser.epilog = "Arguments after -- go to the flow file's build_flow(argv)."


def _flow(args: argparse.Namespace) -> Any:
    """The flow of the file, with --config applied (SequentError, exit 2, when it cannot be loaded)."""
    from ..flowfile import load_flow

    flow = load_flow(args.flow_file, list(getattr(args, "flow_args", ())))
    if args.config:
        flow.config = _with_config(flow.config, args.config)
    return flow


def _with_config(current: dict, path: str) -> dict:
    """The flow's configuration with the file's settings over it, checked as the flow's own are."""
    import yaml

    from ..eventor.config import load_config, merge

    try:
        with open(path, encoding="utf-8") as handle:
            user = yaml.safe_load(handle)
    except OSError as exc:
        raise CommandError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CommandError(f"configuration file {path} is not valid YAML: {exc}") from None
    if user is None:
        return current
    if not isinstance(user, dict):
        raise CommandError(f"configuration file {path} must hold a mapping of settings, not {type(user).__name__}")
    return load_config(merge(dict(current), user), "")


def _run(args: argparse.Namespace) -> int:
    flow = _flow(args)
    kwargs = {"store": args.store} if args.store else {}
    return OK if flow.run(**kwargs) else RUN_FAILED


def _configure_recover(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latest", action="store_true", help="recover the flow's latest run (the default)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what the recovery would do with each task, and why; change nothing")
    add_json_argument(parser)
    _flow_arguments(parser, run_id=True)


def _recover(args: argparse.Namespace) -> int:
    import sequent as seq
    from ..errors import NoRunError

    if args.run_id and args.latest:
        raise CommandError("give a RUN_ID or --latest, not both")
    if args.json and not args.dry_run:
        raise CommandError("--json goes with --dry-run (a recovery's output is its log)")
    flow = _flow(args)
    try:
        plan = flow.plan_recovery(args.run_id, store=args.store or None)
    except NoRunError as exc:
        raise CommandError(str(exc), NOTHING) from None
    if args.dry_run:
        if args.json:
            print_json(_plan_data(plan))
        else:
            print(_plan_text(plan))
        return OK
    if plan.outcome == "success":
        raise CommandError(f"run {plan.run_id!r} of flow {plan.flow!r} succeeded: nothing to recover", NOTHING)
    kwargs: dict[str, Any] = {"store": args.store} if args.store else {}
    ok = flow.run(run_mode=seq.RUN_RECOVER, run_id=plan.run_id, **kwargs)
    return OK if ok else RUN_FAILED


def _plan_data(plan: Any) -> dict:
    return {"flow": plan.flow, "run_id": plan.run_id, "store": plan.store, "outcome": plan.outcome,
            "recovery": plan.recovery, "based_on": plan.based_on, "counts": plan.counts(),
            "tasks": [{"step": e.step, "sequence": e.sequence, "kind": e.kind, "recorded": e.recorded,
                       "attempt": e.attempt, "action": e.action, "why": e.why} for e in plan.entries]}


def _plan_text(plan: Any) -> str:
    from ..eventor.plan import NEW

    head = (f"Recovering run {plan.run_id} of flow {plan.flow} (its last attempt: {plan.outcome}) would be "
            f"attempt {plan.recovery}, compared with attempt {plan.based_on}, in store {plan.store}.\n"
            f"Each task is skipped or run as planned when the recovery reaches it (when its requires hold).")
    rows = [[e.step, e.sequence or "-", e.recorded or "not started", e.action.upper() if e.action != NEW else "new",
             e.why] for e in plan.entries]
    counts = ", ".join(f"{n} {action}" for action, n in sorted(plan.counts().items()))
    return "\n".join([head, "", table(["STEP", "SEQUENCE", "RECORDED", "PLAN", "WHY"], rows), "",
                      f"In all: {counts}. Nothing was changed (dry run)."])


COMMANDS: list[Command] = [
    ("run", "run a flow file", _flow_arguments, _run),
    ("recover", "recover a run of a flow file (its latest by default); --dry-run shows the plan",
     _configure_recover, _recover),
]

