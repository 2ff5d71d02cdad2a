"""resee-perf: cache_aside, tag invalidation, a read-your-writes replica router and a
connection budget for Django services on PostgreSQL and Redis."""

from __future__ import annotations

from resee_perf.cache import UncacheableValue, cache_aside
from resee_perf.invalidation import invalidate_objects, invalidate_on, invalidate_tags
from resee_perf.pool import connection_budget
from resee_perf.routers import use_primary

__version__ = "0.1.0"

__all__ = [
    "UncacheableValue",
    "__version__",
    "cache_aside",
    "connection_budget",
    "invalidate_objects",
    "invalidate_on",
    "invalidate_tags",
    "use_primary",
]
