"""What :class:`~resee_perf.middleware.MetricsMiddleware` measures of one request: its route,
method, status and time, and its queries per database alias (through Django's
``execute_wrapper`` hook, installed on every alias for the request's duration)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from django.db import connections
from django.http import HttpRequest, HttpResponseBase

from resee_perf import metrics
from resee_perf.conf import conf

logger = logging.getLogger("resee_perf.metrics")

# Anything else (WebDAV verbs, garbage) is one label value: the method is client-controlled.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A request no URL pattern matched (a 404 from the resolver, or a middleware that answered
# before resolution): one label value, never the raw path, which a client controls.
UNMATCHED = "<unmatched>"
# How often one process reads its psycopg pools' statistics (a lock each): per request would
# cost every request for a gauge that Prometheus reads every 15 s or so.
_POOL_REPORT_INTERVAL = 1.0
_next_pool_report = 0.0


class QueryTally:
    """An ``execute_wrapper``: counts the queries and their time per alias."""

    __slots__ = ("counts", "seconds")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def __call__(
        self,
        execute: Callable[..., Any],
        sql: str,
        params: Any,
        many: bool,
        context: Mapping[str, Any],
    ) -> Any:
        alias = context["connection"].alias
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.counts[alias] = self.counts.get(alias, 0) + 1
            self.seconds[alias] = self.seconds.get(alias, 0.0) + time.perf_counter() - start


class RequestMeasure:
    """Started when a request enters the middleware, finished with its response."""

    __slots__ = ("connections", "start", "tally")

    def __init__(self) -> None:
        self.tally = QueryTally()
        # The connection objects of this thread (or task), kept so that finishing does not
        # look them all up again: half of this middleware's cost with five aliases.
        self.connections = connections.all()
        for connection in self.connections:
            connection.execute_wrappers.append(self.tally)
        self.start = time.perf_counter()

    def abandon(self) -> None:
        """Uninstall the wrappers (an exception escaped the handler: nothing to record)."""
        for connection in self.connections:
            if self.tally in connection.execute_wrappers:
                connection.execute_wrappers.remove(self.tally)

    def finish(self, request: HttpRequest, response: HttpResponseBase) -> None:
        seconds = time.perf_counter() - self.start
        self.abandon()
        try:
            metrics.report_http(route(request), method(request), response.status_code, seconds)
            for alias, count in self.tally.counts.items():
                metrics.report_request_queries(alias, count, self.tally.seconds[alias])
            report_pools(self.tally.counts)
        except Exception:
            # Monitoring must never fail the request it measures: the response is ready.
            logger.exception("could not record the metrics of %s %s", request.method, request.path)


def start() -> RequestMeasure | None:
    return RequestMeasure() if conf.METRICS_ENABLED else None


def route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None or not match.route:
        return UNMATCHED
    return str(match.route)


def method(request: HttpRequest) -> str:
    value = (request.method or "").upper()
    return value if value in _METHODS else "other"


def report_pools(aliases: Mapping[str, int]) -> None:
    global _next_pool_report
    now = time.monotonic()
    if now < _next_pool_report:
        return
    _next_pool_report = now + _POOL_REPORT_INTERVAL
    for alias in aliases:
        connection = connections[alias]
        if not connection.settings_dict.get("OPTIONS", {}).get("pool"):
            continue
        pool = getattr(connection, "pool", None)
        if pool is None:
            continue
        stats = pool.get_stats()
        size = int(stats.get("pool_size", 0))
        metrics.report_pool(
            alias,
            size=size,
            in_use=size - int(stats.get("pool_available", 0)),
            waiting=int(stats.get("requests_waiting", 0)),
        )


def connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Receiver of Django's ``connection_created``: connections opened, per alias."""
    metrics.report_connection_opened(connection.alias)
