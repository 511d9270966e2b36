"""Task name -> task: the worker runs only what a decorator registered, or what a
resolver for a name's prefix finds (the Django Tasks bridge registers one for "django:"
names in its app's ready(); the worker knows only this module)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .task import BackgroundTask

_tasks: dict[str, BackgroundTask] = {}
_resolvers: dict[str, Callable[[str], BackgroundTask | None]] = {}


def register(task: BackgroundTask) -> None:
    """Register ``task`` under its name (re-decorating the same function replaces it)."""
    _tasks[task.name] = task


def lookup(name: str) -> BackgroundTask | None:
    """The registered task called ``name``, or None."""
    return _tasks.get(name)


def registered_names() -> list[str]:
    return sorted(_tasks)


def all_tasks() -> list[BackgroundTask]:
    """Every registered task, by name."""
    return [_tasks[name] for name in sorted(_tasks)]


def add_resolver(prefix: str, resolver: Callable[[str], BackgroundTask | None]) -> None:
    """Have ``resolver(name)`` find the tasks whose names start with ``prefix`` (it may
    raise to refuse a name; what it returns is run)."""
    _resolvers[prefix] = resolver


def resolve(name: str) -> BackgroundTask | None:
    """The registered task called ``name``, else what the resolver of its prefix finds,
    else None."""
    task = _tasks.get(name)
    if task is not None:
        return task
    for prefix, resolver in _resolvers.items():
        if name.startswith(prefix):
            return resolver(name)
    return None
