"""Our TaskInfo as Django's TaskResult: statuses, errors, worker ids, times, return value."""

from __future__ import annotations

import builtins
import dataclasses
from datetime import datetime
from typing import Any

from django.conf import settings
from django.tasks import Task, TaskResult, TaskResultStatus
from django.tasks.base import TaskError
from django.utils import timezone

from .. import exceptions
from ..info import TaskInfo

STATUS = {
    "pending": TaskResultStatus.READY,
    "waiting": TaskResultStatus.READY,  # for a limit: it has not started
    "blocked": TaskResultStatus.READY,  # for its workflow step or dependencies
    "scheduled": TaskResultStatus.READY,
    "retry": TaskResultStatus.READY,
    "active": TaskResultStatus.RUNNING,
    "completed": TaskResultStatus.SUCCESSFUL,
    "dead": TaskResultStatus.FAILED,
    # Django's statuses (6.0 and 6.1: READY, RUNNING, FAILED, SUCCESSFUL) have no
    # "cancelled" nor "expired": neither ran to success, so FAILED, with why as the last
    # of the result's errors (ENDED_UNRUN).
    "cancelled": TaskResultStatus.FAILED,
    "expired": TaskResultStatus.FAILED,
}
# The error a cancelled or expired task's result ends with: the exception that names the
# end (TaskCancelled from the worker's side of cancelling, TaskExpired), and why.
ENDED_UNRUN = {
    "cancelled": "TaskCancelled: the task was cancelled",
    "expired": "TaskExpired: the task was not started by its expires time",
}
# A record whose state cannot be read ("unknown") is never run again: the claim sends it
# to the dead queue.
UNREADABLE = TaskResultStatus.FAILED
FINISHED = {TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED}


def exception_class_path(error: str) -> str:
    """The class path in a stored error ("module.Class: message"). The worker writes
    builtins without a module ("ValueError: ..."), the scripts our own error names
    ("WorkerLost: ..."): both get the module their class lives in."""
    name = error.partition(":")[0].strip()
    if "." in name or not name.isidentifier():
        return name
    if isinstance(getattr(builtins, name, None), type):
        return f"builtins.{name}"
    if isinstance(getattr(exceptions, name, None), type):
        return f"{exceptions.__name__}.{name}"
    return name


def task_error(entry: dict[str, Any]) -> TaskError:
    """One failed attempt from our error history."""
    return TaskError(exception_class_path=exception_class_path(str(entry.get("error") or "")),
                     traceback=str(entry.get("traceback") or ""))


def ended_unrun(info: TaskInfo) -> list[TaskError]:
    """The error that says why a cancelled or expired task failed in Django's terms (its
    message as the traceback: TaskError has no other text), or none."""
    why = ENDED_UNRUN.get(info.state)
    if why is None:
        return []
    return [TaskError(exception_class_path=exception_class_path(why), traceback=why)]


def worker_ids(info: TaskInfo) -> list[str]:
    """One worker id per attempt, oldest first: the failed attempts' from the error history,
    then the running or successful one's. An attempt no longer in the history (it keeps
    the last 10) shows as ""."""
    ids = [str(entry.get("worker") or "") for entry in info.errors]
    if info.state in ("active", "completed"):
        ids.append(info.worker)
    missing = info.attempts - len(ids)
    return [""] * missing + ids if missing >= 0 else ids[-missing:]


def local_time(value: datetime | None) -> datetime | None:
    """One of our aware UTC times as Django's backends give times: naive, in the default
    time zone, when USE_TZ is False (as timezone.now() is)."""
    if value is None or settings.USE_TZ:
        return value
    return timezone.make_naive(value, timezone.get_default_timezone())


def as_enqueued(task: Task, info: TaskInfo) -> Task:
    """``task`` with the queue, priority and run_after its run was enqueued with (None
    unless one was asked for: the due time of a retry is ours, not Django's run_after)."""
    changes: dict[str, Any] = {}
    if info.queue_name != task.queue_name:
        changes["queue_name"] = info.queue_name
    if info.priority != task.priority:
        changes["priority"] = info.priority
    run_after = local_time(info.requested_run_after)
    if run_after != task.run_after:
        # replace(), not using(): using() cannot set run_after back to None
        changes["run_after"] = run_after
    return dataclasses.replace(task, **changes) if changes else task


def task_result(info: TaskInfo, task: Task) -> TaskResult:
    """Django's TaskResult for our ``info`` of a run of ``task``."""
    status = STATUS.get(info.state, UNREADABLE)
    started = local_time(info.started_at) if info.attempts else None
    result = TaskResult(
        task=task,
        id=info.id,
        status=status,
        enqueued_at=local_time(info.enqueued_at),
        # We keep the latest attempt's start: it is both "started" and "last attempted".
        started_at=started,
        last_attempted_at=started,
        finished_at=local_time(info.finished_at) if status in FINISHED else None,
        args=info.args,
        kwargs=info.kwargs,
        backend=task.backend,
        errors=[task_error(entry) for entry in info.errors] + ended_unrun(info),
        worker_ids=worker_ids(info),
    )
    if status == TaskResultStatus.SUCCESSFUL:
        # Not an __init__ field: Django's own backends set it the same way.
        object.__setattr__(result, "_return_value", info.result)
    return result
