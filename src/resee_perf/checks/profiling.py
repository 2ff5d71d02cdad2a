"""Checks of query profiling (docs/profiling.md): resee_perf.E060-E069 / W060-W069."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Warning

from resee_perf.checks.settings import user_settings
from resee_perf.conf import SETTING_NAME


def check_profiling_deploy(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Profiling settings meant for development, found in a deployment (``check --deploy``)."""
    user = user_settings()
    if settings.DEBUG:
        return []
    messages: list[CheckMessage] = []
    if user.get("NPLUSONE_RAISE") is True:
        messages.append(
            Warning(
                f"{SETTING_NAME}['NPLUSONE_RAISE'] is True with DEBUG off: a request that "
                "runs an N+1 fails with an error instead of being reported.",
                hint=f"Leave {SETTING_NAME}['NPLUSONE_RAISE'] to tests and development; "
                "in production the log record and resee_perf_nplusone_total report N+1s.",
                id="resee_perf.W060",
            )
        )
    if user.get("SERVER_TIMING") == "all":
        messages.append(
            Warning(
                f"{SETTING_NAME}['SERVER_TIMING'] is 'all' with DEBUG off: every client sees "
                "how long your database and cache took for its requests.",
                hint=f"Set {SETTING_NAME}['SERVER_TIMING'] to 'staff' (the default) or 'off'.",
                id="resee_perf.W061",
            )
        )
    return messages
