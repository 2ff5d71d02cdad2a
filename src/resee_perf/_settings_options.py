"""Every key of ``RESEE_PERF``, declared once: its default, its validator, what a wrong value
should have been, and its documentation. A leaf table: ``conf`` reads the settings with it, the
system checks validate with it, and tests/test_docs.py holds docs/reference/settings.md to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from resee_perf._validators import (
    boolean,
    cidr_list,
    increasing_numbers,
    non_empty_str,
    non_negative_number,
    optional,
    positive_int,
    positive_number,
    str_keyed_dict,
    str_list,
)

SETTING_NAME = "RESEE_PERF"


@dataclass(frozen=True)
class Option:
    """One key of ``RESEE_PERF``: its default, how to validate it, and what it does."""

    default: Any
    validate: Callable[[Any], bool]
    expected: str
    """Completes the sentence "RESEE_PERF['KEY'] should be ..."."""
    doc: str


OPTIONS: dict[str, Option] = {
    "CACHE_ALIAS": Option(
        default="default",
        validate=non_empty_str,
        expected="the alias of a cache in settings.CACHES",
        doc="The Django cache that `cache_aside` and tag invalidation use unless told otherwise.",
    ),
    "CACHE_BACKGROUND_REFRESH": Option(
        default=True,
        validate=boolean,
        expected="True or False",
        doc=(
            "Run the refresh of a stale (`stale_ttl`) or early-expired (`beta`) entry in a "
            "background thread (a task for async functions), so the caller that triggers it "
            "gets the current value at once. False: that caller recomputes inline."
        ),
    ),
    "CACHE_BREAKER_COOLDOWN": Option(
        default=5.0,
        validate=positive_number,
        expected="a positive number of seconds",
        doc=(
            "Seconds `cache_aside` calls functions directly, without trying the cache, once "
            "the circuit breaker has opened; then one call tries the cache again."
        ),
    ),
    "CACHE_BREAKER_THRESHOLD": Option(
        default=3,
        validate=positive_int,
        expected="a positive integer",
        doc="Consecutive cache failures (per alias and process) that open the circuit breaker.",
    ),
    "CACHE_ENABLED": Option(
        default=True,
        validate=boolean,
        expected="True or False",
        doc=(
            "The kill switch of `cache_aside`. False: every call runs the function, without "
            "touching the cache (`bypass`); invalidations keep running, so that switching it "
            "back on serves no entry that a write made stale meanwhile."
        ),
    ),
    "CACHE_LOCK_TIMEOUT": Option(
        default=10.0,
        validate=positive_number,
        expected="a positive number of seconds",
        doc=(
            "Default `lock_timeout` of `cache_aside`: how long a recompute may hold its key's "
            "lock (and callers wait for it) before another caller may take over. Keep it above "
            "your slowest body."
        ),
    ),
    "DEPLOYMENT": Option(
        default=None,
        validate=optional(lambda value: isinstance(value, Mapping)),
        expected="a dict of deployment numbers (see docs/connections.md) or None",
        doc=(
            "What runs against the databases: web workers and threads, Celery, other clients, "
            "headroom, each server's max_connections. Read by the connection budget "
            "(`manage.py connection_budget`, `check --deploy`); its keys are checked by "
            "`resee_perf.E030`."
        ),
    ),
    "KEY_PREFIX": Option(
        default="rp",
        validate=non_empty_str,
        expected="a non-empty string",
        doc=(
            "Namespace for every key resee-perf writes. Change it to drop every entry at once "
            "(for example when a deploy changes what cached functions return)."
        ),
    ),
    "METRICS_ENABLED": Option(
        default=True,
        validate=boolean,
        expected="True or False",
        doc="Record Prometheus metrics (needs the `prometheus` extra; a no-op without it).",
    ),
    # StickyReplicaRouter and StickyReadsMiddleware (docs/routing.md).
    "REPLICAS": Option(
        default=[],
        validate=str_list,
        expected="a list of database aliases from settings.DATABASES",
        doc=(
            "Database aliases of the read replicas of `default`. `StickyReplicaRouter` spreads "
            "reads over them; empty: every query goes to `default`."
        ),
    ),
    "REPLICA_CHECK_INTERVAL": Option(
        default=0.5,
        validate=positive_number,
        expected="a positive number of seconds",
        doc=(
            "How often each process reads each replica's replay position and lag (one small "
            "query per replica per interval, never per request)."
        ),
    ),
    "REPLICA_CHECK_TIMEOUT": Option(
        default=2.0,
        validate=positive_number,
        expected="a positive number of seconds",
        doc=(
            "Deadline of that check, kept by the client: a replica that has not answered by "
            "then is marked down (a hung server enforces no statement_timeout)."
        ),
    ),
    "REPLICA_MAX_LAG_SECONDS": Option(
        default=5.0,
        validate=positive_number,
        expected="a positive number of seconds",
        doc="A replica whose replay lags the primary by more than this gets no reads.",
    ),
    "REPLICA_WEIGHTS": Option(
        default={},
        validate=str_keyed_dict,
        expected="a dict of replica alias to a non-negative number",
        doc=(
            "Relative share of the reads each replica in `REPLICAS` gets, among the usable "
            'ones that have replayed what the reader must see: `{"replica": 3, '
            '"replica_b": 1}`. A replica left out weighs 1; 0 takes it out of rotation '
            "(no reads, no checks) without removing it from `REPLICAS`."
        ),
    ),
    "REPLICA_RETRY_SECONDS": Option(
        default=5.0,
        validate=positive_number,
        expected="a positive number of seconds",
        doc=(
            "How long a replica that failed its check, or a connection, gets no reads before "
            "it is checked again."
        ),
    ),
    "STICKY_COOKIE_NAME": Option(
        default="resee_perf_sticky",
        validate=non_empty_str,
        expected="a non-empty string",
        doc=(
            "Name of the signed cookie in which `StickyReadsMiddleware` keeps a client's last "
            "write position."
        ),
    ),
    "STICKY_SECONDS": Option(
        default=15.0,
        validate=non_negative_number,
        expected="a non-negative number of seconds",
        doc=(
            "After a write, the client reads from the primary for this long when the write "
            "position is unknown (a database other than PostgreSQL); also the life of the cookie."
        ),
    ),
    "TAG_TIMEOUT": Option(
        default=7 * 24 * 3600,
        validate=optional(positive_int),
        expected="a positive number of seconds or None",
        doc=(
            "Seconds a tag's generation key lives in the cache (`None`: until evicted). A "
            "generation that expires only turns the entries under it into misses; keep it "
            "longer than your longest `ttl + stale_ttl` so that this never happens to live entries."
        ),
    ),
    "INVALIDATION_QUEUE_SIZE": Option(
        default=10_000,
        validate=positive_int,
        expected="a positive integer",
        doc=(
            "Failed invalidations (tags and `invalidate()` keys, per cache alias and process) "
            "kept for retry. Past it they are replaced by one bump of the cache's epoch: every "
            "entry becomes a miss once Redis answers, and the process bypasses that cache until "
            "then."
        ),
    ),
    "INVALIDATION_RETRY_SECONDS": Option(
        default=1.0,
        validate=positive_number,
        expected="a positive number of seconds",
        doc=(
            "Longest wait between two retries of failed invalidations (the first comes after "
            "50 ms, then doubling). Once Redis answers again, other processes may serve an entry "
            "a failed invalidation covers for at most this long (plus one retry's round trip)."
        ),
    ),
    "CACHE_SERIALIZER": Option(
        default="json",
        validate=non_empty_str,
        expected='"json", "pickle" or the dotted path of a serializer',
        doc=(
            'How `cache_aside` turns return values into bytes. `"json"` (default): JSON with '
            "exact round trips for dict, list, tuple, str, numbers, bool, None, date, datetime, "
            "time, timedelta, Decimal, UUID, bytes and Django safe strings; a value planted in "
            'the cache is data, never code. `"pickle"`: any picklable value, but whoever can '
            "write to the cache can run code in your workers (set `CACHE_SIGNING_KEY`). Or the "
            "dotted path of a class with `dumps(value) -> bytes` and `loads(bytes)`. Checked by "
            "`resee_perf.E011`; see [cache](../cache.md#serializers)."
        ),
    ),
    "CACHE_SIGNING_KEY": Option(
        default=None,
        validate=optional(lambda value: signing_keys(value) is not None),
        expected="None, a non-empty string or bytes, or a non-empty list of them",
        doc=(
            "Secret(s) for an HMAC-SHA256 over every `cache_aside` entry and its key: an entry "
            "that is unsigned, altered or moved to another key is a miss (counted by "
            "`resee_perf_cache_entries_rejected_total`). A list rotates keys: the first signs, "
            "any verifies. Keep it distinct from `SECRET_KEY` and out of the repository."
        ),
    ),
    # Appended (query-deadline): the client-side bound of a query on an open replica connection.
    "REPLICA_QUERY_TIMEOUT": Option(
        default=None,
        validate=optional(positive_number),
        expected="a positive number of seconds or None",
        doc=(
            "Client-side deadline of each query on a replica connection: past it the query "
            "fails with `OperationalError`, the replica is marked down and the next reads go "
            "elsewhere. Only a hung server (stopped, frozen VM) needs it: set it just above the "
            "replica's `statement_timeout`, which ends slow queries on a live server first. "
            "`None`: no bound (`resee_perf.W025` warns with persistent connections). See "
            "[routing](../routing.md#a-query-on-an-open-connection-to-a-hung-replica)."
        ),
    ),
    # Appended (replica-retry): a read whose replica connection died runs again on the primary.
    "REPLICA_RETRY_READS": Option(
        default=True,
        validate=boolean,
        expected="True or False",
        doc=(
            "Run a read again on the primary when its connection to a replica fails while it "
            "runs (killed, restarted, or hung past `REPLICA_QUERY_TIMEOUT`), outside a "
            "transaction; the replica is marked down. `False`: the read fails with "
            "`OperationalError`. See [routing](../routing.md#a-connection-dying-mid-request)."
        ),
    ),
    # The exporter (resee_perf.urls) and the request metrics (docs/observability.md).
    "METRICS_ALLOWED_NETWORKS": Option(
        default=["127.0.0.0/8", "::1/128"],
        validate=cidr_list,
        expected="a list of networks in CIDR notation, such as '10.0.0.0/8'",
        doc=(
            "Client addresses (`REMOTE_ADDR`) that may read `/metrics` without a token. "
            "Default: loopback only. Behind a proxy, REMOTE_ADDR is the proxy's address."
        ),
    ),
    "METRICS_TOKEN": Option(
        default=None,
        validate=optional(non_empty_str),
        expected="a non-empty string or None",
        doc=(
            "A bearer token that lets any address read `/metrics` "
            "(`Authorization: Bearer <token>`, Prometheus' `authorization` scrape setting). "
            "A request that presents a wrong token is refused even from an allowed network."
        ),
    ),
    "METRICS_LATENCY_BUCKETS": Option(
        default=[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
        validate=increasing_numbers,
        expected="a non-empty list of increasing positive numbers of seconds",
        doc=(
            "Buckets of the request latency histogram "
            "(`resee_perf_http_request_duration_seconds`), read once per process at the first "
            "request. Every bucket is a series per route and method: keep the list short."
        ),
    ),
    # Query profiling: QueryProfileMiddleware and the pytest helpers (docs/profiling.md).
    "NPLUSONE_ALLOW": Option(
        default=[],
        validate=str_list,
        expected="a list of patterns (fnmatch) of call sites or SQL shapes",
        doc=(
            "Known-acceptable N+1s: a repeated query whose call site (`review/views.py:42`) or "
            "normalised SQL matches one of these `fnmatch` patterns is not reported."
        ),
    ),
    "NPLUSONE_RAISE": Option(
        default=False,
        validate=boolean,
        expected="True or False",
        doc=(
            "Raise `resee_perf.profiling.NPlusOneDetected` from the query that reaches "
            "`NPLUSONE_THRESHOLD`, instead of only reporting it. For tests and development."
        ),
    ),
    "NPLUSONE_THRESHOLD": Option(
        default=5,
        validate=lambda value: positive_int(value) and value >= 2,
        expected="an integer of at least 2",
        doc=(
            "A read with the same normalised SQL from the same call site run this many times "
            "in one request is an N+1 (reported once per request)."
        ),
    ),
    "PROFILE_SAMPLE_RATE": Option(
        default=1.0,
        validate=lambda value: non_negative_number(value) and value <= 1,
        expected="a number from 0 to 1",
        doc=(
            "Share of requests `QueryProfileMiddleware` profiles (0: none, 1: every one); the "
            "others pass through with no profile, no report and no `Server-Timing`."
        ),
    ),
    "SERVER_TIMING": Option(
        default="staff",
        validate=lambda value: value in ("staff", "all", "off"),
        expected='"staff", "all" or "off"',
        doc=(
            "Who gets the `Server-Timing` header of profiled responses: users whose "
            "`is_staff` is true (only if the request already loaded its user), everyone, or "
            "nobody. The header tells any client how long your database took."
        ),
    ),
    "SLOW_QUERY_EXPLAIN": Option(
        default=False,
        validate=boolean,
        expected="True or False",
        doc=(
            "Log the `EXPLAIN` plan of each slow query (one more query; reads only, never a "
            "write or a `SELECT ... FOR UPDATE`)."
        ),
    ),
    "SLOW_QUERY_MS": Option(
        default=100,
        validate=optional(positive_number),
        expected="a positive number of milliseconds or None",
        doc=(
            "A profiled query that takes at least this long is logged with its call site "
            "and counted per route (`None`: never)."
        ),
    ),
}


def signing_keys(value: Any) -> tuple[bytes, ...] | None:
    """The keys of ``CACHE_SIGNING_KEY`` as bytes; None if the value is malformed."""
    items = value if isinstance(value, list | tuple) else [value]
    if not items or not all(isinstance(item, str | bytes) and item for item in items):
        return None
    return tuple(item.encode() if isinstance(item, str) else item for item in items)
