"""Placeholder: filled in by its owner."""

from __future__ import annotations

from . import Command

COMMANDS: list[Command] = []
