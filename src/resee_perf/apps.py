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

        # Connections opened per alias (resee_perf_db_connections_opened_total).
        from django.db.backends.signals import connection_created

        from resee_perf import _request_metrics

        connection_created.connect(
            _request_metrics.connection_created, dispatch_uid="resee_perf.connection_created"
        )
