"""Enforces each task's ``timeout`` inside a worker process.

A thread cannot be killed, so an overdue task first gets TaskTimeout raised inside its
thread. If it is still running a grace period later (blocked in C code, or it swallowed
the exception), its failure is recorded as if it had raised, and the process retires so
that the supervisor replaces it: the stuck thread dies with the old process.

An ``async def`` task gets TaskTimeout raised inside its coroutine through its thread's
event loop instead (a thread-level raise would land in the loop's own code, or only once
the loop wakes). If the coroutine blocks its loop, so that this cannot come through, the
thread-level raise follows ESCALATE later, and the grace period still ends it.

A run whose cancel was requested (the heartbeat learns it) and that is still running
CANCEL_GRACE later gets TaskCancelled the same way, and the same grace: past it, it is
recorded cancelled and its process replaced.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Callable

from .. import registry
from ..exceptions import TaskCancelled, TaskTimeout
from . import event_loops
from .component import Component
from .execution import TaskExecutor
from .inflight import InFlight, Running
from .processor import Processor

logger = logging.getLogger("django_bgtasks.worker")

GRACE = 2.0
INTERVAL = 0.25
# How long an async task's event loop gets to take its TaskTimeout before the thread-level
# raise (the loop is blocked: time.sleep or a long computation in the task). A loop that
# took it is not interrupted again: its coroutine may be cleaning up, until GRACE.
ESCALATE = 0.5


def raise_in_thread(thread_ident: int, exc_type: type[BaseException]) -> bool:
    """Ask CPython to raise ``exc_type`` in another thread at its next bytecode."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_ident),
                                                      ctypes.py_object(exc_type))
    return done == 1


def _interruption(kind: type[BaseException]) -> tuple[Callable[[int], object],
                                                   Callable[[int], object]]:
    """The two ways to raise ``kind`` in a task: inside the coroutine its thread runs now,
    through its event loop (returns the loop's Interruptible) or else in the thread
    ("thread"); and the thread-level raise alone (a blocked loop's escalation)."""
    def in_thread(thread_ident: int) -> str:
        raise_in_thread(thread_ident, kind)
        return "thread"

    def in_task(thread_ident: int) -> object:
        return event_loops.interrupt(thread_ident, kind) or in_thread(thread_ident)

    return in_task, in_thread


class TimeoutWatchdog(Component):
    """Ends overdue runs: past their ``timeout`` (TaskTimeout), or past CANCEL_GRACE since
    their cancel request reached the process (TaskCancelled)."""

    name = "timeouts"

    def __init__(self, inflight: InFlight, processor: Processor,
                 executor: TaskExecutor, cancel_grace: float = 10.0) -> None:
        super().__init__()
        self._inflight = inflight
        self._processor = processor
        self._executor = executor
        self._cancel_grace = cancel_grace

    def _overdue(self, entry: Running, now: float) -> type[BaseException] | None:
        """What to raise in ``entry`` now (TaskCancelled first: it decides the outcome)."""
        if entry.cancel_seen_at is not None and now >= entry.cancel_seen_at + self._cancel_grace:
            return TaskCancelled
        if entry.deadline is not None and now >= entry.deadline:
            return TaskTimeout
        return None

    def tick(self) -> float:
        now = time.monotonic()
        for entry in self._inflight.unfinished():
            kind = self._overdue(entry, now) if entry.interrupted_at is None else None
            if entry.thread_ident is None or (kind is None and entry.interrupted_at is None):
                continue
            label = f"{entry.msg.name}[{entry.claimed.id}]"
            if kind is not None:
                if self._inflight.interrupt(entry, _interruption(kind)[0]):
                    entry.interrupted_by = kind
                    if kind is TaskCancelled:
                        logger.warning("task %s did not stop within %gs of its cancel "
                                       "request; interrupting it", label, self._cancel_grace)
                    else:
                        logger.warning("task %s exceeded its timeout of %gs; interrupting it",
                                       label, entry.msg.timeout)
                continue
            self._escalate(entry, label, now - entry.interrupted_at)
        return INTERVAL

    def _escalate(self, entry: Running, label: str, waited: float) -> None:
        """An interrupted run still going: through its thread if its event loop is blocked
        (after ESCALATE), and past GRACE decided without it, its process replaced."""
        kind = entry.interrupted_by or TaskTimeout
        how = entry.interruption
        if (isinstance(how, event_loops.Interruptible) and not how.delivered
                and waited >= ESCALATE
                and self._inflight.interrupt(entry, _interruption(kind)[1], again=True)):
            logger.warning("task %s blocks its event loop past its %s; interrupting its "
                           "thread", label, "cancel grace" if kind is TaskCancelled
                           else "timeout")
        if not entry.holds_thread or waited < GRACE:
            return
        if entry.control.cancel_requested or kind is TaskCancelled:
            self._give_up_cancelled(entry, label)
        else:
            self._give_up_timed_out(entry, label)

    def _give_up_cancelled(self, entry: Running, label: str) -> None:
        exc = TaskCancelled("the task did not stop when its cancel was requested, nor when "
                            "interrupted; its worker process was replaced")
        ack = self._executor.cancelled_ack(entry.claimed, entry.msg, exc, entry.control,
                                           tb=" ")
        if self._processor.report(entry, ack):
            logger.error("task %s ignored its cancellation (cancelled)", label)
            self._processor.retire("a task thread ignored its cancellation")

    def _give_up_timed_out(self, entry: Running, label: str) -> None:
        exc = TaskTimeout(f"the task exceeded its timeout of {entry.msg.timeout:g}s "
                          f"and did not stop when interrupted; its worker process "
                          f"was replaced")
        ack, decision = self._executor.failure_ack(entry.claimed, entry.msg, exc, tb=" ")
        if self._processor.report(entry, ack):
            logger.error("task %s ignored its timeout (%s, %s)", label, ack.error,
                         decision.outcome)
            # As if it had raised: receivers counting retries and deaths see it.
            self._executor.send_failure_signal(
                entry.claimed, entry.msg, registry.lookup(entry.msg.name), exc,
                decision.outcome)
            self._processor.retire("a task thread ignored its timeout")
