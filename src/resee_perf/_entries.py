"""Cache entries: what ``cache_aside`` stores for a value, as bytes, and back. Pure: no cache I/O.

Format 2 (docs/cache.md, "Entry format"), after the ``b"rp\\x02"`` magic:

- one byte: ``s`` signed (then 32 bytes of HMAC-SHA256) or ``u`` unsigned;
- two bytes (big-endian): the length of the metadata, then the metadata, packed binary
  (:func:`_pack_meta` / :func:`_unpack_meta`, the one place that knows its fields);
- the payload, as the configured serializer wrote it.

The HMAC covers the cache key and every byte after it, so an entry can neither be altered nor
moved to another key. Anything that is not a format-2 entry reads as a miss: an older format or
a newer one (a rolling deploy) silently, anything else as :class:`Garbage`, and with signing
keys set an unsigned or altered entry as :class:`Rejected`. The default serializer is JSON, so a
value planted in the cache is data, never code (pickle runs code on load).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import hashlib
import hmac
import json
import pickle
import struct
import sys
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol

from django.http import HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.template.response import SimpleTemplateResponse
from django.utils.safestring import SafeData, mark_safe


class UncacheableValue(TypeError):
    """A ``cache_aside`` function returned a value that cannot be stored (and read back)."""


class Garbage(Exception):
    """The cache returned something that is not an entry of ours."""


class Rejected(Garbage):
    """With signing keys set: an entry without a valid signature for its key."""


class Serializer(Protocol):
    """``RESEE_PERF['CACHE_SERIALIZER']``: turns an entry's payload into bytes and back.
    ``dumps`` raises (any exception) for a value it cannot represent; ``loads`` raises for bytes
    it did not write."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


# --- Metadata: the fields an entry carries besides its value --------------------------------


class Entry(NamedTuple):
    expiry: float
    delta: float
    generations: tuple[int, ...]
    kind: int
    payload: Any

    def value(self) -> Any:
        if self.kind == DRF_RESPONSE:
            from rest_framework.response import Response

            data, status, headers, template_name, content_type = self.payload
            return Response(
                data,
                status=status,
                headers=dict(headers),
                template_name=template_name,
                content_type=content_type,
            )
        if self.kind == HTTP_RESPONSE:
            return _http_response(self.payload)
        return self.payload


# expiry, delta, kind, number of generations; then the generations (Redis INCR: signed 64-bit).
# Packed, not JSON: a third of the decoding time of a small entry went to JSON metadata. A field
# added later changes the layout in these two functions and bumps MAGIC, so that entries of the
# other layout read as misses.
_META_HEAD = struct.Struct("!ddBH")
_GENERATION = struct.Struct("!q")


def _pack_meta(entry: Entry) -> bytes:
    generations = entry.generations
    return _META_HEAD.pack(entry.expiry, entry.delta, entry.kind, len(generations)) + b"".join(
        _GENERATION.pack(generation) for generation in generations
    )


def _unpack_meta(raw: bytes) -> tuple[float, float, tuple[int, ...], int]:
    expiry, delta, kind, count = _META_HEAD.unpack_from(raw)
    if len(raw) != _META_HEAD.size + count * _GENERATION.size:
        raise ValueError("malformed metadata")
    generations = struct.unpack_from(f"!{count}q", raw, _META_HEAD.size) if count else ()
    return expiry, delta, generations, kind


# --- Payloads: what is stored for a function's return value ----------------------------------

PLAIN = 0
DRF_RESPONSE = 1
HTTP_RESPONSE = 2


def payload(value: Any, where: str) -> tuple[int, Any] | None:
    """What to store for ``value``; None for a response that must not be cached."""
    # A DRF Response can only exist if DRF is imported already: never import it (a slow
    # import, on the first miss of a process that may not use DRF at all).
    drf_response = getattr(sys.modules.get("rest_framework.response"), "Response", None)
    if drf_response is not None and isinstance(value, drf_response):
        if not 200 <= value.status_code < 300:
            return None
        # The renderer and its Content-Type are chosen per request by DRF after the view
        # returns; store what the view decided, rebuild a fresh Response on each hit.
        headers = tuple((k, v) for k, v in value.items() if k.lower() != "content-type")
        return DRF_RESPONSE, (
            value.data,
            value.status_code,
            headers,
            value.template_name,
            value.content_type,
        )
    if isinstance(value, HttpResponseBase):
        if isinstance(value, StreamingHttpResponse):
            raise UncacheableValue(
                f"{where} returned a streaming response, which cannot be cached."
            )
        if not 200 <= value.status_code < 300:
            return None
        if isinstance(value, SimpleTemplateResponse) and not value.is_rendered:
            value.render()
        assert isinstance(value, HttpResponse)
        # Stored as data, rebuilt as an HttpResponse on each hit (its subclass is not kept).
        cookies = tuple(
            (name, morsel.value, dict(morsel)) for name, morsel in value.cookies.items()
        )
        return HTTP_RESPONSE, (value.content, value.status_code, tuple(value.items()), cookies)
    if isinstance(value, Iterator):
        raise UncacheableValue(
            f"{where} returned an iterator ({type(value).__name__}), which the cache would "
            "consume: return a list or a tuple."
        )
    return PLAIN, value


