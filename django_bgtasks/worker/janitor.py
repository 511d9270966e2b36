"""Trims the dead, cancelled and expired tasks (size and age), expired results and expired
uniqueness locks; rolls the queues' metrics into their windows (the admin's last hour and
day, its per-minute chart)."""

from __future__ import annotations

import logging

from ..broker.metrics import MetricsStore
from ..broker.redis import RedisBroker
from .component import Component
from .config import WorkerConfig

logger = logging.getLogger("django_bgtasks.worker")

INTERVAL = 30.0


class Janitor(Component):
    name = "janitor"

    def __init__(self, broker: RedisBroker, config: WorkerConfig) -> None:
        super().__init__()
        self._broker = broker
        self._config = config
        self._metrics = MetricsStore(broker)

    def tick(self) -> float:
        config = self._config
        for queue in config.queues:
            more = True
            while more and not self.stopping:  # bounded batches: Redis never blocks long
                cleaned = self._broker.clean(queue, config.dead_max_tasks,
                                             config.dead_max_age_ms,
                                             cancelled=config.cancelled,
                                             expired=config.expired)
                more = cleaned.more
                if any(cleaned[:3]) or cleaned.cancelled or cleaned.expired:
                    logger.debug("janitor %s: removed %d dead, %d cancelled, %d expired, %d "
                                 "expired results, %d locks", queue, cleaned.dead,
                                 cleaned.cancelled, cleaned.expired, cleaned.completed,
                                 cleaned.locks)
            if not self.stopping:
                self._metrics.roll(queue)
        return INTERVAL
