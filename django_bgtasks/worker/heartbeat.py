"""The control loop of a process's running tasks: renews their leases, writes their
progress and learns their cancel requests (one script call per queue), and tells the
supervisor the process is alive."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..broker.redis import RedisBroker
from .component import Component
from .config import WorkerConfig
from .execution import progress_json
from .inflight import InFlight, Running

logger = logging.getLogger("django_bgtasks.worker")

# How often running tasks' progress goes up and cancel requests come down: a cancel
# reaches a run within this (plus the call), and costs one call per queue and tick while
# the process runs tasks older than this (none when it runs nothing).
CONTROL_INTERVAL = 0.25


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
        renew = now - self._last_renewal >= self._interval
        for queue, entries in self._inflight.controlled(renew, now - CONTROL_INTERVAL).items():
            self._control(queue, entries, renew)
        if renew:
            self._last_renewal = now
        return min(CONTROL_INTERVAL, self._interval)

    def _control(self, queue: str, entries: list[Running], renew: bool) -> None:
        # A snapshot: the task may set a newer value during the call (sent next tick).
        sent = [(entry, entry.control.progress) for entry in entries]
        found = self._broker.renew(
            queue, [(e.claimed.id, e.claimed.attempt,
                     "" if p == e.sent_progress else progress_json(p)) for e, p in sent],
            self._config.lease_ms if renew else 0)
        cancel = set(found.cancel_requested)
        for entry, progress in sent:
            entry.sent_progress = progress
            if entry.claimed.id in cancel and not entry.control.cancel_requested:
                entry.cancel_seen_at = time.monotonic()
                entry.control.cancel_requested = True
                logger.warning("task %s[%s]: cancel requested; it has %gs to stop "
                               "(CANCEL_GRACE)", entry.msg.name, entry.claimed.id,
                               self._config.cancel_grace)
        # An ack written since the snapshot also reads as "lost": skip those.
        for task_id in filter(self._inflight.owes_ack, found.lost):
            logger.warning("task [%s]: lease lost (Redis recovered it; it may run twice)",
                           task_id)
