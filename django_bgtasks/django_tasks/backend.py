"""BackgroundTaskBackend: Django's Tasks framework (``django.tasks``, Django 6.0+) on
django-bgtasks' workers.

    TASKS = {"default": {"BACKEND": "django_bgtasks.backends.BackgroundTaskBackend",
                         "QUEUES": ["default", "mail"], "OPTIONS": {"max_retries": 5}}}

Functions decorated with Django's ``@task`` then run on ``manage.py runbackground``, with
our retries, dead queue, leases, admin pages and command line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

try:
    from django.tasks import Task, TaskResult
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
except ImportError as exc:  # Django 5.2: the rest of django_bgtasks works without it
    raise ImportError(f"django_bgtasks.backends needs Django 6.0 or later (django.tasks): "
                      f"{exc}") from exc
from django.apps import apps
from django.core.checks import CheckMessage, Error, Warning
from django.utils import timezone

from ..broker.keys import validate_queue_name
from ..conf import get_settings
from ..exceptions import TaskNotFound
from ..task import BackgroundTask, get_task_info
from . import module_path, task_name
from .adapter import DjangoTaskAdapter
from .resolve import InvalidDjangoTask, resolve
from .results import as_enqueued, task_result

# Our options a Django task takes, from OPTIONS and (Django 6.1) from @task(...); the flow
# control ones as @background_task takes them (docs/limits.md).
OPTION_NAMES = ("max_retries", "timeout", "retry_backoff", "result_ttl", "concurrency_limit",
                "rate_limit", "limit_key", "limits", "fair_key", "expires")
# The backend's own options, from OPTIONS only.
BACKEND_OPTION_NAMES = ("enqueue_on_commit",)
# get_result is a capability Django's API offers, so finished tasks are kept a day
# (ours are kept only when asked); OPTIONS["result_ttl"] = None or 0 keeps none.
DEFAULT_OPTIONS: dict[str, Any] = {"result_ttl": 24 * 3600}


@dataclass(frozen=True, slots=True, kw_only=True)
class DjangoTask(Task):
    """django.tasks.Task plus our options (the backend's ``task_class``). None takes the
    backend's OPTIONS; on Django 6.1, ``@task(max_retries=0, timeout=60)`` sets them.
    ``result_ttl=0`` keeps no finished task."""

    max_retries: int | None = None
    timeout: float | timedelta | None = None
    retry_backoff: Callable[[int], float] | None = None
    result_ttl: float | timedelta | None = None
    concurrency_limit: int | None = None
    rate_limit: str | None = None
    limit_key: Callable[..., Any] | None = None
    limits: Sequence[str] | None = None
    fair_key: Callable[..., Any] | None = None
    expires: timedelta | datetime | None = None  # Django's Task has no expiry of its own


class BackgroundTaskBackend(BaseTaskBackend):
    """Runs Django tasks on django-bgtasks: enqueued to Redis like ``@background_task``
    functions (honouring ``BGTASKS["EAGER"]``; inside a transaction, at once as Django's
    backends do unless ``OPTIONS["enqueue_on_commit"]``), run by ``runbackground``,
    retried, dead-lettered, shown in the admin."""

    task_class = DjangoTask
    supports_defer = True
    supports_priority = True
    supports_get_result = True
    supports_async_task = True

    def task_options(self, task: Task | None = None) -> dict[str, Any]:
        """Our options for ``task``: defaults, then OPTIONS, then the task's own (the
        backend's alone without a task)."""
        found = {**DEFAULT_OPTIONS,
                 **{k: v for k, v in self.options.items() if k in OPTION_NAMES}}
        for name in OPTION_NAMES:
            value = getattr(task, name, None)  # a plain Task has none of them
            if value is not None:
                found[name] = value
        if not found.get("result_ttl"):
            found["result_ttl"] = None
        return found

    def background_task(self, task: Task) -> DjangoTaskAdapter:
        """Our task for a run of ``task``: its queue, priority and run_after, our options.
        Raises ValueError or TypeError for an option we cannot take."""
        run_after = task.run_after
        if run_after is not None and timezone.is_naive(run_after):
            run_after = timezone.make_aware(run_after)  # USE_TZ = False: local time
        return DjangoTaskAdapter(func=task.func, name=task_name(task.module_path),
                                 queue_name=task.queue_name, priority=task.priority,
                                 run_after=run_after, django_task=task,
                                 enqueue_on_commit=self.enqueue_on_commit(),
                                 **self.task_options(task))

    def enqueue_on_commit(self) -> bool:
        """OPTIONS["enqueue_on_commit"]: whether an enqueue inside a transaction waits for
        its commit. False by default: Django's contract is to write at once, and users
        defer with transaction.on_commit. Raises TypeError unless True or False."""
        value = self.options.get("enqueue_on_commit", False)
        if not isinstance(value, bool):
            raise TypeError(f"enqueue_on_commit must be True or False, not {value!r}")
        return value

    def validate_task(self, task: Task) -> None:
        """Django's checks, then ours (queue name, options), as InvalidTask."""
        super().validate_task(task)
        try:
            self.background_task(task)
        except (TypeError, ValueError) as exc:
            raise InvalidTask(f"{task.module_path}: {exc}") from None

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Write a run of ``task`` to Redis (at once, even inside a transaction, unless
        OPTIONS["enqueue_on_commit"]) and return its READY result, the one get_result()
        reads back."""
        self.validate_task(task)
        try:
            # The worker finds the task again by its module path: refuse now what it
            # would refuse then (a task it cannot import as a Task of ours).
            resolve(task.module_path)
        except InvalidDjangoTask as exc:
            raise InvalidTask(f"{exc}; declare it with @task on a module-level function "
                              f"of an installed app") from None
        info = self.background_task(task).enqueue(*args, **kwargs)
        return task_result(info, as_enqueued(task, info))

    def get_result(self, result_id: str) -> TaskResult:
        """The TaskResult of a Django task, fresh from Redis; raises
        TaskResultDoesNotExist for an unknown id, or one that is not a Django task."""
        try:
            info = get_task_info(result_id)
        except TaskNotFound as exc:
            raise TaskResultDoesNotExist(str(exc)) from None
        path = module_path(info.name)
        if path is None:
            raise TaskResultDoesNotExist(f"task {result_id!r} is {info.name}, not a Django "
                                         f"task")
        try:
            task = resolve(path)
        except InvalidDjangoTask as exc:
            raise TaskResultDoesNotExist(f"task {result_id!r}: {exc}") from None
        return task_result(info, as_enqueued(task, info))

    def check(self, **kwargs: Any) -> list[CheckMessage]:
        """OPTIONS, QUEUES and INSTALLED_APPS, for ``manage.py check`` (ids bgtasks.E011,
        E012, E015, W004)."""
        where = f"TASKS[{self.alias!r}]"
        found: list[CheckMessage] = []
        if not apps.is_installed("django_bgtasks"):
            # Only this check can see it: without the app, django_bgtasks.checks is never
            # imported, and no runbackground command exists to run the tasks.
            found.append(Error(
                f"{where} uses BackgroundTaskBackend, but 'django_bgtasks' is not in "
                f"INSTALLED_APPS: its tasks would be enqueued and never run.",
                hint="Add 'django_bgtasks' to INSTALLED_APPS, and run the workers with "
                     "manage.py runbackground.", id="bgtasks.E015"))
        known = OPTION_NAMES + BACKEND_OPTION_NAMES
        unknown = sorted(set(self.options) - set(known))
        if unknown:
            found.append(Error(f"{where}['OPTIONS'] has unknown keys: {', '.join(unknown)}.",
                               hint=f"Known keys: {', '.join(known)}.", id="bgtasks.E011"))
        for validate in (self._probe_options, self.enqueue_on_commit):
            try:
                validate()
            except (TypeError, ValueError) as exc:
                found.append(Error(f"{where}['OPTIONS']: {exc}.", id="bgtasks.E011"))
        consumed = get_settings().QUEUES
        for queue in sorted(self.queues):
            try:
                validate_queue_name(queue)
            except ValueError as exc:
                found.append(Error(f"{where}['QUEUES']: {exc}.", id="bgtasks.E012"))
                continue
            if isinstance(consumed, Mapping) and queue not in consumed:
                found.append(Warning(
                    f"{where}['QUEUES'] has {queue!r}, which is not in BGTASKS['QUEUES']: "
                    f"runbackground without --queues does not run its tasks.",
                    hint=f"Add {queue!r} to BGTASKS['QUEUES'].", id="bgtasks.W004"))
        return found

    def _probe_options(self) -> None:
        """Build a task with OPTIONS' task options: raises as an invalid one would."""
        BackgroundTask(func=_probe, name="probe", **self.task_options())


def _probe() -> None:
    """The function check() builds a task of, to validate OPTIONS."""

