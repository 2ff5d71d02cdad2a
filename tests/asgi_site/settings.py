"""The test settings, routed: StickyReadsMiddleware on top, the LSN router, the shared replica.

The server process gets the test database's name through DATABASE_URL and
REPLICA_DATABASE_URL (tests/test_routers_asgi.py sets them).
"""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import MIDDLEWARE as BASE_MIDDLEWARE

ROOT_URLCONF = "tests.asgi_site.urls"
MIDDLEWARE = ["resee_perf.middleware.StickyReadsMiddleware", *BASE_MIDDLEWARE]
DATABASE_ROUTERS = ["resee_perf.routers.StickyReplicaRouter"]
RESEE_PERF = {
    "REPLICAS": ["replica"],
    "REPLICA_CHECK_INTERVAL": 0.02,
    "REPLICA_RETRY_SECONDS": 0.2,
}
