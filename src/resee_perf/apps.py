from __future__ import annotations

from django.apps import AppConfig


class ReseePerfConfig(AppConfig):
    name = "resee_perf"
    verbose_name = "resee-perf"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported once the app registry is ready: the checks import the features.
        from resee_perf import checks

        checks.register()
