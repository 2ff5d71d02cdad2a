"""The shape of a SQL statement: the statement with its literals and lists collapsed, so that
the queries an N+1 loop runs (the same statement, other values) count as one.

Django sends parameters apart from the SQL (``%s`` placeholders), so the text of one ORM call
is mostly the same string every time; literals still appear in raw SQL, ``LIMIT``/``OFFSET``
and ``extra()``, and an ``IN`` list grows with its values. A leaf module: no Django import.
"""

from __future__ import annotations

import functools
import re

_STRING = re.compile(r"'(?:[^']|'')*'")
# Numbers that stand alone: not the digits of an identifier such as "t1" or "s123_x1".
_NUMBER = re.compile(r"(?<![\w.\"$])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b")
_PLACEHOLDER = re.compile(r"%s|%\([^)]*\)s|\$\d+|\?")
# IN (?, ?, ?) and the rows of a multi-row VALUES, after the placeholders became "?".
_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)")
_ROWS = re.compile(r"\(\.\.\.\)(?:\s*,\s*\(\.\.\.\))+")
_SPACE = re.compile(r"\s+")
_WRITE = re.compile(r"\b(?:INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)
# Longer statements are cut: a shape is a key and a log field, not a copy of the query.
MAX_SHAPE_LENGTH = 1000


@functools.lru_cache(maxsize=4096)
def shape(sql: str) -> str:
    """``sql`` with strings, numbers and placeholders as ``?`` and every list as ``(...)``.

    Cached by the SQL text (bounded): an N+1 loop sends the same text each time, so the
    regular expressions run once per distinct statement, not once per query."""
    text = _STRING.sub("?", sql)
    text = _PLACEHOLDER.sub("?", text)
    text = _NUMBER.sub("?", text)
    text = _LIST.sub("(...)", text)
    text = _ROWS.sub("(...)", text)
    text = _SPACE.sub(" ", text).strip()
    if len(text) > MAX_SHAPE_LENGTH:
        text = text[: MAX_SHAPE_LENGTH - 1] + "…"
    return text


def is_read(shape_text: str) -> bool:
    """A plain read (``SELECT``, or ``WITH ... SELECT`` without a writing statement).

    Only reads count towards N+1: Django's bulk operations send one identical ``INSERT`` or
    ``UPDATE`` per batch from one call site, which is what they are for."""
    head = shape_text[:6].upper()
    if head == "SELECT":
        return True
    if head.startswith("WITH"):
        return _WRITE.search(shape_text) is None
    return False


def is_explainable(shape_text: str) -> bool:
    """A statement whose plan we may ask for: a read that takes no lock (never a write:
    ``EXPLAIN`` alone does not run it, but no option ever should come near one)."""
    return is_read(shape_text) and " FOR " not in shape_text.upper()
