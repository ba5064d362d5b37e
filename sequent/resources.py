"""Resource pools: counting semaphores that steps acquire from before they start.

The seed's spelling works::

    class Licences(sequent.Resource): pass
    rp1 = sequent.ResourcePool('RP1', resource_cls=Licences, policy={'resource_limit': 2}).load()
    flow.add_step('s1', func=work, acquires=[(rp1, 2)])

A pool lives in the coordinator, which grants each task all its pools at once or none, and
records in the store which task holds what.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from .errors import SequentError
from .eventor.model import capacity_problem, releases_problem, sum_amounts

# 'load_size' and 'autoload' are accepted for compatibility and not used: a counting pool preloads nothing
_POLICY_KEYS = {"resource_limit", "load_size", "autoload"}


class Resource:
    """The kind of thing a pool holds; subclass it to name your own (``class Licences(Resource)``)."""


class ResourcePool:
    """A named pool of ``policy['resource_limit']`` resources (-1 or missing: unlimited)."""

    def __init__(self, name: str, resource_cls: type = Resource, policy: Optional[Mapping[str, Any]] = None):
        if not isinstance(name, str) or not name:
            raise SequentError(f"a resource pool needs a non-empty name, got {name!r}")
        if not (isinstance(resource_cls, type) and issubclass(resource_cls, Resource)):
            raise SequentError(f"resource pool {name!r}: resource_cls must be a subclass of sequent.Resource, "
                               f"got {resource_cls!r}")
        policy = dict(policy or {})
        unknown = set(policy) - _POLICY_KEYS
        if unknown:
            raise SequentError(f"resource pool {name!r}: unknown policy keys {', '.join(sorted(unknown))}; "
                               f"known: {', '.join(sorted(_POLICY_KEYS))}")
        limit = policy.get("resource_limit", -1)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit == 0 or limit < -1:
            raise SequentError(f"resource pool {name!r}: resource_limit must be an int >= 1, or -1 for "
                               f"unlimited, got {limit!r}")
        self.name = name
        self.resource_cls = resource_cls
        self.policy = policy
        self.limit = limit

    def load(self) -> "ResourcePool":
        """Accepted for the original's API; a counting pool has nothing to pre-create."""
        return self

    def __repr__(self) -> str:
        limit = "unlimited" if self.limit < 1 else self.limit
        return f"<ResourcePool {self.name!r} of {self.resource_cls.__name__}: {limit}>"


def _pool(value: Any) -> Optional[ResourcePool]:
    """The facade keys a step's amounts by the pool object itself."""
    return value if isinstance(value, ResourcePool) else None


def parse_amounts(value: Any, label: str, what: str) -> Optional[tuple[tuple[ResourcePool, int], ...]]:
    """Check ``[(pool, count), ...]`` of a step and sum each pool's counts; None stays None."""
    if value is None:
        return None
    try:
        return sum_amounts(value, what, _pool, "a sequent.ResourcePool")
    except ValueError as exc:
        raise SequentError(f"{label}: {exc}") from None


def step_amounts(acquires: Any, releases: Any, label: str
                 ) -> tuple[tuple[tuple[ResourcePool, int], ...], Optional[tuple[tuple[ResourcePool, int], ...]]]:
    """A step's checked ``acquires`` (() for none) and ``releases`` (None: as acquired), at ``add_step`` time.

    The engine's own checks (shared in ``eventor.model``), made early so that an error points at
    the line that added the step.
    """
    took = parse_amounts(acquires, label, "acquires") or ()
    problem = capacity_problem(took, lambda pool: pool.limit)
    if problem:
        raise SequentError(f"{label}: {problem}")
    gives = parse_amounts(releases, label, "releases")
    problem = releases_problem(took, gives)
    if problem:
        raise SequentError(f"{label}: {problem}")
    return took, gives
