"""``RESEE_PERF['DEPLOYMENT']``: the numbers the connection budget cannot read from code.

Kept apart from the budget arithmetic, so that ``conf.DEPLOYMENT`` can parse the setting
without importing it; validated with the leaf ``_validators``, as ``conf`` is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from django.core.exceptions import ImproperlyConfigured

from resee_perf._validators import (
    boolean,
    non_negative_int,
    non_negative_number,
    optional,
    positive_int,
    str_list,
)

CeleryPool = Literal["prefork", "threads", "gevent", "eventlet", "solo"]

# PostgreSQL's default for superuser_reserved_connections.
DEFAULT_RESERVED = 3


@dataclass(frozen=True)
class _Field:
    """How to validate one deployment number (the defaults live on :class:`Deployment`)."""

    valid: Callable[[Any], bool]
    expected: str
    hint: str


count_valid = non_negative_int
positive_valid = positive_int
_alias_list = optional(str_list)


def capacity_valid(value: Any) -> bool:
    if value is None or positive_int(value):
        return True
    return isinstance(value, Mapping) and all(
        isinstance(key, str) and positive_int(item) for key, item in value.items()
    )


def _headroom(value: Any) -> bool:
    return non_negative_number(value) and value <= 10


def _extra_clients(value: Any) -> bool:
    if not isinstance(value, Mapping):
        return False
    return all(
        isinstance(name, str) and _extra_client_problem(spec) is None
        for name, spec in value.items()
    )


def _extra_client_problem(spec: Any) -> str | None:
    if non_negative_int(spec):
        return None
    if not isinstance(spec, Mapping):
        return "should be a number of processes or a dict"
    unknown = set(spec) - {"processes", "threads", "aliases", "django"}
    if unknown:
        return f"has unknown keys {sorted(unknown)}"
    if not non_negative_int(spec.get("processes", 1)):
        return "['processes'] should be a non-negative integer"
    if not positive_int(spec.get("threads", 1)):
        return "['threads'] should be a positive integer"
    if not _alias_list(spec.get("aliases")):
        return "['aliases'] should be a list of database aliases"
    if not boolean(spec.get("django", True)):
        return "['django'] should be True or False"
    return None


def _celery_pool(value: Any) -> bool:
    return value in get_args(CeleryPool)


_ALIASES = "a list of database aliases or None"

FIELDS: dict[str, _Field] = {
    "web_workers": _Field(
        count_valid,
        "a non-negative integer",
        "The web server's worker processes, summed over hosts.",
    ),
    "threads_per_worker": _Field(
        positive_valid,
        "a positive integer",
        "gunicorn --threads (1 for sync workers; --worker-connections for gevent workers; "
        "the concurrency limit per process under ASGI).",
    ),
    "asgi": _Field(
        optional(boolean),
        "True, False or None",
        "Whether Django runs under ASGI; None decides from the settings (ASGI_APPLICATION "
        "set and WSGI_APPLICATION not).",
    ),
    "celery_workers": _Field(
        count_valid, "a non-negative integer", "`celery worker` instances, summed over hosts."
    ),
    "celery_concurrency": _Field(
        positive_valid, "a positive integer", "celery worker --concurrency."
    ),
    "celery_pool": _Field(
        _celery_pool,
        f"one of {', '.join(repr(name) for name in get_args(CeleryPool))}",
        "celery worker --pool.",
    ),
    "extra_clients": _Field(
        _extra_clients,
        "a dict of name to a number of processes, or to a dict with 'processes', "
        "'threads', 'aliases' and 'django'",
        "Other clients: cron jobs, management commands, exporters, admins with psql.",
    ),
    "web_aliases": _Field(_alias_list, _ALIASES, "The aliases web threads touch (all)."),
    "celery_aliases": _Field(_alias_list, _ALIASES, "The aliases Celery tasks touch (all)."),
    "headroom": _Field(
        _headroom, "a number between 0 and 10", "Fraction added to each server's subtotal."
    ),
    "transaction_pooled": _Field(
        str_list,
        "a list of database aliases",
        "Aliases that reach PostgreSQL through a pooler (PgBouncer) in transaction mode.",
    ),
    "max_connections": _Field(
        capacity_valid,
        "a positive integer, a dict of alias or server to a positive integer, or None",
        "Each server's max_connections, for `check --deploy` and when a server cannot be asked.",
    ),
    "reserved": _Field(
        count_valid,
        "a non-negative integer",
        "Slots ordinary roles cannot use (superuser_reserved_connections plus, on "
        "PostgreSQL 16+, reserved_connections), used with max_connections.",
    ),
    "query_servers": _Field(
        boolean,
        "True or False",
        "Let `check --deploy` ask each server for its limits (a connection per server, with "
        "a short timeout).",
    ),
}


# The keys that describe the server's capacity rather than the processes: not the budget's.
CAPACITY_FIELDS = ("max_connections", "reserved", "query_servers")
# The keys the budget counts, in the order its errors report them.
BUDGET_FIELDS = tuple(name for name in FIELDS if name not in CAPACITY_FIELDS)


@dataclass(frozen=True)
class Deployment:
    """``RESEE_PERF['DEPLOYMENT']``, validated: the numbers the budget cannot read from code."""

    web_workers: int = 0
    threads_per_worker: int = 1
    asgi: bool | None = None
    celery_workers: int = 0
    celery_concurrency: int = 1
    celery_pool: CeleryPool = "prefork"
    extra_clients: Mapping[str, Any] = field(default_factory=dict)
    web_aliases: tuple[str, ...] | None = None
    celery_aliases: tuple[str, ...] | None = None
    headroom: float = 0.2
    transaction_pooled: tuple[str, ...] = ()
    max_connections: int | Mapping[str, int] | None = None
    reserved: int = DEFAULT_RESERVED
    query_servers: bool = False

    @classmethod
    def from_setting(cls, value: Mapping[str, Any]) -> Deployment:
        """Parse the setting; raise ImproperlyConfigured naming the first bad key."""
        problems = deployment_problems(value)
        if problems:
            raise ImproperlyConfigured(problems[0])
        values = dict(value)
        for name in ("web_aliases", "celery_aliases", "transaction_pooled"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)

    def named_aliases(self) -> list[tuple[str, str]]:
        """(key, alias) for every database alias this deployment names."""
        return named_aliases(dataclasses.asdict(self))

    def budget_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``connection_budget`` this deployment sets."""
        return {name: getattr(self, name) for name in BUDGET_FIELDS}


