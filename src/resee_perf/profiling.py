"""Query profiling: per-request query counts, N+1 and slow-query detection with the call site
of each, a ``Server-Timing`` header, and pytest helpers. See docs/profiling.md.

:class:`~resee_perf.middleware.QueryProfileMiddleware` opens a :class:`QueryProfile` per
request (or per sampled request); every query any connection runs in that request's context
is counted by alias, by normalised SQL and by the application line that ran it. At the end of
the request each shape that one call site ran ``NPLUSONE_THRESHOLD`` times or more is reported
once: a log record on the ``resee_perf.profiling`` logger and ``resee_perf_nplusone_total``.

The same profile in a test: :func:`assert_max_queries` and :func:`forbid_nplusone` (and the
``no_nplusone`` pytest fixture, :mod:`resee_perf.pytest_plugin`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from contextvars import Token
from typing import Any, NamedTuple

from django.db import DatabaseError, transaction
from django.http import HttpRequest, HttpResponseBase
from django.utils.functional import LazyObject, empty

from resee_perf import _query_profile, metrics
from resee_perf._query_profile import QueryProfile, ShapeStats, SlowQuery
from resee_perf._sql_shapes import is_explainable
from resee_perf.conf import Snapshot, conf, derived

__all__ = [
    "NPlusOneDetected",
    "QueryProfile",
    "ShapeStats",
    "TooManyQueries",
    "assert_max_queries",
    "forbid_nplusone",
    "profile_queries",
]

logger = logging.getLogger(__name__)

MAX_SHAPES = 200
"""Distinct (shape, call site) pairs one profile records; later ones are only counted."""

UNRESOLVED = "<unresolved>"
"""The route of a request that matched no URL pattern (a 404, or middleware answering)."""


class NPlusOneDetected(Exception):
    """A read ran ``NPLUSONE_THRESHOLD`` times from one call site (``NPLUSONE_RAISE``, or in
    :func:`forbid_nplusone`)."""

    def __init__(self, stats: ShapeStats, threshold: int) -> None:
        self.stats = stats
        super().__init__(
            f"N+1 query: {stats.count} times (threshold {threshold}) from {stats.call_site}: "
            f"{stats.shape}. Load the relation with select_related()/prefetch_related() (or, "
            "on Django 6.1, fetch_mode(FETCH_PEERS)), or allow it in "
            "RESEE_PERF['NPLUSONE_ALLOW']."
        )


class TooManyQueries(AssertionError):
    """Raised by :func:`assert_max_queries`."""


# --- profiles -------------------------------------------------------------------------------


def _allow_list(patterns: tuple[str, ...]) -> Callable[[ShapeStats], bool]:
    if not patterns:
        return _allow_nothing

    def allowed(stats: ShapeStats) -> bool:
        return any(
            fnmatch.fnmatchcase(stats.call_site, pattern)
            or fnmatch.fnmatchcase(stats.shape, pattern)
            for pattern in patterns
        )

    return allowed


def _allow_nothing(stats: ShapeStats) -> bool:
    return False


def _raise_nplusone(profile: QueryProfile, stats: ShapeStats) -> None:
    raise NPlusOneDetected(stats, profile.threshold)


class _Settings(NamedTuple):
    sample_rate: float
    threshold: int
    raise_on_nplusone: bool
    is_allowed: Callable[[ShapeStats], bool]
    slow_seconds: float | None
    server_timing: str


def _profiling_view(settings: Snapshot) -> _Settings:
    slow_ms = settings.SLOW_QUERY_MS
    return _Settings(
        sample_rate=settings.PROFILE_SAMPLE_RATE,
        threshold=settings.NPLUSONE_THRESHOLD,
        raise_on_nplusone=settings.NPLUSONE_RAISE,
        is_allowed=_allow_list(settings.NPLUSONE_ALLOW),
        slow_seconds=None if slow_ms is None else slow_ms / 1000,
        server_timing=settings.SERVER_TIMING,
    )


def _current_settings() -> _Settings:
    """Read on every request: derived from conf's snapshot once (the allow-list compiled, the
    threshold in seconds) and dropped with it when the settings change."""
    return derived(_profiling_view)  # keyed by this module-level function: never a lambda


def new_profile(
    *,
    raise_on_nplusone: bool,
    slow: bool = False,
    context: dict[str, Any] | None = None,
    settings: _Settings | None = None,
) -> QueryProfile:
    """A profile under the current one (if any), with the thresholds of the settings
    (``settings``: those the caller has just read)."""
    _query_profile.install()
    if settings is None:
        settings = _current_settings()
    slow_seconds = settings.slow_seconds if slow else None
    return QueryProfile(
        threshold=settings.threshold,
        max_shapes=MAX_SHAPES,
        is_allowed=settings.is_allowed,
        on_nplusone=_raise_nplusone if raise_on_nplusone else None,
        slow_seconds=slow_seconds,
        on_slow=_report_slow if slow_seconds is not None else None,
        parent=_query_profile.current.get(),
        context=context or {},
    )


def install() -> None:
    """Put the profiler's pass-through wrapper on every database connection (idempotent)."""
    _query_profile.install()


