"""django-bgtasks: Redis-backed background tasks for Django."""

# The one place the version is written: setup.cfg reads it (attr:, without importing the
# package), docs/conf.py reads the installed metadata. Keep it a plain literal.
__version__ = "0.1.0"

from .context import TaskRun, current_task
from .exceptions import (
    BgTasksError,
    BrokerUnavailable,
    EnqueueError,
    MessageTooLarge,
    Retry,
    SkipRetry,
    TaskAlreadyExists,
    TaskCancelled,
    TaskNotFound,
    TaskTimeout,
)
from .info import TaskInfo, TaskProgress
from .periodic import periodic_task
from .task import (
    BackgroundTask,
    aget_task_info,
    background_task,
    cancel_task,
    get_task_info,
)
from .workflows import (
    TaskCall,
    WorkflowInfo,
    WorkflowNotFound,
    cancel_workflow,
    chain,
    chord,
    get_workflow,
    group,
)

__all__ = [
    "BackgroundTask", "BgTasksError", "BrokerUnavailable", "EnqueueError", "MessageTooLarge",
    "Retry", "SkipRetry", "TaskAlreadyExists", "TaskCancelled", "TaskInfo", "TaskNotFound",
    "TaskCall", "TaskProgress", "TaskRun", "TaskTimeout", "WorkflowInfo", "WorkflowNotFound",
    "aget_task_info", "background_task", "cancel_task", "cancel_workflow", "chain", "chord",
    "current_task", "get_task_info", "get_workflow", "group", "periodic_task",
]
