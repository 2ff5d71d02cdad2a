"""gunicorn configuration of the bench's servers (benchmarks/resee_bench.py): counts every
query Django sends, per server, in the prometheus multiprocess directory of that server.

Counted by Django's execute wrappers (``connection.execute_wrappers``): every query of the ORM
and of ``cursor.execute``; not the ``SELECT 1`` of ``CONN_HEALTH_CHECKS``, which the backend
runs on the raw connection.
"""

from __future__ import annotations

from typing import Any


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
