"""PostgreSQL's WAL positions (``pg_lsn``) as integers, so that "has this replica replayed
that write" is one integer comparison; and the primary's position now."""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

_PRIMARY_LSN_SQL = "SELECT pg_current_wal_insert_lsn()::text"


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> an integer that orders like the WAL position."""
    high, _, low = text.partition("/")
    if not low:
        raise ValueError(f"not a pg_lsn: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def primary_lsn(alias: str = DEFAULT_DB_ALIAS) -> int | None:
    """The primary's WAL position now, through Django's connection of this thread; None where
    unknown (not PostgreSQL, inside a transaction that has not committed, or an error).

    ``pg_current_wal_insert_lsn()`` rather than ``pg_current_wal_lsn()``: with
    ``synchronous_commit = off`` a commit can return before its record is written, and the
    write position would then lie before it. The insert position never does (GitLab's load
    balancer reads the same function).
    """
    connection = connections[alias]
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return None
    try:
        with connection.cursor() as cursor:
            cursor.execute(_PRIMARY_LSN_SQL)
            row = cursor.fetchone()
    except DatabaseError:
        return None
    return parse_lsn(row[0]) if row and row[0] else None


def primary_position_for_check(alias: str = DEFAULT_DB_ALIAS) -> int | None:
    """:func:`primary_lsn` for the replica checks, on the raw connection: a health check's
    query is not the application's, and stays out of its query log (assertNumQueries, debug
    toolbar), as the check's query on the replica does."""
    connection = connections[alias]
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return None
    try:
        with connection.wrap_database_errors:
            connection.ensure_connection()
            raw = connection.connection
            assert raw is not None
            cursor = raw.cursor()
            try:
                cursor.execute(_PRIMARY_LSN_SQL)
                row = cursor.fetchone()
            finally:
                cursor.close()
    except DatabaseError:
        return None
    return parse_lsn(row[0]) if row and row[0] else None
