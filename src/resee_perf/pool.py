"""Connection budget: how many PostgreSQL connections a deployment holds, per database server.

The public face of the budget; the parts live in private modules: ``_databases`` (what each
``DATABASES`` alias costs), ``_deployment`` (the ``DEPLOYMENT`` setting), ``_clients`` (the
processes), ``_budget`` (the arithmetic, no I/O), ``_servers`` (asking the servers),
``_render`` (the tables) and ``_recommend`` (the settings we recommend).

The model (docs/connections.md explains it with examples):

- A Django process opens one connection per database alias per thread, the first time that
  thread touches the alias. With persistent connections (``CONN_MAX_AGE`` != 0) the thread keeps
  it; with ``CONN_MAX_AGE = 0`` it closes it at the end of the request. Either way, when every
  thread is busy at once, each holds one connection per alias: the peak is the same, only the
  churn differs.
- With Django's native psycopg pool (``OPTIONS["pool"]``, Django 5.1+), each *process* has one
  pool per alias, and threads borrow from it. psycopg opens ``min_size`` connections up front and
  grows only while a thread waits, up to ``max_size``; so a process holds
  ``max(min_size, min(max_size, concurrency))`` connections to that alias. Before Django 5.1
  there is no such pool: Django hands ``OPTIONS["pool"]`` to psycopg as a connection parameter,
  which psycopg refuses, so a pool there is a configuration error (:class:`PoolUnavailable`),
  not a pool the budget could count.
- ``max_connections`` is per server (a PostgreSQL cluster), so aliases pointing at the same
  host and port add up, even with different database names.
"""

from __future__ import annotations

from resee_perf._budget import (
    ConnectionBudget,
    Contribution,
    PoolMismatch,
    ServerBudget,
    budget_from_settings,
    connection_budget,
)
from resee_perf._databases import PoolUnavailable

# Defined in the leaf _deployment so that conf (RESEE_PERF['DEPLOYMENT']) needs no budget code;
# public here, as connection_budget's first argument.
from resee_perf._deployment import Deployment
from resee_perf._recommend import recommended_database

# The names users import (docs/reference/api.md); the command and the system checks use the
# private modules directly.
__all__ = [
    "ConnectionBudget",
    "Contribution",
    "Deployment",
    "PoolMismatch",
    "PoolUnavailable",
    "ServerBudget",
    "budget_from_settings",
    "connection_budget",
    "recommended_database",
]
