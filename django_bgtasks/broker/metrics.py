"""Metrics in Redis: the counters and histograms the transitions write into each queue's
``metrics`` hash (_common.lua: tally, observe), read back as plain numbers, and the age
of each queue's oldest pending task (pending_age.lua). docs/metrics.md lists them.

Reading costs one command per queue (HGETALL of a hash whose size grows with the number
of task names, never with the number of tasks) plus one script call per queue for the
age, which looks at one task per priority in use.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .packing import as_text
from .redis import RedisBroker

# Upper bounds (ms) of the histogram buckets, as _common.lua's METRIC_BUCKETS; bucket
# len(BUCKETS_MS) + 1 holds the rest (+Inf).
BUCKETS_MS: tuple[int, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
                               60000, 300000, 1800000)
# How a run ends (the duration histogram's outcome label), and the ends without a run.
RUN_OUTCOMES: tuple[str, ...] = ("succeeded", "retried", "dead", "cancelled")
END_EVENTS: tuple[str, ...] = ("succeeded", "retried", "dead", "cancelled", "expired")
SLOT_MS = 300_000  # a window slot (metrics_roll.lua)
RING = 288  # slots kept: a day


@dataclass
class Histogram:
    """Observation counts per bucket (not cumulative; the last is +Inf) and their sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))
    sum_ms: int = 0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        """Counts of observations <= each bound, then the total (Prometheus' buckets)."""
        total, out = 0, []
        for n in self.counts:
            total += n
            out.append(total)
        return out

    def minus(self, earlier: Histogram) -> Histogram:
        """What was observed since ``earlier`` (a snapshot of the same histogram)."""
        return Histogram([max(0, a - b) for a, b in zip(self.counts, earlier.counts,
                                                         strict=True)],
                         max(0, self.sum_ms - earlier.sum_ms))

    def add(self, other: Histogram) -> None:
        for index, n in enumerate(other.counts):
            self.counts[index] += n
        self.sum_ms += other.sum_ms

    def quantile(self, q: float) -> float | None:
        """The q-quantile in ms, interpolated linearly inside its bucket (as Prometheus'
        histogram_quantile); None without observations. In the +Inf bucket: its lower
        bound, the largest finite one."""
        total = self.count
        if not total:
            return None
        rank = q * total
        seen = 0
        for index, n in enumerate(self.counts):
            if n and seen + n >= rank:
                if index == len(BUCKETS_MS):
                    return float(BUCKETS_MS[-1])
                low = 0 if index == 0 else BUCKETS_MS[index - 1]
                return low + (BUCKETS_MS[index] - low) * max(0.0, rank - seen) / n
            seen += n
        return float(BUCKETS_MS[-1])


@dataclass
class TaskMetrics:
    """One task name's counters in one queue."""

    enqueued: int = 0
    # How its tasks ended: run ends (from the duration histograms) plus ends without one.
    ends: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)  # due -> start; count = started
    duration: dict[str, Histogram] = field(default_factory=dict)  # per RUN_OUTCOMES

    @property
    def started(self) -> int:
        return self.latency.count

    def all_durations(self) -> Histogram:
        total = Histogram()
        for histogram in self.duration.values():
            total.add(histogram)
        return total


def parse_fields(fields: dict[str, int]) -> dict[str, TaskMetrics]:
    """The metrics hash's fields (see _common.lua) as TaskMetrics per task name; fields
    that do not parse (outside damage, a future kind) are skipped."""
    tasks: dict[str, TaskMetrics] = {}

    def task(name: str) -> TaskMetrics:
        found = tasks.get(name)
        if found is None:
            found = tasks[name] = TaskMetrics()
        return found

    for key, value in fields.items():
        kind, _, rest = key.partition("|")
        try:
            if kind == "e":
                task(rest).enqueued += value
            elif kind == "f":
                name, _, state = rest.rpartition("|")
                ends = task(name).ends
                ends[state] = ends.get(state, 0) + value
            elif kind in ("l", "d"):
                head, _, bucket = rest.rpartition("|")
                index = int(bucket) - 1
                if not 0 <= index <= len(BUCKETS_MS):
                    continue
                _histogram(task, kind, head).counts[index] += value
            elif kind in ("ls", "ds"):
                _histogram(task, kind[0], rest).sum_ms += value
        except ValueError:
            continue
    for metrics in tasks.values():
        for outcome, histogram in metrics.duration.items():
            metrics.ends[outcome] = metrics.ends.get(outcome, 0) + histogram.count
    return tasks


def _histogram(task: Callable[[str], TaskMetrics], kind: str, head: str) -> Histogram:
    if kind == "l":
        return task(head).latency
    name, _, outcome = head.rpartition("|")
    if not name:
        raise ValueError(head)
    return task(name).duration.setdefault(outcome, Histogram())


@dataclass(frozen=True)
class MinuteStats:
    """Tasks processed and failed in one minute (UTC), over the queues read."""

    at: datetime
    processed: int
    failed: int


