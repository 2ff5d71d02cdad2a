"""resee-perf: cache_aside, tag invalidation, a read-your-writes replica router and a
connection budget for Django services on PostgreSQL and Redis."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Imported on first use (PEP 562), not with the package: importing resee_perf.pytest_plugin
# (pytest loads it at start-up, through the pytest11 entry point) or resee_perf.apps must not
# import the whole library, and with it Django's database and cache layers, into every process.
_HOMES = {
    "UncacheableValue": "resee_perf.cache",
    "cache_aside": "resee_perf.cache",
    "connection_budget": "resee_perf.pool",
    "invalidate_objects": "resee_perf.invalidation",
    "invalidate_on": "resee_perf.invalidation",
    "invalidate_tags": "resee_perf.invalidation",
    "use_primary": "resee_perf.routers",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'resee_perf' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
