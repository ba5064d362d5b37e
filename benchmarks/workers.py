"""What the benchmark scripts share: running one measurement in a fresh interpreter.

Each script runs itself as ``python SCRIPT _worker SPEC_JSON``; the worker prints its result as
one JSON line (with ``"ok": true``) last.  Imported by the scripts from this folder (a script's
own folder is first on sys.path); it imports only what the agent of a remote benchmark has loaded.
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Failed(Exception):
    """A worker timed out, exited badly or reported a failure."""


def worker_env() -> dict:
    """The environment of a worker: this checkout first on PYTHONPATH, no SEQUENT_CONFIG."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("SEQUENT_CONFIG", None)
    return env


def spawn(script: str, spec: dict, timeout: float, label: str = "") -> dict:
    """Run ``script``'s worker on ``spec`` in a fresh interpreter; its JSON result, or raise Failed."""
    import json
    import subprocess
    import tempfile

    label = label or str(spec)
    try:
        proc = subprocess.run([sys.executable, script, "_worker", json.dumps(spec)], capture_output=True, text=True,
                              timeout=timeout, env=worker_env(), cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        raise Failed(f"{label} timed out after {timeout:.0f} s") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise Failed(f"{label} exited with {proc.returncode}:\n{tail}")
    result = json.loads(lines[-1])
    if not result.get("ok"):
        raise Failed(f"{label} failed: {result}")
    return result
