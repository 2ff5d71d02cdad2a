"""Tag invalidation against the real PostgreSQL and Redis: generations, after-commit semantics
(commit, rollback, savepoints, the database of the write), the signal receivers, the explicit
API for writes without signals, and what happens when the cache is down.

The concurrency properties (no stale-set race, O(1) cost) are in test_invalidation_race.py.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, User
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, connections, transaction
from django.db.models import CASCADE, ForeignKey, ManyToManyField, Model
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from prometheus_client import REGISTRY

from content.models import Category, Content
from resee_perf import invalidate_objects, invalidate_on, invalidate_tags, testing
from resee_perf._tag_invalidation import bump_generations, read_generations, tag_key
from resee_perf.checks import check_invalidation_caches, check_invalidation_caches_deploy
from resee_perf.invalidation import NotRegistered

transactional = pytest.mark.django_db(transaction=True, databases=["default", "other"])


@pytest.fixture(autouse=True)
def _clean_cache() -> Iterator[None]:
    # Our own Redis database (REDIS_URL): flushing it touches nobody else's keys.
    caches["default"].clear()
    yield
    caches["default"].clear()


@pytest.fixture(autouse=True)
def _restore_registry() -> Iterator[None]:
    """Registrations made by a test do not outlive it (the example project's stay)."""
    with testing.isolated_registrations():
        yield


def generation(tag: str, cache: str = "default") -> int | None:
    value = caches[cache].get(tag_key(tag))
    assert value is None or isinstance(value, int)
    return value


def start(*tags: str, cache: str = "default") -> dict[str, int]:
    """Create the generations of ``tags``, as a cache miss does, and return them."""
    return read_generations(caches[cache], list(tags))


def bumped(before: dict[str, int], cache: str = "default") -> set[str]:
    return {tag for tag, value in before.items() if generation(tag, cache) != value}


@pytest.fixture
def author(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user(username="author")


@pytest.fixture
def categories() -> tuple[Category, Category, Category]:
    return (
        Category.objects.create(name="Go", slug="go"),
        Category.objects.create(name="Rust", slug="rust"),
        Category.objects.create(name="Zig", slug="zig"),
    )


def by_category(content: Content) -> list[str]:
    return [f"category:{content.category_id}"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- generations ------------------------------------------------------------------------------


def test_a_new_generation_is_random_and_read_back_by_every_reader() -> None:
    first = start("g:a", "g:b")
    assert first == start("g:a", "g:b")
    # Random 62-bit values, not 0 or 1: a recreated key cannot repeat an evicted generation.
    assert all(value > 2**32 for value in first.values())
    assert first["g:a"] != first["g:b"]


@pytest.mark.single_redis  # django-redis's client
def test_generation_keys_expire_after_tag_timeout() -> None:
    client = caches["default"].client.get_client(write=True)  # type: ignore[attr-defined]
    key = caches["default"].make_key(tag_key("g:ttl"))
    start("g:ttl")
    assert 7 * 24 * 3600 - 5 < client.ttl(key) <= 7 * 24 * 3600
    with override_settings(RESEE_PERF={"TAG_TIMEOUT": None}):
        start("g:forever")
        bump_generations(caches["default"], ["g:new"])
    assert client.ttl(caches["default"].make_key(tag_key("g:forever"))) == -1
    assert client.ttl(caches["default"].make_key(tag_key("g:new"))) == -1


@pytest.mark.single_redis  # django-redis's client
def test_bump_increments_and_keeps_the_ttl() -> None:
    client = caches["default"].client.get_client(write=True)  # type: ignore[attr-defined]
    before = start("g:a")["g:a"]
    bump_generations(caches["default"], ["g:a", "g:a"])
    assert generation("g:a") == before + 1
    assert client.ttl(caches["default"].make_key(tag_key("g:a"))) > 0


def test_bump_of_a_missing_or_corrupt_key_sets_a_new_random_generation() -> None:
    caches["default"].set(tag_key("g:corrupt"), "not a number", timeout=None)
    bump_generations(caches["default"], ["g:missing", "g:corrupt"])
    missing, corrupt = generation("g:missing"), generation("g:corrupt")
    assert missing is not None
    assert missing > 2**32
    assert corrupt is not None
    assert corrupt > 2**32


def test_concurrent_first_readers_agree_on_one_generation() -> None:
    results: list[int] = []
    barrier = threading.Barrier(8)

    def first_read() -> None:
        barrier.wait()
        results.append(read_generations(caches["default"], ["g:race"])["g:race"])

    threads = [threading.Thread(target=first_read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert set(results) == {generation("g:race")}


def test_long_and_odd_tags_get_bounded_keys() -> None:
    odd = ["a tag with spaces", "x" * 500, "tab\there", "ünïcode"]
    keys = [tag_key(tag) for tag in odd]
    assert all(len(key) < 60 for key in keys[:3])
    assert keys[3] == "rp:t:ünïcode"
    assert len(set(keys)) == 4
    before = start(*odd)
    bump_generations(caches["default"], odd)
    assert bumped(before) == set(odd)


@pytest.mark.parametrize(
    "backend",
    [
        "django.core.cache.backends.locmem.LocMemCache",
        # Django's own client on one server: not a cluster client.
        pytest.param("django.core.cache.backends.redis.RedisCache", marks=pytest.mark.single_redis),
    ],
)
def test_other_backends(backend: str, settings: Any) -> None:
    # Django's own RedisCache has no Sentinel or Cluster client: the suite's plain Redis.
    location = settings.REDIS_URL if "redis" in backend else "inval"
    # django-redis on the same server, whatever the topology of "default".
    plain = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": settings.REDIS_URL}
    with override_settings(
        CACHES={
            **settings.CACHES,
            "other": {"BACKEND": backend, "LOCATION": location},
            "plain": plain,
        }
    ):
        cache = caches["other"]
        cache.delete_many([tag_key("o:a"), tag_key("o:b")])
        before = read_generations(cache, ["o:a"])
        bump_generations(cache, ["o:a", "o:b"])
        assert cache.get(tag_key("o:a")) == before["o:a"] + 1
        assert isinstance(cache.get(tag_key("o:b")), int)
        if "redis" in backend:
            # The same keys as django-redis's: both store integers as plain Redis integers.
            assert generation("o:a", cache="plain") == before["o:a"] + 1
        cache.delete_many([tag_key("o:a"), tag_key("o:b")])


# --- invalidate_tags: when it runs ------------------------------------------------------------


@transactional
def test_outside_a_transaction_it_runs_at_once() -> None:
    before = start("t:a", "t:b")
    invalidate_tags("t:a")
    assert bumped(before) == {"t:a"}


@transactional
def test_inside_a_transaction_it_runs_after_commit() -> None:
    before = start("t:a")
    with transaction.atomic():
        invalidate_tags("t:a")
        assert bumped(before) == set()
    assert bumped(before) == {"t:a"}


@transactional
def test_rollback_never_invalidates(author: User, categories: tuple[Category, ...]) -> None:
    invalidate_on(Content, tags=by_category)
    content = Content.objects.create(title="t", body="b", author=author, category=categories[0])
    before = start(f"category:{categories[0].pk}", "t:a")

    def write_then_fail() -> None:
        with transaction.atomic():
            content.title = "changed"
            content.save()
            invalidate_tags("t:a")
            raise RuntimeError("the request failed")

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert bumped(before) == set()
    content.refresh_from_db()
    assert content.title == "t"


@transactional
def test_savepoint_rollback_drops_only_its_own_invalidations() -> None:
    before = start("t:outer", "t:inner", "t:after")
    with transaction.atomic():
        invalidate_tags("t:outer")
        try:
            with transaction.atomic():
                invalidate_tags("t:inner")
                raise RuntimeError
        except RuntimeError:
            pass
        invalidate_tags("t:after")
    assert bumped(before) == {"t:outer", "t:after"}


@transactional
def test_a_committed_savepoint_waits_for_the_outer_commit() -> None:
    before = start("t:inner")
    with transaction.atomic():
        with transaction.atomic():
            invalidate_tags("t:inner")
        assert bumped(before) == set()
    assert bumped(before) == {"t:inner"}


@transactional
def test_a_transaction_costs_one_callback_and_one_bump_per_tag() -> None:
    before = start("t:a", "t:b")
    calls: list[str] = []
    with transaction.atomic():
        for _ in range(100):
            invalidate_tags("t:a", "t:b")
        assert len(connection.run_on_commit) == 1
        # Someone else's callback in between keeps its place in the order.
        transaction.on_commit(lambda: calls.append(f"{generation('t:a')}"))
        invalidate_tags("t:a")
        assert len(connection.run_on_commit) == 3
    # The first callback bumped once (not 100 times) before the user's callback ran.
    assert calls == [str(before["t:a"] + 1)]
    assert generation("t:a") == before["t:a"] + 2
    assert generation("t:b") == before["t:b"] + 1


@transactional
def test_the_database_of_the_write_decides() -> None:
    before = start("t:a")
    with transaction.atomic(using="other"):
        invalidate_tags("t:a")  # using="default", which is not in a transaction: at once
        assert bumped(before) == {"t:a"}
    before = start("t:a")
    with transaction.atomic(using="default"), transaction.atomic(using="other"):
        invalidate_tags("t:a", using="other")
        assert bumped(before) == set()
    assert bumped(before) == {"t:a"}


@transactional
def test_save_on_another_database_follows_that_database(author: User) -> None:
    invalidate_on(Category, tags=lambda c: [f"category:{c.slug}"])
    before = start("category:go")
    with transaction.atomic(using="other"):
        Category(name="Go", slug="go").save(using="other")
        assert bumped(before) == set()
        with transaction.atomic(using="default"):
            pass
        assert bumped(before) == set()
    assert bumped(before) == {"category:go"}


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(TypeError, match=r"unpack a list with invalidate_tags\(\*tags\)"):
        invalidate_tags(["t:a", "t:b"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        invalidate_tags("")
    with pytest.raises(ImproperlyConfigured, match=r"'nope' is not in settings\.CACHES"):
        invalidate_tags("t:a", cache="nope")
    with pytest.raises(ImproperlyConfigured, match="no field 'categry'"):
        invalidate_on(Content, tags=by_category, track=["categry"])
    with pytest.raises(TypeError, match="list of field names"):
        invalidate_on(Content, tags=by_category, track="category")


# --- the cache is down ------------------------------------------------------------------------


@pytest.fixture
def dead_cache(settings: Any) -> Iterator[str]:
    dead = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
    }
    with override_settings(CACHES={**settings.CACHES, "dead": dead}):
        yield "dead"


def errors_counted(cache: str) -> float:
    labels = {"cache": cache, "result": "error"}
    return REGISTRY.get_sample_value("resee_perf_invalidations_total", labels) or 0.0


@transactional
def test_redis_down_the_write_commits_and_the_failure_is_logged_and_counted(
    dead_cache: str, author: User, categories: tuple[Category, ...], caplog: Any
) -> None:
    invalidate_on(Content, tags=by_category, cache=dead_cache)
    counted = errors_counted(dead_cache)
    with caplog.at_level(logging.ERROR, logger="resee_perf.invalidation"):
        with transaction.atomic():
            content = Content.objects.create(
                title="t", body="b", author=author, category=categories[0]
            )
        invalidate_tags("t:a", "t:b", cache=dead_cache)
    assert Content.objects.filter(pk=content.pk).exists()
    assert errors_counted(dead_cache) == counted + 3
    [first, second] = [
        r
        for r in caplog.records
        if r.name == "resee_perf.invalidation" and r.levelno >= logging.ERROR
    ]
    assert f"category:{categories[0].pk}" in first.getMessage()
    assert "'dead'" in first.getMessage()
    assert first.exc_info is not None
    assert "t:a, t:b" in second.getMessage()


@transactional
def test_django_redis_ignore_exceptions_does_not_hide_a_failed_invalidation(
    settings: Any,
) -> None:
    ignoring = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "IGNORE_EXCEPTIONS": True},
    }
    with override_settings(CACHES={**settings.CACHES, "ignoring": ignoring}):
        counted = errors_counted("ignoring")
        invalidate_tags("t:a", cache="ignoring")
        assert errors_counted("ignoring") == counted + 1


# --- invalidate_on ----------------------------------------------------------------------------


@transactional
def test_create_update_delete_and_queryset_delete_invalidate(
    author: User, categories: tuple[Category, ...]
) -> None:
    go, rust, _ = categories
    invalidate_on(Content, tags=by_category)
    tag = f"category:{go.pk}"

    before = start(tag)
    content = Content.objects.create(title="t", body="b", author=author, category=go)
    assert bumped(before) == {tag}

    before = start(tag)
    content.title = "new title"
    content.save()
    assert bumped(before) == {tag}

    before = start(tag)
    content.delete()
    assert bumped(before) == {tag}

    Content.objects.create(title="t", body="b", author=author, category=go)
    before = start(tag, f"category:{rust.pk}")
    Content.objects.filter(category=go).delete()
    assert bumped(before) == {tag}


@transactional
def test_a_cascade_delete_invalidates_the_deleted_rows(
    author: User, categories: tuple[Category, ...]
) -> None:
    invalidate_on(Content, tags=lambda c: [f"author:{c.author_id}"])
    Content.objects.create(title="t", body="b", author=author, category=categories[0])
    tag = f"author:{author.pk}"
    before = start(tag)
    author.delete()
    assert bumped(before) == {tag}


@transactional
def test_track_invalidates_the_old_and_the_new_tags(
    author: User, categories: tuple[Category, ...]
) -> None:
    go, rust, zig = categories
    seen: list[str] = []

    @invalidate_on(Content, track=["category"])
    def content_tags(content: Content) -> list[str]:
        # The old copy resolves its relation to the old row, not a cached new one.
        seen.append(content.category.name)
        return [f"category:{content.category_id}"]

    content = Content.objects.create(title="t", body="b", author=author, category=go)
    content.category = rust
    before = start(f"category:{go.pk}", f"category:{rust.pk}", f"category:{zig.pk}")
    seen.clear()
    with transaction.atomic():
        content.save()
    assert bumped(before) == {f"category:{go.pk}", f"category:{rust.pk}"}
    assert sorted(seen) == ["Go", "Rust"]
    assert content.category.name == "Rust"


@transactional
def test_without_track_only_the_new_tags_are_invalidated(
    author: User, categories: tuple[Category, ...]
) -> None:
    go, rust, _ = categories
    invalidate_on(Content, tags=by_category)
    content = Content.objects.create(title="t", body="b", author=author, category=go)
    content.category = rust
    before = start(f"category:{go.pk}", f"category:{rust.pk}")
    content.save()
    assert bumped(before) == {f"category:{rust.pk}"}


@transactional
def test_track_reads_the_old_row_locked_and_only_when_it_can_change(
    author: User, categories: tuple[Category, ...]
) -> None:
    go, rust, _ = categories
    invalidate_on(Content, tags=by_category, track=["category"])
    content = Content.objects.create(title="t", body="b", author=author, category=go)
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        content.category = rust
        content.save()
    selects = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    assert len(selects) == 1
    assert selects[0].endswith("FOR NO KEY UPDATE")
    with CaptureQueriesContext(connection) as queries:
        content.title = "only the title"
        content.save(update_fields=["title"])
        Content.objects.create(title="new", body="b", author=author, category=go)
    assert [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")] == []
    before = start(f"category:{go.pk}", f"category:{rust.pk}")
    with CaptureQueriesContext(connection) as queries:
        content.category = go
        content.save()  # autocommit: no transaction to hold a lock in
    [select] = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    assert "FOR" not in select
    assert bumped(before) == {f"category:{go.pk}", f"category:{rust.pk}"}


@transactional
def test_track_sees_a_concurrent_move_that_commits_first(
    author: User, categories: tuple[Category, ...]
) -> None:
    """Two transactions move one content: go -> rust, then (waiting on the row lock) rust ->
    zig. The second must invalidate rust, the category it really moved the content out of,
    although it loaded the content while it was still in go."""
    go, rust, zig = categories
    invalidate_on(Content, tags=by_category, track=["category"])
    content = Content.objects.create(title="t", body="b", author=author, category=go)
    stale_copy = Content.objects.get(pk=content.pk)
    first_saved = threading.Event()
    before = start(*(f"category:{c.pk}" for c in categories))
    rust_after_first: list[int | None] = []

    def first_move() -> None:
        try:
            with transaction.atomic():
                content.category = rust
                content.save()
                first_saved.set()
                time.sleep(0.5)  # the second mover blocks on the row meanwhile
            rust_after_first.append(generation(f"category:{rust.pk}"))
        finally:
            connections.close_all()

    thread = threading.Thread(target=first_move)
    thread.start()
    assert first_saved.wait(10)
    with transaction.atomic():
        stale_copy.category = zig
        stale_copy.save()
    thread.join()
    assert rust_after_first == [before[f"category:{rust.pk}"] + 1]
    assert generation(f"category:{rust.pk}") == before[f"category:{rust.pk}"] + 2
    assert generation(f"category:{go.pk}") == before[f"category:{go.pk}"] + 1
    assert generation(f"category:{zig.pk}") == before[f"category:{zig.pk}"] + 1


@transactional
def test_many_to_many_add_remove_clear_from_both_sides(django_user_model: type[User]) -> None:
    invalidate_on(
        User.groups.through,
        tags=lambda row: [f"group:{row.group_id}", f"user:{row.user_id}:groups"],
    )
    user = django_user_model.objects.create_user(username="u")
    editors, admins = Group.objects.create(name="editors"), Group.objects.create(name="admins")
    tags = (f"group:{editors.pk}", f"group:{admins.pk}", f"user:{user.pk}:groups")

    before = start(*tags)
    user.groups.add(editors, admins)
    assert bumped(before) == set(tags)

    before = start(*tags)
    user.groups.add(editors)  # already there: nothing inserted, nothing to invalidate
    assert bumped(before) == set()

    before = start(*tags)
    user.groups.remove(admins)
    assert bumped(before) == {f"group:{admins.pk}", f"user:{user.pk}:groups"}

    before = start(*tags)
    admins.user_set.add(user)
    assert bumped(before) == {f"group:{admins.pk}", f"user:{user.pk}:groups"}

    before = start(*tags)
    user.groups.clear()
    assert bumped(before) == set(tags)

    def add_then_fail() -> None:
        with transaction.atomic():
            user.groups.add(editors)
            raise RuntimeError

    before = start(*tags)
    with pytest.raises(RuntimeError):
        add_then_fail()
    assert bumped(before) == set()


@pytest.fixture
def temporary_models(transactional_db: None) -> Iterator[tuple[Any, Any]]:
    """Article, with a custom through model to Category and a symmetrical relation to itself:
    models the example project does not have, created for one test and dropped after."""

    class Article(Model):
        categories = ManyToManyField(Category, through="Filing")
        related = ManyToManyField("self")

        class Meta:
            app_label = "content"

        def __str__(self) -> str:
            return f"article {self.pk}"

    class Filing(Model):
        article = ForeignKey(Article, on_delete=CASCADE)
        category = ForeignKey(Category, on_delete=CASCADE)

        class Meta:
            app_label = "content"

        def __str__(self) -> str:
            return f"filing {self.pk}"

    with connection.schema_editor() as editor:
        editor.create_model(Article)
        editor.create_model(Filing)
    yield Article, Filing
    with connection.schema_editor() as editor:
        editor.delete_model(Filing)
        editor.delete_model(Article)
    for name in ("article", "filing", "article_related"):
        del apps.all_models["content"][name]
    apps.clear_cache()


@transactional
def test_a_custom_through_model_and_a_symmetrical_relation(
    temporary_models: tuple[Any, Any], categories: tuple[Category, ...]
) -> None:
    article_model, filing = temporary_models
    invalidate_on(filing, tags=lambda f: [f"filed:{f.article_id}:{f.category_id}"])
    related = article_model.related.through
    invalidate_on(related, tags=lambda r: [f"related:{r.from_article_id}:{r.to_article_id}"])
    go, rust, _ = categories
    one, two = article_model.objects.create(), article_model.objects.create()
    filed = {f"filed:{one.pk}:{go.pk}", f"filed:{one.pk}:{rust.pk}"}

    before = start(*filed)
    one.categories.add(go, rust)
    assert bumped(before) == filed
    before = start(*filed)
    one.categories.remove(go)  # Filing rows send post_delete
    assert bumped(before) == {f"filed:{one.pk}:{go.pk}"}
    before = start(*filed)
    filing.objects.filter(article=one).delete()
    assert bumped(before) == {f"filed:{one.pk}:{rust.pk}"}

    both_ways = {f"related:{one.pk}:{two.pk}", f"related:{two.pk}:{one.pk}"}
    before = start(*both_ways)
    one.related.add(two)
    assert bumped(before) == both_ways
    before = start(*both_ways)
    one.related.clear()
    assert bumped(before) == both_ways
    one.related.add(two)
    before = start(*both_ways)
    two.related.remove(one)
    assert bumped(before) == both_ways


@pytest.fixture
def proxy_content() -> Iterator[type[Content]]:
    class ProxyContent(Content):
        class Meta:
            proxy = True
            app_label = "content"

    yield ProxyContent
    del apps.all_models["content"]["proxycontent"]
    apps.clear_cache()


@transactional
def test_proxies_of_the_model_are_covered(
    proxy_content: type[Content], author: User, categories: tuple[Category, ...]
) -> None:
    invalidate_on(Content, tags=by_category)
    before = start(f"category:{categories[0].pk}")
    proxy_content.objects.create(title="t", body="b", author=author, category=categories[0])
    assert bumped(before) == {f"category:{categories[0].pk}"}


@transactional
def test_registration_is_idempotent(categories: tuple[Category, ...]) -> None:
    calls: list[str] = []

    def record(name: str) -> list[str]:
        calls.append(name)
        return [f"t:{name}"]

    def register() -> None:  # as AppConfig.ready() running twice would
        invalidate_on(Category, tags=lambda c: record("a"))

    register()
    register()
    invalidate_on(Category, tags=lambda c: record("b"), dispatch_uid="b")
    invalidate_on(Category, tags=lambda c: record("b"), dispatch_uid="b")
    categories[0].save()
    assert sorted(calls) == ["a", "b"]


@transactional
def test_a_tags_function_returning_a_string_is_an_error_and_the_write_rolls_back() -> None:
    # A str is an Iterable[str], so only the runtime check can catch this one.
    invalidate_on(Category, tags=lambda c: f"category:{c.pk}")
    with (
        pytest.raises(TypeError, match=r"return a list of tags, such as \['category:"),
        transaction.atomic(),
    ):
        Category.objects.create(name="Go", slug="go")
    assert not Category.objects.exists()


# --- writes without signals -------------------------------------------------------------------


@transactional
def test_queryset_update_is_not_covered_invalidate_objects_is_the_explicit_path(
    author: User, categories: tuple[Category, ...]
) -> None:
    go, rust, _ = categories
    invalidate_on(Content, tags=by_category)
    created = Content.objects.bulk_create(
        [Content(title=f"t{i}", body="b", author=author, category=go) for i in range(3)]
    )
    before = start(f"category:{go.pk}", f"category:{rust.pk}")
    # No signal: nothing is invalidated, as docs/invalidation.md says.
    Content.objects.filter(category=go).update(category=rust)
    assert bumped(before) == set()

    with transaction.atomic():
        invalidate_objects(created)  # as they were: in go
        invalidate_objects(Content.objects.filter(category=rust))  # as they are: in rust
        assert bumped(before) == set()
    assert bumped(before) == {f"category:{go.pk}", f"category:{rust.pk}"}

    before = start(f"category:{rust.pk}")
    moved = list(Content.objects.all())
    for content in moved:
        content.title = "bulk"
    Content.objects.bulk_update(moved, ["title"])
    invalidate_objects(moved)
    assert bumped(before) == {f"category:{rust.pk}"}


@transactional
def test_invalidate_objects_refuses_an_unregistered_model() -> None:
    with pytest.raises(NotRegistered, match=r"auth\.Group"):
        invalidate_objects([Group.objects.create(name="editors")])


# --- system checks ----------------------------------------------------------------------------


def _ids(messages: list[Any]) -> list[str]:
    return [message.id for message in messages]


def test_w015_a_cache_without_atomic_increments(settings: Any, tmp_path: Any) -> None:
    file_cache = {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache"}
    with override_settings(
        CACHES={**settings.CACHES, "files": {**file_cache, "LOCATION": str(tmp_path)}},
        RESEE_PERF={"CACHE_ALIAS": "files"},
    ):
        [warning] = check_invalidation_caches()
    assert warning.id == "resee_perf.W015"
    assert "'files'" in warning.msg
    assert check_invalidation_caches() == []


def test_w015_also_covers_caches_named_by_invalidate_on(settings: Any) -> None:
    db_cache = {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "t"}
    with override_settings(CACHES={**settings.CACHES, "db": db_cache}):
        invalidate_on(Category, tags=lambda c: [], cache="db")
        assert _ids(check_invalidation_caches()) == ["resee_perf.W015"]


@pytest.mark.single_redis  # django-redis's client
def test_w017_django_redis_herd_client_cannot_increment(settings: Any) -> None:
    herd = {
        **settings.CACHES["default"],
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.HerdClient"},
    }
    with override_settings(
        CACHES={**settings.CACHES, "herd": herd}, RESEE_PERF={"CACHE_ALIAS": "herd"}
    ):
        [warning] = check_invalidation_caches()
        assert warning.id == "resee_perf.W017"
        with pytest.raises(NotImplementedError):  # what every invalidation would hit
            bump_generations(caches["herd"], ["h:a"])


def test_w016_local_memory_is_per_process_deploy_only() -> None:
    with override_settings(RESEE_PERF={"CACHE_ALIAS": "locmem"}):
        assert check_invalidation_caches() == []
        [warning] = check_invalidation_caches_deploy()
    assert warning.id == "resee_perf.W016"
    assert check_invalidation_caches_deploy() == []


def test_the_checks_are_registered() -> None:
    from django.core import checks

    everyday = checks.registry.registry.get_checks(include_deployment_checks=False)
    deploy = checks.registry.registry.get_checks(include_deployment_checks=True)
    assert "check_invalidation_caches" in {getattr(c, "__name__", "") for c in everyday}
    assert "check_invalidation_caches_deploy" not in {getattr(c, "__name__", "") for c in everyday}
    assert "check_invalidation_caches_deploy" in {getattr(c, "__name__", "") for c in deploy}
