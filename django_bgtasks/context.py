"""What a running task can learn about its own run: ``current_task()``.

Set around each call of a task's function (by the worker, and by EAGER runs), per
thread, so a function called outside any task sees None.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType

from .exceptions import TaskCancelled
from .message import TaskMessage

MAX_PROGRESS_MESSAGE = 200  # characters: a list row shows it, the record carries it

# (current, total, message): what set_progress() was last given.
Progress = tuple[float, float | None, str | None]

# The headers of a message without any: one shared read-only mapping, no copy per run.
NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class RunControl:
    """The mutable side of a run, shared by the task's thread and its worker: the task
    writes its progress, the worker's heartbeat reads it and sets ``cancel_requested``.
    Plain attribute writes (atomic in CPython): no lock, no Redis call."""

    __slots__ = ("cancel_requested", "progress")

    def __init__(self) -> None:
        self.cancel_requested = False
        self.progress: Progress | None = None


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"set_progress(): {name} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"set_progress(): {name} must be finite, not {value!r}")
    return value


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
    # The message's headers, read-only (docs/tracing.md): what the producer and its hooks
    # put there, such as a trace context.
    headers: Mapping[str, str] = field(default_factory=lambda: NO_HEADERS, compare=False)
    _control: RunControl = field(default_factory=RunControl, repr=False, compare=False)

    @property
    def cancel_requested(self) -> bool:
        """True once someone asked to cancel this run (it reaches the worker within a
        fraction of a second): stop, and raise TaskCancelled (raise_if_cancelled())."""
        return self._control.cancel_requested

    def raise_if_cancelled(self) -> None:
        """Raise TaskCancelled if this run's cancel was requested."""
        if self._control.cancel_requested:
            raise TaskCancelled("the task's cancel was requested")

    def set_progress(self, current: float, total: float | None = None,
                     message: str | None = None) -> None:
        """Note how far the run got: kept in memory (the latest value wins), sent with the
        worker's next lease renewal, within a second; no Redis call here."""
        current = _number("current", current)
        if total is not None:
            total = _number("total", total)
        if message is not None:
            if not isinstance(message, str):
                raise TypeError(f"set_progress(): message must be a string or None, not "
                                f"{message!r}")
            message = message[:MAX_PROGRESS_MESSAGE]
        self._control.progress = (current, total, message)


_current: ContextVar[TaskRun | None] = ContextVar("django_bgtasks_current_task", default=None)


def current_task() -> TaskRun | None:
    """The task running in this thread, or None outside a task."""
    return _current.get()


@contextmanager
def running(msg: TaskMessage, attempt: int, worker_id: str,
            control: RunControl | None = None) -> Iterator[TaskRun]:
    """Make ``msg`` the current task for the duration of the block (``control``: the
    worker's handle on the run; EAGER runs get their own)."""
    scheduled = None
    if msg.periodic is not None and msg.run_after is not None:
        scheduled = datetime.fromtimestamp(msg.run_after, tz=UTC)
    run = TaskRun(msg.id, msg.name, msg.queue, attempt, worker_id, msg.periodic, scheduled,
                  MappingProxyType(msg.headers) if msg.headers else NO_HEADERS,
                  control or RunControl())
    token = _current.set(run)
    try:
        yield run
    finally:
        _current.reset(token)
