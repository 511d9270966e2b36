"""Signals sent by django-bgtasks. Each passes ``sender`` (the BackgroundTask, or None
when the worker does not know the task) and ``task_info`` (a TaskInfo)."""

from django.dispatch import Signal

task_enqueued = Signal()  # after enqueue() wrote the task (or its on_commit hook did)
task_started = Signal()  # in the worker, before the function runs
task_succeeded = Signal()  # the function returned; also ``result``
task_retried = Signal()  # the attempt failed and a retry is scheduled; also ``exception``
task_dead = Signal()  # the task reached the dead queue; also ``exception``
task_cancelled = Signal()  # the task ended cancelled: sent where that happened (the caller
#                            of cancel() for a queued task, the worker for a running one)
task_expired = Signal()  # the task was not started by its ``expires`` time (in the worker)
