"""Conditions over events: small immutable trees of ``Ref``, ``And`` and ``Or``.

A condition is evaluated against the set of events fired at one sequence.  An event that has
not fired is simply false, so ``Or`` is a true logical or whatever the order of its operands
(the original evaluated strings with ``eval`` and lost an ``or`` to a ``NameError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AbstractSet, Any, Iterable, Iterator, Union


class Condition:
    """Base of the condition nodes."""

    __slots__ = ()

    def holds(self, fired: AbstractSet[str]) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def refs(self) -> Iterator[str]:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Ref(Condition):
    """True once the named event has fired."""

    event: str

    def holds(self, fired: AbstractSet[str]) -> bool:
        return self.event in fired

    def refs(self) -> Iterator[str]:
        yield self.event

    def __str__(self) -> str:
        return self.event


@dataclass(frozen=True)
class And(Condition):
    """True when every operand holds (an empty ``And`` holds)."""

    items: tuple[Condition, ...]

    def holds(self, fired: AbstractSet[str]) -> bool:
        return all(item.holds(fired) for item in self.items)

    def refs(self) -> Iterator[str]:
        for item in self.items:
            yield from item.refs()

    def __str__(self) -> str:
        return "(" + " and ".join(map(str, self.items)) + ")"


@dataclass(frozen=True)
class Or(Condition):
    """True when any operand holds."""

    items: tuple[Condition, ...]

    def holds(self, fired: AbstractSet[str]) -> bool:
        return any(item.holds(fired) for item in self.items)

    def refs(self) -> Iterator[str]:
        for item in self.items:
            yield from item.refs()

    def __str__(self) -> str:
        return "(" + " or ".join(map(str, self.items)) + ")"


ConditionLike = Union[Condition, str, Iterable, Any]


def or_(*items: ConditionLike) -> Or:
    """Logical or of conditions, event names or events."""
    return Or(tuple(to_condition(item) for item in items))


def and_(*items: ConditionLike) -> And:
    """Logical and of conditions, event names or events (a tuple or list means the same)."""
    return And(tuple(to_condition(item) for item in items))


def to_condition(value: ConditionLike) -> Condition:
    """Normalise an engine-level expression: a name, an event, a condition, or an AND-iterable."""
    if isinstance(value, Condition):
        return value
    if isinstance(value, str):
        return Ref(value)
    name = getattr(value, "name", None)
    if isinstance(name, str) and hasattr(value, "condition"):  # an EventDef
        return Ref(name)
    if isinstance(value, (tuple, list, frozenset, set)):
        return And(tuple(to_condition(item) for item in value))
    raise TypeError(f"cannot use {value!r} in an event expression: expected an event, its name, "
                    f"or_(...)/and_(...), or a tuple of these")


def simplify(cond: Condition) -> Condition:
    """Flatten single-item and nested same-kind groups; keeps meaning, helps reading and speed."""
    if isinstance(cond, (And, Or)):
        kind = type(cond)
        flat: list[Condition] = []
        for item in cond.items:
            item = simplify(item)
            if type(item) is kind:
                flat.extend(item.items)  # type: ignore[attr-defined]
            else:
                flat.append(item)
        if len(flat) == 1:
            return flat[0]
        return kind(tuple(flat))
    return cond
