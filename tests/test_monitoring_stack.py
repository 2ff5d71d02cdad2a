"""The whole monitoring stack, for real: scripts/monitoring.sh starts the example project under
gunicorn (three workers, PROMETHEUS_MULTIPROC_DIR) on the test database and the shared
streaming replica, with a Redis of this test's own, plus Prometheus (our rules loaded, 1 s
scrapes), Alertmanager, postgres_exporter and redis_exporter. After load through the example,
Prometheus' HTTP API must return data for every metric any expression names, for every
dashboard query and recording rule, and evaluate every alert without error; then this test
stops its Redis and ReseePerfCacheBreakerOpen must go pending (its `for:` is 1m, so within the
test it is pending; the expression alone decides that) or firing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from content.models import Category
from tests.live_site import ROOT, example_env, get, session_cookie, wait_until
from tests.promql import (
    alerting_rules,
    dashboard_targets,
    instantiate,
    metric_names,
    recording_rules,
)
from tests.replica import Replica
from tests.test_cache_redis_server import PrivateRedis, spare_port

# Once per CI run (the newest Django): it drives a whole Prometheus stack, and its timing
# against the exporters is what can fail, not the Django version.
pytestmark = [pytest.mark.slow, pytest.mark.version_independent]

SCRIPT = ROOT / "scripts" / "monitoring.sh"
SCRAPE_INTERVAL = 1  # seconds, for Prometheus' scrapes and rule evaluations
# Bounds, never the expected time: a loaded 2-core machine delays a scrape by seconds.
SCRAPE_WAIT = 30 * SCRAPE_INTERVAL  # a scrape that started after a given moment
EXPRESSIONS_WAIT = 90  # every expression answering (rate() over two scrapes, rules evaluated)
ALERT_WAIT = 60  # the breaker alert pending: a scrape, then an evaluation
PASSWORD = "monitoring-pw-1"
CSRF = "k" * 32


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1"

    def _get(self, path: str, **params: str) -> Any:
        url = f"{self.base}/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self._get("query", query=expr)["result"])

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self._get("rules")["groups"] for rule in group["rules"]]

    def alert_states(self, name: str) -> set[str]:
        return {
            a["state"] for a in self._get("alerts")["alerts"] if a["labels"]["alertname"] == name
        }

    def samples(self, metric: str, seconds: int) -> list[tuple[float, str]]:
        """The raw samples of ``metric`` of the last ``seconds``: (scrape timestamp, value).
        An instant query's timestamp is the query's own time, not the scrape's; a range
        selector returns each scrape's sample with the time it was taken."""
        return [
            (float(timestamp), value)
            for series in self.query(f"{metric}[{seconds}s]")
            for timestamp, value in series["values"]
        ]


def scraped_after(prometheus: Prometheus, metric: str, moment: float) -> list[str]:
    """The values of ``metric`` from scrapes that started after ``moment`` (a Unix time), once
    there is one: a scrape that began before it may still have seen the old state, and one
    that failed (a loaded machine, a 1 s timeout) leaves no sample, so wait for the next. At
    most SCRAPE_WAIT scrape intervals."""
    found: list[str] = []

    def after() -> bool:
        found[:] = [
            value
            for timestamp, value in prometheus.samples(metric, SCRAPE_WAIT * 2)
            if timestamp > moment
        ]
        return bool(found)

    wait_until(after, what=f"a scrape of {metric} after {moment}", seconds=SCRAPE_WAIT)
    return found


def wait_for_no_problems(check: Callable[[], list[str]], *, what: str, seconds: float) -> None:
    """Until ``check`` finds nothing wrong; then, or at the deadline, fail with what it found.
    rate() needs two samples, recording rules and alerts an evaluation after the scrape: how
    many scrapes that takes depends on the machine, so poll rather than sleep."""
    problems: list[str] = []

    def clean() -> bool:
        problems[:] = check()
        return not problems

    try:
        wait_until(clean, what=what, seconds=seconds)
    except AssertionError:
        raise AssertionError(f"{what}: {problems}") from None


