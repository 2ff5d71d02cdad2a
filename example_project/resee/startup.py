"""Checks a server process makes before it takes requests."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def require_secret_key() -> None:
    """Fail at startup, not at the first request that signs something, without a key.

    resee.settings leaves ``SECRET_KEY`` empty outside ``DEBUG`` when ``DJANGO_SECRET_KEY``
    is not set; management commands that need no key still run.
    """
    try:
        settings.SECRET_KEY  # noqa: B018  Django refuses an empty key on access.
    except ImproperlyConfigured as error:
        raise ImproperlyConfigured(
            "Set DJANGO_SECRET_KEY: with DJANGO_DEBUG off there is no default key (a "
            "published one would let anyone forge sessions). For a local demo, DJANGO_DEBUG=1 "
            "uses a development key."
        ) from error
