"""The connection settings we recommend for one ``DATABASES`` entry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from resee_perf._databases import PoolUnavailable, native_pool_unavailable
from resee_perf._deployment import DEFAULT_RESERVED, positive_valid


def recommended_database(
    database: Mapping[str, Any],
    *,
    threads_per_worker: int,
    pool: bool = False,
    conn_max_age: int = 600,
    connect_timeout: int = 5,
    statement_timeout_ms: int | None = 30_000,
    pool_timeout: float = 10.0,
    max_connections: int | None = None,
    reserved: int = DEFAULT_RESERVED,
) -> dict[str, Any]:
    """A copy of one ``DATABASES`` entry with the connection settings we recommend.

    ``pool=False``: persistent connections (``CONN_MAX_AGE``) checked before reuse
    (``CONN_HEALTH_CHECKS``). ``pool=True`` (Django 5.1+, psycopg 3): a fixed pool of one
    connection per thread, so a process holds what the budget counts, and a thread that
    cannot get one fails after ``pool_timeout`` seconds instead of hanging. Both set
    libpq's ``connect_timeout`` and a server-side ``statement_timeout``.

    ``pool=True`` where the native pool cannot exist (Django before 5.1, or no psycopg_pool)
    raises :class:`PoolUnavailable` rather than quietly returning persistent connections: the
    budget of a pool and of persistent connections differ under ASGI and in single-threaded
    processes, so the caller must choose.
    """
    if not positive_valid(threads_per_worker):
        raise ValueError(
            f"threads_per_worker should be a positive integer, not {threads_per_worker!r}: "
            "pass gunicorn's --threads (1 for sync workers)."
        )
    if pool and (problem := native_pool_unavailable()):
        raise PoolUnavailable(
            f"recommended_database(pool=True): {problem} Pass pool=False for persistent "
            "connections checked before reuse, or put PgBouncer in front."
        )
    if max_connections is not None and threads_per_worker > max_connections - reserved:
        raise ValueError(
            f"A pool of {threads_per_worker} connections per process is larger than the "
            f"server ({max_connections} max_connections, {reserved} reserved): lower the "
            "threads per worker or raise max_connections."
        )
    result = dict(database)
    options = dict(result.get("OPTIONS") or {})
    options["connect_timeout"] = connect_timeout
    if statement_timeout_ms is not None:
        startup = str(options.get("options") or "")
        options["options"] = f"{startup} -c statement_timeout={statement_timeout_ms}".strip()
    if pool:
        options["pool"] = {
            "min_size": threads_per_worker,
            "max_size": threads_per_worker,
            "timeout": pool_timeout,
        }
        result["CONN_MAX_AGE"] = 0
    else:
        options.pop("pool", None)
        result["CONN_MAX_AGE"] = conn_max_age
    result["CONN_HEALTH_CHECKS"] = True
    result["OPTIONS"] = options
    return result
