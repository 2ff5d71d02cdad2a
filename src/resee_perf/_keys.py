"""Cache keys: pure functions from templates and argument values to key strings.

Two promises, both tested (tests/test_keys.py):

- **Injective templates.** Each field of a key template is rendered as ``{`` + an encoding of
  the value + ``}``, where the encoding never contains an unescaped ``}``. The literal parts of
  the template are fixed, so a key can be parsed back into its fields: two different argument
  tuples cannot share a key, whatever the template (``"{a}{b}"``, ``"{a}-{b}"``). ``None``
  renders as ``{~}``, which no string renders as (``"None"`` is ``{None}``). A value is
  identified by its text: ``7`` and ``"7"`` share a key on purpose (URL kwargs are ints, query
  parameters strings, and ``invalidate(user_id="7")`` must find the entry).
- **Separate families.** Every key the library writes is ``<KEY_PREFIX>:<family>:...`` with a
  one-letter family (:data:`ENTRY`, :data:`LOCK`, :data:`TAG`, :data:`WRITE_POSITION`,
  :data:`EPOCH`), and user parts only ever come after the family: no tag or key argument can
  produce another family's key. The cache's epoch and its run_id marker have a family of their
  own, which takes no user part at all.

Format specs and conversions (``{a:d}``, ``{a!r}``) are refused at decoration time: applied to a
value of another type than the author expected (a query string is a str) they raise in a view,
and a spec can map different values to one text (``{x:.0f}``).
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured

# The key families, right after KEY_PREFIX. One letter each; new families take a new letter.
ENTRY = "c"
LOCK = "l"
TAG = "t"
WRITE_POSITION = "w"
EPOCH = "e"

# A field's text goes into a key as is when it is short printable ASCII other than space and
# the characters the encoding reserves: '{' '}' (field bounds), '%' (escapes), '#' (a digest
# follows) and '~' (None). Reserved and other ASCII characters are %-escaped; a long or
# non-ASCII text is replaced by '#' and a digest. Keys stay valid for memcached.
_VERBATIM_FIELD = re.compile(r"[!-\"$&-z|]*")
_ESCAPED = re.compile(r"[^!-\"$&-z|]")
_MAX_FIELD = 64
_NONE = "~"
_VERBATIM_KEY = re.compile(r'[!"$-~]{1,160}')
_SAFE_PREFIX = re.compile(r'[!"$-~]{0,100}')
_MAX_BODY = 160
_MAX_TAG_LENGTH = 150


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def bounded(body: str) -> str:
    """A key body of at most ~200 characters: long ones keep a readable head and a digest of the
    whole (so two long bodies with the same head still differ)."""
    if len(body) <= _MAX_BODY:
        return body
    return f"{body[:100]}#{digest(body)}"


def encode_field(value: Any) -> str:
    """``{`` + an unambiguous encoding of ``value``'s text + ``}`` (see the module docstring)."""
    if value is None:
        return "{~}"
    text = str(value)
    if _VERBATIM_FIELD.fullmatch(text) and len(text) <= _MAX_FIELD:
        return f"{{{text}}}"
    if text.isascii() and len(text) <= _MAX_FIELD:
        escaped = _ESCAPED.sub(lambda match: f"%{ord(match.group()):02X}", text)
        if len(escaped) <= _MAX_FIELD:
            return f"{{{escaped}}}"
    return f"{{#{digest(text)}}}"


def safe_key(text: str) -> str:
    """The body for a key returned by a key *function*: verbatim when it is short printable
    ASCII without '#', else a readable head and '#' + a digest of the whole text (a verbatim key
    cannot contain '#', so it cannot pose as another key's digested form)."""
    if _VERBATIM_KEY.fullmatch(text) and "#" not in text:
        return text
    prefix = _SAFE_PREFIX.match(text.replace("#", "%23"))
    return f"{prefix.group() if prefix else ''}#{digest(text)}"


def family_key(prefix: str, family: str, rest: str) -> str:
    return f"{prefix}:{family}:{rest}"


def tag_part(tag: str) -> str:
    """A tag as it appears in its keys: verbatim if short, printable, without spaces and not
    starting with '#'; else '#' + a digest (which no verbatim tag can equal)."""
    if (
        len(tag) > _MAX_TAG_LENGTH
        or not tag.isprintable()
        or tag.startswith("#")
        or any(c.isspace() for c in tag)
    ):
        return "#" + digest(tag)
    return tag


def tag_key(prefix: str, tag: str) -> str:
    """The key (before the cache's own KEY_PREFIX/VERSION) of ``tag``'s generation."""
    return family_key(prefix, TAG, tag_part(tag))


def epoch_key(prefix: str) -> str:
    """The key of the cache's epoch, a generation every entry carries (resee_perf._store)."""
    return family_key(prefix, EPOCH, "epoch")


# Redis Cluster (resee_perf.cluster): an entry and its lock carry a hash tag, one of this many
# buckets, so that its scripts touch one slot; the bucket also has an epoch of its own in that
# slot, so that a hit without tags reads one slot. Few enough that bumping every bucket's
# epoch (a queue overflow) is one pipelined round per node; enough to spread entries evenly.
SLOT_BUCKETS = 1024


def slot_bucket(prefix: str, key: str) -> str:
    """The hash tag of an entry or lock key ``<prefix>:<family>:<rest>``, from ``rest`` (which
    the entry and its lock share): ``{`` + a bucket number + ``}``."""
    rest = key[len(prefix) + 3 :]
    bucket = int.from_bytes(
        hashlib.blake2b(rest.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    )
    return f"{{{bucket % SLOT_BUCKETS}}}"


def slot_tagged(prefix: str, key: str) -> str:
    """``key`` with its bucket's hash tag after the family, before any brace the body has."""
    head = len(prefix) + 3
    return key[:head] + slot_bucket(prefix, key) + key[head:]


def bucket_epoch_key(prefix: str, key: str) -> str:
    """On a cluster: the epoch of the bucket of entry ``key``, in the entry's slot."""
    return family_key(prefix, EPOCH, slot_bucket(prefix, key) + "epoch")


def bucket_epoch_keys(prefix: str) -> list[str]:
    """Every bucket's epoch: what a bump of the cache's epoch means on a cluster."""
    return [family_key(prefix, EPOCH, f"{{{bucket}}}epoch") for bucket in range(SLOT_BUCKETS)]


def is_epoch_key(prefix: str, key: str) -> bool:
    return key.startswith(family_key(prefix, EPOCH, "")) and key.endswith("epoch")


def run_id_key(prefix: str) -> str:
    """The key naming the Redis server (its run_id) that the epoch was last confirmed on."""
    return family_key(prefix, EPOCH, "run_id")


@dataclass(frozen=True)
class Field:
    """One ``{name.attr[item]}`` of a template."""

    root: str
    path: tuple[tuple[bool, int | str], ...]

    def value(self, namespace: dict[str, Any]) -> Any:
        value = namespace[self.root]
        for is_attribute, name in self.path:
            value = getattr(value, cast(str, name)) if is_attribute else value[name]
        return value


_FIELD_ROOT = re.compile(r"[^.\[]*")
_FIELD_STEP = re.compile(r"\.([^.\[]+)|\[([^\]]+)\]")


def _field_path(
    field_name: str, what: str, template: str
) -> tuple[str, tuple[tuple[bool, int | str], ...]]:
    """``"request.user.id"`` -> ``("request", ((True, "user"), (True, "id")))``, as str.format
    reads it (an all-digit index is an int)."""
    root_match = _FIELD_ROOT.match(field_name)
    root = root_match.group() if root_match else ""
    steps: list[tuple[bool, int | str]] = []
    position = len(root)
    while position < len(field_name):
        step = _FIELD_STEP.match(field_name, position)
        if step is None:
            raise ImproperlyConfigured(f"{what} {template!r}: cannot read field {field_name!r}.")
        attribute, item = step.groups()
        if attribute is not None:
            steps.append((True, attribute))
        else:
            steps.append((False, int(item) if item.isdigit() else item))
        position = step.end()
    return root, tuple(steps)


class Template:
    """A ``str.format`` template over argument names, parsed once at decoration."""

    def __init__(self, template: str, what: str) -> None:
        self.source = template
        self.parts: list[str | Field] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as error:
            raise ImproperlyConfigured(
                f"{what} {template!r} is not a valid template: {error}."
            ) from error
        for literal, field_name, spec, conversion in parsed:
            if literal:
                self.parts.append(literal)
            if field_name is None:
                continue
            root, path = _field_path(field_name, what, template)
            if not root or root[0].isdigit():
                raise ImproperlyConfigured(
                    f"{what} {template!r} has a positional field {{{field_name}}}: name the "
                    "argument instead, as in 'user:{user_id}'."
                )
            if spec or conversion:
                suffix = (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
                raise ImproperlyConfigured(
                    f"{what} {template!r} formats {{{field_name}{suffix}}}: templates take no "
                    "format specs or conversions (they raise on a value of another type, such "
                    "as a query string, and can give different values one key). Write "
                    f"{{{field_name}}}, or pass a callable that formats the value."
                )
            self.parts.append(Field(root, path))
        self.names = frozenset(part.root for part in self.parts if isinstance(part, Field))

    def render_key(self, namespace: dict[str, Any]) -> str:
        """The key body: literals as written, each field encoded by :func:`encode_field`."""
        return "".join(
            part if isinstance(part, str) else encode_field(part.value(namespace))
            for part in self.parts
        )

    def render_tag(self, namespace: dict[str, Any]) -> str:
        # Tags keep their arguments verbatim, to match the strings passed to invalidate_tags()
        # (tag_part() makes the cache key safe), so str.format itself renders them, in C.
        return self.source.format_map(namespace)
