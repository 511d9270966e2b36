"""Helpers for your project's tests: capture enqueued tasks, inspect them, run them.

    from django_bgtasks.testing import assert_enqueued, capture_tasks, run_captured

    with capture_tasks() as capture:
        place_order(42)                       # enqueues send_receipt(42); nothing runs
    capture.assert_enqueued(send_receipt, 42)
    run_captured(capture)                     # runs it, and what it enqueues, in order

See docs/testing.md. The pytest plugin (fixture ``bgtasks_capture``) is
``django_bgtasks.testing.pytest_plugin``, loaded by pytest on its own.
"""

from .assertions import assert_enqueued, assert_not_enqueued, captured, enqueued_count
from .capture import CapturedTask, TaskCapture, capture_tasks, clear_captured
from .runner import CAPTURE_WORKER_ID, CaptureLimitExceeded, run_captured

__all__ = [
    "CAPTURE_WORKER_ID", "CaptureLimitExceeded", "CapturedTask", "TaskCapture",
    "assert_enqueued", "assert_not_enqueued", "capture_tasks", "captured", "clear_captured",
    "enqueued_count", "run_captured",
]
