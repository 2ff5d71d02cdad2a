"""Two endpoints that do no work, the floor a cached endpoint is measured against (bench).

``/api/ping/``: anonymous, no session, no authentication: Django and DRF themselves.
``/api/me/``: authenticated like the cached endpoints (session and user, from the cache when
the example runs on Redis), then nothing: what a cache hit of those endpoints cannot go below.
"""

from __future__ import annotations

from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from resee.users import authenticated_user


class PingView(APIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


class MeView(APIView):
    def get(self, request: Request) -> Response:
        return Response({"id": authenticated_user(request).pk})
