"""The settings every ``cache_aside`` hit needs, read once, and what a settings change resets."""

from __future__ import annotations

from typing import Any, NamedTuple, cast

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from resee_perf import _pending
from resee_perf._astore import forget_async_stores
from resee_perf._breaker import reset_breakers
from resee_perf._entries import SERIALIZERS, Codec, Serializer
from resee_perf._store import forget_stores
from resee_perf.conf import Snapshot, derived


class _HotSettings(NamedTuple):
    prefix: str
    alias: str
    enabled: bool
    codec: Codec


def _hot_view(settings: Snapshot) -> _HotSettings:
    codec = Codec(serializer_for(settings.CACHE_SERIALIZER), settings.CACHE_SIGNING_KEYS)
    return _HotSettings(settings.KEY_PREFIX, settings.CACHE_ALIAS, settings.CACHE_ENABLED, codec)


def hot_settings() -> _HotSettings:
    """What every hit needs (the key prefix, the cache, the switch, the codec with its loaded
    serializer), derived from conf's snapshot and dropped with it on a settings change."""
    return derived(_hot_view)  # keyed by this module-level function: never a lambda


def serializer_for(setting: str) -> Serializer:
    """The serializer ``RESEE_PERF['CACHE_SERIALIZER']`` names: "json", "pickle" or the dotted
    path of a class (instantiated without arguments) or object with ``dumps`` and ``loads``."""
    found: Any = SERIALIZERS.get(setting) or import_string(setting)
    serializer = found() if isinstance(found, type) else found
    if not (
        callable(getattr(serializer, "dumps", None))
        and callable(getattr(serializer, "loads", None))
    ):
        raise ImproperlyConfigured(
            f"RESEE_PERF['CACHE_SERIALIZER'] = {setting!r} has no dumps() and loads()."
        )
    return cast(Serializer, serializer)


def _forget_state(*, setting: str, **kwargs: Any) -> None:
    # State, not settings (conf drops the derived settings itself): what was built for the
    # caches and settings that just changed.
    if setting in {"CACHES", "RESEE_PERF"}:
        reset_breakers()
        forget_stores()
        forget_async_stores()
        _pending.queue.clear()


setting_changed.connect(_forget_state)
