"""DjangoTaskAdapter: one of our tasks standing for a Django task.

It goes through the same enqueue, EAGER and worker paths as any BackgroundTask, and adds
what ``django.tasks`` promises: the TaskContext, coroutine functions, and Django's
``task_enqueued`` / ``task_started`` / ``task_finished`` signals.
"""

from __future__ import annotations

import traceback
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from inspect import iscoroutinefunction
from typing import Any

from django.tasks import Task, TaskContext
from django.tasks.signals import task_enqueued, task_finished, task_started

from ..backoff import decide_failure
from ..info import TaskInfo
from ..message import TaskMessage, validate_result
from ..task import BackgroundTask
from .results import as_enqueued, task_result


@dataclass(frozen=True)
class DjangoTaskAdapter(BackgroundTask):
    """A BackgroundTask that runs ``django_task`` the way django.tasks expects."""

    django_task: Task | None = field(default=None, compare=False, repr=False)
    # The backend's OPTIONS["enqueue_on_commit"], in place of BGTASKS["ENQUEUE_ON_COMMIT"].
    enqueue_on_commit: bool = field(default=False, compare=False, repr=False)

    def _waits_for_commit(self) -> bool:
        return self.enqueue_on_commit

    def _sender(self) -> type:
        # Django's backends send their signals with the backend class as sender.
        return type(self.django_task.get_backend())

    def _announce_enqueued(self, infos: list[TaskInfo]) -> None:
        """Ours, then Django's task_enqueued: after the write (after the commit, when the
        enqueue waited for one)."""
        super()._announce_enqueued(infos)
        for info in infos:
            task_enqueued.send(self._sender(), task_result=task_result(info, self.django_task))

    def _run_attempt(self, msg: TaskMessage, attempt: int, worker_id: str) -> Any:
        """Run the Django task as ``Task.call`` does, with its context if it takes one;
        send task_started, and task_finished once the run is over: it succeeded, or
        failed for good. A coroutine function's run is returned as a coroutine, as our
        own async tasks' is: the worker runs it on its thread's event loop (where its
        timeout cancels it), EAGER to completion."""
        # TaskInfo times are aware UTC whatever USE_TZ (task_result converts them), so not
        # timezone.now().
        info = replace(TaskInfo.from_message(msg, "active"), attempts=attempt,
                       worker=worker_id, started_at=datetime.now(UTC))
        task = as_enqueued(self.django_task, info)
        running = task_result(info, task)
        task_started.send(type(task.get_backend()), task_result=running)
        args = [TaskContext(task_result=running), *msg.args] if task.takes_context else msg.args
        if iscoroutinefunction(task.func):
            return self._finish_async(task, info, attempt, task.acall(*args, **msg.kwargs))
        try:
            value = task.call(*args, **msg.kwargs)
        except BaseException as exc:
            self._failed(task, info, attempt, exc)
            raise
        return self._finished(task, info, value)

    async def _finish_async(self, task: Task, info: TaskInfo, attempt: int,
                            coro: Coroutine[Any, Any, Any]) -> Any:
        try:
            value = await coro
        except BaseException as exc:
            self._failed(task, info, attempt, exc)
            raise
        return self._finished(task, info, value)

    def _finished(self, task: Task, info: TaskInfo, value: Any) -> Any:
        try:
            validate_result(self.name, value)
        except BaseException as exc:
            self._failed(task, info, info.attempts, exc)
            raise
        done = replace(info, state="completed", finished_at=datetime.now(UTC), result=value)
        task_finished.send(type(task.get_backend()), task_result=task_result(done, task))
        return value

    def _failed(self, task: Task, info: TaskInfo, attempt: int, exc: BaseException) -> None:
        """Send task_finished for a failure that will not run again (the worker makes the
        same decision right after: only a task that will not run again has finished)."""
        if decide_failure(exc, attempt, info.max_retries, self.retry_backoff).outcome != "dead":
            return
        kind = type(exc)
        error = {"error": f"{kind.__module__}.{kind.__qualname__}: {exc}",
                 "traceback": "".join(traceback.format_exception(exc)),
                 "worker": info.worker}
        failed = replace(info, state="dead", finished_at=datetime.now(UTC), errors=(error,))
        task_finished.send(type(task.get_backend()), task_result=task_result(failed, task))