def named_aliases(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, alias) for every database alias named in deployment values (already valid)."""
    named = [
        (key, alias)
        for key in ("web_aliases", "celery_aliases", "transaction_pooled")
        for alias in values.get(key) or ()
    ]
    for spec in (values.get("extra_clients") or {}).values():
        if isinstance(spec, Mapping):
            named += [("extra_clients", alias) for alias in spec.get("aliases") or ()]
    return named


def deployment_problems(value: Any) -> list[str]:
    """Every problem with a ``RESEE_PERF['DEPLOYMENT']`` value, as full sentences."""
    where = "RESEE_PERF['DEPLOYMENT']"
    if not isinstance(value, Mapping):
        return [f"{where} should be a dict, not {type(value).__name__}."]
    problems = []
    for name in value:
        if name not in FIELDS:
            problems.append(
                f"{where} has an unknown key {name!r}; known keys: {', '.join(FIELDS)}."
            )
    for name, spec in FIELDS.items():
        if name in value and not spec.valid(value[name]):
            detail = ""
            if name == "extra_clients" and isinstance(value[name], Mapping):
                detail = "".join(
                    f" Client {client!r} {problem}."
                    for client, problem in (
                        (client, _extra_client_problem(item))
                        for client, item in value[name].items()
                    )
                    if problem
                )
            problems.append(
                f"{where}[{name!r}] should be {spec.expected}, not {value[name]!r}.{detail}"
            )
    return problems
