"""The ``Sequent`` facade: a tree of steps that runs as an Eventor program."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional

from .errors import NoRunError, SequentError
from .eventor import Eventor, current_task
from .eventor.config import load_config
from .eventor.engine import calling_module, flow_name, run_names_problem
from .eventor.errors import EventorError
from .eventor.errors import NoRunError as _EngineNoRunError
from .eventor.model import RunMode
from .translate import translate
from .tree import Node, Step

if TYPE_CHECKING:
    from .eventor.plan import RecoveryPlan

_RUN_KWARGS = ("run_mode", "recovery_run", "run_id", "store")
#: Sequent(**kwargs) the original took: "host" names the run's host in the store; the others are
#: accepted for compatibility and not used.
_EXTRA_KWARGS = frozenset({"host", "remotes", "import_module", "import_file", "listener_q"})


class Sequent(Node):
    """A flow of steps: build it with :meth:`add_step`, then :meth:`run` it (or call it).

    ``name`` defaults to the file name of the calling program (``runly00.py``); ``store`` to
    ``<cwd>/<program>.run.db``; ``config`` is a dict, a YAML file or a YAML string, of which
    ``config_tag`` selects a dotted sub-tree.
    """

    def __init__(self, name: str = "", store: Any = "", run_mode: RunMode = RunMode.restart,
                 recovery_run: Optional[int] = None, run_id: Optional[str] = None, config: Any = None,
                 config_tag: Optional[str] = "", **kwargs: Any):
        self._init_node()
        self.flow = self
        self.path = ""
        self._paths: dict[str, Step] = {}  # every step of the tree by its flattened name
        self.program_file = calling_module()
        self.name = flow_name(name, self.program_file, "sequent")
        problem = run_names_problem(self.name, run_id)
        if problem:
            raise SequentError(problem)
        try:
            self.config = load_config(config, config_tag)
            run_mode = RunMode(run_mode)
        except (EventorError, ValueError) as exc:
            raise SequentError(str(exc)) from None
        self._run_kwargs: dict[str, Any] = dict(store=store, run_mode=run_mode, recovery_run=recovery_run,
                                                run_id=run_id)
        unknown = set(kwargs) - _EXTRA_KWARGS
        if unknown:
            raise SequentError(f"Sequent() got unknown arguments: {', '.join(sorted(unknown))}")
        self._extra = kwargs
        self.run_id: Optional[str] = run_id
        self.eventor: Optional[Eventor] = None

    def step_at(self, path: str) -> Optional[Step]:
        """The step of this flow whose flattened name is ``path``, or None (for the tree's checks)."""
        return self._paths.get(path)

    def register_step(self, step: Step) -> None:
        """Record a new, checked step under its flattened name; the tree calls it, users need not."""
        self._paths[step.path] = step

    def run(self, max_loops: int = -1, **kwargs: Any) -> bool:
        """Run the flow; True when it succeeded (every failure handled), False otherwise.

        Keyword arguments (``run_mode``, ``run_id``, ``recovery_run``, ``store``) replace the
        constructor's, for this run and the ones after it.
        """
        unknown = set(kwargs) - set(_RUN_KWARGS)
        if unknown:
            raise SequentError(f"run() got unknown arguments: {', '.join(sorted(unknown))}")
        self._run_kwargs.update(kwargs)
        if not self.children:
            raise SequentError(f"flow {self.name!r} has no steps to run")
        opts = self._run_kwargs
        run_id = opts["run_id"]
        if run_id is None and RunMode(opts["run_mode"]) is not RunMode.restart:
            run_id = self.run_id  # recover this object's own last run, not just the flow's latest
        try:
            ev = self._eventor(opts["store"], opts["run_mode"], opts["recovery_run"], run_id)
            self.eventor = ev
            return ev.run(max_loops=max_loops)
        except SequentError:
            raise
        except EventorError as exc:
            raise SequentError(str(exc)) from exc
        finally:
            if self.eventor is not None and self.eventor.run_id:
                self.run_id = self.eventor.run_id

    def _eventor(self, store: Any, run_mode: Any, recovery_run: Optional[int], run_id: Optional[str]) -> Eventor:
        """The engine's program for this flow, translated from the tree (EventorError when it cannot be)."""
        ev = Eventor(name=self.name, store=store, run_mode=run_mode, recovery_run=recovery_run, run_id=run_id,
                     config=self.config, config_tag="", host=self._extra.get("host"),
                     program_file=self.program_file)
        translate(self, ev)
        from .graph import graph_text

        ev.graph = graph_text(self)  # its text only: the data is not needed while the run goes on
        return ev

    def plan_recovery(self, run_id: Optional[str] = None, *, store: Any = None,
                      recovery_run: Optional[int] = None) -> "RecoveryPlan":
        """What recovering ``run_id`` (this flow's latest run when None) would do, task by task, and why:
        read from the store, nothing changed (``sequent recover --dry-run``)."""
        from .eventor.plan import recovery_plan

        if not self.children:
            raise SequentError(f"flow {self.name!r} has no steps to run")
        opts = self._run_kwargs
        try:
            ev = self._eventor(opts["store"] if store is None else store, RunMode.recover,
                               opts["recovery_run"] if recovery_run is None else recovery_run, run_id)
            ev.validate()
            return recovery_plan(ev, run_id, ev.recovery_run)
        except _EngineNoRunError as exc:
            raise NoRunError(str(exc)) from None
        except EventorError as exc:
            raise SequentError(str(exc)) from exc

    __call__ = run

    def get_step_name(self) -> str:
        """The flattened name of the step running in this thread or process (``s1_s11_s111``)."""
        return self._current("STEP_NAME", "step", "get_step_name")

    def get_step_sequence(self) -> str:
        """The sequence of the step running in this thread or process (``1.2.2``)."""
        return self._current("STEP_SEQUENCE", "sequence", "get_step_sequence")

    def get_step_item(self) -> Any:
        """The item of the innermost repeated container around the step running in this thread or
        process (its ``str()`` in a process the step started itself, from ``SEQUENT_STEP_ITEM``);
        None for a step outside repeated containers."""
        ctx = current_task()
        if ctx is not None:
            return ctx.item
        prefix = self.config["envvar_prefix"]
        if os.environ.get(prefix + "STEP_NAME") is None:
            raise SequentError("get_step_item() is only meaningful inside a running step")
        return os.environ.get(prefix + "STEP_ITEM")

    def _current(self, var: str, field: str, method: str) -> str:
        """The running task's ``field``, else its environment variable (a process started by it)."""
        ctx = current_task()
        if ctx is not None:
            return getattr(ctx, field)
        value = os.environ.get(self.config["envvar_prefix"] + var)
        if value is None:
            raise SequentError(f"{method}() is only meaningful inside a running step")
        return value

    def close(self) -> None:
        """Nothing stays open between runs; kept for the original's API."""

    def __repr__(self) -> str:
        return f"<Sequent {self.name!r}: {len(self._paths)} steps>"
