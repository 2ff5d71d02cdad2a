from __future__ import annotations

from django.contrib.auth.models import User
from rest_framework.exceptions import NotAuthenticated
from rest_framework.request import Request


def authenticated_user(request: Request) -> User:
    """The request's user, typed; the views' ``IsAuthenticated`` has already let it in."""
    user = request.user
    if not isinstance(user, User):
        raise NotAuthenticated
    return user
