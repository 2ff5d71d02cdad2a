"""cache_aside against the real Redis (REDIS_URL): keys, the tag contract, XFetch, serialization,
views, async functions, other backends and bad arguments.

Concurrency (processes and threads) is in test_cache_concurrency.py; the round-trip count and
the outages of a private redis-server in test_cache_redis_server.py.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import math
import random
import threading
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.test import RequestFactory
from prometheus_client import REGISTRY
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList
from rest_framework.views import APIView

from resee_perf import UncacheableValue, cache_aside, testing
from resee_perf._flow import xfetch_early
from resee_perf._store import store_for
from resee_perf._tag_invalidation import bump_generations, tag_key


@pytest.fixture(autouse=True)
def prefix(settings: Any) -> str:
    """A fresh KEY_PREFIX per test: tests never see each other's entries, and nobody flushes."""
    value = f"t{uuid.uuid4().hex[:12]}"
    settings.RESEE_PERF = {"KEY_PREFIX": value}
    return value


class Counter:
    def __init__(self) -> None:
        self.runs = 0
        self.lock = threading.Lock()

    def __call__(self) -> int:
        with self.lock:
            self.runs += 1
            return self.runs


def requests_counted(name: str, result: str) -> float:
    value = REGISTRY.get_sample_value(
        "resee_perf_cache_requests_total", {"name": name, "result": result}
    )
    return value or 0.0


# --- hits, misses, helpers ---------------------------------------------------------------------


def test_a_hit_does_not_run_the_body_and_returns_an_equal_value() -> None:
    count = Counter()

    @cache_aside("double:{x}", ttl=60)
    def double(x: int) -> dict[str, int]:
        return {"value": 2 * x, "run": count()}

    assert double(4) == {"value": 8, "run": 1}
    assert double(4) == {"value": 8, "run": 1}
    assert double(x=4) == {"value": 8, "run": 1}
    assert double(5) == {"value": 10, "run": 2}
    assert count.runs == 2


def test_none_and_empty_results_are_cached_not_confused_with_a_miss() -> None:
    count = Counter()

    @cache_aside("nothing:{kind}", ttl=60)
    def nothing(kind: str) -> Any:
        count()
        return {"none": None, "list": [], "dict": {}, "str": "", "zero": 0}[kind]

    for kind in ("none", "list", "dict", "str", "zero"):
        first = nothing(kind)
        assert nothing(kind) == first
    assert count.runs == 5


def test_invalidate_refresh_and_cache_key() -> None:
    count = Counter()

    @cache_aside("review:today:{user_id}", ttl=60)
    def today(user_id: int) -> int:
        return count()

    assert today.cache_key(7).endswith(":c:1:review:today:{7}")
    assert today(7) == 1
    assert today.invalidate(7) is True
    assert today.invalidate(7) is False
    assert today(7) == 2
    assert today.refresh(7) == 3
    assert today(7) == 3


def test_methods_get_self_and_the_helpers_skip_it() -> None:
    count = Counter()

    class Service:
        def __init__(self, shard: str) -> None:
            self.shard = shard

        @cache_aside("svc:{self.shard}:{n}", ttl=60)
        def compute(self, n: int) -> tuple[str, int, int]:
            return (self.shard, n, count())

        @cache_aside("plain:{n}", ttl=60)
        def plain(self, n: int) -> int:
            return n * 10 + count()

    a, b = Service("a"), Service("b")
    assert a.compute(1) == ("a", 1, 1)
    assert a.compute(1) == ("a", 1, 1)
    assert b.compute(1) == ("b", 1, 2)
    assert a.compute.cache_key(1).endswith(":svc:{a}:{1}")
    assert Service.compute.cache_key(1, self=b).endswith(":svc:{b}:{1}")
    assert Service.plain.cache_key(3).endswith(":plain:{3}")
    assert a.compute.invalidate(1) is True
    assert a.compute(1) == ("a", 1, 3)
    assert a.compute.refresh(1) == ("a", 1, 4)
    with pytest.raises(TypeError, match="needs 'self'"):
        Service.compute.cache_key(1)


