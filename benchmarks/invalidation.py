"""What tag invalidation costs: a write's overhead, a transaction of many writes, and dropping
the entries under one tag as their number grows, against two common alternatives (SCAN + DEL
of a key pattern, and a Redis set of keys per tag).

    .venv/bin/python benchmarks/invalidation.py

Runs against the PostgreSQL of ``DATABASE_URL`` (a throwaway database, created and dropped)
and a private redis-server it starts on a spare port (the tests' ``PrivateRedis``), so that
nobody else's traffic lands in the figures. Prints Markdown tables for docs/benchmarks.md.
Not a test: nothing is asserted.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]


def micros(samples: list[float]) -> str:
    ordered = sorted(samples)
    median = statistics.median(ordered) * 1e6
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6
    return f"{median:,.0f} / {p99:,.0f}"


def timed(action: Callable[[], object], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    os.environ.setdefault("RESEE_TEST_DB_SUFFIX", "bench_inval")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test import override_settings

    from tests.test_cache_redis_server import PrivateRedis, redis_cache

    server = PrivateRedis()
    server.start()
    old_name = connection.settings_dict["NAME"]
    try:
        connection.creation.create_test_db(verbosity=0, autoclobber=True)
        location = f"redis://127.0.0.1:{server.port}/0"
        with override_settings(CACHES={**settings.CACHES, "default": redis_cache(location)}):
            run()
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        server.stop()


def run() -> None:
    from django.contrib.auth.models import User
    from django.core.cache import caches
    from django.db import transaction

    from content.models import Category, Content
    from resee_perf import invalidate_on, invalidate_tags, invalidation

    cache = caches["default"]
    client = cache.client.get_client(write=True)  # type: ignore[attr-defined]
    author = User.objects.create_user(username="bench")
    go, rust = (
        Category.objects.create(name="Go", slug="go"),
        Category.objects.create(name="Rust", slug="rust"),
    )
    content = Content.objects.create(title="t", body="b", author=author, category=go)
    invalidate_tags(f"user:{author.pk}:contents")  # loads the script
    registered = dict(invalidation._registry.pop(Content, {}))

    def save_title() -> None:
        with transaction.atomic():
            content.title = "t" if content.title != "t" else "u"
            content.save(update_fields=["title"])

    def move() -> None:
        with transaction.atomic():
            content.category = rust if content.category_id == go.pk else go
            content.save()

    invalidation._registry[Content] = dict(registered)
    invalidate_on(
        Content,
        tags=lambda c: [f"category:{c.category_id}"],
        track=["category"],
        dispatch_uid="bench",
    )
    tracked = dict(invalidation._registry[Content])
    variants: list[tuple[str, dict[str, Any], Callable[[], None]]] = [
        ("title edit, no invalidation", {}, save_title),
        ("title edit, `invalidate_on` (1 tag, after commit)", registered, save_title),
        ("category move, no invalidation", {}, move),
        (
            "category move, `invalidate_on` + `track=['category']` (old-row SELECT FOR NO KEY "
            "UPDATE, 3 tags)",
            tracked,
            move,
        ),
    ]
    timings: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    rounds, per_round = 10, 200
    # Round-robin, so that the load of the machine weighs on every variant alike.
    for _ in range(rounds):
        for label, registrations, action in variants:
            invalidation._registry[Content] = registrations
            timings[label] += timed(action, per_round)
    invalidation._registry[Content] = registered
    print("## A write and its invalidation (µs, median / p99)\n")
    print(
        f"{rounds * per_round} `save()` calls per row, each in its own `transaction.atomic()`, "
        f"in {rounds} interleaved rounds.\n"
    )
    print("| | µs per write |")
    print("| --- | --- |")
    for label, values in timings.items():
        print(f"| {label} | {micros(values)} |")

    print("\n## 100 saves in one transaction (ms, median of 50)\n")
    print("| | ms per transaction | Redis round trips after commit |")
    print("| --- | --- | --- |")

    def hundred() -> None:
        with transaction.atomic():
            for i in range(100):
                content.title = f"t{i}"
                content.save(update_fields=["title"])

    shipped = invalidation._joinable
    for label, joinable in (
        ("coalesced (as shipped)", shipped),
        ("one callback per save (coalescing disabled)", lambda connection: None),
    ):
        invalidation._joinable = joinable
        samples = timed(hundred, 50)
        client.config_resetstat()
        hundred()
        calls = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        print(f"| {label} | {statistics.median(samples) * 1e3:.1f} | {calls} |")
    invalidation._joinable = shipped

    print("\n## Dropping every entry under one tag (µs, median / p99)\n")
    print(
        "| entries under the tag | resee-perf `invalidate_tags` | SCAN + DEL "
        "(`delete_pattern`) | set of keys per tag (SMEMBERS + DEL) |"
    )
    print("| --- | --- | --- | --- |")
    blob = b"x" * 200
    for entries in (10, 1_000, 100_000):
        runs = 200 if entries <= 1_000 else 5
        prefix = f"bench:{entries}"

        def populate(prefix: str = prefix, entries: int = entries) -> None:
            for start in range(0, entries, 10_000):
                with client.pipeline(transaction=False) as pipe:
                    for n in range(start, min(start + 10_000, entries)):
                        key = cache.make_key(f"{prefix}:{n}")
                        pipe.set(key, blob, ex=3600)
                        pipe.sadd(f"{prefix}:keys", key)
                    pipe.execute()

        populate()
        # The entries are not read: a generation bump does not depend on them (see
        # tests/test_invalidation_race.py for the same with real cache_aside entries).
        ours = timed(partial(invalidate_tags, f"tag:{prefix}"), 200)
        scan: list[float] = []
        tag_set: list[float] = []
        for _ in range(runs):
            populate()
            scan += timed(partial(cache.delete_pattern, f"{prefix}:*"), 1)  # type: ignore[attr-defined]
            populate()
            tag_set += timed(partial(drop_tag_set, client, f"{prefix}:keys"), 1)
        print(f"| {entries:,} | {micros(ours)} | {micros(scan)} | {micros(tag_set)} |")
        client.flushdb()


def drop_tag_set(client: Any, members: str) -> None:
    keys = list(client.smembers(members))
    with client.pipeline(transaction=False) as pipe:
        for start in range(0, len(keys), 10_000):
            pipe.delete(*keys[start : start + 10_000])
        pipe.delete(members)
        pipe.execute()


if __name__ == "__main__":
    main()
