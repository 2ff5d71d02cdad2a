"""resee_perf.profiling: SQL shapes, call sites, N+1 and slow-query detection, the test
helpers, and QueryProfileMiddleware (sync and async, Server-Timing, sampling, metrics)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Group, User
from django.db import connection, connections
from django.test import AsyncClient, Client
from prometheus_client import REGISTRY

from content.models import Category
from resee_perf import profiling
from resee_perf._call_sites import call_site
from resee_perf._sql_shapes import is_explainable, is_read, shape
from resee_perf.profiling import (
    MAX_SHAPES,
    NPlusOneDetected,
    TooManyQueries,
    assert_max_queries,
    forbid_nplusone,
    profile_queries,
)

TESTS = Path(__file__).resolve().parent
PROFILE_MIDDLEWARE = "resee_perf.middleware.QueryProfileMiddleware"


def line_of(path: Path, marker: str) -> int:
    """The line of ``path`` that carries ``marker`` (so that edits above it break nothing)."""
    lines = path.read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if marker in line)


def site_of(marker: str, path: Path = TESTS / "profiling_urls.py") -> str:
    return f"tests/{path.name}:{line_of(path, marker)}"


# --- shapes -----------------------------------------------------------------------------------


def test_shape_collapses_literals_placeholders_and_lists() -> None:
    assert shape("SELECT * FROM t WHERE a = %s AND b = 'x''y' AND c = 12.5") == (
        "SELECT * FROM t WHERE a = ? AND b = ? AND c = ?"
    )
    assert shape('SELECT "t1"."id" FROM "t1" WHERE "t1"."id" IN (%s, %s, %s) LIMIT 21') == (
        'SELECT "t1"."id" FROM "t1" WHERE "t1"."id" IN (...) LIMIT ?'
    )
    # An IN list of another length is the same shape.
    assert shape("SELECT 1 FROM t WHERE id IN (%s)") == shape(
        "SELECT 1 FROM t WHERE id IN (%s, %s)"
    )
    assert shape("INSERT INTO t (a, b) VALUES (%s, %s), (%s, %s), (%s, %s)") == (
        "INSERT INTO t (a, b) VALUES (...)"
    )
    assert shape("SELECT  a\n  FROM t WHERE x = $1") == "SELECT a FROM t WHERE x = ?"


def test_shape_keeps_identifiers_with_digits() -> None:
    assert shape('SELECT "s1"."col2" FROM "s1"') == 'SELECT "s1"."col2" FROM "s1"'


def test_reads_and_what_may_be_explained() -> None:
    assert is_read("SELECT 1")
    assert is_read("WITH x AS (SELECT 1) SELECT * FROM x")
    assert not is_read("WITH x AS (DELETE FROM t RETURNING id) SELECT * FROM x")
    assert not is_read("UPDATE t SET a = ?")
    assert is_read("SELECT * FROM t FOR UPDATE")
    assert not is_explainable("SELECT * FROM t FOR UPDATE")
    assert not is_explainable("INSERT INTO t VALUES (...)")


def test_call_site_is_the_first_frame_outside_the_libraries() -> None:
    site = call_site(sys._getframe())
    assert site == f"tests/test_profiling.py:{sys._getframe().f_lineno - 1}"


# --- profiles in a block ----------------------------------------------------------------------


@pytest.fixture
def categories(db: None) -> list[Category]:
    return [Category.objects.create(name=f"c{index}", slug=f"c{index}") for index in range(7)]


def test_a_loop_of_the_same_read_is_an_nplusone_with_its_line(categories: list[Category]) -> None:
    with profile_queries() as profile:
        for category in categories:
            Category.objects.get(pk=category.pk)  # the loop line
    assert profile.queries == 7
    assert [(stats.count, stats.call_site) for stats in profile.nplusone] == [
        (7, site_of("# the loop line", TESTS / "test_profiling.py"))
    ]
    assert profile.nplusone[0].shape.startswith('SELECT "content_category"."id"')


def test_below_the_threshold_nothing(categories: list[Category], settings: Any) -> None:
    settings.RESEE_PERF = {"NPLUSONE_THRESHOLD": 8}
    with profile_queries() as profile:
        for category in categories:
            Category.objects.get(pk=category.pk)
    assert profile.nplusone == []


def test_a_loop_over_distinct_queries_is_no_nplusone(categories: list[Category]) -> None:
    lookups: list[dict[str, Any]] = [
        {"pk": categories[0].pk},
        {"slug": "c1"},
        {"name": "c2"},
        {"name__startswith": "c3"},
        {"slug__endswith": "4"},
        {"pk__gte": categories[5].pk, "name": "c5"},
        {"name__in": ["c6", "c7"]},
    ]
    with profile_queries() as profile:
        for lookup in lookups:
            Category.objects.filter(**lookup).first()
    assert profile.queries == 7
    assert profile.nplusone == []


def test_the_same_read_from_distinct_lines_is_no_nplusone(categories: list[Category]) -> None:
    pk = categories[0].pk
    with profile_queries() as profile:
        Category.objects.get(pk=pk)
        Category.objects.get(pk=pk)
        Category.objects.get(pk=pk)
        Category.objects.get(pk=pk)
        Category.objects.get(pk=pk)
    assert len(profile.repeated()) == 0
    assert profile.nplusone == []


def test_bulk_operations_are_no_nplusone(db: None) -> None:
    # Group: a model without invalidation receivers (the example's Category has one, which
    # runs a query per deleted row: a real N+1 of a queryset delete, and not the subject here).
    with profile_queries() as profile:
        created = Group.objects.bulk_create(
            [Group(name=f"b{index}") for index in range(60)], batch_size=10
        )
        for group in created:
            group.name = group.name.upper()
        Group.objects.bulk_update(created, ["name"], batch_size=10)
        Group.objects.filter(name__startswith="B").delete()
    # Six INSERT and six UPDATE batches, each batch from one line: what bulk operations do.
    assert max(stats.count for stats in profile.shapes.values()) >= 6
    assert profile.nplusone == []


def test_the_allow_list_matches_call_sites_and_shapes(
    categories: list[Category], settings: Any
) -> None:
    for pattern in ["tests/test_profiling.py:*", '*FROM "content_category"*']:
        settings.RESEE_PERF = {"NPLUSONE_ALLOW": [pattern]}
        with profile_queries() as profile:
            for category in categories:
                Category.objects.get(pk=category.pk)
        assert profile.nplusone == [], pattern
    settings.RESEE_PERF = {"NPLUSONE_ALLOW": ["review/*"]}
    with profile_queries() as profile:
        for category in categories:
            Category.objects.get(pk=category.pk)
    assert len(profile.nplusone) == 1


@pytest.mark.django_db(databases=["default", "other"])
def test_counts_per_alias(categories: list[Category]) -> None:
    with profile_queries() as profile:
        list(Category.objects.all())
        list(Category.objects.using("other").all())
        list(Category.objects.using("other").all())
    assert {alias: stats.queries for alias, stats in profile.aliases.items()} == {
        "default": 1,
        "other": 2,
    }


def test_a_profile_records_a_bounded_number_of_shapes(db: None) -> None:
    """A request that runs any number of distinct statements keeps MAX_SHAPES of them."""
    extra = 50
    with profile_queries() as profile, connection.cursor() as cursor:
        for index in range(MAX_SHAPES + extra):
            cursor.execute(f'SELECT %s AS "column_{index}"', [index])
    assert profile.queries == MAX_SHAPES + extra
    assert len(profile.shapes) == MAX_SHAPES
    assert profile.dropped == extra


def test_threads_do_not_share_a_profile(categories: list[Category]) -> None:
    """A thread started inside a block runs in its own context: its queries are not the
    block's (what keeps a background refresh out of the request that started it)."""
    with profile_queries() as profile:

        def elsewhere() -> None:
            try:
                for category in categories:
                    # The test's rows are not committed: another connection finds none.
                    Category.objects.filter(pk=category.pk).first()
            finally:
                connections.close_all()

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        Category.objects.count()
    assert profile.queries == 1


