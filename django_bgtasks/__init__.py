"""django-bgtasks: Redis-backed background tasks for Django."""

from .exceptions import (
    BgTasksError,
    BrokerUnavailable,
    EnqueueError,
    Retry,
    SkipRetry,
    TaskAlreadyExists,
    TaskNotFound,
    TaskTimeout,
)
from .info import TaskInfo
from .periodic import periodic_task
from .task import BackgroundTask, background_task, get_task_info

__all__ = [
    "BackgroundTask", "BgTasksError", "BrokerUnavailable", "EnqueueError", "Retry",
    "SkipRetry", "TaskAlreadyExists", "TaskInfo", "TaskNotFound", "TaskTimeout",
    "background_task", "get_task_info", "periodic_task",
]
