"""Settings for the test suite: the example project on the real PostgreSQL and Redis.

Environment:
- ``DATABASE_URL`` (default ``postgres://postgres@127.0.0.1:5432/test``): the primary.
- ``REDIS_URL`` (default ``redis://127.0.0.1:6379/1``): the cache; tests flush this Redis
  database, so point it at one nothing else uses.
- ``RESEE_TEST_REDIS`` (default ``single``): the Redis topology of the ``default`` cache;
  ``cluster`` is the cluster of scripts/redis_cluster.sh (``RESEE_TEST_CLUSTER_URL``).
- ``RESEE_TEST_DB_SUFFIX``: appended to the test database name, so that several test runs
  can share one PostgreSQL server.
"""

from __future__ import annotations

import os

import dj_database_url
import django

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "rest_framework",
    "resee_perf",
    "resee",
    "content",
    "review",
    "analytics",
]
if django.VERSION >= (6, 1):
    # Models with database-level on_delete (DB_CASCADE, DB_SET_NULL), new in Django 6.1.
    INSTALLED_APPS.append("tests.db_on_delete")

MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "resee.urls"

_suffix = os.environ.get("RESEE_TEST_DB_SUFFIX", "")
DATABASES = {
    "default": {
        **dj_database_url.parse(
            os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
        ),
        "TEST": {"NAME": f"test_resee{'_' + _suffix if _suffix else ''}"},
    }
}
# The same test database under a second alias (its own connection, its own transactions): for
# behaviour that must follow the `using` of a write, such as after-commit invalidation.
DATABASES["other"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}
# The streaming replica of scripts/replica.sh (REPLICA_DATABASE_URL). It replays the primary's
# test database, so the test runner must create none on it: as a MIRROR, it only takes the
# test database's NAME and keeps its own host and port (BaseDatabaseCreation.set_as_test_mirror).
# The `replica_db` fixture (tests/replica.py) fails the tests that need it when it is not up.
DATABASES["replica"] = {
    **dj_database_url.parse(
        os.environ.get("REPLICA_DATABASE_URL", "postgres://postgres@127.0.0.1:5433/test")
    ),
    # A hung replica costs a routed request at most this long (resee_perf.W024).
    "OPTIONS": {"connect_timeout": 2},
    "TEST": {"MIRROR": "default"},
}
# For the router's load balancing and failover tests: a second alias of the same replica, and
# one whose server never answers (port 1 is closed).
DATABASES["replica2"] = {**DATABASES["replica"], "TEST": {"MIRROR": "default"}}
# The second shared streaming replica (RESEE_REPLICAS=2 scripts/replica.sh, port 5435): several
# real replicas (tests/test_routers_replicas.py).
DATABASES["replica_b"] = {
    **DATABASES["replica"],
    **dj_database_url.parse(
        os.environ.get("REPLICA_B_DATABASE_URL", "postgres://postgres@127.0.0.1:5435/test")
    ),
    "OPTIONS": {"connect_timeout": 2},
    "TEST": {"MIRROR": "default"},
}
# Two private replicas to lag and stop while the other serves (tests/test_routers_replicas.py).
for _name, _port in zip(
    ("replica_p1", "replica_p2"),
    os.environ.get("RESEE_PRIVATE_REPLICA_PORTS", "5450 5451").split(),
    strict=True,
):
    DATABASES[_name] = {**DATABASES["replica"], "PORT": int(_port), "TEST": {"MIRROR": "default"}}
# A private replica for the fault tests (tests/test_routers_faults.py), which SIGSTOP it and cut
# it off from its primary: never the shared one on 5433, which other test runs read from.
DATABASES["replica_faults"] = {
    **DATABASES["replica"],
    "PORT": int(os.environ.get("RESEE_FAULT_REPLICA_PORT", "5440")),
    "TEST": {"MIRROR": "default"},
}
DATABASES["replica_unreachable"] = {
    **DATABASES["replica"],
    "PORT": 1,
    "TEST": {"MIRROR": "default"},
}

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/1"
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
    },
    "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}
# RESEE_TEST_REDIS picks the topology the cache tests run on: single (the default, above),
# cluster or sentinel. Tests marked `single_redis` skip on the others (tests/conftest.py).
RESEE_TEST_REDIS = os.environ.get("RESEE_TEST_REDIS", "single")
if RESEE_TEST_REDIS == "cluster":
    # scripts/redis_cluster.sh: 3 primaries + 3 replicas on 7000-7005; any node will do.
    CACHES["default"] = {
        "BACKEND": "resee_perf.cluster.RedisClusterCache",
        "LOCATION": os.environ.get(
            "RESEE_TEST_CLUSTER_URL", "redis://127.0.0.1:7000,redis://127.0.0.1:7001"
        ),
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }

# The Redis topology the cache tests run on (RESEE_TEST_REDIS): "single" (default, REDIS_URL),
# "cluster" or "sentinel". Tests that only make sense on one node are marked `single_redis`
# and skipped on the others (tests/conftest.py).
RESEE_TEST_REDIS = os.environ.get("RESEE_TEST_REDIS", "single")

# scripts/redis_sentinel.sh: service "resee", sentinels on 26380-26382 (or
# RESEE_TEST_SENTINELS, "host:port,host:port,..."); django-redis's Sentinel client writes
# through the primary the sentinels name, and reads through a replica.
_sentinels = os.environ.get(
    "RESEE_TEST_SENTINELS", "127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382"
)
SENTINEL_CACHE = {
    "BACKEND": "django_redis.cache.RedisCache",
    "LOCATION": f"redis://resee/{os.environ.get('RESEE_TEST_SENTINEL_DB', '1')}",
    "OPTIONS": {
        "CLIENT_CLASS": "django_redis.client.SentinelClient",
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        "SENTINELS": [
            (host, int(port))
            for host, port in (item.rsplit(":", 1) for item in _sentinels.split(","))
        ],
        "SENTINEL_KWARGS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        "SOCKET_CONNECT_TIMEOUT": 0.5,
        "SOCKET_TIMEOUT": 0.5,
    },
}
if RESEE_TEST_REDIS == "sentinel":
    CACHES["default"] = SENTINEL_CACHE

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    # Hostile input (NUL, lone surrogates, deep nesting) is a 400, not a 500: resee/api.py.
    "DEFAULT_PARSER_CLASSES": [
        "resee.api.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "resee.api.StrictBasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
}

RESEE_PERF: dict[str, object] = {}
