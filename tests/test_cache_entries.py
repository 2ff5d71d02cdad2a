"""What cache_aside makes of entries someone else wrote to Redis: a planted pickle runs no code,
a tampered signed entry is a miss (and counted), pickle works when chosen, and the checks of the
serializer settings (E011, W011). tests/test_entries.py tests the format itself."""

from __future__ import annotations

import os
import pickle
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.http import HttpResponse
from prometheus_client import REGISTRY

from resee_perf import UncacheableValue, cache_aside
from resee_perf._store import store_for
from resee_perf.checks import check_cache_entries
from tests.test_cache import Counter


@pytest.fixture(autouse=True)
def resee_settings(settings: Any) -> dict[str, Any]:
    settings.RESEE_PERF = {"KEY_PREFIX": f"t{uuid.uuid4().hex[:12]}"}
    return settings.RESEE_PERF  # type: ignore[no-any-return]


def raw_redis() -> Any:
    return store_for("default").client  # type: ignore[attr-defined]


def full_key(key: str) -> str:
    # Hash-tagged on a cluster (RESEE_TEST_REDIS=cluster).
    return store_for("default").full_key(key)  # type: ignore[attr-defined,no-any-return]


class RunsCode:
    """Unpickling this creates a directory: what an attacker's payload would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


class Point:
    """A value JSON cannot store, and pickle can."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x

    __hash__ = None  # type: ignore[assignment]


def test_a_planted_pickle_runs_no_code_and_is_a_miss(tmp_path: Path) -> None:
    count = Counter()

    @cache_aside("planted:{x}", ttl=60)
    def planted(x: int) -> dict[str, int]:
        return {"run": count()}

    assert planted(1) == {"run": 1}
    marker = tmp_path / "pwned"
    payload = pickle.dumps(RunsCode(marker))
    # Both what format 1 was and format 2 framing around a pickle: neither is loaded.
    meta = struct.pack("!ddBH", 1e12, 0.0, 0, 0)
    framed = b"rp\x02u" + len(meta).to_bytes(2, "big") + meta + payload
    for raw in (b"rp\x01" + payload, framed, payload):
        raw_redis().set(full_key(planted.cache_key(1)), raw)
        value = planted(1)
        assert value == {"run": count.runs}
        assert planted(1) == value  # recomputed and stored again
    assert count.runs == 4
    assert not marker.exists()


def test_with_a_signing_key_a_tampered_entry_is_a_counted_miss(
    resee_settings: dict[str, Any], settings: Any
) -> None:
    settings.RESEE_PERF = {**resee_settings, "CACHE_SIGNING_KEY": ["new", "old"]}
    count = Counter()

    @cache_aside("signed:{x}", ttl=60)
    def signed(x: int) -> dict[str, int]:
        return {"run": count()}

    name = repr(signed).removeprefix("<cache_aside ").removesuffix(">")

    def rejected() -> float:
        value = REGISTRY.get_sample_value("resee_perf_cache_entries_rejected_total", {"name": name})
        return value or 0.0

    assert signed(1) == signed(1) == {"run": 1}
    key = full_key(signed.cache_key(1))
    blob = bytearray(raw_redis().get(key))
    blob[-3] ^= 0x01  # a byte of the JSON payload: still valid JSON, maybe, but not signed
    raw_redis().set(key, bytes(blob))
    assert signed(1) == {"run": 2}
    assert rejected() == 1
    # An entry copied from another key fails too: the key is signed with the entry.
    raw_redis().set(full_key(signed.cache_key(2)), raw_redis().get(key))
    assert signed(2) == {"run": 3}
    assert rejected() == 2
    assert signed(1) == {"run": 2}


def test_pickle_works_when_chosen(resee_settings: dict[str, Any], settings: Any) -> None:
    @cache_aside("point:{x}", ttl=60)
    def point(x: int) -> Point:
        return Point(x)

    with pytest.raises(UncacheableValue, match="CACHE_SERIALIZER"):
        point(1)
    settings.RESEE_PERF = {**resee_settings, "CACHE_SERIALIZER": "pickle"}
    assert point(1) == point(1) == Point(1)
    assert raw_redis().get(full_key(point.cache_key(1))).startswith(b"rp\x02u")


def test_none_and_the_string_none_are_different_entries() -> None:
    @cache_aside("page:{page}", ttl=60)
    def page(page: str | None) -> str:
        return "first page" if page is None else "no such page"

    assert page(None) == "first page"
    assert page("None") == "no such page"
    assert page(None) == "first page"


def test_a_django_response_round_trips_with_headers_and_cookies() -> None:
    count = Counter()

    @cache_aside("resp:{x}", ttl=60)
    def resp(x: int) -> HttpResponse:
        response = HttpResponse(f"run {count()}", content_type="text/plain; charset=utf-8")
        response["X-Thing"] = "yes"
        response.set_cookie("seen", "1", max_age=60, httponly=True)
        return response

    first = resp(1)
    cached = resp(1)
    assert cached.content == first.content == b"run 1"
    assert cached["Content-Type"] == "text/plain; charset=utf-8"
    assert cached["X-Thing"] == "yes"
    assert cached.cookies["seen"].value == "1"
    assert cached.cookies["seen"]["httponly"] is True
    assert cached.cookies["seen"]["max-age"] == 60


def test_the_default_settings_pass_the_entry_checks() -> None:
    assert check_cache_entries() == []


@pytest.mark.parametrize(
    "serializer", ["no.such.module.Serializer", "resee_perf.conf.OPTIONS", "json.JSONDecoder"]
)
def test_e011_a_serializer_that_cannot_be_used(
    serializer: str, resee_settings: dict[str, Any], settings: Any
) -> None:
    settings.RESEE_PERF = {**resee_settings, "CACHE_SERIALIZER": serializer}
    [error] = check_cache_entries()
    assert error.id == "resee_perf.E011"
    assert "CACHE_SERIALIZER" in error.msg
    assert serializer in error.msg
    with pytest.raises(SystemCheckError, match=r"resee_perf\.E011"):
        call_command("check")


def test_a_dotted_path_serializer_is_accepted(
    resee_settings: dict[str, Any], settings: Any
) -> None:
    settings.RESEE_PERF = {
        **resee_settings,
        "CACHE_SERIALIZER": "resee_perf._entries.JSONSerializer",
    }
    assert check_cache_entries() == []


def test_w011_pickle_without_a_signing_key(resee_settings: dict[str, Any], settings: Any) -> None:
    settings.RESEE_PERF = {**resee_settings, "CACHE_SERIALIZER": "pickle"}
    [warning] = check_cache_entries()
    assert warning.id == "resee_perf.W011"
    assert "CACHE_SIGNING_KEY" in warning.msg
    settings.RESEE_PERF = {**resee_settings, "CACHE_SERIALIZER": "pickle", "CACHE_SIGNING_KEY": "s"}
    assert check_cache_entries() == []


@pytest.mark.parametrize("value", ["", [], [""], 42, ["ok", 1]])
def test_a_malformed_signing_key_is_e002(
    value: Any, resee_settings: dict[str, Any], settings: Any
) -> None:
    settings.RESEE_PERF = {**resee_settings, "CACHE_SIGNING_KEY": value}
    with pytest.raises(SystemCheckError, match=r"resee_perf\.E002"):
        call_command("check")
