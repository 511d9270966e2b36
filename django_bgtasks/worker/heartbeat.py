"""Renews the leases of a process's running tasks, and tells the supervisor it is alive."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..broker.redis import RedisBroker
from .component import Component
from .config import WorkerConfig
from .inflight import InFlight

logger = logging.getLogger("django_bgtasks.worker")


class Heartbeat(Component):
    name = "heartbeat"
    # Back within a second of Redis: after an outage, leases must be renewed before the
    # recovery's grace (one lease) runs out.
    backoff_cap = 1.0

    def __init__(self, broker: RedisBroker, config: WorkerConfig, inflight: InFlight,
                 alive: Callable[[], None]) -> None:
        super().__init__()
        self._broker = broker
        self._config = config
        self._inflight = inflight
        self._alive = alive
        # Three renewals per lease: one lost round trip never costs a lease.
        self._interval = config.lease_seconds / 3
        self._last_renewal = 0.0

    def tick(self) -> float:
        self._alive()
        now = time.monotonic()
        if now - self._last_renewal >= self._interval:
            for queue, leases in self._inflight.leases().items():
                lost = self._broker.extend_leases(queue, leases, self._config.lease_ms)
                # An ack written since the snapshot also reads as "lost": skip those.
                for task_id in filter(self._inflight.owes_ack, lost):
                    logger.warning("task [%s]: lease lost (Redis recovered it; it may run "
                                   "twice)", task_id)
            self._last_renewal = now
        return min(1.0, self._interval)
