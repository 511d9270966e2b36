"""Bulk jobs: "run all" / "delete all" / "cancel all" over one state of a queue, queued by
the admin and run by a worker's maintenance process (worker/bulk.py) in bounded batches,
so that no web request moves a million tasks itself (a proxy's timeout would cut it
midway).

One JSON record per job in the queue's bulk hash (QueueKeys.bulk); every change of a job
is one script: bulk_queue, bulk_claim (under a lease), bulk_step (a batch and its
progress at once), bulk_release. See docs/design.md, "Bulk jobs".
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..info import ms_to_datetime
from .keys import CANCELLABLE, DELETABLE, RUNNABLE
from .packing import as_text
from .redis import RedisBroker

# The states each action applies to (bulk_queue.lua checks the same).
BULK_ACTIONS: dict[str, tuple[str, ...]] = {
    "requeue": RUNNABLE,
    "delete": DELETABLE,
    "cancel": CANCELLABLE,
}
KEEP_FINISHED = 20  # finished jobs kept per queue, for the dashboard and `bgtasks jobs`
ACTIVE = ("queued", "running")
_NEVER = datetime.fromtimestamp(0, UTC)  # sorts a job without its time first


@dataclass(frozen=True)
class BulkJob:
    """One bulk job as stored. ``status``: queued, running, done, failed; 'damaged' for
    a record no script would run (outside writes)."""

    queue: str
    id: str
    state: str
    action: str  # 'requeue', 'delete' or 'cancel'
    status: str
    requested_by: str = ""
    requested_at: datetime | None = None
    done: int = 0  # tasks moved, deleted or cancelled (running: asked to stop) so far
    total: int = 0  # tasks the state held when the job was queued: at most this many
    started_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    runner: str = ""  # the maintenance process holding (or last holding) it
    lease_until_ms: int | None = None
    takeovers: int = 0  # times another runner took it over after its runner stopped
    error: str = ""  # failed: why
    note: str = ""  # done: why it stopped before its total, if it did

    @classmethod
    def from_json(cls, queue: str, job_id: str, raw: bytes | str) -> BulkJob:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return cls(queue, job_id, "", "", "damaged", error="not a bulk job record")
        text = {name: str(data.get(name) or "") for name in (
            "state", "action", "status", "requested_by", "runner", "error", "note")}
        return cls(
            queue=queue, id=job_id, **text,
            requested_at=ms_to_datetime(data.get("requested_at")),
            done=_count(data.get("done")), total=_count(data.get("total")),
            started_at=ms_to_datetime(data.get("started_at")),
            updated_at=ms_to_datetime(data.get("updated_at")),
            finished_at=ms_to_datetime(data.get("finished_at")),
            lease_until_ms=_count(data.get("lease_until")) or None,
            takeovers=_count(data.get("takeovers")))

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def percent(self) -> int:
        """How far it got, 0-100 (rounded down: 100 only once every task is done)."""
        return 100 if self.total <= 0 else min(100, self.done * 100 // self.total)

    def describe(self) -> str:
        """'run all 1,200 dead tasks of queue default now', 'delete all 3 retry tasks...',
        'cancel all 40 pending tasks...'"""
        tasks = "task" if self.total == 1 else "tasks"
        what = f"all {self.total:,} {self.state} {tasks} of queue {self.queue}"
        if self.action == "requeue":
            return f"run {what} now"
        return f"cancel {what}" if self.action == "cancel" else f"delete {what}"


@dataclass(frozen=True)
class QueuedJob:
    """What asking for a job did: 'ok' (``job`` is queued), 'exists' (``job`` is the same
    action on the same state, queued or running already) or 'empty' (no task: no job)."""

    outcome: str
    job: BulkJob | None


class BulkJobStore:
    """The bulk jobs of any queue, through the bulk_*.lua scripts."""

    def __init__(self, broker: RedisBroker) -> None:
        self._broker = broker

    def _run(self, name: str, queue: str, args: Sequence[Any]) -> Any:
        return self._broker._run(name, queue, args, [self._broker.queue_keys(queue).bulk])

    def _job(self, queue: str, raw: Any) -> BulkJob | None:
        if not raw:
            return None
        text = as_text(raw)  # written by the script itself: a JSON object with its id
        return BulkJob.from_json(queue, str(json.loads(text).get("id", "")), text)

    def queue(self, queue: str, state: str, action: str, requested_by: str) -> QueuedJob:
        """Queue "``action`` every ``state`` task of ``queue``", unless the same job is
        queued or running already, or the state is empty."""
        if state not in BULK_ACTIONS.get(action, ()):
            raise ValueError(f"bulk {action} of {state} tasks is not possible")
        outcome, raw = self._run("bulk_queue", queue, [uuid.uuid4().hex, state, action,
                                                       requested_by, KEEP_FINISHED])
        return QueuedJob(as_text(outcome), self._job(queue, raw))

    def claim(self, queue: str, runner: str, lease_ms: int) -> BulkJob | None:
        """The job ``runner`` should run now (its own, else the oldest queued or
        abandoned one), now held by it for ``lease_ms``; None when there is none."""
        return self._job(queue, self._run("bulk_claim", queue, [runner, lease_ms]))

    def step(self, job: BulkJob, runner: str, lease_ms: int, batch: int) -> BulkJob | None:
        """Run one batch of ``job``; the job after it, or None when ``runner`` no longer
        holds it (its lease expired and another runner took it)."""
        return self._job(job.queue, self._run("bulk_step", job.queue,
                                              [job.id, runner, lease_ms, batch]))

    def release(self, job: BulkJob, runner: str, error: str = "") -> bool:
        """Let go of ``job``: back to queued, or failed with ``error``. False when
        ``runner`` did not hold it."""
        return bool(self._run("bulk_release", job.queue, [job.id, runner, error]))

    def jobs(self, queues: Sequence[str]) -> list[BulkJob]:
        """Every stored job of ``queues``: queued and running ones first (oldest first),
        then finished ones, newest first."""
        with self._broker.translate_errors():
            pipe = self._broker.client.pipeline(transaction=False)
            for queue in queues:
                pipe.hgetall(self._broker.queue_keys(queue).bulk)
            replies = pipe.execute()
        found = [BulkJob.from_json(queue, as_text(job_id), raw)
                 for queue, entries in zip(queues, replies, strict=True)
                 for job_id, raw in entries.items()]
        active = sorted((j for j in found if j.active),
                        key=lambda j: j.requested_at or _NEVER)
        finished = sorted((j for j in found if not j.active), reverse=True,
                          key=lambda j: j.finished_at or j.requested_at or _NEVER)
        return active + finished


def _count(value: Any) -> int:
    """A stored count or time, 0 when it is not one (outside damage)."""
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
    return int(value) if ok else 0
