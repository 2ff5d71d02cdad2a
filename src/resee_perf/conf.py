"""The one settings object: ``RESEE_PERF`` in the Django settings, with defaults.

Every option is declared once in :data:`OPTIONS` (default, validator, documentation); the
system checks and the settings reference in ``docs/`` are both checked against it.

Reads go through one :class:`Snapshot` of every value, validated together on the first read
and dropped on every ``setting_changed`` (``override_settings``, pytest-django's ``settings``),
so an override takes effect at once, as if the dict were read on each access, at a tenth of
the cost (a hit and a routed query read several values). Nothing is read at import time.
``conf.KEY_PREFIX`` etc. read the snapshot; :func:`snapshot` returns it for hot paths;
:func:`derived` keeps a value computed from it until it is dropped; ``conf.get(name)`` reads
and validates one key now (the system checks: one bad key must not hide another).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar, cast

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

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
_T = TypeVar("_T")


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
            "Deadline of that check, kept by the client: a replica that has not answered by "
            "then is marked down (a hung server enforces no statement_timeout)."
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
    "CACHE_SERIALIZER": Option(
        default="json",
        validate=non_empty_str,
        expected='"json", "pickle" or the dotted path of a serializer',
        doc=(
            'How `cache_aside` turns return values into bytes. `"json"` (default): JSON with '
            "exact round trips for dict, list, tuple, str, numbers, bool, None, date, datetime, "
            "time, timedelta, Decimal, UUID, bytes and Django safe strings; a value planted in "
            'the cache is data, never code. `"pickle"`: any picklable value, but whoever can '
            "write to the cache can run code in your workers (set `CACHE_SIGNING_KEY`). Or the "
            "dotted path of a class with `dumps(value) -> bytes` and `loads(bytes)`. Checked by "
            "`resee_perf.E011`; see [cache](../cache.md#serializers)."
        ),
    ),
    "CACHE_SIGNING_KEY": Option(
        default=None,
        validate=optional(lambda value: _signing_keys(value) is not None),
        expected="None, a non-empty string or bytes, or a non-empty list of them",
        doc=(
            "Secret(s) for an HMAC-SHA256 over every `cache_aside` entry and its key: an entry "
            "that is unsigned, altered or moved to another key is a miss (counted by "
            "`resee_perf_cache_entries_rejected_total`). A list rotates keys: the first signs, "
            "any verifies. Keep it distinct from `SECRET_KEY` and out of the repository."
        ),
    ),
}


def _signing_keys(value: Any) -> tuple[bytes, ...] | None:
    """The keys of ``CACHE_SIGNING_KEY`` as bytes; None if the value is malformed."""
    items = value if isinstance(value, list | tuple) else [value]
    if not items or not all(isinstance(item, str | bytes) and item for item in items):
        return None
    return tuple(item.encode() if isinstance(item, str) else item for item in items)


def _user_settings() -> Mapping[str, Any]:
    value = getattr(django_settings, SETTING_NAME, {})
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(
            f"settings.{SETTING_NAME} should be a dict, not {type(value).__name__}."
        )
    return value


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every ``RESEE_PERF`` value, validated, defaults filled in: one field per key of
    :data:`OPTIONS` (tests/test_conf.py keeps them in step) and ``CACHE_SIGNING_KEYS``.
    ``DEPLOYMENT`` is the dict as given (``conf.DEPLOYMENT`` parses it)."""

    CACHE_ALIAS: str
    CACHE_BACKGROUND_REFRESH: bool
    CACHE_BREAKER_COOLDOWN: float
    CACHE_BREAKER_THRESHOLD: int
    CACHE_ENABLED: bool
    CACHE_LOCK_TIMEOUT: float
    CACHE_SERIALIZER: str
    CACHE_SIGNING_KEY: str | bytes | list[str | bytes] | None
    DEPLOYMENT: Mapping[str, Any] | None
    INVALIDATION_QUEUE_SIZE: int
    INVALIDATION_RETRY_SECONDS: float
    KEY_PREFIX: str
    METRICS_ENABLED: bool
    REPLICAS: tuple[str, ...]
    REPLICA_CHECK_INTERVAL: float
    REPLICA_CHECK_TIMEOUT: float
    REPLICA_MAX_LAG_SECONDS: float
    REPLICA_RETRY_SECONDS: float
    STICKY_COOKIE_NAME: str
    STICKY_SECONDS: float
    TAG_TIMEOUT: int | None
    CACHE_SIGNING_KEYS: tuple[bytes, ...]
    """``CACHE_SIGNING_KEY`` as a tuple of byte strings (empty: entries are not signed)."""


def _validated(user: Mapping[str, Any], name: str) -> Any:
    option = OPTIONS[name]
    if name not in user:
        return option.default
    value = user[name]
    if not option.validate(value):
        raise ImproperlyConfigured(invalid_message(name, value))
    return value


def _build_snapshot() -> Snapshot:
    user = _user_settings()
    values = {name: _validated(user, name) for name in OPTIONS}
    signing_key = values["CACHE_SIGNING_KEY"]
    # An option without a field yet (tests/test_conf.py says so) is validated, not kept.
    return Snapshot(
        **{
            **{name: value for name, value in values.items() if name in _FIELDS},
            "REPLICAS": tuple(values["REPLICAS"]),
            "REPLICA_CHECK_INTERVAL": float(values["REPLICA_CHECK_INTERVAL"]),
            "REPLICA_CHECK_TIMEOUT": float(values["REPLICA_CHECK_TIMEOUT"]),
            "REPLICA_MAX_LAG_SECONDS": float(values["REPLICA_MAX_LAG_SECONDS"]),
            "REPLICA_RETRY_SECONDS": float(values["REPLICA_RETRY_SECONDS"]),
            "STICKY_SECONDS": float(values["STICKY_SECONDS"]),
            "CACHE_SIGNING_KEYS": () if signing_key is None else _signing_keys(signing_key),
        }
    )


