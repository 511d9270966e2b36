"""Task name -> task: the worker runs only what a decorator registered."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .task import BackgroundTask

_tasks: dict[str, BackgroundTask] = {}


def register(task: BackgroundTask) -> None:
    """Register ``task`` under its name (re-decorating the same function replaces it)."""
    _tasks[task.name] = task


def lookup(name: str) -> BackgroundTask | None:
    """The registered task called ``name``, or None."""
    return _tasks.get(name)


def registered_names() -> list[str]:
    return sorted(_tasks)
