"""Inspect a capture: the captured calls of a task, and assertions that explain a miss."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .capture import CapturedTask, TaskCapture, current_capture

TaskLike = Any  # a BackgroundTask, a Django Task, or a task name


def task_name_of(task: TaskLike) -> str:
    """The stored name of ``task``: ours, a Django task's ("django:<path>"), or a str."""
    from ..task import BackgroundTask  # not at import: task.py imports this package

    if isinstance(task, str):
        return task
    if isinstance(task, BackgroundTask):
        return task.name
    if hasattr(task, "module_path") and hasattr(task, "get_backend"):  # a Django task
        backend = task.get_backend()
        if hasattr(backend, "background_task"):  # BackgroundTaskBackend's: our name for it
            return str(backend.background_task(task).name)
    raise TypeError(f"expected a task or a task name, not {task!r}")


def captured(task: TaskLike | None = None) -> list[CapturedTask]:
    """The active capture's enqueues (of ``task`` only, if given), in order."""
    return find(current_capture(), task)


def enqueued_count(task: TaskLike | None = None) -> int:
    """How many runs of ``task`` (of any task, if None) the active capture holds."""
    return len(find(current_capture(), task))


def assert_enqueued(task: TaskLike, /, *args: Any, **kwargs: Any) -> CapturedTask:
    """The active capture's first run of ``task`` with exactly these arguments; else an
    AssertionError listing what was captured for ``task`` and the closest mismatch."""
    return check_enqueued(current_capture(), task, list(args), kwargs)


def assert_not_enqueued(task: TaskLike) -> None:
    """Fail if the active capture holds any run of ``task``, listing them."""
    check_not_enqueued(current_capture(), task)


def find(capture: TaskCapture, task: TaskLike | None) -> list[CapturedTask]:
    """``capture``'s records (of ``task`` only, if given)."""
    tasks = capture.tasks
    if task is None:
        return tasks
    name = task_name_of(task)
    return [record for record in tasks if record.name == name]


def check_not_enqueued(capture: TaskCapture, task: TaskLike) -> None:
    """assert_not_enqueued() on ``capture``."""
    found = find(capture, task)
    if found:
        lines = "\n".join(f"  #{n} {_call(r)}" for n, r in enumerate(found, 1))
        raise AssertionError(f"{task_name_of(task)} was enqueued {len(found)} time(s), "
                             f"expected none:\n{lines}")


def check_enqueued(capture: TaskCapture, task: TaskLike, args: list[Any],
                   kwargs: dict[str, Any]) -> CapturedTask:
    """assert_enqueued() on ``capture``: arguments compared as the worker gets them
    (tuples as lists), the expected value first (so ``unittest.mock.ANY`` matches)."""
    name = task_name_of(task)
    expected_args, expected_kwargs = _listed(args), _listed(kwargs)
    own = find(capture, task)
    for record in own:
        if not _differences(expected_args, expected_kwargs, record):
            return record
    wanted = f"{name}({_signature(expected_args, expected_kwargs)})"
    if not own:
        others = Counter(r.name for r in capture.tasks)
        listing = ", ".join(f"{n} x{c}" for n, c in others.items()) or "nothing at all"
        raise AssertionError(f"{wanted} was not enqueued: no run of {name} was captured "
                             f"(captured: {listing})")
    lines = "\n".join(f"  #{n} {_call(r)}" for n, r in enumerate(own, 1))
    scored = [(len(_differences(expected_args, expected_kwargs, r)), n, r)
              for n, r in enumerate(own, 1)]
    _, number, closest = min(scored, key=lambda item: item[:2])
    diff = "\n".join(f"  - {d}" for d in _differences(expected_args, expected_kwargs, closest))
    raise AssertionError(f"{wanted} was not enqueued. Captured for {name} ({len(own)}):\n"
                         f"{lines}\nClosest: #{number}:\n{diff}")


def _listed(value: Any) -> Any:
    """Tuples as lists, at any depth, as JSON would give them (other objects kept, so
    that mock.ANY and its kind still compare)."""
    if isinstance(value, (list, tuple)):
        return [_listed(item) for item in value]
    if isinstance(value, dict):
        return {key: _listed(item) for key, item in value.items()}
    return value


def _differences(args: list[Any], kwargs: dict[str, Any], record: CapturedTask) -> list[str]:
    found = []
    if len(args) != len(record.args):
        found.append(f"expected {len(args)} positional argument(s), got {len(record.args)}")
    for index, (want, got) in enumerate(zip(args, record.args, strict=False)):
        if want != got:  # the expected value first: mock.ANY decides
            found.append(f"argument {index}: expected {want!r}, got {got!r}")
    for key in sorted(set(kwargs) | set(record.kwargs)):
        if key not in record.kwargs:
            found.append(f"keyword {key!r}: expected {kwargs[key]!r}, not passed")
        elif key not in kwargs:
            found.append(f"keyword {key!r}: not expected, got {record.kwargs[key]!r}")
        elif kwargs[key] != record.kwargs[key]:
            found.append(f"keyword {key!r}: expected {kwargs[key]!r}, got "
                         f"{record.kwargs[key]!r}")
    return found


def _signature(args: list[Any], kwargs: dict[str, Any]) -> str:
    return ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])


def _call(record: CapturedTask) -> str:
    options = f"queue {record.queue_name!r}, priority {record.priority}"
    if record.run_after is not None:
        options += f", run_after {record.run_after.isoformat()}"
    if record.task_id is not None:
        options += f", task_id {record.task_id!r}"
    return f"{record.name}({_signature(record.args, record.kwargs)})  [{options}]"
