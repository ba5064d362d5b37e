"""Sphinx configuration for the sequent documentation.

Build with::

    sphinx-build -W -b html docs docs/_build/html

The build is nitpicky: every cross-reference must resolve, so a renamed or undocumented name
fails it (``tests/test_docs.py`` builds it the same way).
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _read_version() -> str:
    text = (ROOT / "sequent" / "_version.py").read_text(encoding="utf-8")
    match = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", text, re.MULTILINE)
    if match is None:
        raise RuntimeError("no __version__ in sequent/_version.py")
    return match.group(1)


project = "sequent"
author = "the sequent authors"
copyright = "2026, the sequent authors"
release = _read_version()
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = True

# Every :class:/:func:/... reference must resolve (the documented names are checked, not trusted).
nitpicky = True
# Names of the standard library and of third-party packages that the docs and the type hints
# mention.  No inventory is fetched for them (the build stays offline and quick), so their
# references cannot resolve; only these are let through.  Names of sequent itself never are.
nitpick_ignore_regex = [
    (r"py:.*", r"(datetime|warnings|logging|subprocess|multiprocessing|os|typing|collections"
               r"|contextvars|enum|time|sqlalchemy|distributed)(\..*)?"),
]

templates_path = []
exclude_patterns = ["_build"]
root_doc = "index"

html_theme = "alabaster"
html_static_path = []
html_theme_options = {
    "description": "Flows of batch steps with dependencies, loops and recovery",
}
