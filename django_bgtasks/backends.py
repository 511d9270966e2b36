"""Where users name the backend in ``TASKS``: ``django_bgtasks.backends.BackgroundTaskBackend``.
The code lives with the rest of the Django Tasks bridge, in ``django_tasks/backend.py``."""

from .django_tasks.backend import BackgroundTaskBackend

__all__ = ["BackgroundTaskBackend"]
