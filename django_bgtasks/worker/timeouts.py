"""Enforces each task's ``timeout`` inside a worker process.

A thread cannot be killed, so an overdue task first gets TaskTimeout raised inside its
thread. If it is still running a grace period later (blocked in C code, or it swallowed
the exception), its failure is recorded as if it had raised, and the process retires so
that the supervisor replaces it: the stuck thread dies with the old process.
"""

from __future__ import annotations

import ctypes
import logging
import time

from .. import registry
from ..exceptions import TaskTimeout
from .component import Component
from .execution import TaskExecutor
from .inflight import InFlight
from .processor import Processor

logger = logging.getLogger("django_bgtasks.worker")

GRACE = 2.0
INTERVAL = 0.25


def raise_in_thread(thread_ident: int, exc_type: type[BaseException]) -> bool:
    """Ask CPython to raise ``exc_type`` in another thread at its next bytecode."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_ident),
                                                      ctypes.py_object(exc_type))
    return done == 1


def _raise_timeout(thread_ident: int) -> None:
    raise_in_thread(thread_ident, TaskTimeout)


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
                if self._inflight.interrupt(entry, _raise_timeout):
                    logger.warning("task %s exceeded its timeout of %gs; interrupting it",
                                   label, entry.msg.timeout)
            elif entry.holds_thread and now - entry.interrupted_at >= GRACE:
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
