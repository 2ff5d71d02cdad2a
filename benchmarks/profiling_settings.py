"""The example project's settings with persistent connections, for benchmarks/profiling.py:
a new PostgreSQL connection per request would hide the profiler's cost behind its own."""

from __future__ import annotations

from resee.settings import *  # noqa: F403
from resee.settings import DATABASES
from resee_perf.pool import recommended_database

DATABASES["default"] = recommended_database(
    DATABASES["default"], threads_per_worker=4, pool=False, conn_max_age=600
)
