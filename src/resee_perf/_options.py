"""The options of one ``cache_aside`` function, validated once at decoration."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from resee_perf._validators import (
    boolean,
    non_empty_str,
    non_negative_int,
    non_negative_number,
    optional,
    positive_number,
)
from resee_perf.conf import conf

_VERSION = re.compile(r"[A-Za-z0-9_.-]{1,32}")


@dataclass(frozen=True, slots=True)
class Options:
    """``cache_aside``'s keyword options (its docstring says what each one does), checked by
    :meth:`validated`; ``None`` defaults are read from the settings on use, so that
    ``override_settings`` applies to functions decorated before it."""

    ttl: float
    beta: float = 1.0
    lock: bool = True
    stale_ttl: float = 0.0
    cache: str | None = None
    version: str = "1"
    lock_timeout: float | None = None
    background: bool | None = None

    @classmethod
    def validated(cls, where: str, **options: Any) -> Options:
        """The options, normalized (floats, a str version); ImproperlyConfigured naming every
        bad one, for the function ``where``."""
        problems = [problem for valid, problem in _checks(**options) if not valid]
        if problems:
            raise ImproperlyConfigured(f"cache_aside on {where}: {'; '.join(problems)}.")
        stale_ttl = float(options["stale_ttl"] or 0)
        return cls(
            ttl=float(options["ttl"]),
            beta=_beta(options["beta"], stale_ttl),
            lock=options["lock"],
            stale_ttl=stale_ttl,
            cache=options["cache"],
            version=str(options["version"]),
            lock_timeout=options["lock_timeout"],
            background=options["background"],
        )

    def lock_seconds(self) -> float:
        return self.lock_timeout if self.lock_timeout is not None else conf.CACHE_LOCK_TIMEOUT

    def tombstone_seconds(self) -> float:
        """How long an ``invalidate()`` tombstone lives: twice the store horizon (lock_timeout),
        so that a recompute that read the key before the tombstone was written and stores within
        the horizon finds it still there, whatever delays its store command meets."""
        return 2 * self.lock_seconds()

    def refresh_in_background(self) -> bool:
        return conf.CACHE_BACKGROUND_REFRESH if self.background is None else self.background


def _beta(beta: float | None, stale_ttl: float) -> float:
    """``beta`` as given, or, when not given, 0 with ``stale_ttl`` and 1 without: serving stale
    already keeps readers from blocking at expiry, and XFetch on top of it made a hot key with
    a short TTL recompute three times per TTL period (docs/cache.md)."""
    if beta is not None:
        return float(beta)
    return 0.0 if stale_ttl > 0 else 1.0


def _checks(
    *,
    ttl: Any,
    beta: Any,
    lock: Any,
    stale_ttl: Any,
    cache: Any,
    version: Any,
    lock_timeout: Any,
    background: Any,
) -> list[tuple[object, str]]:
    return [
        (positive_number(ttl), f"ttl should be a positive number of seconds, not {ttl!r}"),
        (
            optional(non_negative_number)(beta),
            f"beta should be a number >= 0 (0: no early expiry) or None, not {beta!r}",
        ),
        (isinstance(lock, bool), f"lock should be True or False, not {lock!r}"),
        (
            optional(non_negative_number)(stale_ttl),
            f"stale_ttl should be None or a number of seconds >= 0, not {stale_ttl!r}",
        ),
        (optional(non_empty_str)(cache), f"cache should be a cache alias, not {cache!r}"),
        (
            non_negative_int(version) or (isinstance(version, str) and _VERSION.fullmatch(version)),
            f"version should be an int >= 0 or a short [A-Za-z0-9_.-] string, not {version!r}",
        ),
        (
            optional(positive_number)(lock_timeout),
            f"lock_timeout should be None or a positive number of seconds, not {lock_timeout!r}",
        ),
        (
            optional(boolean)(background),
            f"background should be None, True or False, not {background!r}",
        ),
    ]
