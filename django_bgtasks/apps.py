from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class BgTasksConfig(AppConfig):
    name = "django_bgtasks"
    verbose_name = "Background tasks"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import checks, registry  # noqa: F401  (checks: registers the system checks)
        from .django_tasks import PREFIX
        from .django_tasks.resolve import worker_task
        from .metrics import checks as metrics_checks  # noqa: F401  (registers its check)

        # "django:" names are Django tasks, found on demand (safely: resolve.py).
        registry.add_resolver(PREFIX, worker_task)

        # Register every installed app's tasks so that the worker knows them by name.
        autodiscover_modules("tasks")
