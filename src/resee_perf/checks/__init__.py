"""Django system checks, one module per feature (as Django's own ``django.core.checks``).
Every id is listed in docs/reference/checks.md (tests/test_docs.py reads the ids from this
package), and each feature's tests are in tests/test_<feature>_checks.py or next to them.

Each feature owns a range of ids; a new check takes the next free id of its feature's range,
a new feature a new module with a new range, registered in :func:`register` below.

``settings`` -- ``RESEE_PERF`` itself (E001-E009 / W001-W009):

- ``E001`` ``RESEE_PERF`` is not a dict.
- ``E002`` a value has the wrong type or range.
- ``E003`` an unknown key (a typo, usually).
- ``E004`` ``CACHE_ALIAS`` names no cache in ``settings.CACHES``.

``cache`` -- ``cache_aside`` (E010-E014 / W010-W014):

- ``E010`` a ``cache_aside`` function names a cache that ``settings.CACHES`` lacks.
- ``W010`` a Redis cache that ``cache_aside`` uses has no socket timeouts.
- ``E011`` ``CACHE_SERIALIZER`` cannot be loaded or has no ``dumps()``/``loads()``.
- ``W011`` entries are pickled without ``CACHE_SIGNING_KEY``.
- ``W012`` a brace in the key prefix of a Redis Cluster cache (every key in one slot).

``invalidation`` -- tag invalidation (W015-W019, W045):

- ``W015`` a cache that invalidation uses increments non-atomically (file, database).
- ``W016`` (``--deploy``) it is a ``LocMemCache``, local to each process.
- ``W017`` it is django-redis's ``HerdClient``, which cannot increment.
- ``W045`` an ``invalidate_on`` model's foreign key has a database-level ``on_delete``
  (Django 6.1), whose deletes and updates send no signal.

``routing`` -- ``StickyReplicaRouter`` and ``StickyReadsMiddleware`` (E020-E029 / W020-W029,
E040-E041 / W040):

- ``E020`` ``REPLICAS`` lists an alias that is not in ``settings.DATABASES``.
- ``E021`` ``REPLICAS`` lists ``default``, the primary.
- ``W020`` the router without the middleware.
- ``W021`` the middleware without the router.
- ``W022`` the router with no ``REPLICAS``.
- ``W023`` the middleware after ``SessionMiddleware``.
- ``W024`` a PostgreSQL replica alias without ``OPTIONS['connect_timeout']``.
- ``W025`` a replica with persistent connections and no ``REPLICA_QUERY_TIMEOUT``.
- ``E040`` ``REPLICA_WEIGHTS`` weighs an alias that is not in ``REPLICAS``.
- ``E041`` a ``REPLICA_WEIGHTS`` weight that is not a non-negative number.
- ``W040`` ``REPLICA_WEIGHTS`` gives every replica the weight 0.

``connections`` -- the connection budget (E030-E039 / W030-W039):

- ``E030`` ``DEPLOYMENT`` is malformed or names unknown aliases or servers.
- ``E031`` ``OPTIONS['pool']`` with a non-zero ``CONN_MAX_AGE``.
- ``E032`` impossible pool sizes; ``E033`` a pool where none can exist (Django < 5.1, no
  psycopg_pool); ``E034`` a pool larger than its server can give.
- ``W030`` (``--deploy``) the budget exceeds a server's capacity.
- ``W031`` persistent connections under ASGI; ``W032`` server-side cursors through a
  transaction-mode pooler; ``W033``/``W034`` a pool sized unlike the process's threads.
- ``W035`` (``--deploy``) ``CONN_MAX_AGE`` without ``CONN_HEALTH_CHECKS``; ``W036``
  (``--deploy``) a server that could not be asked for its limits.

``monitoring`` -- the metrics exporter (E050-E059 / W050-W059):

- ``E050`` ``PROMETHEUS_MULTIPROC_DIR`` is not a writable directory.
- ``W050`` running under gunicorn with metrics on but no ``PROMETHEUS_MULTIPROC_DIR``.

``profiling`` -- ``QueryProfileMiddleware`` (E060-E069 / W060-W069):

- ``W060`` (``--deploy``) ``NPLUSONE_RAISE`` with ``DEBUG`` off.
- ``W061`` (``--deploy``) ``SERVER_TIMING = "all"`` with ``DEBUG`` off.

A new feature's checks go in a module of their own here, with an id range of their own, a
block in :func:`register` and a section above.
"""

from __future__ import annotations

from django.core import checks

from resee_perf.checks.cache import (
    check_cache_aside,
    check_cache_entries,
    check_cluster_key_prefix,
)
from resee_perf.checks.connections import (
    check_connection_budget,
    check_connections,
    connection_budget_messages,
    connection_messages,
)
from resee_perf.checks.invalidation import (
    check_database_on_delete,
    check_invalidation_caches,
    check_invalidation_caches_deploy,
)
from resee_perf.checks.monitoring import check_metrics
from resee_perf.checks.profiling import check_profiling_deploy
from resee_perf.checks.routing import check_replica_query_timeout, check_router
from resee_perf.checks.settings import check_settings

__all__ = [
    "check_cache_aside",
    "check_cache_entries",
    "check_cluster_key_prefix",
    "check_connection_budget",
    "check_connections",
    "check_database_on_delete",
    "check_invalidation_caches",
    "check_invalidation_caches_deploy",
    "check_metrics",
    "check_profiling_deploy",
    "check_replica_query_timeout",
    "check_router",
    "check_settings",
    "connection_budget_messages",
    "connection_messages",
    "register",
]


def register() -> None:
    """Register every check with Django; called once, by ``ReseePerfConfig.ready()``.
    A new feature's checks are registered here, in a block of their own."""
    # settings
    checks.register(check_settings)
    # cache_aside
    checks.register(check_cache_aside, checks.Tags.caches)
    checks.register(check_cache_entries, checks.Tags.caches)
    checks.register(check_cluster_key_prefix, checks.Tags.caches)
    # invalidation
    checks.register(check_invalidation_caches, checks.Tags.caches)
    checks.register(check_invalidation_caches_deploy, checks.Tags.caches, deploy=True)
    checks.register(check_database_on_delete, checks.Tags.models)
    # routing
    checks.register(check_router)
    checks.register(check_replica_query_timeout)
    # monitoring
    checks.register(check_metrics)
    # profiling
    checks.register(check_profiling_deploy, deploy=True)
    # connections
    checks.register(check_connections)
    checks.register(check_connection_budget, deploy=True)
