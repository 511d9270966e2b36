"""Returns tasks whose lease expired (their worker died) to pending, at once, or to the
dead queue (with the task_dead signal) when that attempt was their last."""

from __future__ import annotations

import logging

from ..broker.redis import RedisBroker
from .component import Component
from .config import WorkerConfig
from .lost import announce_cancelled, announce_dead

logger = logging.getLogger("django_bgtasks.worker")


class Recoverer(Component):
    name = "recoverer"

    def __init__(self, broker: RedisBroker, config: WorkerConfig) -> None:
        super().__init__()
        self._broker = broker
        self._config = config
        # Leases are renewed every third of their length, so a sweep this often finds an
        # orphan within a few seconds of its expiry without polling hard.
        self._max_sleep = min(5.0, max(0.2, config.lease_seconds / 4))

    def tick(self) -> float:
        sleep = self._max_sleep
        for queue in self._config.queues:
            swept = self._broker.recover_expired(queue, self._config.dead_max_tasks,
                                                 self._config.dead_max_age_ms,
                                                 lease_ms=self._config.lease_ms)
            if swept.moved:
                logger.warning("recovered %d task(s) of queue %s whose worker stopped: %s",
                               len(swept.moved), queue, ", ".join(swept.moved[:10]))
            if swept.killed:
                logger.warning("%d task(s) of queue %s lost their worker on their last "
                               "attempt and are dead: %s", len(swept.killed), queue,
                               ", ".join(swept.killed[:10]))
                announce_dead(self._broker, queue, swept.killed)
            if swept.cancelled:
                logger.warning("%d task(s) of queue %s lost their worker while their cancel "
                               "was requested and are cancelled: %s", len(swept.cancelled),
                               queue, ", ".join(swept.cancelled[:10]))
                announce_cancelled(self._broker, queue, swept.cancelled)
            # Wake just after the earliest lease could expire.
            sleep = min(sleep, swept.seconds_until_next(self._max_sleep) + 0.01)
        return sleep
