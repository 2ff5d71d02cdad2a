"""The application line that ran a query: the innermost frame outside Django, DRF, resee-perf,
asgiref and the standard library, as ``path:line`` with the path relative to ``sys.path``.

Called on every profiled query, so the work per frame is one dict lookup: whether a code
object belongs to a library, and its short file name, are worked out once per code object.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from types import CodeType, FrameType
from typing import Any

UNKNOWN = "<unknown>"


def _package_dir(name: str) -> str | None:
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) + os.sep if path else None


def _library_prefixes() -> tuple[str, ...]:
    import asgiref
    import django

    import resee_perf

    names = [asgiref.__name__, django.__name__, resee_perf.__name__, "rest_framework"]
    prefixes = [prefix for name in names if (prefix := _package_dir(name))]
    for key in ("stdlib", "platstdlib"):
        if path := sysconfig.get_paths().get(key):
            prefixes.append(os.path.abspath(path) + os.sep)
    return tuple(prefixes)


class _Mark:
    """What a frame is when it is neither the application's (a ``str``: its short file name)
    nor a plain library frame (``None``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_BOUNDARY = _Mark("boundary")
_HANDLER = _Mark("asgiref thread_handler")
_UNSEEN = _Mark("unseen")

# Process-wide by design, like the code objects they describe: id of a code object -> its
# short file name (application code), None (a library's) or a _Mark. Keyed by id, with the code
# objects kept in _codes so that no id is reused while it is a key: hashing a code object hashes
# its constants, and this dict is read for every frame of every profiled query. Bounded by the
# code the process has loaded (and _MAX_KINDS, for code made at run time).
_kinds: dict[int, str | _Mark | None] = {}
_codes: dict[int, CodeType] = {}
_marks: dict[int, tuple[CodeType, _Mark]] = {}
_MAX_KINDS = 100_000
_prefixes: tuple[str, ...] | None = None


def _describe(code: CodeType) -> str | None:
    global _prefixes
    if _prefixes is None or ("rest_framework" in sys.modules and not _has_drf(_prefixes)):
        _prefixes = _library_prefixes()
    filename = code.co_filename
    if filename.startswith("<"):  # <frozen ...>, <string>: nothing a reader could open
        return None
    path = os.path.abspath(filename)
    if path.startswith(_prefixes):
        return None
    return _short(path)


def _has_drf(prefixes: tuple[str, ...]) -> bool:
    drf = _package_dir("rest_framework")
    return drf is None or drf in prefixes


def _short(path: str) -> str:
    """``path`` relative to the longest ``sys.path`` entry holding it (``review/views.py``)."""
    best = ""
    for entry in sys.path:
        root = os.path.abspath(entry or os.curdir) + os.sep
        if path.startswith(root) and len(root) > len(best):
            best = root
    return path[len(best) :] if best else path


def call_site(frame: FrameType | None = None, task: Any = None) -> str:
    """``path:line`` of the innermost application frame at or above ``frame`` (default: the
    caller's caller), or ``<unknown>`` when every frame is a library's.

    ``task``: the asyncio task of an async request. A query its coroutine awaited
    (``await Model.objects.aget()``) runs in a worker thread whose stack ends in asgiref's
    ``thread_handler``; the line that awaited it is in the task's chain of coroutines."""
    if frame is None:
        frame = sys._getframe(2)
    get = _kinds.get
    # The loop runs over every frame of every profiled query: one dict lookup per library frame.
    while frame is not None:
        kind = get(id(frame.f_code), _UNSEEN)
        if kind is _UNSEEN:
            kind = _kind(frame.f_code)
        if kind is not None:
            if isinstance(kind, str):
                return f"{kind}:{frame.f_lineno}"
            if kind is _BOUNDARY:
                break  # the server's frames, above the profiling middleware: never the app's
            if task is not None:  # _HANDLER
                site = _awaiting_site(task)
                if site is not None:
                    return site
        frame = frame.f_back
    return UNKNOWN


def _kind(code: CodeType) -> str | _Mark | None:
    kind = _kinds.get(id(code), _UNSEEN)
    if kind is not _UNSEEN:
        return kind
    if len(_kinds) >= _MAX_KINDS:
        _forget()
    kind = _describe(code)
    _kinds[id(code)] = kind
    _codes[id(code)] = code
    return kind


def _forget() -> None:
    _kinds.clear()
    _codes.clear()
    for code_id, (code, mark) in _marks.items():
        _kinds[code_id] = mark
        _codes[code_id] = code


def _mark(code: CodeType, mark: _Mark) -> None:
    _marks[id(code)] = (code, mark)
    _kinds[id(code)] = mark
    _codes[id(code)] = code


def stop_at(*functions: Any) -> None:
    """Stop the walk of :func:`call_site` at these functions' frames (QueryProfileMiddleware's
    ``__call__`` and ``__acall__``: a walk that reaches them found no application frame)."""
    for function in functions:
        _mark(function.__code__, _BOUNDARY)


def _mark_thread_handler() -> None:
    from asgiref.sync import SyncToAsync

    code = getattr(getattr(SyncToAsync, "thread_handler", None), "__code__", None)
    if isinstance(code, CodeType):
        _mark(code, _HANDLER)


def _awaiting_site(task: Any) -> str | None:
    """The innermost application line of the coroutines ``task`` is suspended in (it is: the
    thread asking runs what the task awaits)."""
    coroutine = task.get_coro()
    site = None
    for _ in range(200):  # a bound, not a depth any real await chain reaches
        if coroutine is None:
            break
        frame = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "gi_frame", None)
        if frame is not None:
            kind = _kind(frame.f_code)
            if isinstance(kind, str):
                site = f"{kind}:{frame.f_lineno}"
        coroutine = getattr(coroutine, "cr_await", None) or getattr(coroutine, "gi_yieldfrom", None)
    return site


_mark_thread_handler()
