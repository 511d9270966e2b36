"""Moves due scheduled and retry tasks to pending (or, past their expiry, to expired);
sleeps until the next due time and wakes early when an enqueue publishes an earlier one."""

from __future__ import annotations

from ..broker.redis import RedisBroker
from ..exceptions import BgTasksError
from .component import Component
from .lost import announce_expired

MAX_SLEEP = 1.0  # also bounds how long a missed wake-up message can delay a task


class Poller(Component):
    name = "poller"

    def __init__(self, broker: RedisBroker, queues: list[str]) -> None:
        super().__init__()
        self._broker = broker
        self._queues = queues
        self._waiter = broker.schedule_waiter()

    def tick(self) -> float:
        sleep = MAX_SLEEP
        for queue in self._queues:
            due = self._broker.forward_due(queue)
            announce_expired(self._broker, queue, due.expired)
            sleep = min(sleep, due.seconds_until_next(MAX_SLEEP))
        return sleep

    def wait(self, seconds: float) -> None:
        try:
            self._waiter.wait(seconds)
        except Exception:
            self._waiter.close()
            self._stop.wait(seconds)

    def shutdown(self, timeout: float = 5.0) -> None:
        self._stop.set()
        try:  # cut the current wait short, so shutdown does not cost up to MAX_SLEEP
            self._broker.wake_pollers()
        except BgTasksError:
            pass
        super().shutdown(timeout)
        self._waiter.close()
