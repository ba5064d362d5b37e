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


def parse_amounts(value: Any, label: str, what: str) -> Optional[tuple[tuple[ResourcePool, int], ...]]:
    """Check ``[(pool, count), ...]`` of a step; None stays None (releases: same as acquires)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise SequentError(f"{label}: {what} must be a list of (pool, count) pairs, got {value!r}")
    totals: dict[ResourcePool, int] = {}
    for item in value:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise SequentError(f"{label}: {what} item {item!r} is not a (pool, count) pair")
        pool, count = item
        if not isinstance(pool, ResourcePool):
            raise SequentError(f"{label}: {what} names {pool!r}, which is not a sequent.ResourcePool")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise SequentError(f"{label}: {what} count for pool {pool.name!r} must be an int >= 1, got {count!r}")
        totals[pool] = totals.get(pool, 0) + count
    for pool, count in totals.items():
        if pool.limit >= 1 and count > pool.limit and what == "acquires":
            raise SequentError(f"{label}: acquires {count} from resource pool {pool.name!r}, which holds only "
                               f"{pool.limit}: it could never start")
    return tuple(totals.items())
