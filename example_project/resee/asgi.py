"""ASGI entry point, e.g. ``uvicorn resee.asgi:application``."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from resee.startup import require_secret_key

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "resee.settings")

application = get_asgi_application()
require_secret_key()
