"""Server hooks for prometheus-client's multiprocess mode under gunicorn.

Each gunicorn worker writes its metrics to files in ``PROMETHEUS_MULTIPROC_DIR`` and
``/metrics`` merges them, whichever worker answers the scrape. Two hooks keep that right; a
``gunicorn.conf.py`` needs two lines::

    from resee_perf.gunicorn import child_exit, when_ready  # noqa: F401

(and ``PROMETHEUS_MULTIPROC_DIR`` set to an existing directory in gunicorn's environment,
before Python starts). docs/observability.md#gunicorn explains why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from resee_perf.exporter import MULTIPROC_ENV

__all__ = ["child_exit", "when_ready"]


def when_ready(server: Any) -> None:
    """Empty the directory when the arbiter starts: files of a previous run's workers would
    otherwise be merged into this run's counters (and their live gauges never removed)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    for path in Path(directory).glob("*.db"):
        path.unlink(missing_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """A worker has exited: drop its live gauges (its counters and histograms stay counted)."""
    if not os.environ.get(MULTIPROC_ENV):
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:  # pragma: no cover - core-only install
        return
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
