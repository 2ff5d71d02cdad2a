"""Checks of ``RESEE_PERF`` itself: resee_perf.E001-E009 / W001-W009."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error

from resee_perf.conf import OPTIONS, SETTING_NAME, invalid_message


def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    user = getattr(settings, SETTING_NAME, {})
    if not isinstance(user, Mapping):
        return [
            Error(
                f"settings.{SETTING_NAME} should be a dict, not {type(user).__name__}.",
                hint=f"Set {SETTING_NAME} to a dict of the options in the settings reference.",
                id="resee_perf.E001",
            )
        ]
    errors: list[CheckMessage] = []
    for name in user:
        if name not in OPTIONS:
            errors.append(_unknown_key(name))
    for name, option in OPTIONS.items():
        if name in user and not option.validate(user[name]):
            errors.append(
                Error(
                    invalid_message(name, user[name]),
                    hint=f"{option.doc} Default: {option.default!r}.",
                    id="resee_perf.E002",
                )
            )
    errors.extend(_check_cache_alias(user))
    return errors


def _unknown_key(name: Any) -> Error:
    close = difflib.get_close_matches(str(name), list(OPTIONS), n=1)
    hint = f"Did you mean {close[0]!r}?" if close else f"Known keys: {', '.join(sorted(OPTIONS))}."
    return Error(f"{SETTING_NAME} has an unknown key {name!r}.", hint=hint, id="resee_perf.E003")


def _check_cache_alias(user: Mapping[str, Any]) -> list[CheckMessage]:
    alias = user.get("CACHE_ALIAS", OPTIONS["CACHE_ALIAS"].default)
    if not OPTIONS["CACHE_ALIAS"].validate(alias) or alias in settings.CACHES:
        return []
    return [
        Error(
            f"{SETTING_NAME}['CACHE_ALIAS'] is {alias!r}, which is not a cache in settings.CACHES.",
            hint=f"Use one of: {', '.join(sorted(settings.CACHES))}.",
            id="resee_perf.E004",
        )
    ]


def user_settings() -> Mapping[str, Any]:
    """``settings.RESEE_PERF`` as given, or empty where it is not a dict (E001 reports that):
    the checks read the raw values, so that one bad key does not hide the others' problems."""
    user = getattr(settings, SETTING_NAME, {})
    return user if isinstance(user, Mapping) else {}
