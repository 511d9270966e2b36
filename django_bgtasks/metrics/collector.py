"""The Prometheus families (docs/metrics.md lists each), built at scrape time from
Redis by a custom collector registered in a registry of its own: never the global one,
so nothing is kept in a process between scrapes and any process can answer one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..broker.keys import STATES
from ..broker.metrics import BUCKETS_MS, Histogram
from ..broker.redis import RedisBroker
from . import require_prometheus
from .readings import Readings, read_all

PREFIX = "bgtasks"
# The counters of how tasks end (broker.metrics.END_EVENTS, in its order), one family
# each, as the issue names them: bgtasks_tasks_<event>_total.
ENDS: dict[str, str] = {
    "succeeded": "Runs that succeeded.",
    "retried": "Runs that failed and were scheduled again, and leases lost to a vanished "
               "worker (the task runs again).",
    "dead": "Tasks that ended dead: out of retries, or failed for good.",
    "cancelled": "Tasks cancelled: runs stopped by a cancel, and queued tasks cancelled.",
    "expired": "Tasks that expired before they could run.",
}


class BgtasksCollector:
    """A prometheus_client collector: ``collect()`` reads Redis (``read``) each time."""

    def __init__(self, read: Callable[[], Readings]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        yield from families(self._read())


def exposition(broker: RedisBroker) -> bytes:
    """The text exposition format of everything, read now."""
    prometheus = require_prometheus()
    registry = prometheus.CollectorRegistry(auto_describe=False)
    registry.register(BgtasksCollector(lambda: read_all(broker)))
    data: bytes = prometheus.generate_latest(registry)
    return data


def content_type() -> str:
    """The exposition format's media type (with its version)."""
    value: str = require_prometheus().CONTENT_TYPE_LATEST
    return value


def families(readings: Readings) -> list[Any]:
    """Every family, in the order docs/metrics.md lists them."""
    core = require_prometheus().core
    return [*_queue_families(core, readings), *_worker_families(core, readings),
            *_task_families(core, readings)]


def _queue_families(core: Any, readings: Readings) -> list[Any]:
    tasks = core.GaugeMetricFamily(f"{PREFIX}_tasks", "Tasks in each state, per queue.",
                                   labels=["queue", "state"])
    age = core.GaugeMetricFamily(
        f"{PREFIX}_queue_oldest_pending_age_seconds",
        "Seconds since the oldest pending task of the queue was due (0: none pending).",
        labels=["queue"])
    paused = core.GaugeMetricFamily(f"{PREFIX}_queue_paused",
                                    "1 if the queue is paused, else 0.", labels=["queue"])
    threads = core.GaugeMetricFamily(
        f"{PREFIX}_queue_threads",
        "Threads of the live workers listening on the queue (processes x threads).",
        labels=["queue"])
    load = core.GaugeMetricFamily(
        f"{PREFIX}_queue_load",
        "(pending + active) / threads serving the queue; pending + active when none does.",
        labels=["queue"])
    loads = readings.loads()
    for stats in readings.stats:
        queue = stats.name
        for state in STATES:
            tasks.add_metric([queue, state], stats.counts.get(state, 0))
        age.add_metric([queue], readings.ages.get(queue) or 0.0)
        paused.add_metric([queue], 1 if stats.paused else 0)
        threads.add_metric([queue], loads[queue].threads)
        load.add_metric([queue], loads[queue].load)
    return [tasks, age, paused, threads, load]


def _worker_families(core: Any, readings: Readings) -> list[Any]:
    workers = readings.workers
    hosts = core.GaugeMetricFamily(
        f"{PREFIX}_workers", "Live workers: runbackground commands whose heartbeat is "
        "current (each runs its own processes).")
    hosts.add_metric([], len(workers))
    processes = core.GaugeMetricFamily(f"{PREFIX}_worker_processes",
                                       "Task processes of the live workers.")
    processes.add_metric([], sum(w.processes for w in workers))
    threads = core.GaugeMetricFamily(
        f"{PREFIX}_worker_threads",
        "Threads of the live workers: all of them (total), and those running a task (busy).",
        labels=["state"])
    threads.add_metric(["busy"], sum(w.in_flight for w in workers))
    threads.add_metric(["total"], sum(w.processes * w.threads for w in workers))
    return [hosts, processes, threads]


def _task_families(core: Any, readings: Readings) -> list[Any]:
    labels = ["queue", "task"]
    enqueued = core.CounterMetricFamily(f"{PREFIX}_tasks_enqueued",
                                        "Tasks enqueued, per task name.", labels=labels)
    started = core.CounterMetricFamily(f"{PREFIX}_tasks_started",
                                       "Runs started, per task name.", labels=labels)
    ended = {event: core.CounterMetricFamily(f"{PREFIX}_tasks_{event}", text, labels=labels)
             for event, text in ENDS.items()}
    duration = core.HistogramMetricFamily(
        f"{PREFIX}_task_duration_seconds",
        "How long runs took (Redis' clock, start to end), by how they ended.",
        labels=[*labels, "outcome"])
    latency = core.HistogramMetricFamily(
        f"{PREFIX}_task_queue_latency_seconds",
        "Queue latency: seconds from when a task was due to when its run started.",
        labels=labels)
    for queue, by_name in sorted(readings.tasks.items()):
        for name, metrics in sorted(by_name.items()):
            enqueued.add_metric([queue, name], metrics.enqueued)
            started.add_metric([queue, name], metrics.started)
            for event, family in ended.items():
                family.add_metric([queue, name], metrics.ends.get(event, 0))
            for outcome, histogram in sorted(metrics.duration.items()):
                duration.add_metric([queue, name, outcome], *_buckets(histogram))
            latency.add_metric([queue, name], *_buckets(metrics.latency))
    return [enqueued, started, *ended.values(), duration, latency]


def _buckets(histogram: Histogram) -> tuple[list[tuple[str, int]], float]:
    """Prometheus' cumulative buckets (bounds in seconds) and the sum in seconds."""
    cumulative = histogram.cumulative()
    bounds = [_seconds(ms) for ms in BUCKETS_MS] + ["+Inf"]
    return list(zip(bounds, cumulative, strict=True)), histogram.sum_ms / 1000


def _seconds(ms: int) -> str:
    # Go's float formatting, as Prometheus writes bucket bounds: 0.005, 1.0, 1800.0
    return repr(ms / 1000)
