"""Request-scoped routing for :class:`~resee_perf.routers.StickyReplicaRouter`.

:class:`StickyReadsMiddleware` opens one routing scope per request and carries a client's
writes over to its next requests: after a request that wrote, it stores the primary's WAL
position in a signed cookie; the next requests read from a replica only once that replica has
replayed it. Put it near the top of ``MIDDLEWARE``, above ``SessionMiddleware``, so that the
session save of a login is a write it sees.
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core import signing
from django.http import HttpRequest, HttpResponseBase

from resee_perf import _call_sites, _replicas, _request_metrics, profiling
from resee_perf._freshness import PRIMARY, WritePosition, remembered_for
from resee_perf.conf import conf
from resee_perf.routers import routing_scope

__all__ = ["MetricsMiddleware", "QueryProfileMiddleware", "StickyReadsMiddleware"]

_SALT = "resee_perf.middleware.StickyReadsMiddleware"
# A genuine cookie is about 90 characters; anything much longer is not ours.
_MAX_COOKIE_LENGTH = 256


def _cookie_lifetime() -> float:
    # Long enough that a replica within REPLICA_MAX_LAG_SECONDS has replayed the write by the
    # time the cookie expires, and STICKY_SECONDS where only the time is known.
    return remembered_for()


def read_position(request: HttpRequest) -> WritePosition | None:
    """The client's last write, from its cookie; None for a missing, expired, forged or
    malformed cookie (which is ignored, never an error)."""
    value = request.COOKIES.get(conf.STICKY_COOKIE_NAME)
    if not value or len(value) > _MAX_COOKIE_LENGTH:
        return None
    try:
        data = signing.loads(value, salt=_SALT, max_age=timedelta(seconds=_cookie_lifetime()))
    except (signing.BadSignature, ValueError, zlib.error):
        return None
    if not isinstance(data, dict):
        return None
    lsn_text, written_at = data.get("l"), data.get("t")
    if not isinstance(written_at, int | float) or isinstance(written_at, bool):
        return None
    if lsn_text is None:
        return WritePosition(lsn=None, written_at=float(written_at))
    if not isinstance(lsn_text, str):
        return None
    try:
        return WritePosition(lsn=_replicas.parse_lsn(lsn_text), written_at=float(written_at))
    except ValueError:
        return None


def write_cookie(request: HttpRequest, response: HttpResponseBase, lsn: int | None) -> None:
    """Remember, for the client's next requests, that this request wrote at ``lsn``."""
    payload = {
        "l": None if lsn is None else _replicas.format_lsn(lsn),
        "t": round(time.time(), 3),
    }
    response.set_cookie(
        conf.STICKY_COOKIE_NAME,
        signing.dumps(payload, salt=_SALT),
        max_age=math.ceil(_cookie_lifetime()),
        secure=request.is_secure(),
        httponly=True,
        samesite="Lax",
    )


class _SyncAndAsync:
    """Django middleware that runs in a sync and an async stack alike: ``__call__`` serves a
    sync chain, ``__acall__`` an async one (Django's "sync and async middleware" pattern)."""

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        raise NotImplementedError


class StickyReadsMiddleware(_SyncAndAsync):
    """One routing scope per request, and read-your-writes across requests by WAL position."""

    def write_position(self) -> int | None:
        """The primary's WAL position once the request's writes have committed (None where
        unknown: the client then reads from the primary for ``STICKY_SECONDS``)."""
        return _replicas.primary_lsn(PRIMARY)

    def remember_write(self, request: HttpRequest, response: HttpResponseBase) -> None:
        write_cookie(request, response, self.write_position())

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        with routing_scope(read_position(request)) as scope:
            response: HttpResponseBase = self.get_response(request)  # type: ignore[assignment]
            if scope.wrote:
                # The view's transactions have committed by now (ATOMIC_REQUESTS wraps the
                # view, not the middleware), so the position covers its writes.
                self.remember_write(request, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        with routing_scope(read_position(request)) as scope:
            response: HttpResponseBase = await self.get_response(request)  # type: ignore[misc]
            if scope.wrote:
                await sync_to_async(self.remember_write)(request, response)
        return response


class MetricsMiddleware(_SyncAndAsync):
    """HTTP and database RED metrics of each request (docs/observability.md): requests and
    latency by route, method and status class; queries and query time per database alias.

    Put it first in ``MIDDLEWARE``, so that its time covers the other middleware too."""

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        measure = _request_metrics.start()
        if measure is None:
            return self.get_response(request)
        try:
            response: HttpResponseBase = self.get_response(request)  # type: ignore[assignment]
        except BaseException:
            measure.abandon()
            raise
        measure.finish(request, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        measure = _request_metrics.start()
        if measure is None:
            return await self.get_response(request)  # type: ignore[no-any-return,misc]
        try:
            response: HttpResponseBase = await self.get_response(request)  # type: ignore[misc]
        except BaseException:
            measure.abandon()
            raise
        measure.finish(request, response)
        return response


class QueryProfileMiddleware(_SyncAndAsync):
    """Profile each request's queries (docs/profiling.md): counts and time per database
    alias, cache time, N+1 and slow queries with their call sites, and ``Server-Timing``.

    Put it near the top of ``MIDDLEWARE``, above the middleware whose queries you want
    counted (sessions, authentication). Sync and async: its state is in a context variable,
    which follows the request into the thread that runs a sync view under ASGI."""

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        super().__init__(get_response)
        profiling.install()

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        profile = profiling.start_request(request)
        if profile is None:
            return self.get_response(request)
        token = profiling.enter(profile)
        try:
            response: HttpResponseBase = self.get_response(request)  # type: ignore[assignment]
        finally:
            profiling.leave(token)
            profiling.finish_request(profile, request)
        profiling.add_server_timing(profile, request, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        profile = profiling.start_request(request)
        if profile is None:
            return await self.get_response(request)  # type: ignore[no-any-return,misc]
        profile.task = asyncio.current_task()
        token = profiling.enter(profile)
        try:
            response: HttpResponseBase = await self.get_response(request)  # type: ignore[misc]
        finally:
            profiling.leave(token)
            profiling.finish_request(profile, request)
        profiling.add_server_timing(profile, request, response)
        return response


# A query the middleware chain runs without any application frame (the session and the user,
# loaded by Django's middleware) gets no call site rather than the WSGI server's line.
_call_sites.stop_at(QueryProfileMiddleware.__call__, QueryProfileMiddleware.__acall__)