def test_a_callable_key_and_callable_tags() -> None:
    count = Counter()

    @cache_aside(
        lambda user, page=1: f"list:{user['id']}:{page}",
        ttl=60,
        tags=lambda user, page=1: [f"user:{user['id']}"],
    )
    def listing(user: dict[str, int], page: int = 1) -> int:
        return count()

    user = {"id": 3}
    assert listing(user) == listing(user, 1) == 1
    assert listing(user, 2) == 2
    assert listing.cache_key(user, 2).endswith(":list:3:2")
    bump_generations(caches["default"], ["user:3"])
    assert listing(user) == 3


def test_defaults_keyword_only_and_var_arguments_reach_the_template() -> None:
    count = Counter()

    @cache_aside("f:{a}:{b}:{rest}:{c}:{extra}", ttl=60)
    def f(a: int, b: int = 2, *rest: int, c: int = 3, **extra: int) -> int:
        return count()

    assert f.cache_key(1).endswith(":f:{1}:{2}:{()}:{3}:{%7B%7D}")
    assert f(1) == f(1, 2) == f(a=1) == 1
    assert f(1, 2, 9) == 2
    assert f(1, c=4) == 3
    assert f(1, z=5) == 4
    assert count.runs == 4
    with pytest.raises(TypeError, match="missing a required argument: 'a'"):
        f()  # type: ignore[call-arg]


# --- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "with space",
        "tab\there",
        "new\nline",
        "nul\x00",
        "é-unicode",
        "a:b",
        "#1234",
        "x" * 500,
        "",
    ],
)
def test_keys_are_safe_and_distinct_whatever_the_argument(value: str) -> None:
    @cache_aside("page:{slug}:{n}", ttl=60)
    def page(slug: str, n: int) -> str:
        return slug

    key = page.cache_key(value, 1)
    assert len(key) <= 200
    assert key.isascii()
    assert key.isprintable()
    assert " " not in key
    assert key.endswith(":{1}")
    assert key != page.cache_key(value + "x", 1)
    assert page(value, 1) == value
    assert page(value, 1) == value


def test_separators_in_arguments_cannot_make_two_calls_share_a_key() -> None:
    @cache_aside("pair:{a}:{b}", ttl=60)
    def pair(a: str, b: str) -> tuple[str, str]:
        return (a, b)

    assert pair.cache_key("1:2", "3") != pair.cache_key("1", "2:3")
    assert pair("1:2", "3") == ("1:2", "3")
    assert pair("1", "2:3") == ("1", "2:3")


def test_long_callable_keys_are_bounded_and_distinct() -> None:
    @cache_aside(lambda text: f"search:{text}", ttl=60)
    def search(text: str) -> str:
        return text

    long_a, long_b = "q" * 1000 + "a", "q" * 1000 + "b"
    assert len(search.cache_key(long_a)) <= 200
    assert search.cache_key(long_a) != search.cache_key(long_b)
    assert search(long_a) == long_a
    assert search(long_b) == long_b


def test_key_prefix_and_version_namespace_every_key(settings: Any) -> None:
    @cache_aside("v:{x}", ttl=60, version=1)
    def v1(x: int) -> str:
        return "v1"

    @cache_aside("v:{x}", ttl=60, version="2025-06")
    def v2(x: int) -> str:
        return "v2"

    assert v1(1) == "v1"
    assert v2(1) == "v2"
    assert v1.cache_key(1) != v2.cache_key(1)
    old_key = v1.cache_key(1)
    settings.RESEE_PERF = {"KEY_PREFIX": "other"}
    assert v1.cache_key(1) == "other:c:1:v:{1}" != old_key


def test_attributes_and_items_reach_the_template() -> None:
    @cache_aside("fmt:{obj.name}:{amount}:{items[0]}:{mapping[k]}", ttl=60)
    def fmt(obj: Any, amount: float, items: list[int], mapping: dict[str, int]) -> int:
        return 1

    key = fmt.cache_key(SimpleNamespace(name="n"), 1.5, [9], {"k": 4})
    assert key.endswith(":fmt:{n}:{1.5}:{9}:{4}")


@pytest.mark.parametrize("template", ["f:{a!r}", "f:{a:d}", "f:{a!s:>3}"])
def test_format_specs_and_conversions_are_refused_at_decoration(template: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="no format specs or conversions"):
        cache_aside(template, ttl=60)(lambda a: a)
    with pytest.raises(ImproperlyConfigured, match="no format specs or conversions"):
        cache_aside("f:{a}", ttl=60, tags=[template])(lambda a: a)


