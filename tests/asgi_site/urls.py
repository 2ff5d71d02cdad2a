"""Async views: each yields to the event loop between its steps, so that the requests of
several users interleave on the server's one loop."""

from __future__ import annotations

import asyncio
import os
import time

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from content.models import Category
from resee_perf.routers import choose_read_alias

PAUSE = 0.02


async def write(request: HttpRequest, name: str) -> HttpResponse:
    started = time.time()
    await asyncio.sleep(PAUSE)
    await Category.objects.acreate(name=name, slug=name)
    await asyncio.sleep(PAUSE)
    return JsonResponse({"pid": os.getpid(), "started": started, "ended": time.time()})


async def read(request: HttpRequest, name: str) -> HttpResponse:
    started = time.time()
    await asyncio.sleep(PAUSE)
    seen = await Category.objects.filter(slug=name).aexists()
    alias, reason = await sync_to_async(choose_read_alias)()
    await asyncio.sleep(PAUSE)
    return JsonResponse(
        {
            "seen": seen,
            "alias": alias,
            "reason": reason,
            "pid": os.getpid(),
            "started": started,
            "ended": time.time(),
        }
    )


urlpatterns = [
    path("write/<slug:name>/", write),
    path("read/<slug:name>/", read),
]
