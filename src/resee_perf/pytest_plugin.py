"""The ``no_nplusone`` pytest fixture, loaded by pytest through the ``pytest11`` entry point
of resee-perf (so it is there in every project that installs resee-perf; ``-p
no:resee_perf`` turns it off).

Loading it is harmless: it defines one fixture that no test uses unless it asks for it and no
hook. Importing it runs ``resee_perf/__init__.py``, which imports nothing of the library (its
names load on first use), so neither Django nor a setting is touched at pytest's start-up
(tested without ``DJANGO_SETTINGS_MODULE``), and coverage measured by pytest-cov, which starts
after the plugins load, still sees every module imported; the profiler itself is imported when
the fixture runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from resee_perf._query_profile import QueryProfile


__all__ = ["no_nplusone"]


@pytest.fixture
def no_nplusone(request: pytest.FixtureRequest) -> Iterator[QueryProfile]:
    """Fail the test on an N+1: the query that reaches ``RESEE_PERF['NPLUSONE_THRESHOLD']``
    raises :class:`resee_perf.profiling.NPlusOneDetected` (from the loop's line), in the test
    and in the views it calls through Django's test client. Yields the test's profile."""
    from resee_perf.profiling import NPlusOneDetected, profile_forbidding_nplusone

    failed_before = request.session.testsfailed
    with profile_forbidding_nplusone() as profile:
        yield profile
    # An N+1 the test swallowed (a broad except) still fails it; one that already failed it
    # (counted by now: the call's report comes before the teardown) is not reported twice.
    if profile.nplusone and request.session.testsfailed == failed_before:
        raise NPlusOneDetected(profile.nplusone[0], profile.threshold)
