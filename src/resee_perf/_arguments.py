"""Which values a call's key and tag templates name: found among the call's arguments, or, in a
view, in the URL kwargs, the user and the query string. Pure: no cache, no settings."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured

_EMPTY = inspect.Parameter.empty
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
SAFE_METHODS = frozenset({"GET", "HEAD"})
_VIEW_CONTEXT = "user_id"


class Arguments:
    """Finds the values that templates name among a call's arguments.

    In a view (a function or method with a ``request`` parameter), a name that is not a
    parameter is looked up in the URL kwargs (``**kwargs``), then as ``user_id`` (the
    authenticated user's pk, None for anonymous), then in the query string (None when absent).
    """

    def __init__(self, func: Callable[..., Any], names: frozenset[str], where: str) -> None:
        self.where = where
        self.signature = inspect.signature(func)
        parameters = list(self.signature.parameters.values())
        self.parameters = self.signature.parameters
        self.names = names
        self.var_keyword = next(
            (p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD), None
        )
        positional = [p.name for p in parameters if p.kind in _POSITIONAL]
        self.index = {name: i for i, name in enumerate(positional)}
        self.is_view = "request" in self.parameters
        # Positional arguments of the helpers (cache_key, invalidate) skip self/cls and the
        # request: `TodayView.get.invalidate(user_id=7)`, `Service.today.cache_key(7)`.
        skipped = {"request"}
        if positional and positional[0] in {"self", "cls"}:
            skipped.add(positional[0])
        self.helper_positional = [name for name in positional if name not in skipped]
        for name in names:
            if name not in self.parameters and not (self.var_keyword or self.is_view):
                raise ImproperlyConfigured(
                    f"cache_aside on {where}: a template names {name!r}, which is not an "
                    f"argument of {where}{self.signature}."
                )

    def request(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self.is_view:
            return None
        index = self.index.get("request")
        if index is not None and index < len(args):
            return args[index]
        return kwargs.get("request")

    def for_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        namespace: dict[str, Any] = {}
        for name in self.names:
            parameter = self.parameters.get(name)
            if parameter is None:
                namespace[name] = self._context(name, args, kwargs)
                continue
            index = self.index.get(name)
            if index is not None and index < len(args):
                namespace[name] = args[index]
            elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                namespace[name] = args[len(self.index) :]
            elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
                namespace[name] = {k: v for k, v in kwargs.items() if k not in self.parameters}
            elif name in kwargs and parameter.kind is not inspect.Parameter.POSITIONAL_ONLY:
                namespace[name] = kwargs[name]
            elif parameter.default is not _EMPTY:
                namespace[name] = parameter.default
            else:
                # Let Python word the error exactly as the undecorated call would have.
                self.signature.bind(*args, **kwargs)
                raise TypeError(f"{self.where}() missing argument {name!r}")
        return namespace

    def _context(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if name in kwargs:
            return kwargs[name]
        request = self.request(args, kwargs)
        if request is None:
            raise TypeError(f"{self.where}() got no {name!r}, which its cache key needs")
        if name == _VIEW_CONTEXT:
            user = getattr(request, "user", None)
            return user.pk if user is not None and user.is_authenticated else None
        return request.GET.get(name)

    def for_helper(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if len(args) > len(self.helper_positional):
            raise TypeError(
                f"{self.where}.cache_key() takes the arguments its templates name "
                f"({', '.join(self.helper_positional)}) positionally; got {len(args)}."
            )
        given = dict(zip(self.helper_positional, args, strict=False))
        for name, value in kwargs.items():
            if name in given:
                raise TypeError(f"{self.where}.cache_key() got multiple values for {name!r}")
            given[name] = value
        namespace: dict[str, Any] = {}
        for name in self.names:
            parameter = self.parameters.get(name)
            if name in given:
                namespace[name] = given[name]
            elif parameter is not None and parameter.default is not _EMPTY:
                namespace[name] = parameter.default
            elif parameter is not None and parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                namespace[name] = ()
            elif parameter is not None and parameter.kind is inspect.Parameter.VAR_KEYWORD:
                namespace[name] = {}
            elif parameter is None and self.is_view and name != _VIEW_CONTEXT:
                namespace[name] = None  # a query parameter the request would not have had
            else:
                raise TypeError(f"{self.where}.cache_key() needs {name!r} to build the key")
        return namespace
