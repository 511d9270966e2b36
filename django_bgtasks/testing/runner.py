"""run_captured(): run what a capture holds, and what those tasks enqueue, to a fixed point.

Each task runs as the worker would run it (``current_task()``, the signals, the retry
decision, a JSON result), in enqueue order, in the calling thread: ``run_after`` and
retry delays are not waited for, priorities do not reorder, ``timeout`` is not enforced.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
import traceback
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from .. import signals
from ..backoff import decide_failure
from ..context import running
from ..coroutines import run_to_completion
from ..info import TaskInfo, ms_to_datetime
from ..message import validate_result
from ..worker.execution import _send_robustly, describe_error
from .capture import CapturedTask, TaskCapture, activated, current_capture

# The worker id the runs report (no worker runs them).
CAPTURE_WORKER_ID = "run_captured"


class CaptureLimitExceeded(RuntimeError):
    """run_captured() hit its max_rounds or max_tasks: tasks kept enqueueing tasks."""


def run_captured(capture: TaskCapture | None = None, *, raise_errors: bool = True,
                 retry: bool = True, max_rounds: int = 100,
                 max_tasks: int = 10_000) -> list[TaskInfo]:
    """Run the captured tasks not yet run, then what they enqueued, round after round,
    until none is left; return each task's final TaskInfo, in the order they finished.

    ``raise_errors``: a task that fails for good (dead, or ``retry=False``) raises its
    exception at once, the rest left pending; False: it is recorded (state "dead" or
    "retry", ``last_error``, ``traceback``, ``errors``) and the run goes on. ``retry``:
    a failed attempt with retries left runs again at once, as the worker would after
    the delay. CaptureLimitExceeded after ``max_rounds`` rounds or ``max_tasks`` runs.
    """
    capture = capture or current_capture()
    done: list[TaskInfo] = []
    runs = 0
    with activated(capture):  # what the tasks enqueue lands in this capture
        for _round in range(max_rounds):
            batch = capture.take_pending()
            if not batch:
                return done
            for position, record in enumerate(batch):
                if runs >= max_tasks:
                    _give_back(capture, batch[position:])
                    raise _limit(capture, f"{max_tasks:,} task runs", runs)
                info, attempts, failure = _run_to_outcome(record, retry, max_tasks - runs)
                runs += attempts
                if info.state == "retry" and retry:  # out of budget between its attempts
                    _give_back(capture, batch[position + 1:])
                    raise _limit(capture, f"{max_tasks:,} task runs", runs)
                done.append(info)
                capture.results.append(info)
                if failure is not None and raise_errors:
                    _give_back(capture, batch[position + 1:])
                    failure.add_note(f"in task {record.name}[{record.id}], attempt "
                                     f"{info.attempts}, run by run_captured() (pass "
                                     f"raise_errors=False to record failures instead)")
                    raise failure
        if capture.pending:
            raise _limit(capture, f"{max_rounds} rounds", runs)
    return done


def _give_back(capture: TaskCapture, records: list[CapturedTask]) -> None:
    """Put records not run back in front of the pending ones."""
    with capture._lock:
        capture._pending[:0] = records


def _limit(capture: TaskCapture, what: str, runs: int) -> CaptureLimitExceeded:
    pending = Counter(record.name for record in capture.pending)
    listing = ", ".join(f"{name} x{count}" for name, count in pending.most_common(5))
    return CaptureLimitExceeded(
        f"run_captured() stopped after {what} ({runs:,} runs) with {sum(pending.values()):,} "
        f"task(s) still pending ({listing}): tasks keep enqueueing tasks (a task that "
        f"enqueues itself?). Raise max_rounds / max_tasks if the chain is meant to be "
        f"that long.")


def _run_to_outcome(record: CapturedTask, retry: bool,
                    budget: int) -> tuple[TaskInfo, int, BaseException | None]:
    """Run ``record``'s attempts until it succeeds, dies, or (``retry`` False) fails
    once; its final TaskInfo, the attempts made, and the exception it ended on."""
    errors: tuple[dict[str, Any], ...] = ()
    attempt = 0
    while True:
        attempt += 1
        info, exc, outcome = _attempt(record, attempt, errors)
        errors = info.errors
        if exc is None or outcome == "dead" or not retry or attempt >= budget:
            return info, attempt, exc


def _attempt(record: CapturedTask, attempt: int, errors: tuple[dict[str, Any], ...],
             ) -> tuple[TaskInfo, Exception | None, str]:
    """One attempt, reported as the worker reports it; (info, the exception, outcome)."""
    task, msg = record.task, record.message
    started = datetime.now(UTC)
    info = dataclasses.replace(TaskInfo.from_message(msg, "active"), attempts=attempt,
                               worker=CAPTURE_WORKER_ID, started_at=started, errors=errors)
    try:
        if signals.task_started.has_listeners():
            signals.task_started.send(sender=task, task_info=info)
        with running(msg, attempt, CAPTURE_WORKER_ID):
            result = task._run_attempt(msg, attempt, CAPTURE_WORKER_ID)
            if inspect.iscoroutine(result):  # an async def task: to its end, as EAGER does
                result = run_to_completion(result)
        validate_result(msg.name, result)
    except Exception as exc:  # not BaseException: Ctrl-C stops the test run
        decision = decide_failure(exc, attempt, msg.max_retries, task.retry_backoff)
        error = describe_error(exc)
        if decision.note:
            error += f" [{decision.note}]"
        now_ms = int(time.time() * 1000)
        tb = "".join(traceback.format_exception(exc))
        entry = {"attempt": attempt, "at": now_ms, "error": error, "traceback": tb,
                 "worker": CAPTURE_WORKER_ID}
        state = "retry" if decision.outcome == "retry" else "dead"
        info = dataclasses.replace(
            info, state=state, last_error=error, traceback=tb, errors=(*errors, entry),
            finished_at=ms_to_datetime(now_ms) if state == "dead" else None,
            run_after=ms_to_datetime(now_ms + decision.delay * 1000) if state == "retry"
            else info.run_after)
        signal = signals.task_retried if state == "retry" else signals.task_dead
        if signal.has_listeners():
            _send_robustly(signal, sender=task, exception=exc, task_info=info)
        return info, exc, decision.outcome
    info = dataclasses.replace(info, state="completed", result=result,
                               finished_at=datetime.now(UTC))
    if signals.task_succeeded.has_listeners():
        _send_robustly(signals.task_succeeded, sender=task, result=result, task_info=info)
    return info, None, "done"
