"""tests.settings with a broken RESEE_PERF, for the `manage.py check` subprocess test."""

from __future__ import annotations

from tests.settings import *  # noqa: F403

RESEE_PERF = {"KEY_PREFIX": 42, "KEY_PERFIX": "typo"}
