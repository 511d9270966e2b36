"""Enforces each task's ``timeout`` inside a worker process.

A thread cannot be killed, so an overdue task first gets TaskTimeout raised inside its
thread. If it is still running a grace period later (blocked in C code, or it swallowed
the exception), its failure is recorded as if it had raised, and the process retires so
that the supervisor replaces it: the stuck thread dies with the old process.

An ``async def`` task gets TaskTimeout raised inside its coroutine through its thread's
event loop instead (a thread-level raise would land in the loop's own code, or only once
the loop wakes). If the coroutine blocks its loop, so that this cannot come through, the
thread-level raise follows ESCALATE later, and the grace period still ends it.
"""

from __future__ import annotations

import ctypes
import logging
import time

from .. import registry
from ..exceptions import TaskTimeout
from . import event_loops
from .component import Component
from .execution import TaskExecutor
from .inflight import InFlight
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


def _raise_timeout(thread_ident: int) -> str:
    raise_in_thread(thread_ident, TaskTimeout)
    return "thread"


def _interrupt(thread_ident: int) -> object:
    """TaskTimeout inside the task: through its event loop if the thread runs a coroutine
    now (returns the loop's Interruptible), else raised in the thread ("thread")."""
    return event_loops.interrupt(thread_ident, TaskTimeout) or _raise_timeout(thread_ident)


class TimeoutWatchdog(Component):
    name = "timeouts"

    def __init__(self, inflight: InFlight, processor: Processor,
                 executor: TaskExecutor) -> None:
        super().__init__()
        self._inflight = inflight
        self._processor = processor
        self._executor = executor

    def tick(self) -> float:
        now = time.monotonic()
        for entry in self._inflight.unfinished():
            if entry.deadline is None or now < entry.deadline or entry.thread_ident is None:
                continue
            label = f"{entry.msg.name}[{entry.claimed.id}]"
            if entry.interrupted_at is None:
                if self._inflight.interrupt(entry, _interrupt):
                    logger.warning("task %s exceeded its timeout of %gs; interrupting it",
                                   label, entry.msg.timeout)
                continue
            waited = now - entry.interrupted_at
            how = entry.interruption
            if (isinstance(how, event_loops.Interruptible) and not how.delivered
                    and waited >= ESCALATE
                    and self._inflight.interrupt(entry, _raise_timeout, again=True)):
                logger.warning("task %s blocks its event loop past its timeout; "
                               "interrupting its thread", label)
            if entry.holds_thread and waited >= GRACE:
                exc = TaskTimeout(f"the task exceeded its timeout of {entry.msg.timeout:g}s "
                                  f"and did not stop when interrupted; its worker process "
                                  f"was replaced")
                ack, decision = self._executor.failure_ack(entry.claimed, entry.msg, exc,
                                                           tb=" ")
                if self._processor.report(entry, ack):
                    logger.error("task %s ignored its timeout (%s, %s)", label, ack.error,
                                 decision.outcome)
                    # As if it had raised: receivers counting retries and deaths see it.
                    self._executor.send_failure_signal(
                        entry.claimed, entry.msg, registry.lookup(entry.msg.name), exc,
                        decision.outcome)
                    self._processor.retire("a task thread ignored its timeout")
        return INTERVAL
