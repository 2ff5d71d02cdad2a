"""Checks of the metrics exporter (docs/observability.md): resee_perf.E050-E059 / W050-W059."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, Warning

from resee_perf.checks.settings import user_settings
from resee_perf.conf import OPTIONS, SETTING_NAME


def check_metrics(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    import os
    import sys

    from resee_perf.exporter import MULTIPROC_ENV

    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        if not (os.path.isdir(directory) and os.access(directory, os.W_OK)):
            return [
                Error(
                    f"{MULTIPROC_ENV} is {directory!r}, which is not a writable directory: "
                    "prometheus-client cannot record a single metric there.",
                    hint=(
                        f"Create the directory before the server starts, or unset {MULTIPROC_ENV}."
                    ),
                    id="resee_perf.E050",
                )
            ]
        return []
    # gunicorn sets GUNICORN_CMD_ARGS only when the user does, but its modules are imported
    # by the time the checks run in a worker, and its command is in argv[0].
    under_gunicorn = (
        "gunicorn.arbiter" in sys.modules
        or os.path.basename(sys.argv[0] if sys.argv else "").startswith("gunicorn")
        or bool(os.environ.get("GUNICORN_CMD_ARGS"))
    )
    try:
        import prometheus_client  # noqa: F401
    except ImportError:  # pragma: no cover - core-only install
        return []
    if under_gunicorn and _metrics_enabled():
        return [
            Warning(
                f"This process runs under gunicorn, but {MULTIPROC_ENV} is not set: each worker "
                "keeps its own metrics, and /metrics shows only those of the worker that "
                "answers the scrape (counters jump back and forth between workers).",
                hint=f"Set {MULTIPROC_ENV} to an empty directory in gunicorn's environment and "
                "add 'from resee_perf.gunicorn import child_exit, when_ready' to "
                "gunicorn.conf.py (docs/observability.md#gunicorn), or set "
                f"{SETTING_NAME}['METRICS_ENABLED'] = False.",
                id="resee_perf.W050",
            )
        ]
    return []


def _metrics_enabled() -> bool:
    value = user_settings().get("METRICS_ENABLED", OPTIONS["METRICS_ENABLED"].default)
    return value is not False
