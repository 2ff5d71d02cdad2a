"""resee_perf.gunicorn's hooks on real multiprocess files: a worker process writes a live gauge
and a counter the way a gunicorn worker does, then the arbiter's hooks run here (the
subprocess test, tests/test_exporter_gunicorn.py, runs them inside gunicorn, where coverage
does not reach)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from resee_perf.gunicorn import child_exit, when_ready

WORKER = """
from prometheus_client import Counter, Gauge
Counter("hook_requests", "requests", ["w"]).labels("a").inc(3)
Gauge("hook_in_flight", "in flight", ["w"], multiprocess_mode="livesum").labels("a").set(2)
"""


def run_worker(directory: Path) -> int:
    """A finished worker's pid, its metric files left in ``directory``."""
    process = subprocess.run(
        [sys.executable, "-c", WORKER + "import os; print(os.getpid())"],
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return int(process.stdout)


def scraped(directory: Path) -> dict[str, float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return {
        sample.name: sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name in {"hook_requests_total", "hook_in_flight"}
    }


def test_child_exit_drops_a_dead_workers_live_gauges_and_keeps_its_counters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = run_worker(tmp_path)
    assert scraped(tmp_path) == {"hook_requests_total": 3.0, "hook_in_flight": 2.0}
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    child_exit(server=None, worker=SimpleNamespace(pid=pid))
    assert scraped(tmp_path) == {"hook_requests_total": 3.0}
    assert not list(tmp_path.glob(f"gauge_livesum_{pid}.db"))


def test_when_ready_empties_the_directory_of_a_previous_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_worker(tmp_path)
    (tmp_path / "notes.txt").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    when_ready(server=None)
    assert scraped(tmp_path) == {}
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_without_the_directory_both_hooks_touch_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = run_worker(tmp_path)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    when_ready(server=None)
    child_exit(server=None, worker=SimpleNamespace(pid=pid))
    assert scraped(tmp_path) == {"hook_requests_total": 3.0, "hook_in_flight": 2.0}
