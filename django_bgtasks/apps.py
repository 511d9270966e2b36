from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class BgTasksConfig(AppConfig):
    name = "django_bgtasks"
    verbose_name = "Background tasks"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

        # Register every installed app's tasks so that the worker knows them by name.
        autodiscover_modules("tasks")
