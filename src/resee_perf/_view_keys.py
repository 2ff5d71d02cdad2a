"""What a cached view's response depends on besides its template's arguments: the variant.

A view's key template names what the author thought of (the user, the page); the response can
also depend on the request in ways the template does not say:

- **Host and scheme**: DRF's paginated ``next``/``previous`` links, ``reverse`` with
  ``request.build_absolute_uri``, ``Location`` headers. An entry filled through
  ``http://127.0.0.1:8099`` must not be served to ``https://api.example.com``.
- **The active language** (``LocaleMiddleware`` activates it from ``Accept-Language``, the
  session or the URL): translated messages and formats.
- **The headers the view's response names in** ``Vary`` (``Accept-Language``, ``X-Client``...),
  as Django's ``cache_page`` keys on them.

The first two are always part of a view's key. A ``Vary`` header is only known once a
response has been computed, so each process learns, per view, the header names its responses
vary on; the key carries an id of the learned set (:func:`variant`) and a digest of the request's
values of those headers. A response whose ``Vary`` names a header the key was not built with is
returned but not stored (:func:`storable`), and the header is learned: the next request of that
process builds its key with it. Because the set's id is in the key, an entry is only ever read by
a request that keyed on the same headers, whichever process stored it, while the processes
learn at their own pace (each pays one uncached response per newly learned header).

``Vary`` headers that middleware adds (``Cookie`` by the session middleware, ``Accept`` by
DRF's ``finalize_response``) are not on the response the view returns: the cached value is
that response, and the middleware and the renderer run again on every hit, so those do not
split the cache. Only what the view itself declares does.
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import Any

from django.utils import translation

# Separates a view's key from its variant; no key body ends with '@' and a fixed-length suffix.
_MARK = "@"
_NO_HEADERS = "0"
_COMMAS = re.compile(r"\s*,\s*")

# Process-wide on purpose: what each view's responses were seen to vary on, and the header
# sets by id, grow only (a view has few Vary headers) and are shared by every thread.
_learned: dict[str, frozenset[str]] = {}
_sets: dict[str, frozenset[str]] = {_NO_HEADERS: frozenset()}
_lock = threading.Lock()


def _digest(text: str, size: int) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).hexdigest()


def _set_id(headers: frozenset[str]) -> str:
    if not headers:
        return _NO_HEADERS
    set_id = _digest("\n".join(sorted(headers)), 4)
    _sets.setdefault(set_id, headers)
    return set_id


def variant(view: str, request: Any) -> str:
    """The suffix of ``view``'s key for ``request``: ``@<header set id>.<digest>``, where the
    digest covers scheme, host, active language and the request's values of the headers the
    view's responses were seen to vary on."""
    headers = _learned.get(view, frozenset())
    meta = getattr(request, "META", {})
    parts = [request.scheme, request.get_host(), translation.get_language() or ""]
    for header in sorted(headers):
        # Header names are lowercase here; META holds HTTP_X_Y (and CONTENT_TYPE/LENGTH bare).
        name = header.upper().replace("-", "_")
        value = meta.get(name if name in {"CONTENT_TYPE", "CONTENT_LENGTH"} else f"HTTP_{name}")
        parts.append("\x00" if value is None else str(value))
    return f"{_MARK}{_set_id(headers)}.{_digest(chr(31).join(parts), 16)}"


def vary_of(value: Any) -> frozenset[str]:
    """The header names (lowercase) in ``value``'s ``Vary``, if it is a response."""
    has_header = getattr(value, "has_header", None)
    if not callable(has_header) or not has_header("Vary"):
        return frozenset()
    return frozenset(name.strip().lower() for name in _COMMAS.split(value["Vary"]) if name.strip())


def storable(view: str, key: str, value: Any) -> bool:
    """Whether ``value``, computed for a request of ``view`` keyed ``key``, may be stored:
    its ``Vary`` names only headers the key was built with. Otherwise learn them."""
    varies = vary_of(value)
    if not varies:
        return True
    if "*" in varies:
        return False  # varies on something outside the request's headers: never cacheable
    tail = key.rpartition(_MARK)[2]
    keyed = _sets.get(tail.partition(".")[0])
    if keyed is not None and varies <= keyed:
        return True
    with _lock:
        _learned[view] = _learned.get(view, frozenset()) | varies
    return False


def forget() -> None:
    """Forget what every view was seen to vary on (tests)."""
    with _lock:
        _learned.clear()
