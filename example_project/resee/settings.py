"""Settings for the Resee example project, read from the environment.

With nothing set, the demo runs on a SQLite file and Django's local-memory cache, so a
newcomer needs no service. Environment:

- ``DATABASE_URL``: the primary database (default: SQLite ``example_project/db.sqlite3``).
- ``REPLICA_DATABASE_URL``: optional; adds a ``replica`` database alias and
  ``StickyReplicaRouter``, which sends reads to it (docs/routing.md). Several URLs,
  comma-separated, add ``replica``, ``replica_2``, ... with equal weights (docs/scaling.md).
- ``RESEE_PERF_JSON``: optional; a JSON object of further ``RESEE_PERF`` keys, applied last
  (the fault suite, tests/faults/, shortens timers this way).
- ``REDIS_URL``: optional; makes the ``default`` cache django-redis at that URL, and puts
  sessions there too (``cached_db``, on a fail-open ``sessions`` alias).
- ``WEB_THREADS`` (default 4) and ``DATABASE_CONN_MAX_AGE`` (default 600; 0 for a connection
  per request): what ``recommended_database()`` is given for every PostgreSQL alias.
- ``RESEE_METRICS_TOKEN``: optional; a bearer token that may read ``/metrics`` from anywhere
  (loopback may without). ``RESEE_METRICS_ENABLED=0`` stops recording metrics.
- ``RESEE_PROFILE`` (default on): ``QueryProfileMiddleware``, query counts, N+1 and slow
  queries in the log (docs/profiling.md); ``RESEE_DEMO_NAIVE`` (default off): the deliberately
  naive ``/api/review/today/naive/`` that shows what the profiler reports.
- ``DJANGO_DEBUG`` (default off; ``scripts/demo.sh`` turns it on for its localhost server),
  ``DJANGO_SECRET_KEY`` (required unless ``DJANGO_DEBUG`` is on), ``ALLOWED_HOSTS``
  (comma-separated).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value in {"1", "true", "yes", "on"}


def _env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name, "")
    items = [item.strip() for item in value.split(",") if item.strip()]
    return items or default


# Off unless asked for: a debug page prints the settings, the Redis URL's password among them.
DEBUG = _env_bool("DJANGO_DEBUG", default=False)
# A published key only for a debug run on a developer's machine. Otherwise empty, which Django
# refuses at the first use; resee.wsgi and resee.asgi use it at startup to fail there instead.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or (
    "django-insecure-resee-demo-only" if DEBUG else ""
)
ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "resee_perf",
    "resee",
    "content",
    "review",
    "analytics",
]

MIDDLEWARE = [
    # First, so that its latency covers the other middleware (docs/observability.md).
    "resee_perf.middleware.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "resee.urls"
WSGI_APPLICATION = "resee.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# An empty variable (``DATABASE_URL= python manage.py ...``) means "use the default" too.
DATABASES: dict[str, dict[str, Any]] = {
    "default": dict(
        dj_database_url.parse(
            os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
        )
    ),
}
# The connection settings our own library recommends (docs/connections.md): persistent
# connections checked before reuse, a connect and a statement timeout. dj-database-url's
# CONN_MAX_AGE=0 opened a new PostgreSQL connection per request, most of a cached request's
# time (docs/benchmarks.md). WEB_THREADS: the server's threads per process (gunicorn --threads).
# DATABASE_CONN_MAX_AGE: seconds a connection is kept (0: one per request, as before).
_WEB_THREADS = int(os.environ.get("WEB_THREADS") or 4)
_CONN_MAX_AGE = int(os.environ.get("DATABASE_CONN_MAX_AGE") or 600)


def _recommended(
    database: dict[str, Any], connect_timeout: int = 5, statement_timeout_ms: int = 30_000
) -> dict[str, Any]:
    if "postgresql" not in str(database.get("ENGINE", "")):
        return {**database, "CONN_MAX_AGE": _CONN_MAX_AGE, "CONN_HEALTH_CHECKS": True}
    from resee_perf.pool import recommended_database

    return recommended_database(
        database,
        threads_per_worker=_WEB_THREADS,
        conn_max_age=_CONN_MAX_AGE,
        connect_timeout=connect_timeout,
        statement_timeout_ms=statement_timeout_ms,
    )


DATABASES["default"] = _recommended(DATABASES["default"])
# One alias per URL: "replica", then "replica_2", "replica_3", ... (docs/scaling.md).
_REPLICA_URLS = [
    url.strip() for url in os.environ.get("REPLICA_DATABASE_URL", "").split(",") if url.strip()
]
REPLICA_ALIASES = ["replica", *(f"replica_{n}" for n in range(2, len(_REPLICA_URLS) + 1))]
for _alias, _replica_url in zip(REPLICA_ALIASES, _REPLICA_URLS, strict=False):
    DATABASES[_alias] = {
        # A request routed to a hung replica gives up after 2 s and reads from the primary
        # (resee_perf.W024); libpq's default is to wait forever.
        # A slow query ends on the server after 5 s; REPLICA_QUERY_TIMEOUT (below) ends one the
        # client sent to a replica that hung, which statement_timeout cannot (W025).
        # Given to recommended_database(), which sets both: merged after it as before, its
        # defaults (5 s, 30 s) silently replaced these.
        **_recommended(
            dict(dj_database_url.parse(_replica_url)),
            connect_timeout=2,
            statement_timeout_ms=5000,
        ),
        # The replica holds the primary's data, so tests must not create a database for it.
        "TEST": {"MIRROR": "default"},
    }
del REPLICA_ALIASES[len(_REPLICA_URLS) :]

CACHES: dict[str, dict[str, Any]]
if _redis_url := os.environ.get("REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": _redis_url,
            # A hung Redis costs a request at most this long before cache_aside falls back
            # to the database (resee_perf.W010).
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25},
        }
    }
    # Sessions read from Redis (written through to the database): a request's session costs
    # no query. Not with the local-memory cache, which each process holds apart (a logout in
    # one would not reach the others). Their own alias on the same Redis, which fails open
    # (IGNORE_EXCEPTIONS: a read error is a miss, so cached_db reads the database): a hung or
    # down Redis must not turn every request into a 500 (tests/faults: "redis hung").
    CACHES["sessions"] = {
        **CACHES["default"],
        "OPTIONS": {**CACHES["default"]["OPTIONS"], "IGNORE_EXCEPTIONS": True},
    }
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
    SESSION_CACHE_ALIAS = "sessions"
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The session's user read through cache_aside (resee/auth.py) rather than one query per
# request. ModelBackend stays listed so that sessions created with it remain valid.
AUTHENTICATION_BACKENDS = [
    "resee.auth.CachedUserBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# Django logs a 500's traceback on "django.request", but its default configuration sends it
# to the console only with DEBUG on (and by mail to ADMINS otherwise): with DEBUG off, a 500
# would leave no trace. Tracebacks go to stderr, whatever DEBUG says.
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "plain",
        }
    },
    "loggers": {
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
        # N+1 and slow queries (docs/profiling.md): one line each, with route and call site.
        "resee_perf.profiling": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
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

RESEE_PERF: dict[str, object] = {
    # The kill switch (docs/cache.md): RESEE_CACHE_ENABLED=0 runs every cached view and
    # function directly, to measure the same build with caching off and on.
    "CACHE_ENABLED": _env_bool("RESEE_CACHE_ENABLED", default=True),
}
# /metrics (resee_perf.urls) answers loopback, and any address with this bearer token.
if _metrics_token := os.environ.get("RESEE_METRICS_TOKEN"):
    RESEE_PERF["METRICS_TOKEN"] = _metrics_token
# RESEE_METRICS_ENABLED=0 stops recording metrics, for the overhead benchmark.
if os.environ.get("RESEE_METRICS_ENABLED"):
    RESEE_PERF["METRICS_ENABLED"] = _env_bool("RESEE_METRICS_ENABLED", default=True)

# With a replica: reads on it, writes on the primary, and each client reads its own writes
# (docs/routing.md). The middleware goes above SessionMiddleware to see a login's session save.
if REPLICA_ALIASES:
    DATABASE_ROUTERS = ["resee_perf.routers.StickyReplicaRouter"]
    MIDDLEWARE.insert(1, "resee_perf.middleware.StickyReadsMiddleware")
    RESEE_PERF["REPLICAS"] = list(REPLICA_ALIASES)
    # Just above the replica's statement_timeout: only a hung replica reaches it.
    RESEE_PERF["REPLICA_QUERY_TIMEOUT"] = 6

# Query profiling (docs/profiling.md), on by default: cheap enough to leave on. First, so that
# its Server-Timing "app" covers the whole request. RESEE_PROFILE=0 measures the same build
# without it.
if _env_bool("RESEE_PROFILE", default=True):
    MIDDLEWARE.insert(0, "resee_perf.middleware.QueryProfileMiddleware")
# GET /api/review/today/naive/: today's reviews loaded the naive way (two lazy loads per
# schedule), to see the profiler report an N+1. Off (a 404) unless asked for.
RESEE_DEMO_NAIVE = _env_bool("RESEE_DEMO_NAIVE", default=False)

# Last, so that it overrides the above: e.g. '{"STICKY_SECONDS": 2}'.
if _resee_perf_json := os.environ.get("RESEE_PERF_JSON"):
    RESEE_PERF.update(json.loads(_resee_perf_json))
