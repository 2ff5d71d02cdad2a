"""Fixtures shared by the whole suite. Feature-specific fixtures live next to their tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# The test modules that need neither PostgreSQL nor Redis (nor a replica): `pytest -m "not
# services"` runs them in seconds anywhere. Every other test is marked `services`.
PURE_MODULES = frozenset(
    {
        "test_budget",
        "test_conf",
        "test_docs",
        "test_entries",
        "test_flow",
        "test_keys",
        "test_layers",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    topology = os.environ.get("RESEE_TEST_REDIS", "single")
    skip_single = pytest.mark.skip(
        reason=f"single_redis: needs one Redis server, RESEE_TEST_REDIS={topology}"
    )
    for item in items:
        if item.path.stem not in PURE_MODULES:
            item.add_marker(pytest.mark.services)
        if topology != "single" and item.get_closest_marker("single_redis"):
            item.add_marker(skip_single)


@pytest.fixture(autouse=True)
def _forget_cache_aside_functions_of_the_test() -> Iterator[None]:
    """A function a test decorates with cache_aside(cache=...) does not stay registered for
    the system checks of later tests (E010), whose settings may lack its cache; nor does an
    invalidate_on registration, a fake clock or fixed XFetch draws."""
    from resee_perf import testing

    with testing.isolated_registrations():
        yield
    testing.restore_time()


# The streaming replica's fixtures (replica, replica_control, lagging_replica): tests/replica.py.
pytest_plugins = ["tests.replica"]
