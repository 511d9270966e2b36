"""Finds the Django task a stored name points to, importing nothing it should not.

The name comes from Redis, so it is data, not code. Importing a module runs its top-level
code, so a name may only point into a module of an installed app that this process has
already imported (autodiscovery imports the apps' ``tasks`` modules, and a producer has
imported the module of every task it enqueues), or into an app's ``tasks`` module or a
submodule of it, the one place meant for tasks, which alone is imported on demand. Only a
``django.tasks.Task`` bound to a BackgroundTaskBackend is run. Anything else is refused
with InvalidDjangoTask (the task goes to the dead queue).
"""

from __future__ import annotations

import sys
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


def _inside(module_name: str, package: str) -> bool:
    return module_name == package or module_name.startswith(package + ".")


def _import_refusal(module_name: str) -> str | None:
    """Why ``module_name`` may not be imported for a stored name, or None if it may."""
    names = [config.name for config in apps.get_app_configs()]
    if not any(_inside(module_name, name) for name in names):
        return (f"module {module_name} is not in an installed app (Django tasks run only "
                f"from INSTALLED_APPS' modules)")
    if module_name in sys.modules or any(_inside(module_name, f"{name}.tasks")
                                         for name in names):
        return None
    return (f"module {module_name} is not imported in this process, and a stored name "
            f"imports only an app's 'tasks' module or a submodule of it (define the task "
            f"there, or import its module from one)")


def _describe(obj: Any, attribute: str) -> str:
    return (f"not there: the module has no {attribute!r}" if obj is None
            else f"a {type(obj).__qualname__}")


def resolve(path: str) -> Task:
    """The ``django.tasks.Task`` at ``path`` ("module.function"); raises InvalidDjangoTask
    unless it is one, bound to a BackgroundTaskBackend, in a module of an installed app
    that is already imported or is the app's ``tasks`` module or inside it."""
    try:
        from django.tasks import Task
        from django.tasks.exceptions import InvalidTaskBackend
    except ImportError:
        import django

        raise InvalidDjangoTask(f"{path}: Django tasks need Django 6.0 or later (this is "
                                f"Django {django.get_version()})") from None
    from .backend import BackgroundTaskBackend

    module_name, _, attribute = path.rpartition(".")
    # Identifiers only: a dotted name cannot reach a file path or a relative import.
    if not module_name or not all(part.isidentifier() for part in path.split(".")):
        raise InvalidDjangoTask(f"{path!r} is not the dotted path of a module-level task")
    refusal = _import_refusal(module_name)
    if refusal:
        raise InvalidDjangoTask(f"{path}: {refusal}")
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
