"""gunicorn configuration of the bench's servers (benchmarks/resee_bench.py).

- Counts every query Django sends, per server, in the prometheus multiprocess directory of that
  server. Counted by Django's execute wrappers (``connection.execute_wrappers``): every query of
  the ORM and of ``cursor.execute``; not the ``SELECT 1`` of ``CONN_HEALTH_CHECKS``, which the
  backend runs on the raw connection.
- Tells the client what the cache did for each request: an ``X-Bench-Cache`` response header
  lists the ``cache_aside`` results of the request (``name=result``, in order), taken from the
  same calls that feed the library's counters (``resee_perf.metrics.report_cache``). The hit
  rate comes from the counters; the header only lets the bench say which reads missed and why.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

_results = threading.local()


def post_worker_init(worker: Any) -> None:
    from django.db.backends.signals import connection_created
    from prometheus_client import Counter

    queries = Counter("bench_db_queries", "Queries sent by Django", ["alias"])

    def count(execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
        queries.labels(context["connection"].alias).inc()
        return execute(sql, params, many, context)

    def install(sender: Any, connection: Any, **kwargs: Any) -> None:
        if count not in connection.execute_wrappers:
            connection.execute_wrappers.append(count)

    connection_created.connect(install, weak=False)
    _report_results()
    worker.wsgi = _with_cache_header(worker.wsgi)


def _report_results() -> None:
    from resee_perf import metrics

    report = metrics.report_cache

    def report_cache(name: str, result: str) -> None:
        seen = getattr(_results, "seen", None)
        if seen is not None:
            seen.append(f"{name}={result}")
        report(name, result)

    metrics.report_cache = report_cache  # the module's own hook: _flow calls metrics.report_cache


def _with_cache_header(application: Callable[..., Iterable[bytes]]) -> Callable[..., Any]:
    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        _results.seen = []

        def start(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            # Django calls start_response after the view has run: every result is in by now.
            headers.append(("X-Bench-Cache", ",".join(_results.seen)))
            return start_response(status, headers, *args)

        return application(environ, start)

    return wrapped
