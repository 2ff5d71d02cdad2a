"""The resee-perf Grafana dashboard, as typed code (grafana-foundation-sdk).

    python deploy/grafana/dashboard.py > deploy/grafana/resee-perf.json

tests/test_dashboard.py checks that the committed JSON is what this prints, and
tests/test_monitoring_stack.py asks a live Prometheus for every expression in it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
HIT = 'result=~"hit|stale|early|wait"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Graph:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    width: int = 12


def quantiles(metric: str, by: str) -> tuple[Query, ...]:
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket[{RATE}])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    )


ROWS: tuple[tuple[str, tuple[Graph, ...]], ...] = (
    (
        "Traffic and errors",
        (
            Graph(
                "Request rate by route",
                "Requests per second by URL pattern (MetricsMiddleware).",
                "reqps",
                (
                    Query(
                        f"sum by (route) (rate(resee_perf_http_requests_total[{RATE}]))",
                        "{{route}}",
                    ),
                ),
            ),
            Graph(
                "Error rate (5xx ratio)",
                "Share of requests answered with a 5xx; the availability SLO allows 0.1%.",
                "percentunit",
                (
                    Query(
                        'sum(rate(resee_perf_http_requests_total{status="5xx"}'
                        f"[{RATE}])) / sum(rate(resee_perf_http_requests_total[{RATE}]))",
                        "5xx ratio",
                    ),
                    Query(
                        f"sum by (status) (rate(resee_perf_http_requests_total[{RATE}])) "
                        f"/ ignoring (status) group_left sum(rate("
                        f"resee_perf_http_requests_total[{RATE}]))",
                        "{{status}}",
                    ),
                ),
            ),
            Graph(
                "Latency P50 / P95 / P99 by route",
                "From resee_perf_http_request_duration_seconds (buckets 0.5 ms to 10 s).",
                "s",
                quantiles("resee_perf_http_request_duration_seconds", "route"),
                width=24,
            ),
        ),
    ),
    (
        "Cache",
        (
            Graph(
                "Hit ratio by function",
                "Calls served from the cache (hit, stale, early, wait) over calls that tried it.",
                "percentunit",
                (
                    Query(
                        f"sum by (name) (rate(resee_perf_cache_requests_total{{{HIT}}}[{RATE}])) "
                        "/ sum by (name) (rate(resee_perf_cache_requests_total"
                        f'{{result!="bypass"}}[{RATE}]))',
                        "{{name}}",
                    ),
                ),
            ),
            Graph(
                "Results by function",
                "cache_aside calls per second by function and result.",
                "ops",
                (
                    Query(
                        f"sum by (name, result) (rate(resee_perf_cache_requests_total[{RATE}]))",
                        "{{name}} {{result}}",
                    ),
                ),
            ),
            Graph(
                "Recompute time",
                "Time the body of a cached function takes on a miss or refresh.",
                "s",
                quantiles("resee_perf_cache_recompute_seconds", "name"),
            ),
            Graph(
                "Lock waits",
                "Callers waiting for another caller's recompute (a stampede held back).",
                "ops",
                (
                    Query(
                        f"sum by (name) (rate(resee_perf_cache_lock_wait_seconds_count[{RATE}]))",
                        "{{name}}",
                    ),
                ),
            ),
            Graph(
                "Invalidations",
                "Tags invalidated per second, by cache and result.",
                "ops",
                (
                    Query(
                        f"sum by (cache, result) (rate(resee_perf_invalidations_total[{RATE}]))",
                        "{{cache}} {{result}}",
                    ),
                ),
            ),
            Graph(
                "Circuit breaker open",
                "1 while the breaker of a cache alias is open in any process.",
                "short",
                (Query("max by (cache) (resee_perf_cache_breaker_open)", "{{cache}}"),),
            ),
        ),
    ),
    (
        "Replica routing",
        (
            Graph(
                "Router decisions",
                "StickyReplicaRouter's choices per second, by alias and reason.",
                "ops",
                (
                    Query(
                        f"sum by (alias, reason) (rate(resee_perf_db_routes_total[{RATE}]))",
                        "{{alias}} {{reason}}",
                    ),
                ),
            ),
            Graph(
                "Replica read share",
                "Reads sent to a replica over all reads.",
                "percentunit",
                (
                    Query(
                        'sum(rate(resee_perf_db_routes_total{reason="replica"}'
                        f"[{RATE}])) / sum(rate(resee_perf_db_routes_total"
                        f'{{reason!="write"}}[{RATE}]))',
                        "replica share",
                    ),
                ),
            ),
            Graph(
                "Replica lag",
                "Replay lag of each replica at its last check (worst process).",
                "s",
                (Query("max by (alias) (resee_perf_replica_lag_seconds)", "{{alias}}"),),
            ),
            Graph(
                "Replica up",
                "1 while a replica answers its checks in every process.",
                "short",
                (Query("min by (alias) (resee_perf_replica_up)", "{{alias}}"),),
            ),
        ),
    ),
    (
        "Database",
        (
            Graph(
                "DB queries per request",
                "Queries per HTTP request, by database alias.",
                "short",
                (
                    Query(
                        "sum by (alias) (rate(resee_perf_db_request_queries_sum"
                        f"[{RATE}])) / on () group_left sum(rate("
                        f"resee_perf_http_requests_total[{RATE}]))",
                        "{{alias}}",
                    ),
                ),
            ),
            Graph(
                "Query time per request",
                "Time one request spends in queries, by alias.",
                "s",
                quantiles("resee_perf_db_request_query_seconds", "alias"),
            ),
            Graph(
                "Connections opened",
                "New database connections per second (near the request rate: no reuse).",
                "ops",
                (
                    Query(
                        f"sum by (alias) (rate(resee_perf_db_connections_opened_total[{RATE}]))",
                        "{{alias}}",
                    ),
                ),
            ),
            Graph(
                "Connections vs budget",
                "Client connections of each PostgreSQL server (postgres_exporter) against "
                "what it gives to non-superusers.",
                "short",
                (
                    Query("sum by (server) (pg_stat_activity_count)", "{{server}} in use"),
                    Query(
                        "max by (server) (pg_settings_max_connections "
                        "- pg_settings_superuser_reserved_connections)",
                        "{{server}} budget",
                    ),
                ),
            ),
        ),
    ),
    (
        "PostgreSQL (postgres_exporter)",
        (
            Graph(
                "PostgreSQL up",
                "1 while postgres_exporter reaches the server.",
                "short",
                (Query("pg_up", "{{instance}}"),),
            ),
            Graph(
                "Transactions",
                "Commits and rollbacks per second, by database.",
                "ops",
                (
                    Query(
                        "sum by (datname) (rate(pg_stat_database_xact_commit"
                        f'{{datname!~"template.*"}}[{RATE}]))',
                        "{{datname}} commit",
                    ),
                    Query(
                        "sum by (datname) (rate(pg_stat_database_xact_rollback"
                        f'{{datname!~"template.*"}}[{RATE}]))',
                        "{{datname}} rollback",
                    ),
                ),
            ),
        ),
    ),
    (
        "Redis (redis_exporter)",
        (
            Graph(
                "Redis up and clients",
                "1 while redis_exporter reaches Redis; connected clients.",
                "short",
                (
                    Query("redis_up", "up"),
                    Query("redis_connected_clients", "clients"),
                ),
            ),
            Graph(
                "Redis commands and memory",
                "Commands per second; memory used.",
                "short",
                (
                    Query(f"rate(redis_commands_processed_total[{RATE}])", "commands/s"),
                    Query("redis_memory_used_bytes", "memory used (bytes)"),
                ),
            ),
        ),
    ),
)


def panel(graph: Graph) -> timeseries.Panel:
    built = (
        timeseries.Panel()
        .title(graph.title)
        .description(graph.description)
        .datasource(DATASOURCE)
        .unit(graph.unit)
        .height(8)
        .span(graph.width)
    )
    for index, query in enumerate(graph.queries):
        built = built.with_target(
            prometheus.Dataquery()
            .expr(query.expr)
            .legend_format(query.legend)
            .ref_id(chr(ord("A") + index))
            .datasource(DATASOURCE)
        )
    return built


def build() -> db.Dashboard:
    dashboard = (
        db.Dashboard("resee-perf")
        .uid("resee-perf")
        .description(
            "HTTP, cache, routing and database metrics of resee-perf (docs/observability.md)"
        )
        .tags(["resee-perf", "django"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    for title, graphs in ROWS:
        dashboard = dashboard.with_row(db.Row(title))
        for graph in graphs:
            dashboard = dashboard.with_panel(panel(graph))
    return dashboard


def render() -> str:
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