# --- test helpers -----------------------------------------------------------------------------


def test_assert_max_queries_passes_and_fails_with_the_repeated_shapes(
    categories: list[Category],
) -> None:
    with assert_max_queries(1):
        list(Category.objects.all())
    with pytest.raises(TooManyQueries) as caught, assert_max_queries(3):  # noqa: PT012
        for category in categories:
            Category.objects.get(pk=category.pk)  # the counted line
    message = str(caught.value)
    assert message.startswith("7 queries, more than 3.")
    assert "7 x SELECT" in message
    assert site_of("# the counted line", TESTS / "test_profiling.py") in message


@pytest.mark.django_db(databases=["default", "other"])
def test_assert_max_queries_on_one_alias(categories: list[Category]) -> None:
    with assert_max_queries(0, using="other"):
        list(Category.objects.all())
    with (
        pytest.raises(TooManyQueries, match="1 queries on 'other', more than 0"),
        assert_max_queries(0, using="other"),
    ):
        list(Category.objects.using("other").all())


def test_forbid_nplusone_raises_from_the_query_that_makes_it(
    categories: list[Category],
) -> None:
    seen = 0
    with pytest.raises(NPlusOneDetected) as caught, forbid_nplusone():  # noqa: PT012
        for category in categories:
            Category.objects.get(pk=category.pk)  # the forbidden line
            seen += 1
    assert seen == 4  # the fifth query raised
    assert caught.value.stats.call_site == site_of(
        "# the forbidden line", TESTS / "test_profiling.py"
    )


