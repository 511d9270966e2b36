import django
from django.apps import AppConfig


class DemoConfig(AppConfig):
    """Demo tasks for scripts/demo and the test suite."""

    name = "demo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        if django.VERSION >= (6, 0):
            # Django's @task functions live outside demo.tasks: a worker finds a Django task
            # by name only in a module imported at startup or in a tasks module
            # (docs/django-tasks.md), so import them here.
            from demo import django_tasks  # noqa: F401
