"""The worker's options and the queue order each claim follows."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

from ..broker.keys import validate_queue_name
from ..broker.types import Retention


def parse_queues(spec: str) -> dict[str, int]:
    """Parse ``"default,mail:3"`` into ``{"default": 1, "mail": 3}``."""
    queues: dict[str, int] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, weight = part.partition(":")
        validate_queue_name(name)
        try:
            value = int(weight) if weight else 1
        except ValueError:
            raise ValueError(f"queue weight must be an integer: {part!r}") from None
        if value < 1:
            raise ValueError(f"queue weight must be >= 1: {part!r}")
        queues[name] = value
    if not queues:
        raise ValueError("no queue given")
    return queues


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs to know, fixed at start-up."""

    queues: dict[str, int]
    processes: int = os.cpu_count() or 1
    threads: int = 8
    shutdown_timeout: float = 10.0
    max_tasks_per_child: int = 0  # 0: never recycle
    strict_priority: bool = False
    lease_seconds: float = 30.0
    dead_max_tasks: int = 10_000
    dead_max_age: float = 180 * 24 * 3600
    # Cancelled and expired tasks kept per queue (CANCELLED_MAX_TASKS, EXPIRED_MAX_AGE...).
    cancelled: Retention = Retention(10_000, 7 * 24 * 3600 * 1000)
    expired: Retention = Retention(10_000, 7 * 24 * 3600 * 1000)
    log_arguments: bool = False
    cron: bool = True  # fire periodic entries from this host
    bulk_batch: int = 500  # tasks per script call of a bulk job (BULK_BATCH)
    burst: bool = False  # run what is due now, then exit (worker/burst.py)
    cancel_grace: float = 10.0  # seconds a run has to stop once its cancel is requested

    @property
    def lease_ms(self) -> int:
        return int(self.lease_seconds * 1000)

    @property
    def dead_max_age_ms(self) -> int:
        return int(self.dead_max_age * 1000)

    def queue_order(self, rng: random.Random = random._inst) -> list[str]:
        """The order to try queues in: by weight, strictly or as a weighted shuffle."""
        names = list(self.queues)
        if self.strict_priority or len(names) == 1:
            return sorted(names, key=lambda q: -self.queues[q])
        # Weighted random order without replacement (Efraimidis-Spirakis keys).
        return sorted(names, key=lambda q: -(rng.random() ** (1.0 / self.queues[q])))
