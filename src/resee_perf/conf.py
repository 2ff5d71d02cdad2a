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
from types import MappingProxyType
from typing import Any, TypeVar, cast

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from resee_perf._deployment import Deployment

# Re-exported: the checks and the docs test read the table through conf.
from resee_perf._settings_options import OPTIONS as OPTIONS
from resee_perf._settings_options import SETTING_NAME as SETTING_NAME
from resee_perf._settings_options import Option as Option
from resee_perf._settings_options import signing_keys

_T = TypeVar("_T")


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
    NPLUSONE_ALLOW: tuple[str, ...]
    NPLUSONE_RAISE: bool
    NPLUSONE_THRESHOLD: int
    PROFILE_SAMPLE_RATE: float
    SERVER_TIMING: str
    SLOW_QUERY_EXPLAIN: bool
    SLOW_QUERY_MS: float | None
    METRICS_ALLOWED_NETWORKS: tuple[str, ...]
    METRICS_TOKEN: str | None
    METRICS_LATENCY_BUCKETS: tuple[float, ...]
    REPLICAS: tuple[str, ...]
    REPLICA_CHECK_INTERVAL: float
    REPLICA_CHECK_TIMEOUT: float
    REPLICA_MAX_LAG_SECONDS: float
    REPLICA_QUERY_TIMEOUT: float | None
    REPLICA_RETRY_READS: bool
    REPLICA_RETRY_SECONDS: float
    REPLICA_WEIGHTS: Mapping[str, Any]
    """As given; :func:`resee_perf._replicas.routing_settings` validates the weights."""
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
            "REPLICA_WEIGHTS": MappingProxyType(dict(values["REPLICA_WEIGHTS"])),
            "STICKY_SECONDS": float(values["STICKY_SECONDS"]),
            "METRICS_ALLOWED_NETWORKS": tuple(values["METRICS_ALLOWED_NETWORKS"]),
            "NPLUSONE_ALLOW": tuple(values["NPLUSONE_ALLOW"]),
            "PROFILE_SAMPLE_RATE": float(values["PROFILE_SAMPLE_RATE"]),
            "SLOW_QUERY_MS": (
                None if values["SLOW_QUERY_MS"] is None else float(values["SLOW_QUERY_MS"])
            ),
            "METRICS_LATENCY_BUCKETS": tuple(
                float(bucket) for bucket in values["METRICS_LATENCY_BUCKETS"]
            ),
            "REPLICA_QUERY_TIMEOUT": (
                None
                if values["REPLICA_QUERY_TIMEOUT"] is None
                else float(values["REPLICA_QUERY_TIMEOUT"])
            ),
            "CACHE_SIGNING_KEYS": () if signing_key is None else signing_keys(signing_key),
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
    def REPLICA_WEIGHTS(self) -> dict[str, Any]:
        return dict(snapshot().REPLICA_WEIGHTS)

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

    @property
    def REPLICA_QUERY_TIMEOUT(self) -> float | None:
        return snapshot().REPLICA_QUERY_TIMEOUT

    @property
    def REPLICA_RETRY_READS(self) -> bool:
        return snapshot().REPLICA_RETRY_READS

    @property
    def METRICS_ALLOWED_NETWORKS(self) -> list[str]:
        return list(snapshot().METRICS_ALLOWED_NETWORKS)

    @property
    def METRICS_TOKEN(self) -> str | None:
        return snapshot().METRICS_TOKEN

    @property
    def METRICS_LATENCY_BUCKETS(self) -> list[float]:
        return list(snapshot().METRICS_LATENCY_BUCKETS)

    @property
    def NPLUSONE_ALLOW(self) -> list[str]:
        return list(snapshot().NPLUSONE_ALLOW)

    @property
    def NPLUSONE_RAISE(self) -> bool:
        return snapshot().NPLUSONE_RAISE

    @property
    def NPLUSONE_THRESHOLD(self) -> int:
        return snapshot().NPLUSONE_THRESHOLD

    @property
    def PROFILE_SAMPLE_RATE(self) -> float:
        return snapshot().PROFILE_SAMPLE_RATE

    @property
    def SERVER_TIMING(self) -> str:
        return snapshot().SERVER_TIMING

    @property
    def SLOW_QUERY_EXPLAIN(self) -> bool:
        return snapshot().SLOW_QUERY_EXPLAIN

    @property
    def SLOW_QUERY_MS(self) -> float | None:
        return snapshot().SLOW_QUERY_MS


def invalid_message(name: str, value: Any) -> str:
    return f"{SETTING_NAME}[{name!r}] should be {OPTIONS[name].expected}, not {value!r}."


conf = Settings()
