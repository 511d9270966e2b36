"""django-bgtasks: Redis-backed background tasks for Django."""

from .context import TaskRun, current_task
from .exceptions import (
    BgTasksError,
    BrokerUnavailable,
    EnqueueError,
    MessageTooLarge,
    Retry,
    SkipRetry,
    TaskAlreadyExists,
    TaskNotFound,
    TaskTimeout,
)
from .info import TaskInfo
from .periodic import periodic_task
from .task import BackgroundTask, aget_task_info, background_task, get_task_info

__all__ = [
    "BackgroundTask", "BgTasksError", "BrokerUnavailable", "EnqueueError", "MessageTooLarge",
    "Retry", "SkipRetry", "TaskAlreadyExists", "TaskInfo", "TaskNotFound", "TaskRun",
    "TaskTimeout",
    "aget_task_info", "background_task", "current_task", "get_task_info", "periodic_task",
]
