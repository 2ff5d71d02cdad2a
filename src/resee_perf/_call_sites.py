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


# Process-wide by design, like the code objects they describe: id of a code object -> the code
# object (kept, so that its id is not reused) and the short name of its file, or None for a
# library frame. Keyed by id: hashing a code object hashes its constants, several times the
# cost of the lookup. Bounded by the code the process has loaded (and _MAX_NAMES, for code
# made at run time).
_names: dict[int, tuple[CodeType, str | None]] = {}
_MAX_NAMES = 100_000
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
    handler = _thread_handler_code()
    names = _names
    while frame is not None:
        code = frame.f_code
        # _name() inlined: this loop runs over every frame of every profiled query.
        known = names.get(id(code))
        name = known[1] if known is not None else _name(code)
        if name is not None:
            return f"{name}:{frame.f_lineno}"
        if id(code) in _boundaries:
            break  # the server's frames, above the profiling middleware: never the app's
        if code is handler and task is not None:
            site = _awaiting_site(task)
            if site is not None:
                return site
        frame = frame.f_back
    return UNKNOWN


def _name(code: CodeType) -> str | None:
    known = _names.get(id(code))
    if known is not None:
        return known[1]
    if len(_names) >= _MAX_NAMES:
        _names.clear()
    name = _describe(code)
    _names[id(code)] = (code, name)
    return name


# Ids of the code of QueryProfileMiddleware's __call__ and __acall__ (kept alive by their
# class): a walk that reaches them found no application frame.
_boundaries: set[int] = set()


def stop_at(*functions: Any) -> None:
    """Stop the walk of :func:`call_site` at these functions' frames."""
    _boundaries.update(id(function.__code__) for function in functions)


_handler_code: CodeType | None = None


def _thread_handler_code() -> CodeType | None:
    global _handler_code
    if _handler_code is None:
        from asgiref.sync import SyncToAsync

        function = getattr(SyncToAsync, "thread_handler", None)
        _handler_code = getattr(function, "__code__", None)
    return _handler_code


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
            name = _name(frame.f_code)
            if name is not None:
                site = f"{name}:{frame.f_lineno}"
        coroutine = getattr(coroutine, "cr_await", None) or getattr(coroutine, "gi_yieldfrom", None)
    return site
