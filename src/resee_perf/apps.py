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
        checks.register(resee_checks.check_connection_budget, deploy=True)
        checks.register(resee_checks.check_cache_aside, checks.Tags.caches)
        checks.register(resee_checks.check_invalidation_caches, checks.Tags.caches)
        checks.register(
            resee_checks.check_invalidation_caches_deploy, checks.Tags.caches, deploy=True
        )
        checks.register(resee_checks.check_profiling_deploy, deploy=True)
