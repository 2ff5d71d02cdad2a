from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class ReseePerfConfig(AppConfig):
    name = "resee_perf"
    verbose_name = "resee-perf"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from resee_perf import checks as resee_checks

        checks.register(resee_checks.check_settings)
        checks.register(resee_checks.check_connections)
        checks.register(resee_checks.check_router)
        checks.register(resee_checks.check_metrics)
        checks.register(resee_checks.check_connection_budget, deploy=True)
        checks.register(resee_checks.check_cache_aside, checks.Tags.caches)
        checks.register(resee_checks.check_invalidation_caches, checks.Tags.caches)
        checks.register(
            resee_checks.check_invalidation_caches_deploy, checks.Tags.caches, deploy=True
        )

        # Connections opened per alias (resee_perf_db_connections_opened_total).
        from django.db.backends.signals import connection_created

        from resee_perf import _request_metrics

        connection_created.connect(
            _request_metrics.connection_created, dispatch_uid="resee_perf.connection_created"
        )
