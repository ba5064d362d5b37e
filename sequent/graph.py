"""Placeholder: the flow's graph as plain data (filled in by its owner)."""

from __future__ import annotations

from typing import Any, Optional


def flow_graph(flow: Any) -> Optional[dict]:
    """The flow's steps, containers and requires as JSON-able data (stored with each attempt)."""
    return None
