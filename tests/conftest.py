"""Fixtures shared by the whole suite. Feature-specific fixtures live next to their tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


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