def enter(profile: QueryProfile) -> Token[QueryProfile | None]:
    """Make ``profile`` the one the queries of this context are counted in, until
    :func:`leave` with the token (the middleware's path: no context manager to build)."""
    return _query_profile.current.set(profile)


def leave(token: Token[QueryProfile | None]) -> None:
    _query_profile.current.reset(token)


@contextlib.contextmanager
def activate(profile: QueryProfile) -> Iterator[QueryProfile]:
    token = enter(profile)
    try:
        yield profile
    finally:
        leave(token)


@contextlib.contextmanager
def profile_queries() -> Iterator[QueryProfile]:
    """Profile the queries of a block (without reporting anything): the profile's
    ``queries``, ``aliases``, ``shapes`` and ``nplusone`` tell what it ran."""
    with activate(new_profile(raise_on_nplusone=False)) as profile:
        yield profile


@contextlib.contextmanager
def assert_max_queries(number: int, *, using: str | None = None) -> Iterator[QueryProfile]:
    """Fail (:class:`TooManyQueries`) if the block runs more than ``number`` queries (on the
    database ``using``, or on all), listing the repeated ones with their call sites.

    Queries of requests made through Django's test client inside the block count: they run
    in the block's context."""
    with profile_queries() as profile:
        yield profile
    ran = profile.queries if using is None else _alias_queries(profile, using)
    if ran > number:
        where = "" if using is None else f" on {using!r}"
        raise TooManyQueries(f"{ran} queries{where}, more than {number}.{_summary(profile)}")


def _alias_queries(profile: QueryProfile, alias: str) -> int:
    stats = profile.aliases.get(alias)
    return 0 if stats is None else stats.queries


@contextlib.contextmanager
def forbid_nplusone() -> Iterator[QueryProfile]:
    """Raise :class:`NPlusOneDetected` from the query that makes an N+1 (the one that reaches
    ``NPLUSONE_THRESHOLD``), so the traceback shows the loop; and at the end of the block if
    code in it swallowed that exception."""
    with profile_forbidding_nplusone() as profile:
        yield profile
    if profile.nplusone:
        raise NPlusOneDetected(profile.nplusone[0], profile.threshold)


@contextlib.contextmanager
def profile_forbidding_nplusone() -> Iterator[QueryProfile]:
    """:func:`forbid_nplusone` without the check at the end of the block (the pytest fixture
    makes its own)."""
    with activate(new_profile(raise_on_nplusone=True)) as profile:
        yield profile


def _summary(profile: QueryProfile) -> str:
    repeated = profile.repeated()[:10]
    if not repeated:
        return ""
    lines = [f"\n  {stats.count} x {stats.shape}\n    from {stats.call_site}" for stats in repeated]
    return "\nRepeated:" + "".join(lines)


# --- requests -------------------------------------------------------------------------------


def start_request(request: HttpRequest) -> QueryProfile | None:
    """A profile for ``request``, or None if it is not in the sample."""
    settings = _current_settings()
    rate = settings.sample_rate
    if rate < 1 and random.random() >= rate:
        return None
    return new_profile(
        raise_on_nplusone=settings.raise_on_nplusone,
        slow=True,
        context={"request": request},
        settings=settings,
    )


def route_of(request: HttpRequest | None) -> str:
    """The URL pattern that matched (``api/review/today/``): a bounded label, unlike a path."""
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    return route if isinstance(route, str) and route else UNRESOLVED


