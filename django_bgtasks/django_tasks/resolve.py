"""Finds the Django task a stored name points to, importing nothing it should not.

The name comes from Redis, so it is data, not code: it is only ever imported as a module
of an installed app, and only a ``django.tasks.Task`` bound to a BackgroundTaskBackend is
run. Anything else is refused with InvalidDjangoTask (the task goes to the dead queue).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from django.apps import apps

from .. import registry
from ..exceptions import SkipRetry
from . import module_path

if TYPE_CHECKING:
    from django.tasks import Task

    from ..task import BackgroundTask


class InvalidDjangoTask(SkipRetry):
    """A stored name that does not point to a Django task this process may run.

    A SkipRetry: another attempt would find the same code, so the task goes to the dead
    queue at once, with this message as its error.
    """


def _in_installed_app(module_name: str) -> bool:
    return any(module_name == config.name or module_name.startswith(config.name + ".")
               for config in apps.get_app_configs())


def _describe(obj: Any, attribute: str) -> str:
    return (f"not there: the module has no {attribute!r}" if obj is None
            else f"a {type(obj).__qualname__}")


def resolve(path: str) -> Task:
    """The ``django.tasks.Task`` at ``path`` ("module.function"); raises InvalidDjangoTask
    unless it is one, in a module of an installed app, bound to a BackgroundTaskBackend."""
    try:
        from django.tasks import Task
        from django.tasks.exceptions import InvalidTaskBackend
    except ImportError:
        import django

        raise InvalidDjangoTask(f"{path}: Django tasks need Django 6.0 or later (this is "
                                f"Django {django.get_version()})") from None
    from ..backends import BackgroundTaskBackend

    module_name, _, attribute = path.rpartition(".")
    # Identifiers only: a dotted name cannot reach a file path or a relative import.
    if not module_name or not all(part.isidentifier() for part in path.split(".")):
        raise InvalidDjangoTask(f"{path!r} is not the dotted path of a module-level task")
    if not _in_installed_app(module_name):
        raise InvalidDjangoTask(f"{path}: module {module_name} is not in an installed app "
                                f"(Django tasks run only from INSTALLED_APPS' modules)")
    try:
        module = import_module(module_name)
    except Exception as exc:  # noqa: BLE001  (whatever the import raised, nothing can run)
        raise InvalidDjangoTask(f"{path}: module {module_name} could not be imported "
                                f"({type(exc).__name__}: {exc})") from None
    task = getattr(module, attribute, None)
    if not isinstance(task, Task):
        raise InvalidDjangoTask(f"{path} is not a django.tasks.Task bound to a "
                                f"BackgroundTaskBackend (it is {_describe(task, attribute)})")
    if task.module_path != path:
        # Another function's task under this name: not what a name of ours points to.
        raise InvalidDjangoTask(f"{path} is the task of another function "
                                f"({task.module_path})")
    try:
        backend = task.get_backend()
    except InvalidTaskBackend as exc:
        raise InvalidDjangoTask(f"{path}: its backend {task.backend!r} is not configured "
                                f"({exc})") from None
    if not isinstance(backend, BackgroundTaskBackend):
        kind = type(backend)
        raise InvalidDjangoTask(f"{path} is not a django.tasks.Task bound to a "
                                f"BackgroundTaskBackend (its backend {task.backend!r} is "
                                f"{kind.__module__}.{kind.__qualname__})")
    return task


def worker_task(name: str) -> BackgroundTask | None:
    """For the worker: our task standing for the Django task ``name`` names (registered,
    so the next lookup finds it), or None when ``name`` is not a Django task's."""
    path = module_path(name)
    if path is None:
        return None
    task = resolve(path)
    adapter = task.get_backend().background_task(task)
    registry.register(adapter)
    return adapter
