from __future__ import annotations

from django.apps import AppConfig


class ReseeConfig(AppConfig):
    name = "resee"
    verbose_name = "Resee"

    def ready(self) -> None:
        from resee import auth

        auth.connect()
