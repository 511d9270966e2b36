"""Runs one claimed task and turns what happened into an Ack (and one log line)."""

from __future__ import annotations

import inspect
import json
import logging
import time
import traceback
from dataclasses import replace
from typing import Any

from django.db import close_old_connections

from .. import registry, signals
from ..backoff import decide_failure
from ..broker.types import Ack, ClaimedTask
from ..context import Progress, RunControl, running
from ..exceptions import InvalidTaskMessage, TaskCancelled
from ..hooks import AttemptInfo, configured_hooks
from ..info import TaskInfo
from ..message import TaskMessage, dumps, shorten_raw, validate_result
from . import event_loops
from .attempt_hooks import attempt_info, run_hooked

logger = logging.getLogger("django_bgtasks.worker")

MAX_ERROR = 2_000
MAX_TRACEBACK = 20_000


class UnknownTask(LookupError):
    """The message names a task this worker has not registered."""


def describe_error(exc: BaseException) -> str:
    """``module.Class: message`` on one line, bounded."""
    kind = type(exc)
    module = "" if kind.__module__ == "builtins" else f"{kind.__module__}."
    try:
        detail = str(exc)
    except Exception as problem:  # noqa: BLE001  (its own __str__ is broken)
        detail = f"<the exception's message could not be formatted: {type(problem).__name__}>"
    text = " ".join(f"{module}{kind.__qualname__}: {detail}".split())
    if not text.isprintable():
        # Damaged or hostile data can put control characters (terminal escapes) in a
        # message: they are shown as escapes, in the admin and on a terminal alike.
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text[:MAX_ERROR]


def log_id(task_id: str) -> str:
    """A task id as a log line shows it: an odd one (very long, control characters) is
    quoted and cut, so that damaged data cannot flood or forge log lines."""
    if task_id and len(task_id) <= 100 and task_id.isprintable():
        return task_id
    return shorten_raw(task_id, 100)


def log_corrupt(task_id: str, reason: str) -> None:
    """The one log line of a task that goes to the dead queue without running."""
    logger.error("task [%s] is corrupt and goes to the dead queue: %s", log_id(task_id), reason)


def _send_robustly(signal: Any, **kwargs: Any) -> None:
    """Send a signal about an outcome already decided: a receiver that raises is logged,
    and must not keep that outcome from being written (the task would stay active)."""
    for receiver, response in signal.send_robust(**kwargs):
        if isinstance(response, Exception):
            logger.error("a receiver of django_bgtasks.signals (%s) raised; the task's "
                         "outcome is kept", getattr(receiver, "__qualname__", receiver),
                         exc_info=response)


