"""Every Prometheus metric resee-perf exports, defined once, and the hooks that feed them.

The cache, the invalidation and the router never touch prometheus-client themselves: they call
the ``report_*`` functions below, which are the one place where "what happened" becomes a
number. prometheus-client is an optional extra (``resee-perf[prometheus]``); without it, or
with ``RESEE_PERF['METRICS_ENABLED'] = False``, every report is a no-op. With opentelemetry-api
installed (``resee-perf[otel]``), every metric is mirrored to an OpenTelemetry instrument of the
same name on the global MeterProvider; prometheus-client stays the multiprocess-safe default.

Names follow the Prometheus conventions (``resee_perf_`` prefix, ``_total`` for counters,
base units); docs/metrics.md lists them and a test keeps the two in step.
"""

from __future__ import annotations

import threading

# DEFINED is re-exported: the docs test and the exporter read it here.
from resee_perf._metric_types import DEFINED as DEFINED
from resee_perf._metric_types import (
    CounterMetric,
    HistogramMetric,
    counter,
    gauge,
    histogram,
)
from resee_perf.conf import snapshot

# Process-wide by design: prometheus-client registers each metric once per process in its
# default registry, which is what the exporter scrapes.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

CACHE_REQUESTS = counter(
    "resee_perf_cache_requests",
    "Calls of cache_aside functions, by function name and result "
    "(hit, stale, early, wait, miss, bypass, error).",
    ["name", "result"],
)
CACHE_RECOMPUTE_SECONDS = histogram(
    "resee_perf_cache_recompute_seconds",
    "Time spent running the body of a cache_aside function on a miss or refresh.",
    ["name"],
    _LATENCY_BUCKETS,
)
CACHE_LOCK_WAIT_SECONDS = histogram(
    "resee_perf_cache_lock_wait_seconds",
    "Time a cache_aside caller waited for another caller's recompute of the same key.",
    ["name"],
    _LATENCY_BUCKETS,
)
CACHE_REFRESH_FAILURES = counter(
    "resee_perf_cache_refresh_failures",
    "Background refreshes of stale or early-expired entries whose body raised; the old entry "
    "is served until it expires.",
    ["name"],
)
CACHE_STORES_SKIPPED = counter(
    "resee_perf_cache_stores_skipped",
    "Values a cache_aside recompute returned but did not store, by function name and reason "
    "(changed: an invalidate() or another store reached the key while the body ran; slow: the "
    "body outran lock_timeout on a key that held nothing).",
    ["name", "reason"],
)
CACHE_BREAKER_OPEN = gauge(
    "resee_perf_cache_breaker_open",
    "1 while the circuit breaker of a cache alias is open (cache_aside calls functions "
    "directly), else 0.",
    ["cache"],
    "livemax",
)
INVALIDATIONS = counter(
    "resee_perf_invalidations",
    "Tags invalidated (generation bumps), by cache alias and result (ok, error, retried). An "
    "error queues the invalidation for retry; retried counts the tags and invalidate() keys "
    "that landed from that queue.",
    ["cache", "result"],
)
INVALIDATIONS_PENDING = gauge(
    "resee_perf_invalidations_pending",
    "Failed invalidations (tags and invalidate() keys) this process holds for retry, by cache "
    "alias; its cache_aside calls under them bypass the cache until they land.",
    ["cache"],
)
INVALIDATION_OVERFLOWS = counter(
    "resee_perf_invalidation_overflows",
    "Failed invalidations dropped because INVALIDATION_QUEUE_SIZE was reached, replaced by one "
    "bump of the cache's epoch (every entry becomes a miss), by cache alias.",
    ["cache"],
)
CACHE_EPOCH_CHANGES = counter(
    "resee_perf_cache_epoch_changes",
    "Bumps of a cache's epoch, which turn every entry into a miss, by reason (restart: the "
    "Redis server is not the one the epoch was confirmed on, after a restart, a restore or a "
    "failover; overflow: the queue of failed invalidations overflowed).",
    ["cache", "reason"],
)
DB_ROUTES = counter(
    "resee_perf_db_routes",
    "Routing decisions of StickyReplicaRouter, by chosen alias and reason.",
    ["alias", "reason"],
)
REPLICA_UP = gauge(
    "resee_perf_replica_up",
    "1 while a replica is reachable and in recovery at its last check, else 0.",
    ["alias"],
    "livemin",
)
REPLICA_LAG_SECONDS = gauge(
    "resee_perf_replica_lag_seconds",
    "How far a replica's data is behind the primary's at its last check (0 when it has "
    "replayed the primary's last known position).",
    ["alias"],
    "livemax",
)


# Called on every cache hit: keep the labelled children instead of asking prometheus-client
# (a lock and a dict) each time. Bounded like the labels: functions x results.
_cache_request_children: dict[tuple[str, str], CounterMetric] = {}


# Every result a cache_aside call can have: the first call of a function creates all of them at
# 0, so that a ratio (hits over calls, errors over calls) exists before the first error.
CACHE_RESULTS = ("hit", "stale", "early", "wait", "miss", "bypass", "error")


