"""The documentation: it builds with every cross-reference resolved, and it covers the API.

The build is Sphinx's nitpicky mode with warnings as errors, so a renamed class, a name
documented under the wrong module or a broken ``:ref:`` fails here rather than in a reader's
browser.  The other tests read the reST sources and need no Sphinx.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import sequent

DOCS = Path(__file__).resolve().parent.parent / "docs"
API = DOCS / "api.rst"
PORTING = DOCS / "porting.rst"

# ".. autoclass:: sequent.Sequent", ".. py:class:: Step", ".. py:data:: STEP_READY", ...
_DIRECTIVE = re.compile(r"^\.\. (?:auto\w+|py:\w+):: +(?:sequent\.)?([A-Za-z_]\w*)\b", re.MULTILINE)
_ATTRIBUTE = re.compile(r"^ +\.\. py:(?:attribute|property):: +(\w+)", re.MULTILINE)
# a name of ours in a role or a literal: :class:`sequent.RunInfo`, :func:`~sequent.or_`, ``sequent.eventor``,
# :meth:`Eventor.run <sequent.eventor.Eventor.run>`
_OUR_NAME = re.compile(r"[`<]~?(sequent(?:\.\w+)+)")


def _facade_section() -> str:
    """The part of api.rst that documents the ``sequent`` module (up to ``sequent.eventor``)."""
    text = API.read_text(encoding="utf-8")
    end = text.find("\nsequent.eventor\n===")
    assert end > 0, "api.rst has no 'sequent.eventor' section"
    return text[:end]


def _resolve(dotted: str) -> Any:
    """The object a dotted name of ours refers to: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@pytest.mark.timeout_seconds(90)  # a few seconds on its own; room for a loaded 2-core CI machine
def test_docs_build_with_every_reference_resolved(tmp_path: Path) -> None:
    pytest.importorskip(
        "sphinx", reason="[required] sphinx is not installed (pip install -e '.[docs]'): the docs "
        "build, which checks every cross-reference, cannot run")
    out = tmp_path / "html"
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-n", "-W", "--keep-going", "-q", "-E",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
        capture_output=True, text=True, timeout=80)
    assert build.returncode == 0, f"sphinx-build failed:\n{build.stderr}{build.stdout}"
    for page in ("index", "guide", "porting", "api"):
        assert (out / f"{page}.html").is_file(), f"{page}.html was not built"


def test_api_reference_documents_every_exported_name() -> None:
    documented = set(_DIRECTIVE.findall(_facade_section()))
    missing = sorted(set(sequent.__all__) - documented)
    assert not missing, f"docs/api.rst documents no directive for sequent.{', sequent.'.join(missing)}"


@pytest.mark.parametrize("name", sorted(n for n in sequent.__all__
                                        if dataclasses.is_dataclass(getattr(sequent, n))))
def test_api_reference_documents_every_field_of_exported_records(name: str) -> None:
    text = _facade_section()
    start = re.search(rf"^\.\. (?:auto\w+|py:\w+):: +(?:sequent\.)?{name}\b.*$", text, re.MULTILINE)
    assert start is not None, f"docs/api.rst has no entry for sequent.{name}"
    following = re.search(r"^\S", text[start.end() + 1:], re.MULTILINE)  # the next unindented line
    block = text[start.end():start.end() + 1 + following.start()] if following else text[start.end():]
    fields = {f.name for f in dataclasses.fields(getattr(sequent, name))}
    missing = sorted(fields - set(_ATTRIBUTE.findall(block)))
    assert not missing, f"docs/api.rst does not describe the fields {missing} of sequent.{name}"


def test_porting_guide_names_only_what_exists() -> None:
    names = sorted(set(_OUR_NAME.findall(PORTING.read_text(encoding="utf-8"))))
    assert "sequent.ResourcePool" in names and "sequent.eventor.Eventor" in names  # the pattern finds names
    unresolved = []
    for dotted in names:
        try:
            _resolve(dotted)
        except (ImportError, AttributeError):
            unresolved.append(dotted)
    assert not unresolved, f"docs/porting.rst names what sequent does not have: {unresolved}"