def _http_response(stored: Any) -> HttpResponse:
    content, status, headers, cookies = stored
    response = HttpResponse(content, status=status, headers=dict(headers))
    for name, value, attributes in cookies:
        response.cookies[name] = value
        response.cookies[name].update(attributes)
    return response


# --- Serializers -------------------------------------------------------------------------------

# A dict with this key is a tagged value; a user dict holding it is stored tagged as "dict".
_TAG = "__rp__"


class JSONSerializer:
    """The default: JSON, with exact round trips for the types ``cache_aside`` supports.

    Native: dict (str keys), list, str, int, float, bool, None. Tagged (``{"__rp__": type,
    "v": ...}``): tuple, set, frozenset, dict with other keys, bytes, date, datetime, time,
    timedelta, Decimal, UUID, and Django's safe strings. Subclasses come back as their base
    type: DRF's ReturnDict and ReturnList and OrderedDict as dict and list, TextChoices and
    IntegerChoices members as their value. Anything else (model instances, lazy strings)
    raises TypeError, which ``cache_aside`` reports as :class:`UncacheableValue` at the first
    call.
    """

    def dumps(self, value: Any) -> bytes:
        tagged = [False]
        document = _to_json(value, tagged)
        # A leading byte says whether any tag was written: most entries have none and are
        # read back by json.loads alone, without a Python hook per dict.
        return (b"T" if tagged[0] else b"J") + json.dumps(
            document, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8", "surrogatepass")

    def loads(self, data: bytes) -> Any:
        if data[:1] == b"J":
            return json.loads(data[1:])
        if data[:1] == b"T":
            return json.loads(data[1:], object_hook=_revive)
        raise ValueError("not a JSONSerializer payload")


def _tagged(tag: str, value: Any, tagged: list[bool]) -> dict[str, Any]:
    tagged[0] = True
    return {_TAG: tag, "v": value}


def _to_json(value: Any, tagged: list[bool]) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return value
    if isinstance(value, dict):
        if _TAG not in value and all(type(key) is str for key in value):
            return {key: _to_json(item, tagged) for key, item in value.items()}
        items = [[_to_json(key, tagged), _to_json(item, tagged)] for key, item in value.items()]
        return _tagged("dict", items, tagged)
    if isinstance(value, list):
        return [_to_json(item, tagged) for item in value]
    if kind is tuple:
        return _tagged("tuple", [_to_json(item, tagged) for item in value], tagged)
    if isinstance(value, SafeData) and isinstance(value, str):
        return _tagged("safe", str.__add__(value, ""), tagged)
    if isinstance(value, str):
        return str.__add__(value, "")  # an exact str (a TextChoices member: its value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, datetime.datetime):
        return _tagged("datetime", value.isoformat(), tagged)
    if isinstance(value, datetime.date):
        return _tagged("date", value.isoformat(), tagged)
    if isinstance(value, datetime.time):
        return _tagged("time", value.isoformat(), tagged)
    if isinstance(value, datetime.timedelta):
        return _tagged("timedelta", [value.days, value.seconds, value.microseconds], tagged)
    if isinstance(value, decimal.Decimal):
        return _tagged("decimal", str(value), tagged)
    if isinstance(value, uuid.UUID):
        return _tagged("uuid", value.hex, tagged)
    if kind is set or kind is frozenset:
        return _tagged(kind.__name__, [_to_json(item, tagged) for item in value], tagged)
    if isinstance(value, bytes | bytearray | memoryview):
        return _tagged("bytes", base64.b64encode(value).decode("ascii"), tagged)
    raise TypeError(f"JSONSerializer cannot store a {type(value).__module__}.{kind.__qualname__}")


_REVIVERS: dict[str, Any] = {
    "dict": dict,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "safe": mark_safe,
    "datetime": datetime.datetime.fromisoformat,
    "date": datetime.date.fromisoformat,
    "time": datetime.time.fromisoformat,
    "timedelta": lambda parts: datetime.timedelta(*parts),
    "decimal": decimal.Decimal,
    "uuid": uuid.UUID,
    "bytes": base64.b64decode,
}


def _revive(document: dict[str, Any]) -> Any:
    tag = document.get(_TAG)
    if tag is None:
        return document
    return _REVIVERS[tag](document["v"])


class PickleSerializer:
    """Any picklable value, exactly. Loading a pickle runs code: whoever can write to the
    cache can run code in every worker that reads it. Use with a signing key (W011)."""

    def dumps(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


# The named choices of RESEE_PERF['CACHE_SERIALIZER']; anything else is a dotted path.
SERIALIZERS = {"json": JSONSerializer, "pickle": PickleSerializer}


# --- Entries: bytes ----------------------------------------------------------------------------

MAGIC = b"rp\x02"
_MAGIC_FAMILY = b"rp"
_SIGNED = b"s"
_UNSIGNED = b"u"
_MAC_SIZE = 32
# Tombstones (resee_perf._store) are b"rp\x00" + a token; format 1 was b"rp\x01" + a pickle.
_OTHER_FORMATS = frozenset({0, 1})


class Codec:
    """Entries to bytes and back, with one serializer and zero or more signing keys (the first
    signs; any verifies, so that a key can be rotated without a flood of misses)."""

    def __init__(self, serializer: Serializer, signing_keys: Sequence[bytes] = ()) -> None:
        self.serializer = serializer
        self.signing_keys = tuple(
            hmac.new(secret, digestmod=hashlib.sha256) for secret in signing_keys
        )

    def encode(self, entry: Entry, key: str, where: str) -> bytes:
        try:
            body = self.serializer.dumps(entry.payload)
        except Exception as error:
            raise UncacheableValue(
                f"{where} returned a value that cannot be cached ({error}). Return plain data "
                "(dicts, lists, str, numbers, dates, Decimals, UUIDs), or choose another "
                "RESEE_PERF['CACHE_SERIALIZER']."
            ) from error
        meta = _pack_meta(entry)
        rest = len(meta).to_bytes(2, "big") + meta + body
        if not self.signing_keys:
            return MAGIC + _UNSIGNED + rest
        return MAGIC + _SIGNED + _mac(self.signing_keys[0], key, rest) + rest

    def decode(self, raw: Any, key: str) -> Entry | None:
        """The entry in ``raw`` (None for an absent key or another format's bytes), or
        :class:`Garbage` / :class:`Rejected`. Never runs a deserializer on unverified bytes
        when signing keys are set."""
        if raw is None:
            return None
        if not isinstance(raw, bytes):
            raise Garbage(f"not an entry: {type(raw).__name__}")
        if not raw.startswith(MAGIC):
            if raw.startswith(_MAGIC_FAMILY) and len(raw) > 2 and raw[2] in _OTHER_FORMATS:
                return None  # a tombstone or an entry of the previous format: a miss
            raise Garbage(f"not an entry: {raw[:16]!r}")
        view = memoryview(raw)
        flag = raw[3:4]
        if flag == _SIGNED:
            start = 4 + _MAC_SIZE
            if self.signing_keys:
                mac = view[4:start]
                rest = view[start:]
                if not any(
                    hmac.compare_digest(mac, _mac(keyed, key, rest)) for keyed in self.signing_keys
                ):
                    raise Rejected("an entry whose signature does not match its key")
        elif flag == _UNSIGNED:
            if self.signing_keys:
                raise Rejected("an unsigned entry")
            start = 4
        else:
            raise Garbage(f"unknown entry flag {flag!r}")
        try:
            size = int.from_bytes(view[start : start + 2], "big")
            meta = _unpack_meta(raw[start + 2 : start + 2 + size])
            value = self.serializer.loads(raw[start + 2 + size :])
        except Exception as error:
            # Another serializer's entry, or a class renamed by a deploy: recomputed.
            raise Garbage(f"undecodable entry: {error!r}") from error
        return Entry(*meta, value)


def _mac(keyed: hmac.HMAC, key: str, rest: bytes | memoryview) -> bytes:
    # A copy of an HMAC already keyed: about half the cost of keying one per entry (OpenSSL 3
    # looks the algorithm up on every new context).
    mac = keyed.copy()
    mac.update(key.encode("utf-8", "surrogatepass") + b"\x00" + MAGIC)
    mac.update(rest)
    return mac.digest()