# --- tags: the contract with invalidation ------------------------------------------------------


def test_a_bump_of_any_tag_turns_the_entry_into_a_miss() -> None:
    count = Counter()

    @cache_aside("stats:{user_id}", ttl=60, tags=["user:{user_id}:reviews", "user:{user_id}:x"])
    def stats(user_id: int) -> int:
        return count()

    assert stats(1) == stats(1) == 1
    assert stats(2) == 2
    bump_generations(caches["default"], ["user:1:x"])
    assert stats(1) == 3
    assert stats(1) == 3
    assert stats(2) == 2


def test_an_evicted_generation_key_is_a_miss_not_a_hit() -> None:
    count = Counter()

    @cache_aside("ev:{n}", ttl=60, tags=["ev:{n}"])
    def ev(n: int) -> int:
        return count()

    assert ev(1) == ev(1) == 1
    caches["default"].delete(tag_key("ev:1"))
    assert ev(1) == 2
    assert ev(1) == 2


def test_a_value_computed_while_its_tag_is_bumped_is_never_served() -> None:
    """The stale-set race: the generations are read BEFORE the body runs, so a write that
    commits (and bumps) while the body reads the old data leaves an entry that is already
    invalid, instead of one that looks current."""
    database = {"title": "old"}
    body_started = threading.Event()
    write_done = threading.Event()

    @cache_aside("content:{pk}", ttl=60, tags=["content:{pk}"])
    def content(pk: int) -> str:
        title = database["title"]  # the read...
        body_started.set()
        write_done.wait(5)  # ...then a write commits and invalidates before we store
        return title

    reader = threading.Thread(target=content, args=(1,))
    reader.start()
    assert body_started.wait(5)
    database["title"] = "new"
    bump_generations(caches["default"], ["content:1"])
    write_done.set()
    reader.join(5)

    assert content(1) == "new"
    assert content(1) == "new"


# --- XFetch ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("beta", "gap"), [(1.0, 0.05), (1.0, 0.2), (2.0, 0.2), (0.5, 0.05)])
def test_xfetch_recomputes_early_with_the_probability_of_the_paper(
    monkeypatch: pytest.MonkeyPatch, beta: float, gap: float
) -> None:
    # P(now - delta*beta*ln(rand) >= expiry) = exp(-gap / (delta*beta)) for gap = expiry - now.
    delta, draws = 0.1, 20_000
    testing.set_random(random.Random(1234).random)
    early = sum(xfetch_early(100.0 - gap, delta, beta, 100.0) for _ in range(draws))
    expected = math.exp(-gap / (delta * beta))
    assert abs(early / draws - expected) < 0.015


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    testing.set_clock(fake)
    return fake


