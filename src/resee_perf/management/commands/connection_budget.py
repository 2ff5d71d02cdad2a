"""``manage.py connection_budget``: the connections this deployment needs, per server, against
what each server allows. Exit status 1 when a server is over budget, 2 when it cannot be
assessed (a server could not be asked, nothing to budget), so deploys can gate on it.

    manage.py connection_budget                       # RESEE_PERF['DEPLOYMENT'], servers asked
    manage.py connection_budget --web-workers 8 --threads 4 --celery-workers 2
    manage.py connection_budget --extra cron=2 --extra migrate=1 --offline --max-connections 100
    manage.py connection_budget --json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any, get_args

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from resee_perf import _render, _servers, pool
from resee_perf._deployment import BUDGET_FIELDS, CeleryPool, Deployment
from resee_perf.conf import conf

EXIT_OVER_BUDGET = 1
EXIT_UNKNOWN = 2
# The options that say how many processes connect; without one of them or the setting, there
# is nothing to budget.
_DEPLOYMENT_OPTIONS = frozenset({"web_workers", "celery_workers", "extra_clients"})


def _extra(value: str) -> tuple[str, int]:
    name, _, count = value.partition("=")
    if not name or not count.isdigit():
        raise argparse.ArgumentTypeError(
            f"{value!r} should be NAME=PROCESSES, for example cron=2 (one connection per "
            "database alias each)."
        )
    return name, int(count)


class Command(BaseCommand):
    help = (
        "Print the PostgreSQL connections this deployment needs per server, itemised, and "
        "compare them with each server's max_connections, reserved slots and current use. "
        "Exits with status 1 when a server is over budget, 2 when a server cannot be asked "
        "or RESEE_PERF['DEPLOYMENT'] and the command line say nothing to budget."
    )
    # The command diagnoses configurations: let it run (and explain) where checks would fail.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        numbers = parser.add_argument_group(
            "deployment", "Override RESEE_PERF['DEPLOYMENT'] (see docs/connections.md)."
        )
        numbers.add_argument("--web-workers", type=int, help="Web worker processes, all hosts.")
        numbers.add_argument(
            "--threads",
            type=int,
            dest="threads_per_worker",
            help="Threads per web worker (gunicorn --threads; concurrency limit under ASGI).",
        )
        server = numbers.add_mutually_exclusive_group()
        server.add_argument("--asgi", action="store_const", const=True, dest="asgi")
        server.add_argument("--wsgi", action="store_const", const=False, dest="asgi")
        numbers.add_argument("--celery-workers", type=int, help="`celery worker` instances.")
        numbers.add_argument("--celery-concurrency", type=int, help="celery --concurrency.")
        numbers.add_argument("--celery-pool", choices=get_args(CeleryPool))
        numbers.add_argument(
            "--extra",
            type=_extra,
            action="append",
            metavar="NAME=PROCESSES",
            help="Other Django processes (cron, management commands); repeatable.",
        )
        numbers.add_argument("--headroom", type=float, help="Fraction added per server (0.2).")
        capacity = parser.add_argument_group("capacity")
        capacity.add_argument(
            "--max-connections",
            type=int,
            help="max_connections of every server, when it cannot (or should not) be asked.",
        )
        capacity.add_argument("--reserved", type=int, help="Reserved slots with it (3).")
        capacity.add_argument(
            "--offline", action="store_true", help="Do not connect to the servers."
        )
        capacity.add_argument(
            "--timeout", type=int, default=3, help="Seconds to wait for each server (3)."
        )
        parser.add_argument("--json", action="store_true", help="Print JSON for machines.")
        parser.add_argument(
            "--strict",
            action="store_true",
            help=(
                f"Also exit with status {EXIT_UNKNOWN} when a server's capacity is unknown "
                "(--offline without --max-connections)."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        deployment = conf_deployment()
        overrides = self._overrides(options, deployment or Deployment())
        if deployment is None and not _DEPLOYMENT_OPTIONS & set(overrides):
            # With nothing to count, the budget is 0 and "fits" everywhere: a verdict about
            # nothing, which a deploy gate would take as a pass.
            raise CommandError(
                "Cannot assess: RESEE_PERF['DEPLOYMENT'] is not set and no --web-workers, "
                "--celery-workers or --extra was given, so the command does not know how many "
                "processes connect. Set RESEE_PERF['DEPLOYMENT'] (docs/connections.md) or pass "
                "the numbers on the command line.",
                returncode=EXIT_UNKNOWN,
            )
        deployment = deployment or Deployment()
        max_connections = (
            deployment.max_connections
            if options["max_connections"] is None
            else options["max_connections"]
        )
        reserved = deployment.reserved if options["reserved"] is None else options["reserved"]
        _check_capacity(max_connections, reserved)
        try:
            budget = pool.budget_from_settings(**overrides)
        except (ValueError, ImproperlyConfigured) as error:
            raise CommandError(str(error)) from error
        statuses = (
            {}
            if options["offline"]
            else _servers.inspect_servers(budget, timeout=options["timeout"])
        )
        try:
            verdicts = _servers.assess(
                budget, statuses=statuses, max_connections=max_connections, reserved=reserved
            )
        except ValueError as error:
            raise CommandError(str(error)) from error

        if options["json"]:
            self.stdout.write(self._json(budget, verdicts))
        else:
            self.stdout.write(str(budget))
            self.stdout.write("")
            self.stdout.write(_render.verdict_table(verdicts))
            for note in _capacity_notes(verdicts):
                self.stdout.write(f"note: {note}")

        over = [verdict for verdict in verdicts if verdict.fits is False]
        if over:
            raise CommandError(
                "Over budget: "
                + "; ".join(
                    f"{verdict.server} needs {verdict.needed}, can give {verdict.available}"
                    for verdict in over
                ),
                returncode=EXIT_OVER_BUDGET,
            )
        # A server that could not be asked (down, wrong database, unknown role) is a failure
        # whatever --strict says: the deployment would fail to connect to it too.
        # A configured max_connections does not excuse it: pass --offline to mean "don't ask".
        failed = [verdict for verdict in verdicts if verdict.error]
        if failed:
            raise CommandError(
                "Could not ask "
                + "; ".join(f"{verdict.server} ({verdict.error})" for verdict in failed)
                + ": fix the connection settings, or pass --offline --max-connections to "
                "assess without asking.",
                returncode=EXIT_UNKNOWN,
            )
        unknown = [verdict.server for verdict in verdicts if verdict.fits is None]
        if unknown and options["strict"]:
            raise CommandError(
                f"Capacity unknown for {', '.join(unknown)}: let the command reach the servers "
                "or pass --max-connections.",
                returncode=EXIT_UNKNOWN,
            )

    def _overrides(self, options: dict[str, Any], deployment: Deployment) -> dict[str, Any]:
        # The deployment's fields with an option of the same name (--extra merges instead).
        overrides = {
            name: options[name]
            for name in BUDGET_FIELDS
            if name != "extra_clients" and options.get(name) is not None
        }
        if options["extra"]:
            overrides["extra_clients"] = {**deployment.extra_clients, **dict(options["extra"])}
        return overrides

    def _json(
        self, budget: pool.ConnectionBudget, verdicts: tuple[_servers.ServerVerdict, ...]
    ) -> str:
        fits = [verdict.fits for verdict in verdicts]
        return json.dumps(
            {
                "budget": budget.as_dict(),
                "servers": [verdict.as_dict() for verdict in verdicts],
                "fits": False if False in fits else None if None in fits else True,
            },
            indent=2,
        )


def conf_deployment() -> Deployment | None:
    try:
        return conf.DEPLOYMENT
    except ImproperlyConfigured as error:
        raise CommandError(str(error)) from error


def _check_capacity(max_connections: int | Mapping[str, int] | None, reserved: int) -> None:
    """Refuse limits PostgreSQL itself refuses, rather than print a verdict about them."""
    if reserved < 0:
        raise CommandError(f"--reserved should be a non-negative integer, not {reserved}.")
    limits = (
        list(max_connections.values())
        if isinstance(max_connections, Mapping)
        else []
        if max_connections is None
        else [max_connections]
    )
    for limit in limits:
        if limit < 1:
            raise CommandError(
                f"--max-connections should be a positive integer, not {limit}: PostgreSQL "
                "needs max_connections of at least 1."
            )
        if reserved >= limit:
            # PostgreSQL refuses to start with superuser_reserved_connections +
            # reserved_connections >= max_connections.
            raise CommandError(
                f"--reserved ({reserved}) should be less than max_connections ({limit}): "
                "PostgreSQL refuses to start with every slot reserved."
            )


def _capacity_notes(verdicts: tuple[_servers.ServerVerdict, ...]) -> list[str]:
    notes = []
    for verdict in verdicts:
        status = verdict.status
        if status is not None and status.superuser:
            notes.append(
                f"{verdict.server}: this project connects as a superuser, which may also take "
                f"the {status.superuser_reserved_connections} reserved slots and leave none for "
                "an administrator during an incident. Use an ordinary role."
            )
        if status is not None and status.in_use_by_project:
            notes.append(
                f"{verdict.server}: {status.in_use_by_project} connections of this project are "
                "open now; they are part of the budget, not subtracted (during a rolling "
                "deploy old and new processes both hold theirs: budget for both)."
            )
    return notes
