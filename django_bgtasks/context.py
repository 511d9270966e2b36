"""What a running task can learn about its own run: ``current_task()``.

Set around each call of a task's function (by the worker, and by EAGER runs), per
thread, so a function called outside any task sees None.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

from .message import TaskMessage


@dataclass(frozen=True)
class TaskRun:
    """The run of a task that is executing now."""

    id: str
    name: str
    queue_name: str
    attempt: int  # 1 for the first attempt
    worker_id: str
    # For a task fired by a periodic entry: the entry's name, and the tick this run
    # stands for (not when it started: a late or retried run still knows its tick).
    periodic_entry: str | None = None
    scheduled_for: datetime | None = None


_current: ContextVar[TaskRun | None] = ContextVar("django_bgtasks_current_task", default=None)


def current_task() -> TaskRun | None:
    """The task running in this thread, or None outside a task."""
    return _current.get()


@contextmanager
def running(msg: TaskMessage, attempt: int, worker_id: str) -> Iterator[TaskRun]:
    """Make ``msg`` the current task for the duration of the block."""
    scheduled = None
    if msg.periodic is not None and msg.run_after is not None:
        scheduled = datetime.fromtimestamp(msg.run_after, tz=UTC)
    run = TaskRun(msg.id, msg.name, msg.queue, attempt, worker_id, msg.periodic, scheduled)
    token = _current.set(run)
    try:
        yield run
    finally:
        _current.reset(token)