_FIELDS = frozenset(field.name for field in fields(Snapshot))

# Process-wide on purpose: the settings are. _lock only orders building against resetting
# (readers never take it): a snapshot or derived value built from settings that changed
# while it was being built is returned to its caller but never kept.
_snapshot: Snapshot | None = None
_derived: dict[Callable[[Snapshot], Any], Any] = {}
_lock = threading.Lock()
_resets = 0


def snapshot() -> Snapshot:
    """The current :class:`Snapshot`; raises :class:`ImproperlyConfigured` naming the first
    invalid key (in :data:`OPTIONS` order) while any value is invalid."""
    current = _snapshot
    return current if current is not None else _take_snapshot()


def _take_snapshot() -> Snapshot:
    global _snapshot
    with _lock:
        resets = _resets
    built = _build_snapshot()
    with _lock:
        if _resets == resets:
            _snapshot = built
    return built


def derived(build: Callable[[Snapshot], _T]) -> _T:
    """``build(snapshot())``, computed once and kept until the settings change.

    ``build`` is the key: pass a module-level function, not a new lambda per call."""
    try:
        return cast(_T, _derived[build])
    except KeyError:
        pass
    with _lock:
        resets = _resets
    value = build(snapshot())
    with _lock:
        if _resets == resets:
            _derived[build] = value
    return value


# Derived values may depend on CACHES (a cache's backend) or DATABASES (the aliases), not
# only on RESEE_PERF; a rebuild costs one validation, and settings change only in tests.
RESET_BY = frozenset({SETTING_NAME, "CACHES", "DATABASES"})


def reset(**kwargs: Any) -> None:
    """Drop the snapshot and every derived value (a ``setting_changed`` receiver)."""
    global _snapshot, _resets
    if kwargs.get("setting", SETTING_NAME) not in RESET_BY:
        return
    with _lock:
        _resets += 1
        _snapshot = None
        _derived.clear()


setting_changed.connect(reset)


class Settings:
    """Typed view of ``settings.RESEE_PERF``, read from the current :class:`Snapshot`.

    A value that fails validation raises :class:`ImproperlyConfigured` naming the key; the
    system checks report the same problem earlier, at ``manage.py check``.
    """

    def get(self, name: str) -> Any:
        """One key, read from the settings and validated now (not from the snapshot)."""
        return _validated(_user_settings(), name)

    @property
    def CACHE_ALIAS(self) -> str:
        return snapshot().CACHE_ALIAS

    @property
    def CACHE_BACKGROUND_REFRESH(self) -> bool:
        return snapshot().CACHE_BACKGROUND_REFRESH

    @property
    def CACHE_BREAKER_COOLDOWN(self) -> float:
        return snapshot().CACHE_BREAKER_COOLDOWN

    @property
    def CACHE_BREAKER_THRESHOLD(self) -> int:
        return snapshot().CACHE_BREAKER_THRESHOLD

    @property
    def CACHE_ENABLED(self) -> bool:
        return snapshot().CACHE_ENABLED

    @property
    def CACHE_LOCK_TIMEOUT(self) -> float:
        return snapshot().CACHE_LOCK_TIMEOUT

    @property
    def DEPLOYMENT(self) -> Deployment | None:
        value = snapshot().DEPLOYMENT
        return None if value is None else Deployment.from_setting(value)

    @property
    def KEY_PREFIX(self) -> str:
        return snapshot().KEY_PREFIX

    @property
    def METRICS_ENABLED(self) -> bool:
        return snapshot().METRICS_ENABLED

    @property
    def REPLICAS(self) -> list[str]:
        return list(snapshot().REPLICAS)

    @property
    def REPLICA_CHECK_INTERVAL(self) -> float:
        return snapshot().REPLICA_CHECK_INTERVAL

    @property
    def REPLICA_CHECK_TIMEOUT(self) -> float:
        return snapshot().REPLICA_CHECK_TIMEOUT

    @property
    def REPLICA_MAX_LAG_SECONDS(self) -> float:
        return snapshot().REPLICA_MAX_LAG_SECONDS

    @property
    def REPLICA_RETRY_SECONDS(self) -> float:
        return snapshot().REPLICA_RETRY_SECONDS

    @property
    def STICKY_COOKIE_NAME(self) -> str:
        return snapshot().STICKY_COOKIE_NAME

    @property
    def STICKY_SECONDS(self) -> float:
        return snapshot().STICKY_SECONDS

    @property
    def INVALIDATION_QUEUE_SIZE(self) -> int:
        return snapshot().INVALIDATION_QUEUE_SIZE

    @property
    def INVALIDATION_RETRY_SECONDS(self) -> float:
        return snapshot().INVALIDATION_RETRY_SECONDS

    @property
    def TAG_TIMEOUT(self) -> int | None:
        return snapshot().TAG_TIMEOUT

    @property
    def CACHE_SERIALIZER(self) -> str:
        return snapshot().CACHE_SERIALIZER

    @property
    def CACHE_SIGNING_KEY(self) -> str | bytes | list[str | bytes] | None:
        return snapshot().CACHE_SIGNING_KEY

    @property
    def CACHE_SIGNING_KEYS(self) -> tuple[bytes, ...]:
        return snapshot().CACHE_SIGNING_KEYS


def invalid_message(name: str, value: Any) -> str:
    return f"{SETTING_NAME}[{name!r}] should be {OPTIONS[name].expected}, not {value!r}."


conf = Settings()
