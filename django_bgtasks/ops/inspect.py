"""Reads and bulk actions over the queues, for the admin pages and ``manage.py bgtasks``.

Every read is a bounded range (ZRANGE by rank, then peek.lua's summary of that page's
tasks: a head of each message, its size, its record), so a page costs the same with 100 or
1,000,000 tasks, and with tiny or 2.7 MB ones. Bulk actions go through the same Lua
transitions as single ones, in batches of at most BATCH ids per script call, so that
Redis is never blocked for long whatever the queue holds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from .. import signals
from ..broker.bulk import BulkJob, BulkJobStore, QueuedJob
from ..broker.keys import CANCELLABLE, RUNNABLE
from ..broker.packing import as_text
from ..broker.redis import RedisBroker
from ..broker.types import CancelResult
from ..info import STATES, TaskInfo, ms_to_datetime
from ..task import announce_cancelled
from .display import SHOW_BYTES
from .limit_rows import LIMITS_SHOWN, LimitRow, LimitsReport
from .search import TaskSearch
from .summary import WHOLE_BYTES, TaskDetail, TaskSummary, detailed, summarize

BATCH = 500
NAME_SCAN_LIMIT = 20_000  # a search (name, arguments, error, worker) reads at most this many
PARTS = ("message", "result", "errors")  # what stored_json serves

# Which end of each state's ZSET a list starts from: oldest due first for the waiting
# states, most recent first for the finished ones.
NEWEST_FIRST = {"dead", "completed", "cancelled", "expired"}


@dataclass(frozen=True)
class QueueStats:
    name: str
    counts: dict[str, int]
    processed_today: int
    failed_today: int
    paused: bool

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class DayStats:
    day: date
    processed: int
    failed: int


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str
    pid: str
    queues: str
    processes: int
    threads: int
    started: datetime | None
    in_flight: int
    expires: datetime | None

    @property
    def queue_names(self) -> list[str]:
        """The queues it serves: its heartbeat lists them as "default:1,mail:2"."""
        return [name for part in self.queues.split(",") if (name := part.partition(":")[0])]


@dataclass(frozen=True)
class TaskRow:
    """One task in a list: its summary (its info, as far as a list reads it), plus its
    score in the state's set (due, died at...)."""

    summary: TaskSummary
    score_ms: float
    state: str = ""  # the set it was listed from; its record may say otherwise if damaged

    @property
    def info(self) -> TaskInfo:
        return self.summary.info

    @property
    def when(self) -> datetime | None:
        """The state's own time: run after, lease expiry, next retry, died at, expiry."""
        state = self.state or self.info.state
        if state == "pending":
            return self.info.enqueued_at  # a pending score is an order, not a time
        if state == "waiting":  # its score is its place in pending: an order too
            return self.info.waiting_since or self.info.enqueued_at
        return ms_to_datetime(self.score_ms) or self.info.enqueued_at


def validate_state(state: str) -> str:
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
    return state


class TaskList:
    """A lazy, sliceable list of one state's tasks, over one queue or all: what Django's
    Paginator needs (count() and slicing), reading only the slice asked for."""

    def __init__(self, inspector: Inspector, state: str, queues: Sequence[str]) -> None:
        self._inspector = inspector
        self.state = validate_state(state)
        self.queues = list(queues)
        self._counts: list[int] | None = None

    def _queue_counts(self) -> list[int]:
        if self._counts is None:
            self._counts = self._inspector.state_counts(self.queues, self.state)
        return self._counts

    def count(self) -> int:
        return sum(self._queue_counts())

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, index: slice | int) -> list[TaskRow] | TaskRow:
        if isinstance(index, int):
            rows = self[index:index + 1]
            if not rows:
                raise IndexError(index)
            return rows[0]
        start, stop, _ = index.indices(self.count())
        rows: list[TaskRow] = []
        offset = 0
        for queue, size in zip(self.queues, self._queue_counts(), strict=True):
            if stop <= offset:
                break
            lo, hi = max(start - offset, 0), min(stop - offset, size)
            if lo < hi:
                rows += self._inspector.task_range(queue, self.state, lo, hi - 1)
            offset += size
        return rows


