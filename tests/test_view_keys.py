"""A cached view's key varies on what its response depends on beyond the template: host,
scheme, active language and the headers its response names in ``Vary`` (resee_perf._view_keys),
against the real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import translation
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from resee_perf import _view_keys, cache_aside


@pytest.fixture(autouse=True)
def prefix(settings: Any) -> Iterator[None]:
    settings.RESEE_PERF = {"KEY_PREFIX": f"vk{uuid.uuid4().hex[:12]}"}
    _view_keys.forget()
    yield
    _view_keys.forget()


class Pages(PageNumberPagination):
    page_size = 2


class ListView(APIView):
    runs = 0

    @cache_aside("vk:list:{user_id}:{page}", ttl=60)
    def get(self, request: Request) -> Response:
        ListView.runs += 1
        paginator = Pages()
        page = paginator.paginate_queryset(list(range(10)), request, view=self)
        return paginator.get_paginated_response(page)


class GreetingView(APIView):
    runs = 0

    @cache_aside("vk:greeting:{user_id}", ttl=60)
    def get(self, request: Request) -> Response:
        GreetingView.runs += 1
        language = request.headers.get("Accept-Language", "en")
        return Response({"hello": language}, headers={"Vary": "Accept-Language"})


def call(view: type[APIView], path: str = "/list/", **extra: Any) -> Any:
    request = APIRequestFactory().get(path, **extra)
    force_authenticate(request, user=User(pk=7))
    response = view.as_view()(request)
    response.render()
    return response


def test_two_hosts_get_their_own_absolute_next_link() -> None:
    ListView.runs = 0
    a = call(ListView, HTTP_HOST="a.example")
    b = call(ListView, HTTP_HOST="b.example")
    assert a.data["next"] == "http://a.example/list/?page=2"
    assert b.data["next"] == "http://b.example/list/?page=2"
    assert call(ListView, HTTP_HOST="a.example").data["next"] == "http://a.example/list/?page=2"
    assert ListView.runs == 2  # one per host, the third call a hit


def test_the_scheme_is_part_of_the_key() -> None:
    ListView.runs = 0
    plain = call(ListView, HTTP_HOST="a.example")
    secure = call(ListView, HTTP_HOST="a.example", secure=True)
    assert plain.data["next"].startswith("http://")
    assert secure.data["next"].startswith("https://")
    assert call(ListView, HTTP_HOST="a.example", secure=True).data == secure.data
    assert ListView.runs == 2


def test_the_active_language_is_part_of_the_key() -> None:
    ListView.runs = 0
    with translation.override("de"):
        call(ListView)
    with translation.override("fr"):
        call(ListView)
        call(ListView)
    assert ListView.runs == 2


def test_a_vary_header_of_the_response_is_learned_then_keyed_on() -> None:
    GreetingView.runs = 0
    # Not stored: the key was built before the view was seen to vary on Accept-Language.
    assert call(GreetingView, HTTP_ACCEPT_LANGUAGE="de").data == {"hello": "de"}
    assert call(GreetingView, HTTP_ACCEPT_LANGUAGE="de").data == {"hello": "de"}
    assert GreetingView.runs == 2
    assert call(GreetingView, HTTP_ACCEPT_LANGUAGE="fr").data == {"hello": "fr"}
    assert call(GreetingView, HTTP_ACCEPT_LANGUAGE="de").data == {"hello": "de"}
    assert call(GreetingView, HTTP_ACCEPT_LANGUAGE="fr").data == {"hello": "fr"}
    assert GreetingView.runs == 3


def test_a_process_that_has_not_learned_never_reads_an_entry_keyed_on_headers() -> None:
    call(GreetingView, HTTP_ACCEPT_LANGUAGE="de")
    call(GreetingView, HTTP_ACCEPT_LANGUAGE="de")  # stored under the learned set
    _view_keys.forget()  # another process, or this one restarted
    GreetingView.runs = 0
    assert call(GreetingView, HTTP_ACCEPT_LANGUAGE="fr").data == {"hello": "fr"}
    assert GreetingView.runs == 1


def test_vary_star_is_never_stored() -> None:
    class Star(APIView):
        runs = 0

        @cache_aside("vk:star:{user_id}", ttl=60)
        def get(self, request: Request) -> Response:
            Star.runs += 1
            return Response({}, headers={"Vary": "*"})

    call(Star)
    call(Star)
    call(Star)
    assert Star.runs == 3


def test_helpers_given_the_request_find_the_entry_of_that_request() -> None:
    request = APIRequestFactory().get("/list/", HTTP_HOST="a.example")
    force_authenticate(request, user=User(pk=7))
    ListView.as_view()(request).render()
    helper = ListView.get.cache_key(user_id=7, page=None, request=request)
    other = APIRequestFactory().get("/list/", HTTP_HOST="b.example")
    assert helper != ListView.get.cache_key(user_id=7, page=None, request=other)
    assert ListView.get.invalidate(user_id=7, page=None, request=request)


def test_vary_of_reads_comma_separated_names() -> None:
    response = Response()
    response["Vary"] = "Accept-Language, X-Client ,accept"
    assert _view_keys.vary_of(response) == {"accept-language", "x-client", "accept"}
    assert _view_keys.vary_of({"Vary": "x"}) == frozenset()
