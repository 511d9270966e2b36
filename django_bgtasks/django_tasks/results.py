"""Our TaskInfo as Django's TaskResult: statuses, errors, worker ids, times, return value."""

from __future__ import annotations

import builtins
from typing import Any

from django.tasks import Task, TaskResult, TaskResultStatus
from django.tasks.base import TaskError

from .. import exceptions
from ..info import TaskInfo

STATUS = {
    "pending": TaskResultStatus.READY,
    "scheduled": TaskResultStatus.READY,
    "retry": TaskResultStatus.READY,
    "active": TaskResultStatus.RUNNING,
    "completed": TaskResultStatus.SUCCESSFUL,
    "dead": TaskResultStatus.FAILED,
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


def worker_ids(info: TaskInfo) -> list[str]:
    """One worker id per attempt, oldest first: the failed attempts' from the error history,
    then the running or successful one's. An attempt no longer in the history (it keeps
    the last 10) shows as ""."""
    ids = [str(entry.get("worker") or "") for entry in info.errors]
    if info.state in ("active", "completed"):
        ids.append(info.worker)
    missing = info.attempts - len(ids)
    return [""] * missing + ids if missing >= 0 else ids[-missing:]


def as_enqueued(task: Task, info: TaskInfo) -> Task:
    """``task`` with the queue, priority and due time its run was stored with."""
    changes: dict[str, Any] = {}
    if info.queue_name != task.queue_name:
        changes["queue_name"] = info.queue_name
    if info.priority != task.priority:
        changes["priority"] = info.priority
    if info.run_after is not None and info.run_after != task.run_after:
        changes["run_after"] = info.run_after
    return task.using(**changes) if changes else task


def task_result(info: TaskInfo, task: Task) -> TaskResult:
    """Django's TaskResult for our ``info`` of a run of ``task``."""
    status = STATUS.get(info.state, UNREADABLE)
    started = info.started_at if info.attempts else None
    result = TaskResult(
        task=task,
        id=info.id,
        status=status,
        enqueued_at=info.enqueued_at,
        # We keep the latest attempt's start: it is both "started" and "last attempted".
        started_at=started,
        last_attempted_at=started,
        finished_at=info.finished_at if status in FINISHED else None,
        args=info.args,
        kwargs=info.kwargs,
        backend=task.backend,
        errors=[task_error(entry) for entry in info.errors],
        worker_ids=worker_ids(info),
    )
    if status == TaskResultStatus.SUCCESSFUL:
        # Not an __init__ field: Django's own backends set it the same way.
        object.__setattr__(result, "_return_value", info.result)
    return result