class Inspector:
    """Read-mostly access to what Redis holds; one instance per request or command."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.client = broker.client

    # -- queues -----------------------------------------------------------------------

    def queues(self) -> list[str]:
        return self.broker.known_queues()

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts per state, today's counters and the paused flag of each queue."""
        names = list(queues) if queues is not None else self.queues()
        today = time.strftime("%Y-%m-%d", time.gmtime())
        with self.broker.translate_errors():
            pipe = self.client.pipeline(transaction=False)
            for queue in names:
                keys = self.broker.queue_keys(queue)
                for state in STATES:
                    pipe.zcard(getattr(keys, state))
                pipe.get(keys.stats("processed", today))
                pipe.get(keys.stats("failed", today))
                pipe.exists(keys.paused)
            replies = pipe.execute()
        found = []
        width = len(STATES) + 3
        for index, queue in enumerate(names):
            part = replies[index * width:(index + 1) * width]
            found.append(QueueStats(
                name=queue, counts=dict(zip(STATES, part[:len(STATES)], strict=True)),
                processed_today=int(part[-3] or 0), failed_today=int(part[-2] or 0),
                paused=bool(part[-1])))
        return found

    def history(self, days: int = 14, queues: Sequence[str] | None = None) -> list[DayStats]:
        """Processed and failed per UTC day, oldest first, summed over ``queues``."""
        names = list(queues) if queues is not None else self.queues()
        today = datetime.now(UTC).date()
        span = [today - timedelta(days=n) for n in range(days - 1, -1, -1)]
        with self.broker.translate_errors():
            pipe = self.client.pipeline(transaction=False)
            for day in span:
                for queue in names:
                    keys = self.broker.queue_keys(queue)
                    pipe.get(keys.stats("processed", day.isoformat()))
                    pipe.get(keys.stats("failed", day.isoformat()))
            replies = iter(pipe.execute())
        result = []
        for day in span:
            processed = failed = 0
            for _ in names:
                processed += int(next(replies) or 0)
                failed += int(next(replies) or 0)
            result.append(DayStats(day, processed, failed))
        return result

    def workers(self) -> list[WorkerInfo]:
        """Worker hosts whose heartbeat has not expired."""
        keys = self.broker.keys
        now_ms = self.broker.server_time_ms()  # the heartbeats' clock, not this host's
        with self.broker.translate_errors():
            entries = self.client.zrangebyscore(keys.workers, now_ms, "+inf", withscores=True)
            pipe = self.client.pipeline(transaction=False)
            for worker_id, _ in entries:
                pipe.hgetall(keys.worker(as_text(worker_id)))
            details = pipe.execute()
        found = []
        for (worker_id, expiry), raw in zip(entries, details, strict=True):
            data = {as_text(k): as_text(v) for k, v in raw.items()}
            found.append(WorkerInfo(
                id=as_text(worker_id), host=data.get("host", "?"), pid=data.get("pid", "?"),
                queues=data.get("queues", ""), processes=_int(data.get("processes")),
                threads=_int(data.get("threads")),
                started=_from_seconds(data.get("started")),
                in_flight=_int(data.get("in_flight")),
                expires=datetime.fromtimestamp(expiry / 1000, tz=UTC)))
        return found

    def limits(self, queues: Sequence[str] | None = None) -> LimitsReport:
        """The live limits of ``queues`` (default: every known queue), by queue then id,
        at most LIMITS_SHOWN per queue."""
        rows: list[LimitRow] = []
        total = 0
        now_ms = self.broker.server_time_ms()  # waiting_since is on Redis' clock too
        for queue in sorted(queues if queues is not None else self.queues()):
            found, held = self.broker.limits(queue, LIMITS_SHOWN)
            rows += [LimitRow(status, now_ms) for status in found]
            total += held
        return LimitsReport(rows, total)

    def pause(self, queue: str) -> None:
        self.broker.pause(queue)

    def resume(self, queue: str) -> None:
        self.broker.resume(queue)

    # -- tasks ------------------------------------------------------------------------

    def state_counts(self, queues: Sequence[str], state: str) -> list[int]:
        validate_state(state)
        with self.broker.translate_errors():
            pipe = self.client.pipeline(transaction=False)
            for queue in queues:
                pipe.zcard(getattr(self.broker.queue_keys(queue), state))
            return [int(n) for n in pipe.execute()]

    def tasks(self, state: str, queue: str | None = None) -> TaskList:
        """All tasks in ``state`` (of one queue, or every queue in name order), lazily."""
        return TaskList(self, state, [queue] if queue else self.queues())

    def task_range(self, queue: str, state: str, start: int, end: int) -> list[TaskRow]:
        """Tasks ranked ``start``..``end`` (inclusive) in one queue's state set."""
        keys = self.broker.queue_keys(queue)
        zset = getattr(keys, validate_state(state))
        with self.broker.translate_errors():
            if state in NEWEST_FIRST:
                entries = self.client.zrevrange(zset, start, end, withscores=True)
            else:
                entries = self.client.zrange(zset, start, end, withscores=True)
        return self._rows(queue, state, [(as_text(i), s) for i, s in entries])

    def _rows(self, queue: str, state: str,
              entries: list[tuple[str, float]]) -> list[TaskRow]:
        # An id listed with nothing stored (outside damage) is still a row: it can be deleted.
        found = self._summaries(queue, [task_id for task_id, _ in entries])
        return [TaskRow(summary, score, state)
                for (_, score), (summary, _) in zip(entries, found, strict=True)]

    def _summaries(self, queue: str, ids: Sequence[str]) -> list[tuple[TaskSummary, bool]]:
        """Each task's summary, and whether anything of it is stored."""
        found = []
        for chunk in _chunks(ids):
            reply = self.broker.peek(queue, chunk)
            for index, task_id in enumerate(chunk):
                head, size, record = reply[index * 3:index * 3 + 3]
                found.append((summarize(queue, task_id, head, size, record),
                              head is not None or record is not None))
        return found

    def summaries(self, queue: str, ids: Sequence[str]) -> list[TaskInfo | None]:
        """These tasks of ``queue`` as a list reads them (TaskSummary.info), None for one
        not stored."""
        return [summary.info if stored else None
                for summary, stored in self._summaries(queue, ids)]

    def find_by_name(self, state: str, name: str, queue: str | None = None,
                     limit: int = 100) -> tuple[list[TaskRow], int, bool]:
        """Tasks whose name contains ``name`` (case-insensitive): search() by name."""
        return self.search(state, TaskSearch(name=name), queue, limit)

    def search(self, state: str, terms: TaskSearch, queue: str | None = None,
               limit: int = 100) -> tuple[list[TaskRow], int, bool]:
        """Tasks matching ``terms`` (ops/search.py), scanning at most NAME_SCAN_LIMIT ids in
        list order. Returns (rows, scanned, complete): complete is False when the scan
        stopped at the limit or at ``limit`` matches before the end."""
        rows: list[TaskRow] = []
        scanned = 0
        for q in [queue] if queue else self.queues():
            size = self.state_counts([q], state)[0]
            for start in range(0, size, BATCH):
                if scanned >= NAME_SCAN_LIMIT or len(rows) >= limit:
                    return rows[:limit], scanned, False
                batch = self.task_range(q, state, start, start + BATCH - 1)
                scanned += len(batch)
                rows += [r for r in batch if terms.matches(r.summary)]
        return rows[:limit], scanned, True

    def get(self, task_id: str, queue: str | None = None) -> TaskInfo | None:
        """One task by exact id, read whole (``bgtasks show``), or None."""
        record = self.broker.read_task(task_id, [queue] if queue else None)
        return TaskInfo.from_record(record) if record else None

    def find(self, task_id: str, queue: str | None = None) -> TaskInfo | None:
        """One task by exact id as a list reads it (its summary's info), or None."""
        where = self._queue_of(task_id, queue)
        return self.summaries(where, [task_id])[0] if where else None

    def detail(self, task_id: str, queue: str | None = None) -> TaskDetail | None:
        """One task for its page: each stored value whole up to WHOLE_BYTES, else its
        first SHOW_BYTES; or None."""
        where = self._queue_of(task_id, queue)
        if where is None:
            return None
        return detailed(where, task_id,
                        self.broker.peek(where, [task_id], WHOLE_BYTES, SHOW_BYTES))

    def stored_json(self, task_id: str, part: str, queue: str | None = None) -> bytes | None:
        """The whole stored JSON of a task's message, result or errors (a download), or
        None when there is no such task or part."""
        where = self._queue_of(task_id, queue)
        if where is None or part not in PARTS:
            return None
        keys = self.broker.queue_keys(where)
        name = {"message": keys.msg, "result": keys.result, "errors": keys.errors}[part]
        with self.broker.translate_errors():
            return self.client.hget(name, task_id)

    def _queue_of(self, task_id: str, queue: str | None) -> str | None:
        """The queue holding ``task_id`` (only ``queue``, if given), or None."""
        candidates = [queue] if queue else self.queues()
        with self.broker.translate_errors():
            pipe = self.client.pipeline(transaction=False)
            for name in candidates:
                keys = self.broker.queue_keys(name)
                pipe.hexists(keys.msg, task_id)
                pipe.hexists(keys.info, task_id)
            found = pipe.execute()
        return next((name for index, name in enumerate(candidates)
                     if found[2 * index] or found[2 * index + 1]), None)

    # -- actions ----------------------------------------------------------------------

    def requeue(self, queue: str, ids: Sequence[str]) -> list[str]:
        """Run now: move these scheduled/retry/dead tasks to pending (in batches)."""
        moved: list[str] = []
        for chunk in _chunks(ids):
            moved += self.broker.requeue(queue, chunk)
        return moved

    def delete(self, queue: str, ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Delete these tasks (running ones are refused). Returns (deleted, refused)."""
        deleted: list[str] = []
        refused: list[str] = []
        for chunk in _chunks(ids):
            done, active = self.broker.delete(queue, chunk)
            deleted += done
            refused += active
        return deleted, refused

    def cancel(self, queue: str, ids: Sequence[str], by: str = "") -> CancelResult:
        """Cancel these tasks (in batches): queued ones end cancelled (task_cancelled is
        sent for them), running ones are asked to stop, ended ones are left as they are."""
        result = CancelResult()
        for chunk in _chunks(ids):
            done = self.broker.cancel(queue, chunk, by)
            if done.cancelled and signals.task_cancelled.has_listeners():
                announce_cancelled(i for i in self.summaries(queue, done.cancelled) if i)
            result = result.merged(done)
        return result

    def cancel_all(self, queue: str, state: str, by: str = "") -> CancelResult:
        """Cancel every task of a queued state, or ask every running one to stop, one
        bounded batch at a time."""
        if state not in CANCELLABLE:
            raise ValueError(f"only {', '.join(CANCELLABLE)} tasks can be cancelled, "
                             f"not {state}")
        if state != "active":
            return self._cancel_batches(queue, self._drain_ids(queue, state), by)
        # Running tasks asked to stop stay in their set: walk it by rank instead (a task
        # whose lease renewal moves it may be asked twice, which changes nothing).
        zset = self.broker.queue_keys(queue).active
        size = self.state_counts([queue], state)[0]
        return self._cancel_batches(
            queue, (self._ids(zset, start) for start in range(0, size, BATCH)), by)

    def _ids(self, zset: str, start: int) -> list[str]:
        with self.broker.translate_errors():
            return [as_text(i) for i in self.client.zrange(zset, start, start + BATCH - 1)]

    def _cancel_batches(self, queue: str, batches: Iterator[list[str]],
                        by: str) -> CancelResult:
        result = CancelResult()
        for chunk in batches:
            result = result.merged(self.cancel(queue, chunk, by))
        return result

    def requeue_all(self, queue: str, state: str) -> int:
        """Run every task of a scheduled/retry/dead set now, one bounded batch at a time."""
        if state not in RUNNABLE:
            raise ValueError(f"only scheduled, retry and dead tasks can be run now, not {state}")
        return sum(len(self.requeue(queue, chunk)) for chunk in self._drain_ids(queue, state))

    def delete_all(self, queue: str, state: str) -> int:
        """Delete every task of a state (not active), one bounded batch at a time."""
        if state == "active":
            raise ValueError("running tasks cannot be deleted")
        return sum(len(self.delete(queue, chunk)[0]) for chunk in self._drain_ids(queue, state))

    def queue_bulk_job(self, queue: str, state: str, action: str,
                       requested_by: str) -> QueuedJob:
        """Queue "run all" / "delete all" / "cancel all" of a state for a worker's
        maintenance process (the admin: a request must not move a million tasks itself)."""
        return BulkJobStore(self.broker).queue(queue, state, action, requested_by)

    def bulk_jobs(self, queues: Sequence[str] | None = None) -> list[BulkJob]:
        """The bulk jobs of every queue: queued and running first, then finished ones."""
        return BulkJobStore(self.broker).jobs(self.queues() if queues is None else queues)

    def _drain_ids(self, queue: str, state: str) -> Iterator[list[str]]:
        # Each batch leaves the set before the next is read, so reading from rank 0 again
        # walks the whole set; stop when a batch moves nothing (e.g. a concurrent change).
        zset = getattr(self.broker.queue_keys(queue), validate_state(state))
        while True:
            ids = self._ids(zset, 0)
            if not ids:
                return
            yield ids
            with self.broker.translate_errors():
                still = self.client.zmscore(zset, ids)
            if all(score is not None for score in still):
                return


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    ids = list(ids)
    for start in range(0, len(ids), BATCH):
        yield ids[start:start + BATCH]


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _from_seconds(value: str | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), tz=UTC) if value else None
    except ValueError:
        return None
