"""The API's defences against input PostgreSQL or the JSON renderer cannot take.

Hostile input must be a 4xx, never a 500. DRF's CharField already refuses NUL bytes and lone
surrogates, but not every value reaches a CharField: a credential goes straight to a query
(psycopg raises ValueError on a NUL in a string), a lone surrogate in a choice field comes back
in the 400's message and the renderer cannot encode it (UnicodeEncodeError), ``json`` raises
RecursionError on deep nesting, and a related field's ``1.5`` is quietly stored as ``1``.
Each is refused here, where the value enters: the parser, the authentication, the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from django.contrib.auth.models import User
from django.db import models
from rest_framework import exceptions, serializers
from rest_framework.authentication import BasicAuthentication
from rest_framework.parsers import JSONParser
from rest_framework.request import Request

# Deeper than any body this API accepts; the walk below is iterative, so any limit is safe.
MAX_JSON_DEPTH = 32
# PostgreSQL's bigint, the type of every primary key here (DEFAULT_AUTO_FIELD).
_BIGINT_MAX = 2**63 - 1


def unstorable_character(text: str) -> str | None:
    """Why PostgreSQL cannot store ``text`` (a NUL, a lone surrogate), or None if it can."""
    if "\x00" in text:
        return "a NUL character"
    if any("\ud800" <= char <= "\udfff" for char in text):
        return "a lone surrogate (invalid UTF-16 escape)"
    return None


def _json_problem(data: Any) -> str | None:
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            problem = unstorable_character(value)
            if problem:
                return f"a string contains {problem}"
            continue
        if isinstance(value, Mapping):
            children = [*value.keys(), *value.values()]
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            return f"nesting deeper than {MAX_JSON_DEPTH} levels"
        pending.extend((child, depth + 1) for child in children)
    return None


class StrictJSONParser(JSONParser):
    """JSON without deep nesting, NUL characters or lone surrogates: a 400 instead of a 500."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as error:
            # json's C scanner gives up at the interpreter's recursion limit; DRF only turns
            # ValueError into a ParseError.
            raise exceptions.ParseError(
                f"JSON parse error - nesting deeper than {MAX_JSON_DEPTH} levels."
            ) from error
        problem = _json_problem(data)
        if problem:
            raise exceptions.ParseError(f"JSON parse error - {problem}.")
        return data


class StrictBasicAuthentication(BasicAuthentication):
    """Basic auth whose credentials never reach the database with a NUL in them."""

    def authenticate_credentials(
        self, userid: str, password: str, request: Request | None = None
    ) -> tuple[User, None]:
        if unstorable_character(userid) or unstorable_character(password):
            # The same answer as a wrong password: which of the two was refused is no business
            # of the client's.
            raise exceptions.AuthenticationFailed("Invalid username/password.")
        user, auth = super().authenticate_credentials(userid, password, request)
        return user, auth


class StrictPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):  # type: ignore[type-arg]
    """A primary key given as an integer (or a string of digits, from a form), nothing else.

    DRF's field lets the queryset coerce the value, so ``1.5`` (or ``true``) finds row 1 and
    ``1e400`` (infinity) raises OverflowError, a 500.
    """

    def to_internal_value(self, data: Any) -> models.Model:
        if isinstance(data, str) and data.isascii() and data.isdigit():
            data = int(data)
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("incorrect_type", data_type=type(data).__name__)
        if not 0 < data <= _BIGINT_MAX:
            self.fail("does_not_exist", pk_value=data)
        return super().to_internal_value(data)  # type: ignore[no-any-return]
