"""Per task name statistics (the admin's task statistics page, ``bgtasks taskstats``):
runs, failures and the duration and queue latency quantiles of each task name in each
queue, over the last hour, the last day, or since the counters began, from the metrics
the transitions write (broker/metrics.py).

What counts: a run is an attempt that started and ended (succeeded, retried, dead or
cancelled while running); a failed run is one that ended retried or dead; the failure rate
is failed runs / runs. Tasks that ended without a run (expired, cancelled before they
started, found lost and retried or dead) are counted apart. Quantiles come from the
fixed-bucket histograms, interpolated inside a bucket: an estimate within its bucket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..broker.metrics import Histogram, MetricsStore, TaskMetrics
from ..broker.redis import RedisBroker

# window name -> minutes (None: since the counters began)
WINDOWS: dict[str, int | None] = {"hour": 60, "day": 1440, "total": None}
WINDOW_LABELS = {"hour": "Last hour", "day": "Last 24 hours", "total": "Since the counters began"}
QUANTILES = (0.5, 0.95, 0.99)
FAILED_OUTCOMES = ("retried", "dead")
# sort key -> (what it orders by, descending first)
SORTS = {"runs": "runs", "failure": "failure_rate", "duration": "duration_p95",
         "latency": "latency_p95", "name": "task"}


@dataclass(frozen=True)
class TaskStatsRow:
    """One task name in one queue, over one window."""

    queue: str
    task: str
    enqueued: int
    started: int
    runs: int
    failed: int
    not_run: int  # ended without a run: expired, cancelled before starting, lost
    duration: tuple[float | None, ...]  # ms at QUANTILES
    latency: tuple[float | None, ...]  # ms at QUANTILES

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.runs if self.runs else None

    @property
    def duration_p95(self) -> float | None:
        return self.duration[1]

    @property
    def latency_p95(self) -> float | None:
        return self.latency[1]


def stats_row(queue: str, task: str, metrics: TaskMetrics) -> TaskStatsRow:
    """The row of one task name's metrics."""
    durations = metrics.all_durations()
    runs = durations.count
    return TaskStatsRow(
        queue=queue, task=task, enqueued=metrics.enqueued, started=metrics.started,
        runs=runs,
        failed=sum(metrics.duration.get(o, Histogram()).count for o in FAILED_OUTCOMES),
        not_run=max(0, sum(metrics.ends.values()) - runs),
        duration=_quantiles(durations), latency=_quantiles(metrics.latency))


def _quantiles(histogram: Histogram) -> tuple[float | None, ...]:
    return tuple(histogram.quantile(q) for q in QUANTILES)


def task_stats(broker: RedisBroker, queues: Sequence[str], window: str = "hour",
               sort: str = "runs") -> list[TaskStatsRow]:
    """One row per task name and queue seen in ``window`` (a WINDOWS key), ordered by
    ``sort`` (a SORTS key; numbers largest first, names A to Z)."""
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; expected one of {', '.join(WINDOWS)}")
    store = MetricsStore(broker)
    minutes = WINDOWS[window]
    found = store.read(queues) if minutes is None else store.window(queues, minutes)
    rows = [stats_row(queue, task, metrics) for queue, tasks in found.items()
            for task, metrics in tasks.items()]
    rows.sort(key=lambda r: (r.queue, r.task))
    attribute = SORTS.get(sort, "runs")
    if attribute != "task":
        # None (nothing observed) last; ties keep queue and name order
        rows.sort(key=lambda r: -(getattr(r, attribute) or -1))
    return rows
