"""Settings of benchmarks/router_replicas.py: the test settings on a throwaway database of the
primary (replayed by the replica of scripts/replica.sh), with the router installed.

Every GET reads the database: the cache is Django's DummyCache, so that the share of reads
that replicas serve is the router's, not the cache's.
"""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, MIDDLEWARE

BENCH_DATABASE = "resee_bench_router"

DATABASES = {
    "default": {**DATABASES["default"], "NAME": BENCH_DATABASE, "TEST": {}},
    "replica": {**DATABASES["replica"], "NAME": BENCH_DATABASE, "TEST": {}},
}
DATABASE_ROUTERS = ["resee_perf.routers.StickyReplicaRouter"]
MIDDLEWARE = ["resee_perf.middleware.StickyReadsMiddleware", *MIDDLEWARE]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
RESEE_PERF = {"REPLICAS": ["replica"], "STICKY_SECONDS": 15}
