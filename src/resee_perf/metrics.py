"""Every Prometheus metric resee-perf exports, defined once, and the hooks that feed them.

The cache, the invalidation and the router never touch prometheus-client themselves: they call
the ``report_*`` functions below, which are the one place where "what happened" becomes a
number. prometheus-client is an optional extra (``resee-perf[prometheus]``); without it, or
with ``RESEE_PERF['METRICS_ENABLED'] = False``, every report is a no-op.

Names follow the Prometheus conventions (``resee_perf_`` prefix, ``_total`` for counters,
base units); docs/metrics.md lists them and a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from resee_perf.conf import conf


class _Metric(Protocol):
    def labels(self, *labelvalues: str) -> _Metric: ...


class _Counter(_Metric, Protocol):
    def labels(self, *labelvalues: str) -> _Counter: ...
    def inc(self, amount: float = 1) -> None: ...


class _Histogram(_Metric, Protocol):
    def labels(self, *labelvalues: str) -> _Histogram: ...
    def observe(self, amount: float) -> None: ...


class _Gauge(_Metric, Protocol):
    def labels(self, *labelvalues: str) -> _Gauge: ...
    def set(self, value: float) -> None: ...
    def inc(self, amount: float = 1) -> None: ...
    def dec(self, amount: float = 1) -> None: ...


class _Noop:
    """Stands in for every metric when prometheus-client is not installed."""

    def labels(self, *labelvalues: str) -> _Noop:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


try:
    from prometheus_client import Counter, Gauge, Histogram

    _PROMETHEUS = True
except ImportError:  # pragma: no cover - exercised by scripts/check_wheel.sh (core only)
    _PROMETHEUS = False

# name -> documentation; docs/metrics.md is checked against it.
DEFINED: dict[str, str] = {}


def _counter(name: str, documentation: str, labelnames: Sequence[str]) -> _Counter:
    # prometheus-client exposes a counter as <name>_total.
    DEFINED[f"{name}_total"] = documentation
    if not _PROMETHEUS:
        return _Noop()
    return Counter(name, documentation, labelnames)


def _histogram(
    name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
) -> _Histogram:
    DEFINED[name] = documentation
    if not _PROMETHEUS:
        return _Noop()
    return Histogram(name, documentation, labelnames, buckets=buckets)


def _gauge(name: str, documentation: str, labelnames: Sequence[str]) -> _Gauge:
    DEFINED[name] = documentation
    if not _PROMETHEUS:
        return _Noop()
    return Gauge(name, documentation, labelnames)


# Process-wide by design: prometheus-client registers each metric once per process in its
# default registry, which is what the exporter scrapes.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

CACHE_REQUESTS = _counter(
    "resee_perf_cache_requests",
    "Calls of cache_aside functions, by function name and result "
    "(hit, stale, early, wait, miss, bypass, error).",
    ["name", "result"],
)
CACHE_RECOMPUTE_SECONDS = _histogram(
    "resee_perf_cache_recompute_seconds",
    "Time spent running the body of a cache_aside function on a miss or refresh.",
    ["name"],
    _LATENCY_BUCKETS,
)
CACHE_LOCK_WAIT_SECONDS = _histogram(
    "resee_perf_cache_lock_wait_seconds",
    "Time a cache_aside caller waited for another caller's recompute of the same key.",
    ["name"],
    _LATENCY_BUCKETS,
)
CACHE_REFRESH_FAILURES = _counter(
    "resee_perf_cache_refresh_failures",
    "Background refreshes of stale or early-expired entries whose body raised; the old entry "
    "is served until it expires.",
    ["name"],
)
CACHE_STORES_SKIPPED = _counter(
    "resee_perf_cache_stores_skipped",
    "Values a cache_aside recompute returned but did not store, by function name and reason "
    "(changed: an invalidate() or another store reached the key while the body ran; slow: the "
    "body outran lock_timeout on a key that held nothing).",
    ["name", "reason"],
)
CACHE_BREAKER_OPEN = _gauge(
    "resee_perf_cache_breaker_open",
    "1 while the circuit breaker of a cache alias is open (cache_aside calls functions "
    "directly), else 0.",
    ["cache"],
)
INVALIDATIONS = _counter(
    "resee_perf_invalidations",
    "Tags invalidated (generation bumps), by cache alias and result (ok, error, retried). An "
    "error queues the invalidation for retry; retried counts the tags and invalidate() keys "
    "that landed from that queue.",
    ["cache", "result"],
)
INVALIDATIONS_PENDING = _gauge(
    "resee_perf_invalidations_pending",
    "Failed invalidations (tags and invalidate() keys) this process holds for retry, by cache "
    "alias; its cache_aside calls under them bypass the cache until they land.",
    ["cache"],
)
INVALIDATION_OVERFLOWS = _counter(
    "resee_perf_invalidation_overflows",
    "Failed invalidations dropped because INVALIDATION_QUEUE_SIZE was reached, replaced by one "
    "bump of the cache's epoch (every entry becomes a miss), by cache alias.",
    ["cache"],
)
CACHE_EPOCH_CHANGES = _counter(
    "resee_perf_cache_epoch_changes",
    "Bumps of a cache's epoch, which turn every entry into a miss, by reason (restart: the "
    "Redis server is not the one the epoch was confirmed on, after a restart, a restore or a "
    "failover; overflow: the queue of failed invalidations overflowed).",
    ["cache", "reason"],
)
DB_ROUTES = _counter(
    "resee_perf_db_routes",
    "Routing decisions of StickyReplicaRouter, by chosen alias and reason.",
    ["alias", "reason"],
)
REPLICA_UP = _gauge(
    "resee_perf_replica_up",
    "1 while a replica is reachable and in recovery at its last check, else 0.",
    ["alias"],
)
REPLICA_LAG_SECONDS = _gauge(
    "resee_perf_replica_lag_seconds",
    "Replay lag of a replica at its last check (0 when it has replayed all it received).",
    ["alias"],
)


# Called on every cache hit: keep the labelled children instead of asking prometheus-client
# (a lock and a dict) each time. Bounded like the labels: functions x results.
_cache_request_children: dict[tuple[str, str], _Counter] = {}


def report_cache(name: str, result: str) -> None:
    if conf.METRICS_ENABLED:
        child = _cache_request_children.get((name, result))
        if child is None:
            child = CACHE_REQUESTS.labels(name, result)
            _cache_request_children[(name, result)] = child
        child.inc()


def report_recompute(name: str, seconds: float) -> None:
    if conf.METRICS_ENABLED:
        CACHE_RECOMPUTE_SECONDS.labels(name).observe(seconds)


def report_lock_wait(name: str, seconds: float) -> None:
    if conf.METRICS_ENABLED:
        CACHE_LOCK_WAIT_SECONDS.labels(name).observe(seconds)


def report_refresh_failure(name: str) -> None:
    if conf.METRICS_ENABLED:
        CACHE_REFRESH_FAILURES.labels(name).inc()


def report_store_skipped(name: str, reason: str) -> None:
    if conf.METRICS_ENABLED:
        CACHE_STORES_SKIPPED.labels(name, reason).inc()


def report_breaker(cache: str, *, is_open: bool) -> None:
    if conf.METRICS_ENABLED:
        CACHE_BREAKER_OPEN.labels(cache).set(1 if is_open else 0)


def report_invalidation(cache: str, result: str, tags: int) -> None:
    if conf.METRICS_ENABLED:
        INVALIDATIONS.labels(cache, result).inc(tags)


def report_invalidations_pending(cache: str, size: int) -> None:
    if conf.METRICS_ENABLED:
        INVALIDATIONS_PENDING.labels(cache).set(size)


def report_invalidation_overflow(cache: str, dropped: int) -> None:
    if conf.METRICS_ENABLED:
        INVALIDATION_OVERFLOWS.labels(cache).inc(dropped)


def report_epoch_change(cache: str, reason: str) -> None:
    if conf.METRICS_ENABLED:
        CACHE_EPOCH_CHANGES.labels(cache, reason).inc()


# Called on every routed query, like report_cache on every hit: bounded by aliases x reasons.
_route_children: dict[tuple[str, str], _Counter] = {}


def report_route(alias: str, reason: str) -> None:
    if conf.METRICS_ENABLED:
        child = _route_children.get((alias, reason))
        if child is None:
            child = DB_ROUTES.labels(alias, reason)
            _route_children[(alias, reason)] = child
        child.inc()


def report_replica(alias: str, *, up: bool, lag: float | None) -> None:
    if conf.METRICS_ENABLED:
        REPLICA_UP.labels(alias).set(1 if up else 0)
        if lag is not None:
            REPLICA_LAG_SECONDS.labels(alias).set(lag)


# -- Query profiling (resee_perf.profiling, QueryProfileMiddleware) ----------------------------
# The route label is the URL pattern (``api/review/today/``), never the path: bounded by the
# project's URLconf.

NPLUSONE = _counter(
    "resee_perf_nplusone",
    "Profiled requests in which a read ran NPLUSONE_THRESHOLD times or more from one call site "
    "(one per request and shape), by route.",
    ["route"],
)
SLOW_QUERIES = _counter(
    "resee_perf_slow_queries",
    "Profiled queries that took SLOW_QUERY_MS or longer, by route.",
    ["route"],
)


def report_nplusone(route: str) -> None:
    if conf.METRICS_ENABLED:
        NPLUSONE.labels(route).inc()


def report_slow_query(route: str) -> None:
    if conf.METRICS_ENABLED:
        SLOW_QUERIES.labels(route).inc()
