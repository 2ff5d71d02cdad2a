"""Entries (resee_perf._entries): round trips of every supported type, and what a read makes of
planted, altered and foreign bytes. Pure: no services (tests/test_cache_entries.py reads them
through Redis)."""

from __future__ import annotations

import datetime
import decimal
import os
import pickle
import struct
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
from django.utils.safestring import SafeString, mark_safe

from resee_perf._entries import (
    MAGIC,
    PLAIN,
    Codec,
    Entry,
    Garbage,
    JSONSerializer,
    PickleSerializer,
    Rejected,
    UncacheableValue,
)

KEY = "rp:c:1:k:{1}"

SUPPORTED: list[Any] = [
    None,
    True,
    0,
    -(2**80),
    1.5,
    float("inf"),
    "",
    "text é \x00 {}",
    [1, "a", None],
    {"a": 1, "b": [1, 2]},
    (1, (2, "x")),
    {1: "int key", (1, 2): "tuple key", None: "none key"},
    {"__rp__": "a user key that looks like our tag", "v": 1},
    {1, 2},
    frozenset({"a"}),
    b"\x00\xffbytes",
    datetime.date(2026, 12, 4),
    datetime.datetime(2026, 12, 4, 5, 6, 7, 890123),
    datetime.datetime(2026, 12, 4, 5, 6, 7, tzinfo=datetime.UTC),
    datetime.datetime(2026, 12, 4, tzinfo=datetime.timezone(datetime.timedelta(hours=-3))),
    datetime.time(23, 59, 58, 1),
    datetime.timedelta(days=-1, seconds=5, microseconds=7),
    decimal.Decimal("1.10"),
    decimal.Decimal("-0"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    {"nested": [{"when": datetime.date(2026, 1, 1), "amount": decimal.Decimal("3.14")}]},
]


def entry(payload: Any, generations: tuple[int, ...] = (3, 4)) -> Entry:
    return Entry(1e9, 0.25, generations, PLAIN, payload)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a != a:
        return bool(b != b)
    if isinstance(a, datetime.datetime):
        return bool(a == b and a.utcoffset() == b.utcoffset())
    return bool(a == b) and str(a) == str(b)


@pytest.mark.parametrize("value", SUPPORTED, ids=repr)
@pytest.mark.parametrize("signing_keys", [(), (b"secret",)])
def test_every_supported_type_round_trips_exactly(value: Any, signing_keys: tuple[bytes]) -> None:
    codec = Codec(JSONSerializer(), signing_keys)
    decoded = codec.decode(codec.encode(entry(value), KEY, "f"), KEY)
    assert decoded is not None
    assert same(decoded.payload, value), (decoded.payload, value)
    assert decoded[:4] == entry(value)[:4]


def test_subclasses_come_back_as_their_base_type_except_safe_strings() -> None:
    from rest_framework import serializers
    from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

    serializer: serializers.Serializer[Any] = serializers.Serializer()

    codec = Codec(JSONSerializer())
    value = {
        "drf": ReturnDict({"a": 1}, serializer=serializer),
        "list": ReturnList([1], serializer=serializer),
        "ordered": OrderedDict(b=1, a=2),
        "safe": mark_safe("<b>ok</b>"),
    }
    decoded = codec.decode(codec.encode(entry(value), KEY, "f"), KEY)
    assert decoded is not None
    assert decoded.payload == {
        "drf": {"a": 1},
        "list": [1],
        "ordered": {"b": 1, "a": 2},
        "safe": "<b>ok</b>",
    }
    assert type(decoded.payload["drf"]) is dict
    assert type(decoded.payload["list"]) is list
    assert list(decoded.payload["ordered"]) == ["b", "a"]
    assert type(decoded.payload["safe"]) is SafeString


@pytest.mark.parametrize("value", [object(), {"a": object()}, iter, pytest])
def test_what_json_cannot_represent_is_uncacheable(value: Any) -> None:
    with pytest.raises(UncacheableValue, match="CACHE_SERIALIZER"):
        Codec(JSONSerializer()).encode(entry(value), KEY, "f")


class _RunsCode:
    """Unpickling this writes a marker file: what an attacker's payload would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_a_planted_pickle_does_not_run_with_the_default_serializer(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    planted = Codec(PickleSerializer()).encode(entry(_RunsCode(marker)), KEY, "f")
    old_format = b"rp\x01" + pickle.dumps(_RunsCode(marker))
    codec = Codec(JSONSerializer())
    with pytest.raises(Garbage):
        codec.decode(planted, KEY)
    assert codec.decode(old_format, KEY) is None  # the previous format: a quiet miss
    assert not marker.exists()
    # The same bytes do run code when pickle is chosen: the test would catch a planted payload.
    Codec(PickleSerializer()).decode(planted, KEY)
    assert marker.exists()


def test_with_signing_keys_a_planted_pickle_is_rejected_before_it_is_loaded(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "pwned"
    planted = Codec(PickleSerializer()).encode(entry(_RunsCode(marker)), KEY, "f")
    with pytest.raises(Rejected, match="unsigned"):
        Codec(PickleSerializer(), [b"secret"]).decode(planted, KEY)
    assert not marker.exists()


def test_any_altered_byte_or_another_key_or_secret_is_rejected() -> None:
    codec = Codec(JSONSerializer(), [b"secret"])
    blob = codec.encode(entry({"a": [1, 2, 3]}), KEY, "f")
    assert codec.decode(blob, KEY) is not None
    for index in range(len(MAGIC) + 1, len(blob)):
        altered = bytearray(blob)
        altered[index] ^= 0x01
        with pytest.raises(Rejected):
            codec.decode(bytes(altered), KEY)
    with pytest.raises(Rejected):
        codec.decode(blob, KEY + "x")  # moved to another key
    with pytest.raises(Rejected):
        Codec(JSONSerializer(), [b"other"]).decode(blob, KEY)


def test_a_rotated_key_still_verifies_and_the_first_signs() -> None:
    old = Codec(JSONSerializer(), [b"old"])
    rotated = Codec(JSONSerializer(), [b"new", b"old"])
    assert rotated.decode(old.encode(entry(1), KEY, "f"), KEY) is not None
    assert Codec(JSONSerializer(), [b"new"]).decode(rotated.encode(entry(1), KEY, "f"), KEY)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"rp",
        b"rp\x02",
        b"rp\x02s",
        b"rp\x02u\x00",
        b"rp\x02u\xff\xff{}",
        b"rp\x02x",
        42,
        "str",
    ],
)
def test_garbage_is_garbage_never_another_exception(raw: Any) -> None:
    with pytest.raises(Garbage):
        Codec(JSONSerializer()).decode(raw, KEY)


@pytest.mark.parametrize(
    "meta",
    [
        b"",
        b"[1e12,0.0,[],0]",
        struct.pack("!ddBH", 1e12, 0.0, 0, 2) + struct.pack("!q", 1),
        struct.pack("!ddBH", 1e12, 0.0, 0, 0) + b"x",
    ],
)
def test_malformed_metadata_is_garbage(meta: bytes) -> None:
    raw = MAGIC + b"u" + len(meta).to_bytes(2, "big") + meta + b"J1"
    with pytest.raises(Garbage):
        Codec(JSONSerializer()).decode(raw, KEY)


def test_tombstones_and_older_formats_are_quiet_misses() -> None:
    codec = Codec(JSONSerializer(), [b"secret"])
    assert codec.decode(b"rp\x00" + os.urandom(16), KEY) is None
    assert codec.decode(b"rp\x01anything", KEY) is None
    assert codec.decode(None, KEY) is None


def test_pickle_still_round_trips_anything_picklable() -> None:
    codec = Codec(PickleSerializer(), [b"secret"])
    value = {"a": {1, 2}, "b": OrderedDict(x=1), "c": Path("/tmp")}
    decoded = codec.decode(codec.encode(entry(value), KEY, "f"), KEY)
    assert decoded is not None
    assert decoded.payload == value