def test_forbid_nplusone_fails_even_if_the_code_swallows_the_exception(
    categories: list[Category],
) -> None:
    with pytest.raises(NPlusOneDetected), forbid_nplusone():  # noqa: PT012
        for category in categories:
            # Code under test that hides errors.
            with contextlib.suppress(Exception):
                Category.objects.get(pk=category.pk)


def test_the_no_nplusone_fixture_passes_a_clean_test(
    categories: list[Category], no_nplusone: profiling.QueryProfile
) -> None:
    # categories first: creating them runs the example's invalidation query per row.
    list(Category.objects.all())
    assert no_nplusone.queries == 1


def test_the_no_nplusone_fixture_fails_a_test_with_an_nplusone(tmp_path: Path) -> None:
    """In a pytest run of its own: the fixture comes from the pytest11 entry point."""
    test_file = tmp_path / "test_user_project.py"
    test_file.write_text(
        textwrap.dedent(
            """
            import pytest
            from content.models import Category

            @pytest.mark.django_db
            def test_loop(no_nplusone):
                for index in range(6):
                    Category.objects.filter(pk=index).first()

            @pytest.mark.django_db
            def test_clean(no_nplusone):
                list(Category.objects.filter(pk__in=range(6)))
            """
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--rootdir",
            ".",
            "-c",
            "pyproject.toml",
            str(test_file),
        ],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert "NPlusOneDetected: N+1 query: 5 times" in result.stdout
    assert re.search(r"from \S*test_user_project\.py:8: SELECT", result.stdout), result.stdout


# --- the middleware ---------------------------------------------------------------------------


@pytest.fixture
def profiled(settings: Any) -> None:
    settings.MIDDLEWARE = [
        PROFILE_MIDDLEWARE,
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]
    settings.RESEE_PERF = {"SERVER_TIMING": "all"}


def nplusone_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "resee_perf.profiling" and record.getMessage().startswith("N+1")
    ]


def counter(name: str, route: str) -> float:
    return REGISTRY.get_sample_value(name, {"route": route}) or 0.0


