"""Trims the dead queue (size and age), expired results and expired uniqueness locks."""

from __future__ import annotations

import logging

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

    def tick(self) -> float:
        for queue in self._config.queues:
            more = True
            while more and not self.stopping:  # bounded batches: Redis never blocks long
                dead, completed, locks, more = self._broker.clean(
                    queue, self._config.dead_max_tasks, self._config.dead_max_age_ms)
                if dead or completed or locks:
                    logger.debug("janitor %s: removed %d dead, %d expired results, %d locks",
                                 queue, dead, completed, locks)
        return INTERVAL