def _format_traceback(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except Exception as problem:  # noqa: BLE001  (a hostile exception must not stop the ack)
        return f"<the traceback could not be formatted: {type(problem).__name__}>"


def is_cancellation(exc: BaseException, control: RunControl) -> bool:
    """A run ends cancelled when it raised TaskCancelled (asked or on its own) or ended in
    any other failure once its cancel was requested."""
    return isinstance(exc, TaskCancelled) or control.cancel_requested


def progress_json(progress: Progress | None) -> str:
    """A run's progress as the scripts take it (JSON [current, total, message]); "" for
    none."""
    return "" if progress is None else json.dumps(progress)


def _state_info(msg: TaskMessage, state: str, attempt: int) -> TaskInfo:
    return replace(TaskInfo.from_message(msg, state), attempts=attempt)


class TaskExecutor:
    """Executes claimed tasks inside a worker thread."""

    def __init__(self, worker_id: str, log_arguments: bool = False) -> None:
        self.worker_id = worker_id
        self.log_arguments = log_arguments
        self._hooks = configured_hooks()  # BGTASKS['HOOKS'], read once, as every setting

    def decode(self, claimed: ClaimedTask) -> TaskMessage | Ack:
        """The message, or a dead-letter Ack when it cannot be decoded or is another task's."""
        try:
            msg = TaskMessage.decode(claimed.raw_message)
            if msg.id != claimed.id:
                # Stored under another id (a copy, a foreign write): acked under its own id,
                # its outcome would never reach this task, and could end another one.
                raise InvalidTaskMessage(f"the task's message is that of another task, "
                                         f"{shorten_raw(msg.id, 100)}")
            return msg
        except InvalidTaskMessage as exc:
            error = f"InvalidTaskMessage: {exc}"
            log_corrupt(claimed.id, error)
            return Ack(claimed.id, claimed.attempt, "dead", error=error[:MAX_ERROR])

    def run(self, claimed: ClaimedTask, msg: TaskMessage,
            control: RunControl | None = None) -> Ack:
        """Run ``msg`` (attempt ``claimed.attempt``) and report its outcome; never raises,
        so every attempt that ran gets an outcome written. ``control``: the worker's
        handle on the run (its progress, its cancel request)."""
        control = control or RunControl()
        if self._hooks:  # without any, this test is all an attempt pays for them
            return run_hooked(
                self._hooks, attempt_info(claimed, msg, self.worker_id),
                lambda hooked: self._run_safely(claimed, msg, control, hooked),
                lambda exc: self._failed(claimed, msg, registry.lookup(msg.name), exc,
                                         f"{msg.name}[{msg.id}]", 0.0, control))
        return self._run_safely(claimed, msg, control)

    def _run_safely(self, claimed: ClaimedTask, msg: TaskMessage, control: RunControl,
                    hooked: AttemptInfo | None = None) -> Ack:
        try:
            return self._run(claimed, msg, control, hooked)
        except BaseException as exc:  # noqa: BLE001
            if hooked is not None:
                hooked.exception = exc
            return self.last_resort_ack(claimed, msg, exc, control)

    def _run(self, claimed: ClaimedTask, msg: TaskMessage, control: RunControl,
             hooked: AttemptInfo | None) -> Ack:
        started = time.monotonic()
        task = None
        label = f"{msg.name}[{msg.id}]"
        if self.log_arguments:
            label += f" args={dumps(msg.args)} kwargs={dumps(msg.kwargs)}"
        try:
            # Registered, or found by the resolver of its prefix (a Django task).
            task = registry.resolve(msg.name)
            if task is None:
                raise UnknownTask(
                    f"no task named {msg.name!r} is registered in this worker (is its module "
                    f"a 'tasks' module of an installed app, or imported by one?)")
            close_old_connections()
            if signals.task_started.has_listeners():
                signals.task_started.send(sender=task,
                                          task_info=_state_info(msg, "active", claimed.attempt))
            with running(msg, claimed.attempt, self.worker_id, control):
                result = task._run_attempt(msg, claimed.attempt, self.worker_id)
                if inspect.iscoroutine(result):  # an async def task: run in this context
                    result = event_loops.run(result)
            validate_result(msg.name, result)
        except BaseException as exc:  # noqa: BLE001  (a task's failure must never kill the thread)
            if hooked is not None:  # the hooks see what the task raised
                hooked.exception = exc
            elapsed = time.monotonic() - started
            if is_cancellation(exc, control):
                ack = self.cancelled_ack(claimed, msg, exc, control)
                logger.warning("task %s cancelled after %.3fs (attempt %d): %s", label,
                               elapsed, claimed.attempt, ack.error)
                return ack
            return self._failed(claimed, msg, task, exc, label, elapsed, control)
        finally:
            close_old_connections()
        elapsed = time.monotonic() - started
        logger.info("task %s succeeded in %.3fs (attempt %d)", label, elapsed, claimed.attempt)
        if signals.task_succeeded.has_listeners():
            _send_robustly(signals.task_succeeded, sender=task, result=result,
                           task_info=_state_info(msg, "completed", claimed.attempt))
        ttl_ms = int(msg.result_ttl * 1000) if msg.result_ttl else None
        # a workflow's next step may take the result, whatever the member's result_ttl
        kept = ttl_ms or msg.workflow is not None
        return Ack(claimed.id, claimed.attempt, "done", result=dumps(result) if kept else "",
                   result_ttl_ms=ttl_ms, progress=progress_json(control.progress),
                   task=msg.name)

    def failure_ack(self, claimed: ClaimedTask, msg: TaskMessage, exc: BaseException,
                    tb: str = "") -> tuple[Ack, Any]:
        """The retry-or-dead Ack for an attempt that raised ``exc``."""
        task = registry.lookup(msg.name)
        decision = decide_failure(exc, claimed.attempt, msg.max_retries,
                                  task.retry_backoff if task else None)
        error = describe_error(exc)
        if decision.note:
            note = f" [{decision.note}]"
            error = error[:MAX_ERROR - len(note)] + note
        tb = (tb or _format_traceback(exc))[-MAX_TRACEBACK:]
        ack = Ack(claimed.id, claimed.attempt, decision.outcome,
                  delay_ms=int(decision.delay * 1000), error=error, traceback=tb, task=msg.name)
        return ack, decision

    def cancelled_ack(self, claimed: ClaimedTask, msg: TaskMessage, exc: BaseException,
                      control: RunControl, tb: str = "") -> Ack:
        """The outcome of a run that ended cancelled (never retried), and task_cancelled."""
        ack = Ack(claimed.id, claimed.attempt, "cancelled", error=describe_error(exc),
                  traceback=(tb or _format_traceback(exc))[-MAX_TRACEBACK:],
                  progress=progress_json(control.progress), task=msg.name)
        if signals.task_cancelled.has_listeners():
            _send_robustly(signals.task_cancelled, sender=registry.lookup(msg.name),
                           task_info=_state_info(msg, "cancelled", claimed.attempt))
        return ack

    def last_resort_ack(self, claimed: ClaimedTask, msg: TaskMessage,
                        exc: BaseException, control: RunControl | None = None) -> Ack:
        """The outcome of an attempt whose failure could not be handled the usual way (a
        bug of ours, or an interruption landing while the outcome was being made): the
        default retry policy, and an error that says what happened; cancelled when that
        is what happened to it."""
        if control is not None and is_cancellation(exc, control):
            return self.cancelled_ack(claimed, msg, exc, control)
        logger.error("task %s[%s]: its outcome could not be decided (%s); it is recorded "
                     "as failed", msg.name, log_id(claimed.id), type(exc).__qualname__)
        decision = decide_failure(exc, claimed.attempt, msg.max_retries, None)
        error = (f"InternalError: the worker could not record this attempt's outcome: "
                 f"{describe_error(exc)}")[:MAX_ERROR]
        return Ack(claimed.id, claimed.attempt, decision.outcome,
                   delay_ms=int(decision.delay * 1000), error=error,
                   traceback=_format_traceback(exc)[-MAX_TRACEBACK:], task=msg.name)

    def _failed(self, claimed: ClaimedTask, msg: TaskMessage, task: Any, exc: BaseException,
                label: str, elapsed: float, control: RunControl) -> Ack:
        ack, decision = self.failure_ack(claimed, msg, exc)
        if decision.outcome == "dead" and control.progress is not None:
            ack = replace(ack, progress=progress_json(control.progress))
        total = msg.max_retries + 1
        if decision.outcome == "retry":
            logger.warning("task %s failed in %.3fs (attempt %d of %d), retry in %.1fs: %s",
                           label, elapsed, claimed.attempt, total, decision.delay, ack.error)
        else:
            logger.error("task %s failed in %.3fs (attempt %d of %d) and is dead (%s): %s",
                         label, elapsed, claimed.attempt, total, decision.reason, ack.error)
        self.send_failure_signal(claimed, msg, task, exc, decision.outcome)
        return ack

    def send_failure_signal(self, claimed: ClaimedTask, msg: TaskMessage, task: Any,
                            exc: BaseException, outcome: str) -> None:
        """task_retried or task_dead (``outcome`` 'retry' or 'dead') for a failed attempt,
        from its thread or from the watchdog that decided it (an ignored timeout)."""
        signal = signals.task_retried if outcome == "retry" else signals.task_dead
        if signal.has_listeners():
            _send_robustly(signal, sender=task, exception=exc,
                           task_info=_state_info(msg, outcome, claimed.attempt))
