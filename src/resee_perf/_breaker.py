"""The circuit breaker that keeps a dead cache from adding latency to every call.

After ``CACHE_BREAKER_THRESHOLD`` consecutive failures of one cache alias, :mod:`resee_perf.cache`
stops talking to that cache for ``CACHE_BREAKER_COOLDOWN`` seconds and calls functions
directly. When the cooldown is over, one caller is let through as a trial; its success closes
the breaker, its failure opens it for another cooldown. Without this, every request would pay
a connect or socket timeout while Redis is down.
"""

from __future__ import annotations

import logging
import threading
import time

from resee_perf import metrics
from resee_perf.conf import conf

logger = logging.getLogger("resee_perf.cache")


class CircuitBreaker:
    """Consecutive-failure breaker for one cache alias, shared by the threads of a process."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._lock = threading.Lock()
        self._failures = 0
        # monotonic time until which calls skip the cache; None while the breaker is closed.
        self._open_until: float | None = None
        # The gauge exists (at 0) from the first use of the cache, not only after an outage.
        metrics.report_breaker(alias, is_open=False)

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def allow(self) -> bool:
        """Whether a caller may use the cache now. Lock-free while the breaker is closed."""
        if self._open_until is None:
            return True
        return self._allow_while_open()

    def _allow_while_open(self) -> bool:
        with self._lock:
            open_until = self._open_until
            now = time.monotonic()
            if open_until is None:
                return True
            if now < open_until:
                return False
            # Cooldown over: this caller is the trial; the others keep skipping the cache
            # until it reports, so a still-dead Redis costs one timeout per cooldown, not one
            # per concurrent caller.
            self._open_until = now + conf.CACHE_BREAKER_COOLDOWN
            return True

    def record_success(self) -> None:
        if self._failures == 0 and self._open_until is None:
            return
        with self._lock:
            was_open = self._open_until is not None
            self._failures = 0
            self._open_until = None
        if was_open:
            logger.warning("cache %r answers again: circuit breaker closed", self.alias)
            metrics.report_breaker(self.alias, is_open=False)

    def record_failure(self, error: BaseException) -> None:
        with self._lock:
            self._failures += 1
            opens = self._failures >= conf.CACHE_BREAKER_THRESHOLD
            was_open = self._open_until is not None
            if opens:
                self._open_until = time.monotonic() + conf.CACHE_BREAKER_COOLDOWN
        if opens and not was_open:
            logger.error(
                "cache %r failed %d times in a row (%s): circuit breaker open, calling "
                "functions directly for %s s",
                self.alias,
                self._failures,
                error,
                conf.CACHE_BREAKER_COOLDOWN,
            )
            metrics.report_breaker(self.alias, is_open=True)
        else:
            logger.warning(
                "cache %r unavailable (%s): calling the function directly", self.alias, error
            )


# Process-wide by design: the breaker's point is that every thread of a process learns from
# the failures of the others. Keyed by alias; cleared when settings.CACHES changes.
_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(alias: str) -> CircuitBreaker:
    breaker = _breakers.get(alias)
    if breaker is None:
        with _breakers_lock:
            breaker = _breakers.setdefault(alias, CircuitBreaker(alias))
    return breaker


def reset_breakers() -> None:
    with _breakers_lock:
        _breakers.clear()