@pytest.mark.urls("tests.profiling_urls")
@pytest.mark.usefixtures("profiled")
class TestMiddleware:
    def test_reports_an_nplusone_once_with_route_count_and_call_site(
        self, categories: list[Category], caplog: pytest.LogCaptureFixture
    ) -> None:
        before = counter("resee_perf_nplusone_total", "nplusone/")
        response = Client().get("/nplusone/")
        assert response.status_code == 200
        [record] = nplusone_records(caplog)
        assert record.levelno == logging.WARNING
        assert record.route == "nplusone/"  # type: ignore[attr-defined]
        assert record.count == 7  # type: ignore[attr-defined]
        assert record.call_site == site_of("# the N+1 line")  # type: ignore[attr-defined]
        assert record.shape.startswith('SELECT "content_category"')  # type: ignore[attr-defined]
        assert counter("resee_perf_nplusone_total", "nplusone/") == before + 1

    def test_reports_nothing_for_a_clean_view(
        self, categories: list[Category], caplog: pytest.LogCaptureFixture
    ) -> None:
        assert Client().get("/clean/").status_code == 200
        assert nplusone_records(caplog) == []

    def test_server_timing(self, categories: list[Category]) -> None:
        header = Client().get("/nplusone/")["Server-Timing"]
        assert re.fullmatch(
            r'db;dur=\d+\.\d;desc="8 queries", cache;dur=\d+\.\d, app;dur=\d+\.\d', header
        ), header

    def test_server_timing_goes_to_staff_only_by_default(
        self, categories: list[Category], settings: Any
    ) -> None:
        settings.RESEE_PERF = {}
        client = Client()
        assert "Server-Timing" not in client.get("/clean/")
        user = User.objects.create_user("someone")
        client.force_login(user)
        assert "Server-Timing" not in client.get("/clean/")
        user.is_staff = True
        user.save()
        assert client.get("/clean/")["Server-Timing"].startswith("db;dur=")
        settings.RESEE_PERF = {"SERVER_TIMING": "off"}
        assert "Server-Timing" not in client.get("/clean/")

    def test_an_unsampled_request_is_not_profiled(
        self, categories: list[Category], settings: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        settings.RESEE_PERF = {"SERVER_TIMING": "all", "PROFILE_SAMPLE_RATE": 0}
        response = Client().get("/nplusone/")
        assert "Server-Timing" not in response
        assert nplusone_records(caplog) == []

    def test_nplusone_raise(self, categories: list[Category], settings: Any) -> None:
        settings.RESEE_PERF = {"NPLUSONE_RAISE": True}
        with pytest.raises(NPlusOneDetected, match="5 times"):
            Client().get("/nplusone/")

    def test_cache_time_is_measured(self, categories: list[Category], settings: Any) -> None:
        settings.RESEE_PERF = {"SERVER_TIMING": "all", "KEY_PREFIX": "tprof"}
        with profile_queries() as outer:
            Client().get("/cached/")
            Client().get("/cached/")
        assert outer.cache_seconds > 0

    def test_slow_queries_are_logged_with_call_site_and_counted(
        self, db: None, settings: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        settings.RESEE_PERF = {"SLOW_QUERY_MS": 10}
        before = counter("resee_perf_slow_queries_total", "slow/")
        Client().get("/slow/")
        [record] = [r for r in caplog.records if r.getMessage().startswith("slow query")]
        assert record.call_site == site_of("# the slow line")  # type: ignore[attr-defined]
        assert record.duration_ms >= 30  # type: ignore[attr-defined]
        assert record.alias == "default"  # type: ignore[attr-defined]
        assert not hasattr(record, "plan")
        assert counter("resee_perf_slow_queries_total", "slow/") == before + 1

    def test_slow_query_explain(
        self, db: None, settings: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        settings.RESEE_PERF = {"SLOW_QUERY_MS": 10, "SLOW_QUERY_EXPLAIN": True}
        with profile_queries() as outer:
            Client().get("/slow/")
        [record] = [r for r in caplog.records if r.getMessage().startswith("slow query")]
        assert "Result" in record.plan  # type: ignore[attr-defined]
        # The EXPLAIN is the profiler's own query: not counted.
        assert outer.queries == 1

    def test_async_views(
        self, categories: list[Category], caplog: pytest.LogCaptureFixture
    ) -> None:
        client = AsyncClient()

        # A coroutine function of our own: Django 4.2's AsyncClient.get is not marked as one.
        async def get(path: str) -> Any:
            return await client.get(path)

        response = async_to_sync(get)("/async/nplusone/")
        assert response.status_code == 200
        assert response["Server-Timing"].startswith("db;dur=")
        assert 'desc="8 queries"' in response["Server-Timing"]
        assert async_to_sync(get)("/async/clean/").status_code == 200
        [record] = nplusone_records(caplog)
        assert record.route == "async/nplusone/"  # type: ignore[attr-defined]
        assert record.call_site == site_of("# the async N+1 line")  # type: ignore[attr-defined]


@pytest.fixture
def threaded_categories(transactional_db: None) -> None:
    for index in range(6):
        Category.objects.create(name=f"t{index}", slug=f"t{index}")


@pytest.mark.urls("tests.profiling_urls")
@pytest.mark.usefixtures("profiled", "threaded_categories")
def test_concurrent_requests_are_attributed_to_their_own_route(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """8 threads interleave the N+1 view and the clean one: one report per N+1 request, each
    naming its route and exactly its own queries."""
    rounds = 6
    errors: list[BaseException] = []
    headers: dict[str, list[str]] = {"/nplusone/": [], "/clean/": []}

    def run(path: str) -> None:
        try:
            client = Client()
            for _ in range(rounds):
                headers[path].append(client.get(path)["Server-Timing"])
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=run, args=("/nplusone/" if index % 2 else "/clean/",))
        for index in range(8)
    ]
    with caplog.at_level(logging.WARNING, logger="resee_perf.profiling"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    records = nplusone_records(caplog)
    assert len(records) == 4 * rounds
    assert {(r.route, r.count) for r in records} == {("nplusone/", 6)}  # type: ignore[attr-defined]
    assert all('desc="7 queries"' in header for header in headers["/nplusone/"])
    assert all('desc="1 query"' in header for header in headers["/clean/"])


# --- checks -----------------------------------------------------------------------------------


def test_deploy_checks_warn_about_development_settings(settings: Any) -> None:
    from resee_perf.checks import check_profiling_deploy

    settings.DEBUG = False
    settings.RESEE_PERF = {"NPLUSONE_RAISE": True, "SERVER_TIMING": "all"}
    assert [message.id for message in check_profiling_deploy()] == [
        "resee_perf.W060",
        "resee_perf.W061",
    ]
    settings.RESEE_PERF = {"NPLUSONE_RAISE": False, "SERVER_TIMING": "staff"}
    assert check_profiling_deploy() == []
    settings.DEBUG = True
    settings.RESEE_PERF = {"NPLUSONE_RAISE": True, "SERVER_TIMING": "all"}
    assert check_profiling_deploy() == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("NPLUSONE_THRESHOLD", 1),
        ("NPLUSONE_RAISE", "yes"),
        ("NPLUSONE_ALLOW", "review/*"),
        ("PROFILE_SAMPLE_RATE", 1.5),
        ("SERVER_TIMING", True),
        ("SLOW_QUERY_MS", 0),
        ("SLOW_QUERY_EXPLAIN", 1),
    ],
)
def test_bad_profiling_settings_are_e002(settings: Any, key: str, value: Any) -> None:
    from resee_perf.checks import check_settings

    settings.RESEE_PERF = {key: value}
    [error] = check_settings()
    assert error.id == "resee_perf.E002"
    assert key in error.msg


def test_the_walk_stops_at_the_profiling_middleware() -> None:
    """A query with no application frame below the middleware (the session and user that
    Django's middleware loads) gets no call site, not the line of the server above it."""
    import django

    from resee_perf import _call_sites

    # Library code (compiled under Django's directory): a middleware that runs a query.
    library: dict[str, Any] = {"call_site": call_site, "sys": sys}
    source = "def middleware():\n    return call_site(sys._getframe())\n"
    exec(compile(source, str(Path(django.__file__).parent / "x.py"), "exec"), library)

    def server() -> str:  # stands for gunicorn, above the middleware
        return str(library["middleware"]())  # the server line

    assert server() == f"tests/test_profiling.py:{line_of(Path(__file__), '# the server line')}"
    _call_sites.stop_at(library["middleware"])
    try:
        assert server() == "<unknown>"
    finally:
        code = library["middleware"].__code__
        del _call_sites._marks[id(code)]
        _call_sites._kinds.pop(id(code))


def test_the_pytest_plugin_loads_in_a_project_without_django_settings(tmp_path: Path) -> None:
    """The pytest11 entry point loads the plugin in every pytest run of every project that
    installs resee-perf: it must import, and run a test, with no Django configured."""
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:django", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "1 passed" in result.stdout, result.stdout + result.stderr