def finish_request(profile: QueryProfile, request: HttpRequest) -> None:
    """Report each N+1 of the request once: a log record and a metric, with its route."""
    if not profile.nplusone:
        return
    route = route_of(request)
    for stats in profile.nplusone:
        logger.warning(
            "N+1 query on %s: %d times from %s: %s",
            route,
            stats.count,
            stats.call_site,
            stats.shape,
            extra={
                "route": route,
                "shape": stats.shape,
                "count": stats.count,
                "call_site": stats.call_site,
                "db_ms": round(stats.seconds * 1000, 3),
            },
        )
        metrics.report_nplusone(route)


def _report_slow(profile: QueryProfile, slow: SlowQuery, connection: Any, query: Any) -> None:
    request = profile.context.get("request")
    route = route_of(request)
    duration_ms = round(slow.seconds * 1000, 3)
    extra: dict[str, Any] = {
        "route": route,
        "alias": slow.alias,
        "shape": slow.shape,
        "call_site": slow.call_site,
        "duration_ms": duration_ms,
    }
    plan = None
    if conf.SLOW_QUERY_EXPLAIN and is_explainable(slow.shape):
        plan = _explain(profile, connection, *query)
        extra["plan"] = plan
    logger.warning(
        "slow query on %s: %.1f ms on %s from %s: %s%s",
        route,
        duration_ms,
        slow.alias,
        slow.call_site,
        slow.shape,
        f"\n{plan}" if plan else "",
        extra=extra,
    )
    metrics.report_slow_query(route)


def _explain(profile: QueryProfile, connection: Any, sql: str, params: Any) -> str | None:
    """The plan of a read just run, on its own connection (so in its transaction). Inside a
    transaction it runs under a savepoint: a failing EXPLAIN must not abort the caller's."""
    profile.paused = True
    try:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(f"{connection.ops.explain_query_prefix()} {sql}", params)
            return "\n".join(" ".join(str(column) for column in row) for row in cursor.fetchall())
    except DatabaseError as error:
        logger.info("EXPLAIN of a slow query failed: %s", error)
        return None
    finally:
        profile.paused = False


# --- Server-Timing --------------------------------------------------------------------------

_TOKEN_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def shows_timing(request: HttpRequest) -> bool:
    return _shows_timing(_current_settings().server_timing, request)


def _shows_timing(mode: str, request: HttpRequest) -> bool:
    if mode == "all":
        return True
    if mode == "off":
        return False
    user = _loaded_user(request)
    return bool(getattr(user, "is_staff", False))


def _loaded_user(request: HttpRequest) -> Any:
    """``request.user`` if the request already loaded it: deciding whether to send a header
    must not cost a session and a user query (nor a sync query in an async view)."""
    user = request.__dict__.get("user")
    if isinstance(user, LazyObject):
        wrapped = user._wrapped
        return None if wrapped is empty else wrapped
    return user


def server_timing(profile: QueryProfile, total_seconds: float) -> str:
    """``db;dur=…;desc="3 queries", cache;dur=…, app;dur=…`` (milliseconds; W3C
    Server-Timing). ``app`` is the rest of the request: total minus db and cache."""
    db_ms = profile.db_seconds * 1000
    cache_ms = profile.cache_seconds * 1000
    app_ms = max(total_seconds * 1000 - db_ms - cache_ms, 0.0)
    plural = "query" if profile.queries == 1 else "queries"
    metrics_ = [f'db;dur={db_ms:.1f};desc="{profile.queries} {plural}"']
    if len(profile.aliases) > 1:
        for alias, stats in sorted(profile.aliases.items()):
            name = _TOKEN_UNSAFE.sub("_", alias)
            metrics_.append(f'db.{name};dur={stats.seconds * 1000:.1f};desc="{stats.queries}"')
    metrics_.append(f"cache;dur={cache_ms:.1f}")
    metrics_.append(f"app;dur={app_ms:.1f}")
    return ", ".join(metrics_)


def add_server_timing(
    profile: QueryProfile, request: HttpRequest, response: HttpResponseBase
) -> None:
    mode = _current_settings().server_timing
    if mode == "off" or not _shows_timing(mode, request):
        return
    value = server_timing(profile, time.perf_counter() - profile.started)
    existing = response.headers.get("Server-Timing")
    response.headers["Server-Timing"] = f"{existing}, {value}" if existing else value
