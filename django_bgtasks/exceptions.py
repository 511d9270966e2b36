"""Exceptions raised by django-bgtasks, and the two a task may raise to steer retries."""

from __future__ import annotations

import math
from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured


class BgTasksError(Exception):
    """Base class of the errors django-bgtasks raises."""


class BrokerUnavailable(BgTasksError):
    """Redis could not be reached (connection refused, timeout, loading, failover)."""


class InvalidRedisSetting(BgTasksError, ImproperlyConfigured):
    """A setting naming Redis cannot be used as written (a malformed URL, a node that is
    not host:port). The message names the setting, never its value: it may hold a password."""


class EnqueueError(BgTasksError):
    """A task could not be written to Redis; nothing was enqueued."""


class MessageTooLarge(EnqueueError, ValueError):
    """A task's message is over BGTASKS["MAX_MESSAGE_BYTES"]; nothing was enqueued."""


class TaskAlreadyExists(EnqueueError):
    """A task with this id exists, or a uniqueness lock is held by another task."""

    def __init__(self, message: str, holder_id: str) -> None:
        super().__init__(message)
        self.holder_id = holder_id


class TaskNotFound(BgTasksError, LookupError):
    """No task with this id is stored (never enqueued, or finished and not kept)."""


class InvalidTaskMessage(BgTasksError):
    """A message read from Redis is not a valid task (corrupt or foreign data)."""


class InvalidTaskRecord(InvalidTaskMessage):
    """Names the error of a task whose record in Redis is damaged (written by the scripts;
    never raised): the task went to the dead queue without running."""


class InvalidTaskId(InvalidTaskMessage):
    """Names the error of a task whose id is not UTF-8 text (written by the scripts; never
    raised): no worker could report on it, so it went to the dead queue."""


class WorkerLost(BgTasksError):
    """Names the error of an attempt whose worker died or lost its lease (written by the
    recovery; never raised). The attempt counts."""


class TaskExpired(BgTasksError):
    """Names the end of a task not started by its ``expires`` time, in a Django Tasks
    result's errors (never raised)."""


class TaskTimeout(BgTasksError):
    """Raised inside a task's thread when it runs past its ``timeout``."""


class TaskCancelled(BgTasksError):
    """Ends a run as ``cancelled`` (never retried). Raised inside a task's thread when its
    cancel was requested and it did not stop within ``CANCEL_GRACE``; a task may raise it
    itself (``current_task().raise_if_cancelled()``), asked or not."""


class HookError(BgTasksError):
    """Names the failure of an attempt whose hook (BGTASKS['HOOKS']) raised before the task
    ran: the attempt fails as if the task had raised, retried by its policy."""


class Retry(Exception):
    """Raise inside a task to have it retried after ``delay`` (seconds or timedelta)."""

    def __init__(self, delay: float | timedelta | None = None, reason: str = "") -> None:
        super().__init__(reason or "retry requested")
        if isinstance(delay, timedelta):
            delay = delay.total_seconds()
        if delay is not None and not (math.isfinite(delay) and delay >= 0):
            # Refused where the task raises it, so its error names the real mistake.
            raise ValueError(f"Retry delay must be a finite number of seconds >= 0, "
                             f"not {delay!r}")
        self.delay = delay


class SkipRetry(Exception):
    """Raise inside a task to send it straight to the dead queue, without retries."""
