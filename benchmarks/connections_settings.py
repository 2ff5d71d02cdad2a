"""The example project's settings with one connection strategy, for benchmarks/connections.py.

``RESEE_BENCH_CONNECTIONS``: ``close`` (``CONN_MAX_AGE = 0``), ``persistent``
(``CONN_MAX_AGE = 600``) or ``pool`` (Django's native psycopg pool, one connection per thread);
each is what :func:`resee_perf.pool.recommended_database` returns, so the three differ only in
how connections are kept. ``RESEE_BENCH_THREADS``: gunicorn's threads per worker.
"""

from __future__ import annotations

import os

from resee.settings import *  # noqa: F403
from resee.settings import DATABASES
from resee_perf.pool import recommended_database

_STRATEGY = os.environ["RESEE_BENCH_CONNECTIONS"]
DATABASES["default"] = recommended_database(
    DATABASES["default"],
    threads_per_worker=int(os.environ["RESEE_BENCH_THREADS"]),
    pool=_STRATEGY == "pool",
    conn_max_age=0 if _STRATEGY == "close" else 600,
)