def report_cache(name: str, result: str) -> None:
    if snapshot().METRICS_ENABLED:
        child = _cache_request_children.get((name, result))
        if child is None:
            for each in (*CACHE_RESULTS, result):
                _cache_request_children.setdefault((name, each), CACHE_REQUESTS.labels(name, each))
            # The function's histograms too: a lock-wait rate is 0 before the first stampede.
            CACHE_RECOMPUTE_SECONDS.labels(name)
            CACHE_LOCK_WAIT_SECONDS.labels(name)
            child = _cache_request_children[(name, result)]
        child.inc()


def report_recompute(name: str, seconds: float) -> None:
    if snapshot().METRICS_ENABLED:
        CACHE_RECOMPUTE_SECONDS.labels(name).observe(seconds)


def report_lock_wait(name: str, seconds: float) -> None:
    if snapshot().METRICS_ENABLED:
        CACHE_LOCK_WAIT_SECONDS.labels(name).observe(seconds)


def report_refresh_failure(name: str) -> None:
    if snapshot().METRICS_ENABLED:
        CACHE_REFRESH_FAILURES.labels(name).inc()


def report_store_skipped(name: str, reason: str) -> None:
    if snapshot().METRICS_ENABLED:
        CACHE_STORES_SKIPPED.labels(name, reason).inc()


def report_breaker(cache: str, *, is_open: bool) -> None:
    if snapshot().METRICS_ENABLED:
        CACHE_BREAKER_OPEN.labels(cache).set(1 if is_open else 0)


def report_invalidation(cache: str, result: str, tags: int) -> None:
    if snapshot().METRICS_ENABLED:
        # Both results exist from the first invalidation on, so an error rate is 0, not absent.
        INVALIDATIONS.labels(cache, "ok" if result == "error" else "error").inc(0)
        INVALIDATIONS.labels(cache, result).inc(tags)


def report_invalidations_pending(cache: str, size: int) -> None:
    if snapshot().METRICS_ENABLED:
        INVALIDATIONS_PENDING.labels(cache).set(size)


def report_invalidation_overflow(cache: str, dropped: int) -> None:
    if snapshot().METRICS_ENABLED:
        INVALIDATION_OVERFLOWS.labels(cache).inc(dropped)


def report_epoch_change(cache: str, reason: str) -> None:
    if snapshot().METRICS_ENABLED:
        CACHE_EPOCH_CHANGES.labels(cache, reason).inc()


# Called on every routed query, like report_cache on every hit: bounded by aliases x reasons.
_route_children: dict[tuple[str, str], CounterMetric] = {}


def report_route(alias: str, reason: str) -> None:
    if snapshot().METRICS_ENABLED:
        child = _route_children.get((alias, reason))
        if child is None:
            child = DB_ROUTES.labels(alias, reason)
            _route_children[(alias, reason)] = child
        child.inc()


def report_replica(alias: str, *, up: bool, lag: float | None) -> None:
    if snapshot().METRICS_ENABLED:
        REPLICA_UP.labels(alias).set(1 if up else 0)
        if lag is not None:
            REPLICA_LAG_SECONDS.labels(alias).set(lag)


# Appended (entries-keys): entries refused by their signature, RESEE_PERF['CACHE_SIGNING_KEY'].
CACHE_ENTRIES_REJECTED = counter(
    "resee_perf_cache_entries_rejected",
    "Cache entries a cache_aside read refused because signing keys are set and the entry was "
    "unsigned or its HMAC did not match its key (tampering, or a writer without the key); "
    "each is recomputed as a miss.",
    ["name"],
)


def report_entry_rejected(name: str) -> None:
    if snapshot().METRICS_ENABLED:
        CACHE_ENTRIES_REJECTED.labels(name).inc()


# Appended (query-deadline): queries on replica connections ended by the client-side deadline.
REPLICA_QUERY_TIMEOUTS = counter(
    "resee_perf_replica_query_timeouts",
    "Queries (and CONN_HEALTH_CHECKS pings) on a replica connection that outran their "
    "client-side deadline (REPLICA_QUERY_TIMEOUT, REPLICA_CHECK_TIMEOUT for pings): each failed "
    "with OperationalError, and marked the replica down.",
    ["alias"],
)


def report_replica_query_timeout(alias: str) -> None:
    if snapshot().METRICS_ENABLED:
        REPLICA_QUERY_TIMEOUTS.labels(alias).inc()


# Appended (replica-retry): reads whose replica connection died under them, run on the primary.
REPLICA_READ_RETRIES = counter(
    "resee_perf_replica_read_retries",
    "Reads whose connection to a replica failed while they ran (the replica killed, restarted "
    "or hung past REPLICA_QUERY_TIMEOUT) outside a transaction: each marked the replica down "
    "and ran again on the primary, without an error for the caller.",
    ["alias"],
)


def report_replica_read_retry(alias: str) -> None:
    if snapshot().METRICS_ENABLED:
        REPLICA_READ_RETRIES.labels(alias).inc()


