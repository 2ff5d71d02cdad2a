"""The one settings object: ``RESEE_PERF`` in the Django settings, with defaults.

Every option is declared once in :data:`OPTIONS` (default, validator, documentation); the
system checks in :mod:`resee_perf.checks` and the settings reference in ``docs/`` are both
checked against it. Values are looked up on every access, never cached at import time, so
``override_settings(RESEE_PERF={...})`` takes effect at once (as in django-cors-headers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from resee_perf._deployment import Deployment

# The validators are a leaf module, shared with the deployment setting (``_deployment``),
# which conf imports: defined here, they made the two import each other.
from resee_perf._validators import (
    boolean,
    non_empty_str,
    non_negative_number,
    optional,
    positive_int,
    positive_number,
    str_list,
)

SETTING_NAME = "RESEE_PERF"


@dataclass(frozen=True)
class Option:
    """One key of ``RESEE_PERF``: its default, how to validate it, and what it does."""

    default: Any
    validate: Callable[[Any], bool]
    expected: str
    """Completes the sentence "RESEE_PERF['KEY'] should be ..."."""
    doc: str


OPTIONS: dict[str, Option] = {
    "CACHE_ALIAS": Option(
        default="default",
        validate=non_empty_str,
        expected="the alias of a cache in settings.CACHES",
        doc="The Django cache that `cache_aside` and tag invalidation use unless told otherwise.",
    ),
    "CACHE_BACKGROUND_REFRESH": Option(
        default=True,
        validate=boolean,
        expected="True or False",
        doc=(
            "Run the refresh of a stale (`stale_ttl`) or early-expired (`beta`) entry in a "
            "background thread (a task for async functions), so the caller that triggers it "
            "gets the current value at once. False: that caller recomputes inline."
        ),
    ),
    "CACHE_BREAKER_COOLDOWN": Option(
        default=5.0,
        validate=positive_number,
        expected="a positive number of seconds",
        doc=(
            "Seconds `cache_aside` calls functions directly, without trying the cache, once "
            "the circuit breaker has opened; then one call tries the cache again."
        ),
    ),
    "CACHE_BREAKER_THRESHOLD": Option(
        default=3,
        validate=positive_int,
        expected="a positive integer",
        doc="Consecutive cache failures (per alias and process) that open the circuit breaker.",
    ),
    "CACHE_ENABLED": Option(
        default=True,
        validate=boolean,
        expected="True or False",
        doc=(
            "The kill switch of `cache_aside`. False: every call runs the function, without "
            "touching the cache (`bypass`); invalidations keep running, so that switching it "
            "back on serves no entry that a write made stale meanwhile."
        ),
    ),
    "CACHE_LOCK_TIMEOUT": Option(
        default=10.0,
        validate=positive_number,
        expected="a positive number of seconds",
        doc=(
            "Default `lock_timeout` of `cache_aside`: how long a recompute may hold its key's "
            "lock (and callers wait for it) before another caller may take over. Keep it above "
            "your slowest body."
        ),
    ),
    "DEPLOYMENT": Option(
        default=None,
        validate=optional(lambda value: isinstance(value, Mapping)),
        expected="a dict of deployment numbers (see docs/connections.md) or None",
        doc=(
            "What runs against the databases: web workers and threads, Celery, other clients, "
            "headroom, each server's max_connections. Read by the connection budget "
            "(`manage.py connection_budget`, `check --deploy`); its keys are checked by "
            "`resee_perf.E030`."
        ),
    ),
    "KEY_PREFIX": Option(
        default="rp",
        validate=non_empty_str,
        expected="a non-empty string",
        doc=(
            "Namespace for every key resee-perf writes. Change it to drop every entry at once "
            "(for example when a deploy changes what cached functions return)."
        ),
    ),
    "METRICS_ENABLED": Option(
        default=True,
        validate=boolean,
        expected="True or False",
        doc="Record Prometheus metrics (needs the `prometheus` extra; a no-op without it).",
    ),
    # StickyReplicaRouter and StickyReadsMiddleware (docs/routing.md).
    "REPLICAS": Option(
        default=[],
        validate=str_list,
        expected="a list of database aliases from settings.DATABASES",
        doc=(
            "Database aliases of the read replicas of `default`. `StickyReplicaRouter` spreads "
            "reads over them; empty: every query goes to `default`."
        ),
    ),
    "REPLICA_CHECK_INTERVAL": Option(
        default=0.5,
        validate=positive_number,
        expected="a positive number of seconds",
        doc=(
            "How often each process reads each replica's replay position and lag (one small "
            "query per replica per interval, never per request)."
        ),
    ),
    "REPLICA_CHECK_TIMEOUT": Option(
        default=2.0,
        validate=positive_number,
        expected="a positive number of seconds",
        doc=(
            "Connect and statement timeout of that check. libpq waits at least 2 s to connect, "
            "so smaller values only shorten the statement timeout."
        ),
    ),
    "REPLICA_MAX_LAG_SECONDS": Option(
        default=5.0,
        validate=positive_number,
        expected="a positive number of seconds",
        doc="A replica whose replay lags the primary by more than this gets no reads.",
    ),
    "REPLICA_RETRY_SECONDS": Option(
        default=5.0,
        validate=positive_number,
        expected="a positive number of seconds",
        doc=(
            "How long a replica that failed its check, or a connection, gets no reads before "
            "it is checked again."
        ),
    ),
    "STICKY_COOKIE_NAME": Option(
        default="resee_perf_sticky",
        validate=non_empty_str,
        expected="a non-empty string",
        doc=(
            "Name of the signed cookie in which `StickyReadsMiddleware` keeps a client's last "
            "write position."
        ),
    ),
    "STICKY_SECONDS": Option(
        default=15.0,
        validate=non_negative_number,
        expected="a non-negative number of seconds",
        doc=(
            "After a write, the client reads from the primary for this long when the write "
            "position is unknown (a database other than PostgreSQL); also the life of the cookie."
        ),
    ),
    "TAG_TIMEOUT": Option(
        default=7 * 24 * 3600,
        validate=optional(positive_int),
        expected="a positive number of seconds or None",
        doc=(
            "Seconds a tag's generation key lives in the cache (`None`: until evicted). A "
            "generation that expires only turns the entries under it into misses; keep it "
            "longer than your longest `ttl + stale_ttl` so that this never happens to live entries."
        ),
    ),
    "INVALIDATION_QUEUE_SIZE": Option(
        default=10_000,
        validate=positive_int,
        expected="a positive integer",
        doc=(
            "Failed invalidations (tags and `invalidate()` keys, per cache alias and process) "
            "kept for retry. Past it they are replaced by one bump of the cache's epoch: every "
            "entry becomes a miss once Redis answers, and the process bypasses that cache until "
            "then."
        ),
    ),
    "INVALIDATION_RETRY_SECONDS": Option(
        default=1.0,
        validate=positive_number,
        expected="a positive number of seconds",
        doc=(
            "Longest wait between two retries of failed invalidations (the first comes after "
            "50 ms, then doubling). Once Redis answers again, other processes may serve an entry "
            "a failed invalidation covers for at most this long (plus one retry's round trip)."
        ),
    ),
    # Query profiling: QueryProfileMiddleware and the pytest helpers (docs/profiling.md).
    "NPLUSONE_ALLOW": Option(
        default=[],
        validate=str_list,
        expected="a list of patterns (fnmatch) of call sites or SQL shapes",
        doc=(
            "Known-acceptable N+1s: a repeated query whose call site (`review/views.py:42`) or "
            "normalised SQL matches one of these `fnmatch` patterns is not reported."
        ),
    ),
    "NPLUSONE_RAISE": Option(
        default=False,
        validate=boolean,
        expected="True or False",
        doc=(
            "Raise `resee_perf.profiling.NPlusOneDetected` from the query that reaches "
            "`NPLUSONE_THRESHOLD`, instead of only reporting it. For tests and development."
        ),
    ),
    "NPLUSONE_THRESHOLD": Option(
        default=5,
        validate=lambda value: positive_int(value) and value >= 2,
        expected="an integer of at least 2",
        doc=(
            "A read with the same normalised SQL from the same call site run this many times "
            "in one request is an N+1 (reported once per request)."
        ),
    ),
    "PROFILE_SAMPLE_RATE": Option(
        default=1.0,
        validate=lambda value: non_negative_number(value) and value <= 1,
        expected="a number from 0 to 1",
        doc=(
            "Share of requests `QueryProfileMiddleware` profiles (0: none, 1: every one); the "
            "others pass through with no profile, no report and no `Server-Timing`."
        ),
    ),
    "SERVER_TIMING": Option(
        default="staff",
        validate=lambda value: value in ("staff", "all", "off"),
        expected='"staff", "all" or "off"',
        doc=(
            "Who gets the `Server-Timing` header of profiled responses: users whose "
            "`is_staff` is true (only if the request already loaded its user), everyone, or "
            "nobody. The header tells any client how long your database took."
        ),
    ),
    "SLOW_QUERY_EXPLAIN": Option(
        default=False,
        validate=boolean,
        expected="True or False",
        doc=(
            "Log the `EXPLAIN` plan of each slow query (one more query; reads only, never a "
            "write or a `SELECT ... FOR UPDATE`)."
        ),
    ),
    "SLOW_QUERY_MS": Option(
        default=100,
        validate=optional(positive_number),
        expected="a positive number of milliseconds or None",
        doc=(
            "A profiled query that takes at least this long is logged with its call site "
            "and counted per route (`None`: never)."
        ),
    ),
}


def _user_settings() -> Mapping[str, Any]:
    value = getattr(django_settings, SETTING_NAME, {})
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(
            f"settings.{SETTING_NAME} should be a dict, not {type(value).__name__}."
        )
    return value


class Settings:
    """Typed, always-fresh view of ``settings.RESEE_PERF``.

    A value that fails validation raises :class:`ImproperlyConfigured` naming the key; the
    system checks report the same problem earlier, at ``manage.py check``.
    """

    def get(self, name: str) -> Any:
        option = OPTIONS[name]
        user = _user_settings()
        if name not in user:
            return option.default
        value = user[name]
        if not option.validate(value):
            raise ImproperlyConfigured(invalid_message(name, value))
        return value

    @property
    def CACHE_ALIAS(self) -> str:
        return cast(str, self.get("CACHE_ALIAS"))

    @property
    def CACHE_BACKGROUND_REFRESH(self) -> bool:
        return cast(bool, self.get("CACHE_BACKGROUND_REFRESH"))

    @property
    def CACHE_BREAKER_COOLDOWN(self) -> float:
        return cast(float, self.get("CACHE_BREAKER_COOLDOWN"))

    @property
    def CACHE_BREAKER_THRESHOLD(self) -> int:
        return cast(int, self.get("CACHE_BREAKER_THRESHOLD"))

    @property
    def CACHE_ENABLED(self) -> bool:
        return cast(bool, self.get("CACHE_ENABLED"))

    @property
    def CACHE_LOCK_TIMEOUT(self) -> float:
        return cast(float, self.get("CACHE_LOCK_TIMEOUT"))

    @property
    def DEPLOYMENT(self) -> Deployment | None:
        value = self.get("DEPLOYMENT")
        return None if value is None else Deployment.from_setting(value)

    @property
    def KEY_PREFIX(self) -> str:
        return cast(str, self.get("KEY_PREFIX"))

    @property
    def METRICS_ENABLED(self) -> bool:
        return cast(bool, self.get("METRICS_ENABLED"))

    @property
    def REPLICAS(self) -> list[str]:
        return list(self.get("REPLICAS"))

    @property
    def REPLICA_CHECK_INTERVAL(self) -> float:
        return float(self.get("REPLICA_CHECK_INTERVAL"))

    @property
    def REPLICA_CHECK_TIMEOUT(self) -> float:
        return float(self.get("REPLICA_CHECK_TIMEOUT"))

    @property
    def REPLICA_MAX_LAG_SECONDS(self) -> float:
        return float(self.get("REPLICA_MAX_LAG_SECONDS"))

    @property
    def REPLICA_RETRY_SECONDS(self) -> float:
        return float(self.get("REPLICA_RETRY_SECONDS"))

    @property
    def STICKY_COOKIE_NAME(self) -> str:
        return cast(str, self.get("STICKY_COOKIE_NAME"))

    @property
    def STICKY_SECONDS(self) -> float:
        return float(self.get("STICKY_SECONDS"))

    @property
    def INVALIDATION_QUEUE_SIZE(self) -> int:
        return cast(int, self.get("INVALIDATION_QUEUE_SIZE"))

    @property
    def INVALIDATION_RETRY_SECONDS(self) -> float:
        return cast(float, self.get("INVALIDATION_RETRY_SECONDS"))

    @property
    def TAG_TIMEOUT(self) -> int | None:
        return cast("int | None", self.get("TAG_TIMEOUT"))

    @property
    def NPLUSONE_ALLOW(self) -> list[str]:
        return list(self.get("NPLUSONE_ALLOW"))

    @property
    def NPLUSONE_RAISE(self) -> bool:
        return cast(bool, self.get("NPLUSONE_RAISE"))

    @property
    def NPLUSONE_THRESHOLD(self) -> int:
        return cast(int, self.get("NPLUSONE_THRESHOLD"))

    @property
    def PROFILE_SAMPLE_RATE(self) -> float:
        return float(self.get("PROFILE_SAMPLE_RATE"))

    @property
    def SERVER_TIMING(self) -> str:
        return cast(str, self.get("SERVER_TIMING"))

    @property
    def SLOW_QUERY_EXPLAIN(self) -> bool:
        return cast(bool, self.get("SLOW_QUERY_EXPLAIN"))

    @property
    def SLOW_QUERY_MS(self) -> float | None:
        value = self.get("SLOW_QUERY_MS")
        return None if value is None else float(value)


def invalid_message(name: str, value: Any) -> str:
    return f"{SETTING_NAME}[{name!r}] should be {OPTIONS[name].expected}, not {value!r}."


conf = Settings()
