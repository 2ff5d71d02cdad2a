"""A read whose replica connection died under it, run again on the primary.

The router chooses a database before a query is sent; once sent, a replica that is killed,
restarted or hung (ended by :mod:`resee_perf._query_deadline`'s watchdog) fails that query with
``OperationalError``, a 500 for its request. When nothing is lost by running it again, that is:

- the error is the connection's (closed, reset, shut down by the server or by the watchdog),
  not the statement's (a syntax error, a ``statement_timeout`` cancel, a serialization
  failure): those would fail on the primary as well, or are the answer;
- the connection is in autocommit: inside ``atomic()`` the transaction is gone with the
  connection, and its earlier reads cannot be replayed;
- it is one ``SELECT`` on a client-side cursor: a server-side cursor (``iterator()``) is
  fetched later, outside any execute wrapper, and a replica runs nothing else;

the replica is marked down, its connection closed, and the same SQL and parameters are run on
the primary; the caller's cursor then fetches the primary's rows (Django's ``CursorWrapper``
delegates fetches and ``close()`` to its DB-API ``cursor`` attribute).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from resee_perf import _replicas
from resee_perf.metrics import report_replica_read_retry

logger = logging.getLogger("resee_perf.routers")

# Where the router sends writes (resee_perf._freshness.PRIMARY, a layer above).
PRIMARY = DEFAULT_DB_ALIAS

# SQLSTATEs of a connection that is gone: class 08 (connection exception), and the server
# ending the session (admin_shutdown: pg_terminate_backend or a fast shutdown;
# crash_shutdown; cannot_connect_now). 57014 (query_canceled, statement_timeout) is absent.
_CONNECTION_CLASS = "08"
_SESSION_ENDED = frozenset({"57P01", "57P02", "57P03"})


def _driver_error(error: BaseException) -> BaseException:
    """The driver's exception at the bottom of the chain: Django's ``wrap_database_errors``
    and the deadline's own error each raise ``from`` the one below."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _sqlstate(error: BaseException) -> str | None:
    # psycopg 3 names it sqlstate, psycopg2 pgcode.
    value = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return value if isinstance(value, str) else None


def _broken(connection: BaseDatabaseWrapper) -> bool:
    """The driver's connection is gone (psycopg 3 ``broken``/``closed``, psycopg2 ``closed``
    non-zero)."""
    raw = connection.connection
    if raw is None:
        return True
    return bool(getattr(raw, "broken", False)) or bool(getattr(raw, "closed", False))


def connection_lost(error: BaseException, connection: BaseDatabaseWrapper) -> bool:
    """The query failed because its connection did, not because of the statement."""
    driver = _driver_error(error)
    database = connection.Database  # type: ignore[attr-defined]
    if not isinstance(driver, database.OperationalError | database.InterfaceError):
        return False
    state = _sqlstate(driver)
    if state is not None:
        return state.startswith(_CONNECTION_CLASS) or state in _SESSION_ENDED
    # No SQLSTATE: the client's own error (a closed socket, a reset), which only counts when
    # the connection did not survive it.
    return _broken(connection)


def _is_read(sql: Any) -> bool:
    return isinstance(sql, str) and sql.lstrip()[:6].upper() == "SELECT"


def retryable(error: BaseException, sql: Any, many: bool, context: dict[str, Any]) -> bool:
    """Whether the failed query of an execute wrapper may run again on the primary."""
    connection: BaseDatabaseWrapper = context["connection"]
    cursor = context.get("cursor")
    raw_cursor = getattr(cursor, "cursor", None)
    return (
        not many
        and raw_cursor is not None
        # A named (server-side) cursor: psycopg 3 ServerCursor, psycopg2 named cursor.
        and not getattr(raw_cursor, "name", None)
        and not connection.in_atomic_block
        and connection.autocommit
        and _is_read(sql)
        and connection_lost(error, connection)
    )


def run_on_primary(sql: Any, params: Any, context: dict[str, Any]) -> Any:
    """Mark the replica down, drop its connection, and run the query on the primary; the
    caller's cursor fetches from the primary's from then on."""
    connection: BaseDatabaseWrapper = context["connection"]
    alias = connection.alias
    _replicas.mark_down(alias)
    cursor = context["cursor"]
    with contextlib.suppress(Exception):
        cursor.cursor.close()
    # Its socket is dead: the next query on the alias (this request's, if it names the alias)
    # opens a new one rather than failing on it.
    with contextlib.suppress(DatabaseError):
        connection.close()
    # Through Django's cursor, so the primary's own execute wrappers (metrics, profiling) see
    # it; its DB-API cursor then belongs to the caller's wrapper, whose close() closes it.
    primary = connections[PRIMARY].cursor()
    try:
        result = primary.execute(sql, params)
    except BaseException:
        with contextlib.suppress(Exception):
            primary.close()
        raise
    cursor.cursor = primary.cursor
    report_replica_read_retry(alias)
    logger.warning(
        "The connection to the replica %r failed during a read: the replica is marked down "
        "and the read ran on the primary.",
        alias,
    )
    return result
