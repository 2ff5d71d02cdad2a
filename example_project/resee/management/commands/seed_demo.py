"""``manage.py seed_demo``: a realistic, deterministic Resee data set, fast.

Every demo user (``user0001``, ``user0002``...) has the password ``demo``.
"""

from __future__ import annotations

import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from resee import seeding


class Command(BaseCommand):
    help = (
        "Fill the database with a deterministic demo data set: users user0001... (password "
        f"{seeding.DEMO_PASSWORD!r}), categories, contents, review schedules and a review "
        "history over the last 90 days. Uses COPY on PostgreSQL."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        defaults = seeding.Sizes()
        parser.add_argument("--seed", type=int, default=42, help="Random seed (default 42).")
        parser.add_argument(
            "--users", type=int, default=defaults.users, help=f"Default {defaults.users}."
        )
        parser.add_argument(
            "--contents", type=int, default=defaults.contents, help=f"Default {defaults.contents}."
        )
        parser.add_argument(
            "--history",
            type=int,
            default=defaults.history,
            help=f"Reviews in the history. Default {defaults.history}.",
        )
        parser.add_argument(
            "--categories",
            type=int,
            default=defaults.categories,
            help=f"Default {defaults.categories}.",
        )
        parser.add_argument(
            "--flush",
            action="store_true",
            help="First delete every category, content, schedule and review and the demo users.",
        )
        parser.add_argument(
            "--database", default=DEFAULT_DB_ALIAS, help="Database alias (default 'default')."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using: str = options["database"]
        sizes = seeding.Sizes(
            users=options["users"],
            categories=options["categories"],
            contents=options["contents"],
            history=options["history"],
        )
        started = time.perf_counter()
        try:
            sizes.validate()
            if options["flush"]:
                seeding.flush(using)
            counts = seeding.seed(sizes, seed=options["seed"], using=using)
        except (ValueError, seeding.DemoDataExists) as error:
            raise CommandError(str(error)) from error
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"Seeded {counts.users} users, {counts.categories} categories, "
            f"{counts.contents} contents, {counts.schedules} schedules and {counts.reviews} "
            f"reviews on {connections[using].vendor} (seed {options['seed']}) "
            f"in {elapsed:.1f} s."
        )
