"""Settings of benchmarks/router_several_replicas.py: the test settings on a throwaway database
of the primary, replayed by two private replicas of scripts/replica.sh (5450, 5451), with the
router installed. DummyCache: every GET reads the database."""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, MIDDLEWARE

BENCH_DATABASE = "resee_bench_several_replicas"
REPLICAS = ["replica_p1", "replica_p2"]

DATABASES = {
    "default": {**DATABASES["default"], "NAME": BENCH_DATABASE, "TEST": {}},
    **{alias: {**DATABASES[alias], "NAME": BENCH_DATABASE, "TEST": {}} for alias in REPLICAS},
}
DATABASE_ROUTERS = ["resee_perf.routers.StickyReplicaRouter"]
MIDDLEWARE = ["resee_perf.middleware.StickyReadsMiddleware", *MIDDLEWARE]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
RESEE_PERF = {"REPLICAS": REPLICAS, "STICKY_SECONDS": 15}