# -- HTTP and database RED metrics (resee_perf.middleware.MetricsMiddleware) -------------------
# Labels are bounded by the code, never by the traffic: the route is the URL pattern
# ("api/contents/<int:pk>/"), the method one of a fixed set, the status a class ("2xx").

HTTP_REQUESTS = counter(
    "resee_perf_http_requests",
    "HTTP requests answered, by URL pattern (route), method and status class.",
    ["route", "method", "status"],
)
_HTTP_DURATION_NAME = "resee_perf_http_request_duration_seconds"
_HTTP_DURATION_DOC = "Time from the request entering MetricsMiddleware to its response, by route."
DEFINED[_HTTP_DURATION_NAME] = _HTTP_DURATION_DOC
_QUERY_COUNT_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500)
DB_REQUEST_QUERIES = histogram(
    "resee_perf_db_request_queries",
    "Queries one request sent to a database alias (requests that sent none are not observed).",
    ["alias"],
    _QUERY_COUNT_BUCKETS,
)
DB_REQUEST_QUERY_SECONDS = histogram(
    "resee_perf_db_request_query_seconds",
    "Time one request spent in queries on a database alias.",
    ["alias"],
    _LATENCY_BUCKETS,
)
DB_CONNECTIONS_OPENED = counter(
    "resee_perf_db_connections_opened",
    "Database connections opened by Django (the connection_created signal), by alias.",
    ["alias"],
)
DB_POOL_CONNECTIONS = gauge(
    "resee_perf_db_pool_connections",
    "Connections of the psycopg native pools (Django 5.1+ OPTIONS['pool']) summed over live "
    "processes, by alias and state (size, in_use, waiting: requests waiting for one).",
    ["alias", "state"],
    "livesum",
)

# The histogram's buckets come from a setting (METRICS_LATENCY_BUCKETS), which must not be
# read at import time: created at the first request, then process-wide like every metric.
_http_duration: HistogramMetric | None = None
# Worker threads meet their first request at once: two creating it would register the same
# name twice (DuplicateTimeseries), failing a request.
_http_duration_lock = threading.Lock()
_http_children: dict[tuple[str, str, str], tuple[CounterMetric, HistogramMetric]] = {}
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def _http_duration_histogram() -> HistogramMetric:
    global _http_duration
    if _http_duration is None:
        with _http_duration_lock:
            if _http_duration is None:
                buckets = snapshot().METRICS_LATENCY_BUCKETS
                _http_duration = histogram(
                    _HTTP_DURATION_NAME, _HTTP_DURATION_DOC, ["route", "method"], buckets
                )
    return _http_duration


def report_http(route: str, method: str, status: int, seconds: float) -> None:
    if not snapshot().METRICS_ENABLED:
        return
    status_class = f"{min(max(status // 100, 1), 5)}xx"
    children = _http_children.get((route, method, status_class))
    if children is None:
        duration = _http_duration_histogram().labels(route, method)
        # Every status class of a route exists from its first request on, so that an error
        # ratio is 0 rather than absent before the first 5xx (and its alert can be evaluated).
        for each in STATUS_CLASSES:
            counter = HTTP_REQUESTS.labels(route, method, each)
            _http_children.setdefault((route, method, each), (counter, duration))
        children = _http_children[(route, method, status_class)]
    counter, duration = children
    counter.inc()
    duration.observe(seconds)


def report_request_queries(alias: str, queries: int, seconds: float) -> None:
    if snapshot().METRICS_ENABLED:
        DB_REQUEST_QUERIES.labels(alias).observe(queries)
        DB_REQUEST_QUERY_SECONDS.labels(alias).observe(seconds)


def report_connection_opened(alias: str) -> None:
    if snapshot().METRICS_ENABLED:
        DB_CONNECTIONS_OPENED.labels(alias).inc()


def report_pool(alias: str, *, size: int, in_use: int, waiting: int) -> None:
    if snapshot().METRICS_ENABLED:
        DB_POOL_CONNECTIONS.labels(alias, "size").set(size)
        DB_POOL_CONNECTIONS.labels(alias, "in_use").set(in_use)
        DB_POOL_CONNECTIONS.labels(alias, "waiting").set(waiting)


# -- Query profiling (resee_perf.profiling, QueryProfileMiddleware) ----------------------------
# The route label is the URL pattern (``api/review/today/``), never the path: bounded by the
# project's URLconf.

NPLUSONE = counter(
    "resee_perf_nplusone",
    "Profiled requests in which a read ran NPLUSONE_THRESHOLD times or more from one call site "
    "(one per request and shape), by route.",
    ["route"],
)
SLOW_QUERIES = counter(
    "resee_perf_slow_queries",
    "Profiled queries that took SLOW_QUERY_MS or longer, by route.",
    ["route"],
)


def report_nplusone(route: str) -> None:
    if snapshot().METRICS_ENABLED:
        NPLUSONE.labels(route).inc()


def report_slow_query(route: str) -> None:
    if snapshot().METRICS_ENABLED:
        SLOW_QUERIES.labels(route).inc()
