"""The kinds of process that hold connections (web workers, Celery, extra clients), read
from a :class:`~resee_perf._deployment.Deployment`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from resee_perf._deployment import CeleryPool, Deployment


@dataclass(frozen=True)
class Client:
    """One kind of process that talks to the databases: web workers, Celery, a cron job."""

    name: str
    processes: int
    concurrency: int
    """Threads (or greenlets, or concurrent ASGI requests) per process: each has its own
    Django connections."""
    aliases: tuple[str, ...] | None
    django: bool = True
    """False for clients that are not Django processes (an exporter, psql): no pool."""
    processes_text: str = ""
    unit: str = "thread"


def clients_of(deployment: Deployment) -> list[Client]:
    """The deployment's processes that hold connections (``asgi`` None counts as WSGI)."""
    web = Client(
        "web",
        deployment.web_workers,
        deployment.threads_per_worker,
        _aliases(deployment.web_aliases),
        processes_text=plural(deployment.web_workers, "worker"),
        unit="concurrent request" if deployment.asgi else "thread",
    )
    celery = _celery(
        deployment.celery_workers,
        deployment.celery_concurrency,
        deployment.celery_pool,
        deployment.celery_aliases,
    )
    extra = (_extra(name, spec) for name, spec in deployment.extra_clients.items())
    return [client for client in (web, celery, *extra) if client.processes > 0]


def _celery(
    workers: int, concurrency: int, pool: CeleryPool, aliases: Sequence[str] | None
) -> Client:
    if pool == "prefork":
        # Each prefork child is a process of its own, with its own connections (or pool).
        text = plural(workers * concurrency, "process")
        if concurrency > 1:
            text += f" ({workers} x --concurrency {concurrency})"
        return Client("celery", workers * concurrency, 1, _aliases(aliases), processes_text=text)
    threads = 1 if pool == "solo" else concurrency
    return Client(
        "celery",
        workers,
        threads,
        _aliases(aliases),
        processes_text=f"{plural(workers, 'worker')} (--pool {pool})",
        unit="greenlet" if pool in {"gevent", "eventlet"} else "thread",
    )


def _extra(name: str, spec: int | Mapping[str, Any]) -> Client:
    if isinstance(spec, int):
        spec = {"processes": spec}
    processes = spec.get("processes", 1)
    return Client(
        name,
        processes,
        spec.get("threads", 1),
        _aliases(spec.get("aliases")),
        django=spec.get("django", True),
        processes_text=plural(processes, "process"),
    )


def plural(count: int, noun: str) -> str:
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun}es" if noun.endswith("s") else f"{count} {noun}s"


def _aliases(value: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)
