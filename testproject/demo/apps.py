from django.apps import AppConfig


class DemoConfig(AppConfig):
    """Demo tasks for scripts/demo and the test suite."""

    name = "demo"
    default_auto_field = "django.db.models.BigAutoField"
