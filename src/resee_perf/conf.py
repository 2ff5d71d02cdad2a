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
    cidr_list,
    increasing_numbers,
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
    # The exporter (resee_perf.urls) and the request metrics (docs/observability.md).
    "METRICS_ALLOWED_NETWORKS": Option(
        default=["127.0.0.0/8", "::1/128"],
        validate=cidr_list,
        expected="a list of networks in CIDR notation, such as '10.0.0.0/8'",
        doc=(
            "Client addresses (`REMOTE_ADDR`) that may read `/metrics` without a token. "
            "Default: loopback only. Behind a proxy, REMOTE_ADDR is the proxy's address."
        ),
    ),
    "METRICS_TOKEN": Option(
        default=None,
        validate=optional(non_empty_str),
        expected="a non-empty string or None",
        doc=(
            "A bearer token that lets any address read `/metrics` "
            "(`Authorization: Bearer <token>`, Prometheus' `authorization` scrape setting). "
            "A request that presents a wrong token is refused even from an allowed network."
        ),
    ),
    "METRICS_LATENCY_BUCKETS": Option(
        default=[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
        validate=increasing_numbers,
        expected="a non-empty list of increasing positive numbers of seconds",
        doc=(
            "Buckets of the request latency histogram "
            "(`resee_perf_http_request_duration_seconds`), read once per process at the first "
            "request. Every bucket is a series per route and method: keep the list short."
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
    def TAG_TIMEOUT(self) -> int | None:
        return cast("int | None", self.get("TAG_TIMEOUT"))

    @property
    def METRICS_ALLOWED_NETWORKS(self) -> list[str]:
        return list(self.get("METRICS_ALLOWED_NETWORKS"))

    @property
    def METRICS_TOKEN(self) -> str | None:
        return cast("str | None", self.get("METRICS_TOKEN"))

    @property
    def METRICS_LATENCY_BUCKETS(self) -> list[float]:
        return [float(bucket) for bucket in self.get("METRICS_LATENCY_BUCKETS")]


def invalid_message(name: str, value: Any) -> str:
    return f"{SETTING_NAME}[{name!r}] should be {OPTIONS[name].expected}, not {value!r}."


conf = Settings()
