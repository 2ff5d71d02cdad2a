"""Views for the profiler's middleware tests: an N+1, a clean one, their async twins, a slow
query and a cached one (``@pytest.mark.urls("tests.profiling_urls")``)."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from content.models import Category
from resee_perf import cache_aside


def nplusone(request: HttpRequest) -> HttpResponse:
    request.user.is_authenticated  # noqa: B018 - loads the user, as most views do
    ids = list(Category.objects.order_by("pk").values_list("pk", flat=True))
    names = [Category.objects.get(pk=pk).name for pk in ids]  # the N+1 line
    return JsonResponse({"names": names})


def clean(request: HttpRequest) -> HttpResponse:
    request.user.is_authenticated  # noqa: B018
    return JsonResponse({"names": [category.name for category in Category.objects.all()]})


async def async_nplusone(request: HttpRequest) -> HttpResponse:
    ids = [pk async for pk in Category.objects.order_by("pk").values_list("pk", flat=True)]
    names = [(await Category.objects.aget(pk=pk)).name for pk in ids]  # the async N+1 line
    return JsonResponse({"names": names})


async def async_clean(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"names": [category.name async for category in Category.objects.all()]})


def slow(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [0.03])  # the slow line
    return HttpResponse("slept")


@cache_aside("tests:profiling:categories", ttl=60)
def category_names() -> list[str]:
    return list(Category.objects.values_list("name", flat=True))


def cached(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"names": category_names()})


urlpatterns = [
    path("nplusone/", nplusone),
    path("clean/", clean),
    path("async/nplusone/", async_nplusone),
    path("async/clean/", async_clean),
    path("slow/", slow),
    path("cached/", cached),
]