def test_xfetch_in_a_call_uses_the_stored_delta_and_expiry(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = Counter()
    draws = iter([0.5, 0.99, 0.5])

    @cache_aside("xf", ttl=10, beta=1.0, background=False)
    def xf() -> int:
        clock.now += 0.1  # the body takes 100 ms: delta = 0.1, expiry = start + 0.1 + 10
        return count()

    testing.set_random(lambda: next(draws))
    assert xf() == 1
    expiry = clock.now + 10
    # 1 s before expiry, -0.1*ln(0.5) = 0.07 s of head start is not enough: a hit.
    clock.now = expiry - 1
    assert xf() == 1
    # 0.3 s before expiry, -0.1*ln(1-0.99) = 0.46 s is: this caller recomputes.
    clock.now = expiry - 0.3
    assert xf() == 2
    assert xf() == 2  # the new entry expires 10 s later, and 0.5 draws no early recompute


def test_beta_zero_never_recomputes_before_expiry(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = Counter()

    @cache_aside("nox", ttl=10, beta=0, background=False)
    def nox() -> int:
        clock.now += 5  # a body as slow as half the TTL
        return count()

    testing.set_random(lambda: 0.999999999)
    assert nox() == 1
    clock.now += 9.99
    assert nox() == 1


def test_stale_entries_are_served_while_one_caller_refreshes(clock: FakeClock) -> None:
    count = Counter()

    @cache_aside("st", ttl=10, stale_ttl=30, beta=0, background=False)
    def st() -> int:
        return count()

    assert st() == 1
    clock.now += 15  # expired, inside stale_ttl: this caller refreshes inline
    assert st() == 2
    assert st() == 2
    clock.now += 10.5 + 30  # past ttl + stale_ttl: a miss (Redis has dropped it, or we do)
    assert st() == 3


def test_without_stale_ttl_an_expired_entry_is_a_miss(clock: FakeClock) -> None:
    count = Counter()

    @cache_aside("nostale", ttl=10, beta=0)
    def nostale() -> int:
        return count()

    assert nostale() == 1
    clock.now += 10.01  # Redis still has it for a moment (clock skew): still a miss
    assert nostale() == 2


def test_background_refresh_serves_the_old_value_and_stores_the_new_one(clock: FakeClock) -> None:
    release = threading.Event()
    done = threading.Event()
    threads: list[str] = []
    count = Counter()

    @cache_aside("bg", ttl=10, stale_ttl=30, beta=0)
    def bg() -> int:
        threads.append(threading.current_thread().name)
        if count.runs:
            release.wait(5)
            done.set()
        return count()

    assert bg() == 1
    clock.now += 11
    assert bg() == 1  # stale, refresh started in the background
    assert bg() == 1  # the refresh is still running: nobody waits for it
    release.set()
    assert done.wait(5)
    for _ in range(100):
        if bg() == 2:
            break
        threading.Event().wait(0.01)
    assert bg() == 2
    assert threads[0] == threading.current_thread().name
    assert threads[1].startswith("resee-refresh")


def test_a_failing_background_refresh_keeps_serving_the_old_entry(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Counter()

    @cache_aside("flaky", ttl=10, stale_ttl=30, beta=0)
    def flaky() -> int:
        if calls() > 1:
            raise RuntimeError("database went away")
        return 1

    assert flaky() == 1
    clock.now += 11
    with caplog.at_level("ERROR", logger="resee_perf.cache"):
        assert flaky() == 1
        testing.wait_for_background_refreshes(5)
        for _ in range(100):
            if "background refresh failed" in caplog.text:
                break
            threading.Event().wait(0.01)
    assert "background refresh failed" in caplog.text
    assert flaky() == 1  # stale but served; the lock was released for the next try


# --- serialization -----------------------------------------------------------------------------


def test_what_views_return_round_trips() -> None:
    value = {
        "date": datetime.date(2025, 6, 1),
        "when": datetime.datetime(2025, 6, 1, 12, 30, tzinfo=datetime.UTC),
        "amount": decimal.Decimal("12.30"),
        "items": ReturnList([{"id": 1}], serializer=serializers.Serializer()),
        "one": ReturnDict({"id": 2}, serializer=serializers.Serializer()),
        "tuple": (1, "a"),
        "set": {1, 2},
        "bytes": b"\x00\xff",
        "nested": [[{"x": None}]],
        "big": 2**70,
        "float": 0.1,
    }

    @cache_aside("rt", ttl=60)
    def rt() -> dict[str, Any]:
        return value

    assert rt() is value
    again = rt()
    assert again == value
    assert again is not value
    assert type(again["amount"]) is decimal.Decimal
    assert str(again["amount"]) == "12.30"
    assert again["items"] == [{"id": 1}]


@pytest.mark.parametrize(
    "bad",
    [
        lambda: lambda: 1,
        lambda: threading.Lock(),
        lambda: (n for n in range(3)),
        lambda: iter([1, 2]),
        lambda: StreamingHttpResponse(iter([b"x"])),
    ],
    ids=["lambda", "lock", "generator", "iterator", "streaming"],
)
def test_an_uncacheable_value_is_a_clear_error_at_the_first_call(bad: Any) -> None:
    @cache_aside("bad", ttl=60)
    def returns_bad() -> Any:
        return bad()

    with pytest.raises(UncacheableValue, match="returns_bad") as info:
        returns_bad()
    assert isinstance(info.value, TypeError)
    with pytest.raises(UncacheableValue):
        returns_bad()  # not silently cached as a miss either


# --- views -------------------------------------------------------------------------------------


class TodayView(APIView):
    runs = 0

    @cache_aside("v:today:{user_id}:{page}", ttl=60, tags=["user:{user_id}:reviews"])
    def get(self, request: Request) -> Response:
        TodayView.runs += 1
        return Response(
            {"user": request.user.pk, "runs": TodayView.runs},
            headers={"X-Runs": str(TodayView.runs)},
        )

    @cache_aside("v:post:{user_id}", ttl=60)
    def post(self, request: Request) -> Response:
        TodayView.runs += 1
        return Response({"runs": TodayView.runs}, status=201)


def call_view(method: str, user_pk: int, path: str = "/today/") -> Any:
    factory = APIRequestFactory()
    request = getattr(factory, method)(path)
    force_authenticate(request, user=User(pk=user_pk))
    response = TodayView.as_view()(request)
    response.render()
    return response


def test_drf_view_methods_are_cached_per_user_and_query_parameter() -> None:
    TodayView.runs = 0
    first = call_view("get", 7)
    assert first.status_code == 200
    assert first.data == {"user": 7, "runs": 1}
    again = call_view("get", 7)
    assert again.data == {"user": 7, "runs": 1}
    assert again["X-Runs"] == "1"
    assert again["Content-Type"] == "application/json"
    assert again.content == first.content
    assert call_view("get", 8).data["runs"] == 2
    assert call_view("get", 7, "/today/?page=2").data["runs"] == 3
    assert call_view("get", 7, "/today/?page=2").data["runs"] == 3
    assert TodayView.get.cache_key(user_id=7, page="2").endswith(":v:today:{7}:{2}")
    # A view's key also varies on the request (host, scheme, language): helpers take it.
    assert TodayView.get.invalidate(user_id=7) is False
    request = APIRequestFactory().get("/today/")
    assert TodayView.get.invalidate(user_id=7, request=request) is True  # the one without ?page
    assert call_view("get", 7).data["runs"] == 4
    bump_generations(caches["default"], ["user:7:reviews"])
    assert call_view("get", 7, "/today/?page=2").data["runs"] == 5
    with pytest.raises(TypeError, match="needs 'user_id'"):
        TodayView.get.cache_key()


def test_unsafe_methods_are_never_cached() -> None:
    TodayView.runs = 0
    assert call_view("post", 7).data == {"runs": 1}
    assert call_view("post", 7).data == {"runs": 2}


def test_function_views_cache_ok_responses_only() -> None:
    count = Counter()

    @cache_aside("fv:{pk}", ttl=60)
    def detail(request: HttpRequest, pk: int) -> HttpResponse:
        run = count()
        if pk == 404:
            return JsonResponse({"error": "not found"}, status=404)
        return JsonResponse({"pk": pk, "run": run})

    request = RequestFactory().get("/x/")
    assert detail(request, pk=1).content == b'{"pk": 1, "run": 1}'
    cached = detail(request, pk=1)
    assert cached.content == b'{"pk": 1, "run": 1}'
    assert cached["Content-Type"] == "application/json"
    assert detail(request, pk=404).status_code == 404
    assert detail(request, pk=404).status_code == 404
    assert count.runs == 3


# --- async -------------------------------------------------------------------------------------


def test_async_functions_are_cached_and_recomputed_once_under_concurrency() -> None:
    count = Counter()

    @cache_aside("async:{x}", ttl=60)
    async def slow(x: int) -> dict[str, int]:
        await asyncio.sleep(0.1)
        return {"x": x, "run": count()}

    async def main() -> list[dict[str, int]]:
        return await asyncio.gather(*(slow(1) for _ in range(10)))

    results = asyncio.run(main())
    assert results == [{"x": 1, "run": 1}] * 10
    assert asyncio.run(slow.refresh(1)) == {"x": 1, "run": 2}
    assert asyncio.run(slow(1)) == {"x": 1, "run": 2}
    assert count.runs == 2


def test_async_view_methods_are_detected_as_async() -> None:
    from asgiref.sync import iscoroutinefunction

    class AsyncView:
        @cache_aside("av", ttl=60)
        async def get(self, request: HttpRequest) -> int:
            return 1

    assert iscoroutinefunction(AsyncView.get)
    assert not iscoroutinefunction(TodayView.get)


# --- other backends ----------------------------------------------------------------------------


def test_any_django_cache_backend_works(settings: Any) -> None:
    count = Counter()

    @cache_aside("lm:{x}", ttl=60, tags=["lm:{x}"], cache="locmem")
    def lm(x: int) -> int:
        return count()

    assert lm(1) == lm(1) == 1
    bump_generations(caches["locmem"], ["lm:1"])
    assert lm(1) == 2
    assert lm.invalidate(1) is True
    assert lm(1) == 3


def test_cache_alias_comes_from_the_setting_by_default(settings: Any, prefix: str) -> None:
    count = Counter()

    @cache_aside("alias", ttl=60)
    def alias() -> int:
        return count()

    settings.RESEE_PERF = {"KEY_PREFIX": prefix, "CACHE_ALIAS": "locmem"}
    assert alias() == alias() == 1
    assert caches["locmem"].get(alias.cache_key()) is not None
    assert caches["default"].get(alias.cache_key()) is None


# --- bad arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl": 0}, "ttl should be a positive number"),
        ({"ttl": True}, "ttl should be a positive number"),
        ({"beta": -1}, "beta should be a number >= 0"),
        ({"stale_ttl": "5"}, "stale_ttl should be None"),
        ({"lock": 1}, "lock should be True or False"),
        ({"version": "has space"}, "version should be"),
        ({"lock_timeout": 0}, "lock_timeout should be None or a positive"),
        ({"tags": "user:{x}"}, r"write tags=\['user:\{x\}'\]"),
        ({"key": "k:{nope}"}, "names 'nope', which is not an argument"),
        ({"key": "k:{}"}, "positional field"),
        ({"key": "k:{x"}, "not a valid template"),
        ({"key": 3}, "key should be a template string or a callable"),
    ],
)
def test_bad_decorator_arguments_fail_at_decoration(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"key": "k:{x}", "ttl": 60, **kwargs}
    with pytest.raises(ImproperlyConfigured, match=message):

        @cache_aside(**arguments)
        def f(x: int) -> int:
            return x


def test_results_are_counted() -> None:
    @cache_aside("counted", ttl=60)
    def counted() -> int:
        return 1

    name = f"{__name__}.test_results_are_counted.<locals>.counted"
    before = {result: requests_counted(name, result) for result in ("hit", "miss")}
    counted()
    counted()
    counted()
    assert requests_counted(name, "miss") - before["miss"] == 1
    assert requests_counted(name, "hit") - before["hit"] == 2


@pytest.fixture(autouse=True)
def _no_leaked_refresh_threads() -> Iterator[None]:
    yield
    # Background refreshes of this test finish before the next test's settings apply.
    testing.wait_for_background_refreshes(10)


def test_async_stale_entries_are_refreshed_in_a_task(clock: FakeClock) -> None:
    count = Counter()

    @cache_aside("async-stale", ttl=10, stale_ttl=30, beta=0)
    async def value() -> int:
        await asyncio.sleep(0.01)
        return count()

    async def main() -> list[int]:
        first = await value()
        clock.now += 11
        stale = await value()  # served at once; the refresh runs in a task
        await asyncio.sleep(0.2)
        return [first, stale, await value()]

    assert asyncio.run(main()) == [1, 1, 2]


def test_without_the_lock_every_caller_that_misses_computes() -> None:
    count = Counter()
    together = threading.Barrier(5)

    @cache_aside("nolock", ttl=60, lock=False)
    def nolock() -> int:
        together.wait(5)  # all five are inside the body at once
        return count()

    threads = [threading.Thread(target=nolock) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert count.runs == 5


def test_a_waiter_computes_itself_when_the_lock_stays_taken(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Holders that keep failing to store (a body raising, a 500 response) must not hold
    waiters forever: after lock_timeout a waiter computes without the lock."""

    @cache_aside("held", ttl=60, lock_timeout=0.2)
    def held() -> str:
        return "computed"

    store = store_for("default")
    lock_key = held.cache_key().replace(":c:", ":l:", 1)
    assert store.acquire(lock_key, "someone else", 30)
    with caplog.at_level("WARNING", logger="resee_perf.cache"):
        assert held() == "computed"
    assert "computing without it" in caplog.text
    assert held() == "computed"  # and it was stored
    store.release(lock_key, "someone else")
