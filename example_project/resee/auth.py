"""The authenticated user of each request, loaded from the cache rather than PostgreSQL.

Django's ``AuthenticationMiddleware`` loads the session's user with one query on every
request (``ModelBackend.get_user``), so even a cached response cost a database round trip.
:class:`CachedUserBackend` reads the user's row through ``cache_aside`` instead, and any save or
delete of the user (a password change, deactivation) drops the entry after commit
(:func:`connect`). Django still checks the session's auth hash against the password hash on
every request, so a changed password logs the other sessions out as before.

The entry holds the user's password *hash* (the session check needs it): Redis must be as
private as the database (docs/cache.md, "Signing entries").
"""

from __future__ import annotations

import datetime
from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import User

from resee_perf import cache_aside, invalidate_on

_FIELDS = (
    "id",
    "username",
    "password",
    "first_name",
    "last_name",
    "email",
    "is_active",
    "is_staff",
    "is_superuser",
)
_DATES = ("last_login", "date_joined")


def account_tags(user: User) -> list[str]:
    return [f"user:{user.pk}:account"]


@cache_aside("auth:user:{user_id}", ttl=3600, tags=["user:{user_id}:account"])
def user_row(user_id: int) -> dict[str, Any] | None:
    """The user's columns as JSON-friendly data, None if there is no such user."""
    user = User._default_manager.filter(pk=user_id).first()
    if user is None:
        return None
    row: dict[str, Any] = {name: getattr(user, name) for name in _FIELDS}
    for name in _DATES:
        value = getattr(user, name)
        row[name] = value.isoformat() if value is not None else None
    return row


def user_from_row(row: dict[str, Any]) -> User:
    values = dict(row)
    for name in _DATES:
        if values[name] is not None:
            values[name] = datetime.datetime.fromisoformat(values[name])
    user = User(**values)
    # A row that exists: a save() from it is an UPDATE, as for a user read by the ORM.
    user._state.adding = False
    user._state.db = "default"
    return user


class CachedUserBackend(ModelBackend):
    """``ModelBackend`` whose ``get_user`` (once per request) reads :func:`user_row`."""

    def get_user(self, user_id: Any) -> User | None:
        try:
            pk = int(user_id)
        except (TypeError, ValueError):
            return None
        row = user_row(pk)
        if row is None:
            return None
        user = user_from_row(row)
        return user if self.user_can_authenticate(user) else None


def connect() -> None:
    invalidate_on(User, tags=account_tags)
