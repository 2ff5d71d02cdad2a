"""The settings every ``cache_aside`` hit needs, read once, and what a settings change resets."""

from __future__ import annotations

from typing import Any, NamedTuple, cast

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from resee_perf import _pending
from resee_perf._breaker import reset_breakers
from resee_perf._entries import SERIALIZERS, Codec, Serializer
from resee_perf._store import forget_stores
from resee_perf.conf import conf


class _HotSettings(NamedTuple):
    prefix: str
    alias: str
    enabled: bool
    codec: Codec


# KEY_PREFIX, CACHE_ALIAS and CACHE_ENABLED are needed on every hit, where reading them through
# conf (a settings lookup and a validation each) was a measurable share of the latency. Read
# once, dropped whenever Django reports a settings change (override_settings, pytest-django's
# `settings`), so they behave like conf's read-on-access for every caller.
_hot: _HotSettings | None = None


def hot_settings() -> _HotSettings:
    global _hot
    if _hot is None:
        _hot = _HotSettings(conf.KEY_PREFIX, conf.CACHE_ALIAS, conf.CACHE_ENABLED, _codec())
    return _hot


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


def _codec() -> Codec:
    return Codec(serializer_for(conf.CACHE_SERIALIZER), conf.CACHE_SIGNING_KEYS)


def _forget_state(*, setting: str, **kwargs: Any) -> None:
    global _hot
    if setting in {"CACHES", "RESEE_PERF"}:
        _hot = None
        reset_breakers()
        forget_stores()
        _pending.queue.clear()


setting_changed.connect(_forget_state)
