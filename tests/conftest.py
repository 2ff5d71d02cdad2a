"""Fixtures shared by the whole suite. Feature-specific fixtures live next to their tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _forget_cache_aside_functions_of_the_test() -> Iterator[None]:
    """A function a test decorates with cache_aside(cache=...) does not stay registered for
    the system checks of later tests (E010), whose settings may lack its cache."""
    from resee_perf import cache

    saved = dict(cache._declared_aliases)
    yield
    cache._declared_aliases.clear()
    cache._declared_aliases.update(saved)


# The streaming replica's fixtures (replica, replica_control, lagging_replica): tests/replica.py.
pytest_plugins = ["tests.replica"]
