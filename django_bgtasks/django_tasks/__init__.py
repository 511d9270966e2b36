"""The bridge to Django's Tasks framework (``django.tasks``, Django 6.0+).

A Django task enqueued through ``django_bgtasks.backends.BackgroundTaskBackend`` becomes
one of our tasks named ``"django:<module path>"`` (``django:shop.tasks.send_receipt``):
the prefix tells the worker to find it through ``resolve`` rather than the registry of
``@background_task`` functions, and keeps the two kinds of names apart in the admin.

This package imports on any Django; the modules that need ``django.tasks`` import it
themselves (``adapter``, ``results``), and ``resolve`` only when it resolves a name.
"""

from __future__ import annotations

PREFIX = "django:"


def task_name(module_path: str) -> str:
    """The stored name of the Django task at ``module_path``."""
    return PREFIX + module_path


def module_path(name: str) -> str | None:
    """The Django task's module path in a stored name, or None for any other task."""
    return name[len(PREFIX):] if name.startswith(PREFIX) else None