def drive_load(base: str, cookie: str, category: int) -> None:
    """Cached reads (misses then hits), writes that invalidate tags, a 404."""
    reads = [f"{base}/api/analytics/stats/", f"{base}/api/content/", f"{base}/api/review/today/"]
    with ThreadPoolExecutor(6) as pool:
        for round_ in range(3):
            statuses = list(pool.map(lambda url: get(url, cookie), reads * 10))
            assert set(statuses) == {200}, statuses
            body = json.dumps({"title": f"t{round_}", "body": "b", "category": category}).encode()
            request = urllib.request.Request(
                f"{base}/api/content/",
                data=body,
                method="POST",
                # A session's write needs the CSRF token: any 32 characters, in the cookie
                # and the header alike.
                headers={
                    "Cookie": f"{cookie}; csrftoken={CSRF}",
                    "X-CSRFToken": CSRF,
                    "Content-Type": "application/json",
                },
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 201
    assert get(f"{base}/no/such/page/") == 404


@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
def test_the_stack_answers_every_expression_and_alerts_on_a_redis_outage(
    tmp_path: Path, replica: Replica, django_user_model: Any, redis_server: PrivateRedis
) -> None:
    user = django_user_model.objects.create_user("monitor", password=PASSWORD)
    cookie = session_cookie(user)
    category = Category.objects.create(name="Monitoring", slug="monitoring").pk
    replica.wait_caught_up()
    r = connections["replica"].settings_dict
    ports = {
        name: str(spare_port())
        for name in (
            "APP_PORT",
            "PROMETHEUS_PORT",
            "ALERTMANAGER_PORT",
            "PG_EXPORTER_PORT",
            "REDIS_EXPORTER_PORT",
        )
    }
    env = example_env(
        f"redis://127.0.0.1:{redis_server.port}/0",
        MONITORING_DIR=str(tmp_path / "stack"),
        APP_SETUP="0",
        SCRAPE_INTERVAL=f"{SCRAPE_INTERVAL}s",
        # The example runs on this interpreter's environment (a tox env, say), not .venv.
        VENV=str(Path(sys.executable).parent.parent),
        REPLICA_DATABASE_URL=f"postgres://{r['USER']}@{r['HOST']}:{r['PORT']}/{r['NAME']}",
        **ports,
    )
    prometheus = Prometheus(int(ports["PROMETHEUS_PORT"]))
    base = f"http://127.0.0.1:{ports['APP_PORT']}"
    try:
        subprocess.run(["bash", str(SCRIPT), "start"], env=env, check=True, timeout=120)
        # Idempotent: a second start finds everything running.
        subprocess.run(["bash", str(SCRIPT), "start"], env=env, check=True, timeout=60)
        drive_load(base, cookie, category)
        wait_until(
            lambda: bool(prometheus.query('resee_perf_http_requests_total{status="4xx"} > 0')),
            what="a scrape after the load",
        )
        wait_for_no_problems(
            lambda: every_expression_problems(prometheus),
            what="every expression answering",
            seconds=EXPRESSIONS_WAIT,
        )

        redis_server.stop()
        stopped_at = time.time()
        with ThreadPoolExecutor(6) as pool:
            statuses = list(
                pool.map(lambda _: get(f"{base}/api/analytics/stats/", cookie), range(30))
            )
        assert set(statuses) == {200}  # the breaker falls back to the database
        wait_until(
            lambda: bool(
                prometheus.alert_states("ReseePerfCacheBreakerOpen") & {"pending", "firing"}
            ),
            what="ReseePerfCacheBreakerOpen pending",
            seconds=ALERT_WAIT,
        )
        # The exporter asks Redis at each scrape: every scrape after the stop must say down.
        assert set(scraped_after(prometheus, "redis_up", stopped_at)) == {"0"}
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, check=False, timeout=60)


def every_expression_problems(prometheus: Prometheus) -> list[str]:
    """What is wrong with the rules and the dashboard against the live data; [] when every
    metric they name is scraped, every query returns data and every rule evaluates."""
    recorded = set(recording_rules())
    expressions = list(recording_rules().values())
    expressions += [rule["expr"] for rule in alerting_rules()]
    expressions += [expr for _, expr in dashboard_targets()]

    names = {name for expr in expressions for name in metric_names(expr)} - recorded
    without_data = sorted(name for name in names if not prometheus.query(f'{{__name__="{name}"}}'))
    if without_data:
        return [f"metrics named by an expression but not scraped: {without_data}"]

    queries = [*recording_rules().values(), *(instantiate(e) for _, e in dashboard_targets())]
    empty = [expr for expr in queries if not prometheus.query(expr)]
    if empty:
        return [f"expressions without data: {empty}"]

    rules = prometheus.rules()
    names_loaded = {rule["name"] for rule in rules}
    expected = recorded | {r["alert"] for r in alerting_rules()}
    if names_loaded != expected:
        return [f"rules loaded {sorted(names_loaded)}, expected {sorted(expected)}"]
    broken = [rule for rule in rules if rule["health"] != "ok"]
    return [f"{r['name']}: {r['health']} {r.get('lastError')}" for r in broken]
