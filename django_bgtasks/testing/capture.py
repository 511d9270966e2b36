"""Capture mode: ``enqueue()`` records tasks in memory instead of writing them to Redis.

Active while a ``capture_tasks()`` block is open (the innermost one records), or, outside
any block, when ``BGTASKS["CAPTURE"]`` is True (one capture for the process, emptied by
``clear_captured()`` and before each test by the pytest plugin). A capture is shared by
every thread of the process, so that what a live-server thread or a thread pool enqueues
is seen by the test. It wins over ``EAGER``: nothing runs until ``run_captured()``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import DEFAULT_DB_ALIAS, transaction

from ..conf import Settings
from ..info import TaskInfo, seconds_to_datetime
from ..message import TaskMessage, dumps

if TYPE_CHECKING:
    from ..task import BackgroundTask


@dataclass(frozen=True)
class CapturedTask:
    """One captured enqueue: the task as enqueued (a ``.using()`` copy keeps its options),
    its arguments as the worker would read them (through JSON), and the TaskInfo that
    ``enqueue()`` returned."""

    name: str
    task: BackgroundTask = field(repr=False)
    args: list[Any]
    kwargs: dict[str, Any]
    queue_name: str
    priority: int
    run_after: datetime | None  # when it is due (aware, UTC); None: at once
    task_id: str | None  # the task_id option, None when the id was generated
    unique_for: float | None
    info: TaskInfo = field(repr=False)
    message: TaskMessage = field(repr=False, compare=False)

    @property
    def id(self) -> str:
        """The task's id, as ``enqueue()`` returned it."""
        return self.info.id


class TaskCapture:
    """The tasks captured while this capture was active, in enqueue order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: list[CapturedTask] = []
        self._pending: list[CapturedTask] = []  # captured, not yet run by run_captured()
        self.results: list[TaskInfo] = []  # what run_captured() ran, final outcomes

    @property
    def tasks(self) -> list[CapturedTask]:
        """Every captured task, in enqueue order (a copy)."""
        with self._lock:
            return list(self._tasks)

    @property
    def pending(self) -> list[CapturedTask]:
        """The captured tasks run_captured() has not run yet, in enqueue order."""
        with self._lock:
            return list(self._pending)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[CapturedTask]:
        return iter(self.tasks)

    def clear(self) -> None:
        """Forget every captured task and result."""
        with self._lock:
            self._tasks.clear()
            self._pending.clear()
            self.results.clear()

    # The module functions of django_bgtasks.testing, on this capture rather than the
    # active one (assertions and runner import this module: imported when called).

    def captured(self, task: Any = None) -> list[CapturedTask]:
        """The captured enqueues (of ``task`` only: a task or its name), in order."""
        from .assertions import find

        return find(self, task)

    def count(self, task: Any = None) -> int:
        """How many runs of ``task`` (of any task, if None) were captured."""
        return len(self.captured(task))

    def assert_enqueued(self, task: Any, /, *args: Any, **kwargs: Any) -> CapturedTask:
        """See ``django_bgtasks.testing.assert_enqueued``."""
        from .assertions import check_enqueued

        return check_enqueued(self, task, list(args), kwargs)

    def assert_not_enqueued(self, task: Any) -> None:
        """See ``django_bgtasks.testing.assert_not_enqueued``."""
        from .assertions import check_not_enqueued

        check_not_enqueued(self, task)

    def run(self, **options: Any) -> list[TaskInfo]:
        """``run_captured(self, **options)``."""
        from .runner import run_captured

        return run_captured(self, **options)

    def take_pending(self) -> list[CapturedTask]:
        """The pending tasks, which are pending no more (for the runner)."""
        with self._lock:
            taken, self._pending = self._pending, []
            return taken

    def record(self, task: BackgroundTask, messages: list[TaskMessage],
               waits_for_commit: bool) -> list[TaskInfo]:
        """Capture ``messages`` of ``task`` (sizes already checked): at once, or when the
        transaction commits where the real enqueue would wait for the commit."""
        records = [_captured(task, msg) for msg in messages]
        if waits_for_commit and _in_user_transaction():
            transaction.on_commit(lambda: self._store(task, records))
        else:
            self._store(task, records)
        return [record.info for record in records]

    def _store(self, task: BackgroundTask, records: list[CapturedTask]) -> None:
        with self._lock:
            self._tasks.extend(records)
            self._pending.extend(records)
        # The app sees what it would after a real write (Django's task_enqueued too).
        task._announce_enqueued([record.info for record in records])


def _captured(task: BackgroundTask, msg: TaskMessage) -> CapturedTask:
    # Through JSON as through Redis: tuples become lists, what the worker would pass.
    args, kwargs = json.loads(dumps([msg.args, msg.kwargs]))
    msg = dataclasses.replace(msg, args=args, kwargs=kwargs)
    due_later = msg.run_after is not None and msg.run_after > msg.enqueued_at
    info = TaskInfo.from_message(msg, "scheduled" if due_later else "pending")
    return CapturedTask(
        name=msg.name, task=task, args=args, kwargs=kwargs, queue_name=msg.queue,
        priority=msg.priority, run_after=seconds_to_datetime(msg.run_after),
        task_id=task.task_id, unique_for=task.unique_for, info=info, message=msg)


def _in_user_transaction() -> bool:
    """Inside an atomic block of the code under test: the test case's own wrapping
    transaction (Django's TestCase) does not count, as it does not exist in production."""
    connection = transaction.get_connection(DEFAULT_DB_ALIAS)
    return connection.in_atomic_block and any(
        not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks)


# -- which capture is active ----------------------------------------------------------------

_stack_lock = threading.Lock()
_stack: list[TaskCapture] = []  # open capture_tasks() blocks, innermost last
_settings_capture = TaskCapture()  # BGTASKS["CAPTURE"]'s, outside any block


def active_capture(cfg: Settings) -> TaskCapture | None:
    """The capture an enqueue goes to now, or None (the common case: one list check)."""
    if _stack:
        with _stack_lock:
            if _stack:
                return _stack[-1]
    return _settings_capture if cfg.CAPTURE else None


def current_capture() -> TaskCapture:
    """The active capture; RuntimeError when none is."""
    from ..conf import get_settings

    capture = active_capture(get_settings())
    if capture is None:
        raise RuntimeError("no task capture is active: use `with capture_tasks():`, the "
                           "bgtasks_capture pytest fixture, or BGTASKS['CAPTURE'] = True")
    return capture


@contextmanager
def capture_tasks() -> Iterator[TaskCapture]:
    """Capture every task enqueued in this process (any thread) inside the block."""
    capture = TaskCapture()
    with activated(capture):
        yield capture


@contextmanager
def activated(capture: TaskCapture) -> Iterator[TaskCapture]:
    """Make ``capture`` the innermost active capture for the duration of the block."""
    with _stack_lock:
        _stack.append(capture)
    try:
        yield capture
    finally:
        with _stack_lock:
            # Not always the last: blocks of two threads may close in any order.
            for index in range(len(_stack) - 1, -1, -1):
                if _stack[index] is capture:
                    del _stack[index]
                    break


def clear_captured() -> None:
    """Empty the capture of ``BGTASKS["CAPTURE"]`` (the plugin does it before each test)."""
    _settings_capture.clear()
