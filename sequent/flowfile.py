"""Flow files: a Python file that defines a flow, for ``sequent run`` and ``sequent recover``.

A flow file is an ordinary Python file that either

- defines a module-level :class:`~sequent.Sequent` object (one; when there are several, the one
  named ``flow``), or
- defines ``build_flow(argv)``, a function that takes the arguments after ``--`` on the command
  line (a list of strings) and returns the flow.

``build_flow`` wins when both are there, so a file can keep its own ``if __name__ == '__main__':``
block and still run as a plain script.  The file is imported under its own name (``simple`` for
``simple.py``) with its folder first on ``sys.path``, as ``python simple.py`` would put it, so the
flow's name, its default store (``simple.run.db`` in the working folder) and the functions of its
steps are the same either way.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from types import ModuleType
from typing import Sequence

from .errors import SequentError
from .flow import Sequent


def load_flow(path: str, argv: Sequence[str] = ()) -> Sequent:
    """The flow that the file at ``path`` defines (see the module's docstring); SequentError when it
    cannot be loaded, naming the file and what is wrong."""
    module = load_module(path)
    build = getattr(module, "build_flow", None)
    if build is not None:
        if not callable(build):
            raise SequentError(f"flow file {path}: build_flow is not a function")
        try:
            flow = build(list(argv))
        except SequentError:
            raise
        except SystemExit as exc:  # its own argument parser said why (on stderr), or the message does
            why = exc.code if isinstance(exc.code, str) else f"exit status {exc.code}"
            raise SequentError(f"flow file {path}: build_flow(argv) refused its arguments ({why})") from None
        except Exception as exc:
            raise SequentError(f"flow file {path}: build_flow(argv) raised {_where(exc, path)}") from None
        if not isinstance(flow, Sequent):
            raise SequentError(f"flow file {path}: build_flow(argv) returned {type(flow).__name__}, not a "
                               f"sequent.Sequent")
        return flow
    if argv:
        raise SequentError(f"flow file {path} takes no arguments (it has no build_flow(argv)); got "
                           f"{' '.join(argv)}")
    found = {name: value for name, value in vars(module).items() if isinstance(value, Sequent)}
    if len(found) == 1:
        return next(iter(found.values()))
    if "flow" in found:
        return found["flow"]
    if not found:
        raise SequentError(f"flow file {path} defines no flow: give it a module-level sequent.Sequent object, "
                           f"or a build_flow(argv) function that returns one")
    raise SequentError(f"flow file {path} defines several flows ({', '.join(sorted(found))}): name the one "
                       f"to run 'flow', or give the file a build_flow(argv) function")


def load_module(path: str) -> ModuleType:
    """Import the file at ``path`` under its own name, its folder first on ``sys.path``."""
    if not os.path.isfile(path):
        raise SequentError(f"no flow file {path}")
    if not path.endswith(".py"):
        raise SequentError(f"flow file {path} is not a Python file (.py)")
    full = os.path.abspath(path)
    folder, name = os.path.dirname(full), os.path.basename(full)[:-3]
    if not name.isidentifier():
        raise SequentError(f"flow file {path}: {name!r} is not a module name (letters, digits and _ only)")
    loaded = sys.modules.get(name)
    if loaded is not None:
        if os.path.abspath(getattr(loaded, "__file__", "") or "") == full:
            return loaded
        raise SequentError(f"flow file {path}: its name {name!r} is also the name of module {loaded.__name__} "
                           f"({getattr(loaded, '__file__', 'built in')}); rename the file")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise SequentError(f"flow file {path} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SequentError:
        sys.modules.pop(name, None)
        raise
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise SequentError(f"flow file {path} failed to load: {_where(exc, full)}") from None
    return module


def _where(exc: BaseException, path: str) -> str:
    """``Type: message (file.py, line N)``: the exception and the flow file's line it came from."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.abspath(frame.filename) == os.path.abspath(path):
            line = frame.lineno
    where = f" ({os.path.basename(path)}, line {line})" if line else ""
    return f"{type(exc).__name__}: {exc}{where}"
