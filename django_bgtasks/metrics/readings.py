"""What one scrape reads from Redis, and the autoscaling signal computed from it.

The reads are the admin's (Inspector.stats, .workers) and broker/metrics.py's: a fixed
number of commands per queue and per live worker, never per task, so a scrape costs the
same with 10 or 1,000,000 tasks (tests/unit/test_metrics_exporter.py counts them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..broker.metrics import MetricsStore, TaskMetrics
from ..broker.redis import RedisBroker
from ..conf import get_settings
from ..ops.inspect import Inspector, QueueStats, WorkerInfo


@dataclass(frozen=True)
class QueueLoad:
    """A queue's autoscaling signal: (pending + active) / threads serving it."""

    pending: int
    active: int
    threads: int

    @property
    def load(self) -> float:
        """Tasks per serving thread. With no thread serving the queue, its pending +
        active count itself (as if one thread served it), so that an autoscaler can start
        the first worker (from zero) when tasks arrive, and a plain number (never +Inf,
        which JSON cannot carry) goes out."""
        return (self.pending + self.active) / max(self.threads, 1)

    def data(self) -> dict[str, int | float]:
        return {"pending": self.pending, "active": self.active, "threads": self.threads,
                "load": round(self.load, 6)}


@dataclass(frozen=True)
class Readings:
    """Everything the exporter shows, read at one time."""

    stats: list[QueueStats]
    ages: dict[str, float | None]  # seconds since the oldest pending task was due
    workers: list[WorkerInfo]
    tasks: dict[str, dict[str, TaskMetrics]]  # queue -> task name -> counters

    def loads(self) -> dict[str, QueueLoad]:
        """Each queue's autoscaling signal."""
        threads = threads_per_queue(self.workers)
        return {s.name: QueueLoad(s.counts.get("pending", 0), s.counts.get("active", 0),
                                  threads.get(s.name, 0)) for s in self.stats}


def threads_per_queue(workers: Sequence[WorkerInfo]) -> dict[str, int]:
    """Threads (processes x threads) of the live workers listening on each queue. A
    thread serving two queues counts for each: it takes from either."""
    found: dict[str, int] = {}
    for worker in workers:
        for queue in worker.queue_names:
            found[queue] = found.get(queue, 0) + worker.processes * worker.threads
    return found


def exported_queues(inspector: Inspector) -> list[str]:
    """The queues Redis knows (enqueued to, or served), and those BGTASKS['QUEUES']
    names even before their first task, so their series start at 0."""
    configured = get_settings().QUEUES
    names = set(inspector.queues())
    if isinstance(configured, dict):
        names.update(str(name) for name in configured)
    return sorted(names)


def read_stats(broker: RedisBroker) -> tuple[list[QueueStats], list[WorkerInfo]]:
    """Counts per state and the live workers: what the autoscaling signal needs."""
    inspector = Inspector(broker)
    return inspector.stats(exported_queues(inspector)), inspector.workers()


def read_all(broker: RedisBroker) -> Readings:
    """Everything a scrape shows."""
    stats, workers = read_stats(broker)
    queues = [s.name for s in stats]
    store = MetricsStore(broker)
    return Readings(stats, store.pending_ages(queues), workers, store.read(queues))


def autoscale_data(broker: RedisBroker) -> dict[str, dict[str, dict[str, int | float]]]:
    """{"queues": {queue: {"pending", "active", "threads", "load"}}}: the JSON endpoint's
    and ``bgtasks metrics --json``'s body."""
    stats, workers = read_stats(broker)
    readings = Readings(stats, {}, workers, {})
    return {"queues": {queue: load.data() for queue, load in readings.loads().items()}}