def _counts(reply: dict) -> dict[str, int]:
    fields = {}
    for key, value in reply.items():
        try:
            fields[as_text(key)] = int(value)
        except ValueError:
            continue
    return fields


class MetricsStore:
    """Reads the metrics of queues (one pipeline, one command per queue and read)."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker

    def raw(self, queues: Sequence[str]) -> dict[str, dict[str, int]]:
        """Each queue's metrics hash, field -> count."""
        broker = self.broker
        with broker.translate_errors():
            pipe = broker.client.pipeline(transaction=False)
            for queue in queues:
                pipe.hgetall(broker.queue_keys(queue).metrics)
            replies = pipe.execute()
        return {queue: _counts(reply) for queue, reply in zip(queues, replies, strict=True)}

    def read(self, queues: Sequence[str]) -> dict[str, dict[str, TaskMetrics]]:
        """Each queue's metrics per task name."""
        return {queue: parse_fields(fields) for queue, fields in self.raw(queues).items()}

    def pending_ages(self, queues: Sequence[str]) -> dict[str, float | None]:
        """Seconds since each queue's oldest pending task was due (None: none pending)."""
        broker = self.broker
        script = broker._scripts["pending_age"]
        ages: dict[str, float | None] = {}
        with broker.translate_errors():
            # One call per queue: each queue's keys live in a slot of their own.
            for queue in queues:
                keys = broker.queue_keys(queue)
                age, _now, _heads = script(keys=[keys.pending, keys.info], args=[])
                ages[queue] = None if age is None else int(age) / 1000
        return ages

    def roll(self, queue: str) -> str:
        """Add what the queue's metrics gained since the last roll to the current window
        slot and minute (metrics_roll.lua); a worker's maintenance process calls it."""
        broker = self.broker
        keys = broker.queue_keys(queue)
        position = int(time_ms() // SLOT_MS) % RING
        with broker.translate_errors():
            for _ in range(2):  # a second call when Redis' clock says another slot
                status, value = broker._scripts["metrics_roll"](
                    keys=[keys.metrics, keys.metrics_base, keys.metrics_slot(position),
                          keys.metrics_minutes], args=[position])
                if as_text(status) != "slot":
                    break
                position = int(value)
        return as_text(status)

    def window(self, queues: Sequence[str], minutes: int) -> dict[str, dict[str, TaskMetrics]]:
        """Each queue's metrics per task name over about the last ``minutes`` (whole
        5-minute slots, the current one included, plus what was counted since the last
        roll)."""
        broker = self.broker
        slots = max(1, -(-minutes * 60_000 // SLOT_MS))
        with broker.translate_errors():
            now = self._redis_ms()
            last = now // SLOT_MS
            pipe = broker.client.pipeline(transaction=False)
            for queue in queues:
                keys = broker.queue_keys(queue)
                pipe.hgetall(keys.metrics)
                pipe.hgetall(keys.metrics_base)
                for slot in range(last - slots + 1, last + 1):
                    pipe.hgetall(keys.metrics_slot(slot % RING))
            replies = iter(pipe.execute())
        found = {}
        for queue in queues:
            current, base = _counts(next(replies)), _counts(next(replies))
            total: dict[str, int] = {}
            if base:  # never rolled: the counts since the start are no window's
                for key, value in current.items():
                    gained = value - base.get(key, 0)
                    if gained > 0:
                        total[key] = gained
            for slot in range(last - slots + 1, last + 1):
                gained = _counts(next(replies))
                if gained.pop("@", None) != slot:
                    continue  # empty, or left from an earlier day
                for key, value in gained.items():
                    total[key] = total.get(key, 0) + value
            found[queue] = parse_fields(total)
        return found

    def per_minute(self, queues: Sequence[str], minutes: int = 1440) -> list[MinuteStats]:
        """Processed and failed per minute over the last ``minutes`` (at most 1440), oldest
        first, every minute present, summed over ``queues`` (as rolled: up to half a
        minute behind)."""
        broker = self.broker
        with broker.translate_errors():
            now_minute = self._redis_ms() // 60_000
            pipe = broker.client.pipeline(transaction=False)
            for queue in queues:
                pipe.hgetall(broker.queue_keys(queue).metrics_minutes)
            replies = pipe.execute()
        first = now_minute - min(minutes, 1440) + 1
        totals: dict[int, list[int]] = {}
        for reply in replies:
            for value in reply.values():
                try:
                    minute, processed, failed = (int(v) for v in as_text(value).split())
                except ValueError:
                    continue
                if first <= minute <= now_minute:
                    row = totals.setdefault(minute, [0, 0])
                    row[0] += processed
                    row[1] += failed
        return [MinuteStats(datetime.fromtimestamp(m * 60, UTC), *totals.get(m, (0, 0)))
                for m in range(first, now_minute + 1)]

    def _redis_ms(self) -> int:
        """Redis' clock, which the scripts go by."""
        seconds, micros = self.broker.client.time()
        return int(seconds) * 1000 + int(micros) // 1000


def time_ms() -> int:
    return int(time.time() * 1000)
