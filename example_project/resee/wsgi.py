"""WSGI entry point, e.g. ``gunicorn resee.wsgi``."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from resee.startup import require_secret_key

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "resee.settings")

application = get_wsgi_application()
require_secret_key()
