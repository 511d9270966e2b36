"""The requests and results the broker's operations take and return: plain frozen
dataclasses, shared by the producer, the worker and the read side."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass(frozen=True)
class EnqueueRequest:
    queue: str
    id: str
    message: str
    priority: int
    max_retries: int
    run_at_ms: int | None = None
    delay_ms: int | None = None
    unique_key: str | None = None
    unique_ttl_ms: int | None = None
    limits: str = ""  # JSON [[limit id, concurrency, rate count, rate period ms], ...]
    fair_key: str = ""
    # Not started by then, the task expires: '' never, ms from Redis' now, or '@' and an
    # absolute time in ms (enqueue.lua).
    expires: str = ""
    # Workflows: the barriers it reports its end to (JSON [[workflow id, index], ...]), and
    # whether it waits in 'blocked' until its workflow releases it.
    workflow: str = ""
    blocked: bool = False


@dataclass(frozen=True)
class EnqueueOutcome:
    status: str  # 'ok', 'exists' or 'locked'
    state: str  # on 'ok': 'pending' or 'scheduled'
    holder_id: str  # on 'exists' / 'locked': the id that holds the name or lock
    due_ms: int | None
    # on 'ok': when the record says it was enqueued (Redis' clock), as get_task_info reads it
    enqueued_ms: int | None = None


@dataclass(frozen=True)
class Ack:
    """How one claimed attempt ended, sent with the worker's next claim."""

    id: str
    attempt: int
    outcome: str  # 'done', 'retry', 'dead', 'cancelled' or 'requeue'
    result: str = ""  # done: the return value as JSON
    result_ttl_ms: int | None = None  # done: keep the record this long; None drops it
    delay_ms: int = 0  # retry
    error: str = ""  # retry / dead: one line
    traceback: str = ""
    # done / dead / cancelled: the run's last progress as JSON [current, total, message],
    # when the renewals have not carried it yet ("": nothing new)
    progress: str = ""
    # The task's name, for the metrics (claim.lua); "" = unknown: Redis reads it from the
    # message (one more read per task).
    task: str = ""

    def fields(self) -> list[Any]:
        if self.outcome == "done":
            ttl = "" if self.result_ttl_ms is None else self.result_ttl_ms
            return [self.id, self.attempt, "done", self.result, ttl, self.progress, self.task]
        if self.outcome == "retry":
            return [self.id, self.attempt, "retry", self.delay_ms, self.error, self.traceback,
                    self.task]
        return [self.id, self.attempt, self.outcome, self.progress, self.error,
                self.traceback, self.task]


@dataclass(frozen=True)
class ClaimedTask:
    id: str
    raw_message: bytes | None
    attempt: int


@dataclass(frozen=True)
class ClaimResult:
    ignored: list[str]  # acks that no longer applied (lease lost, already acked)
    claimed: list[ClaimedTask]
    # (id, error) of popped tasks no worker could run (no message, damaged record, an id
    # that is not text): the claim sent them to the dead queue itself.
    killed: list[tuple[str, str]] = field(default_factory=list)
    # Popped tasks past their expiry: ended 'expired' by the claim, never run.
    expired: list[str] = field(default_factory=list)
    # Workflow members that ended in this call, (id, outbox entry): the entries wait in the
    # queue's outbox for the worker's forwarder (docs/workflows.md).
    forward: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class DueResult:
    """Outcome of a periodic sweep (forward or recover) and when the next one is due."""

    moved: list[str] | int
    killed: list[str]
    more: bool
    next_ms: int | None
    now_ms: int
    # forward: due tasks past their expiry, ended 'expired' instead of made pending.
    expired: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)  # recover: their cancel was requested

    def seconds_until_next(self, cap: float) -> float:
        if self.more:
            return 0.0
        if self.next_ms is None:
            return cap
        return max(0.0, min(cap, (self.next_ms - self.now_ms) / 1000))


@dataclass(frozen=True)
class Retention:
    """How many tasks of a set of ended ones (cancelled, expired) a queue keeps, and how
    long: the oldest beyond either limit are trimmed by the janitor."""

    max_tasks: int
    max_age_ms: int


class Cleaned(NamedTuple):
    """What one janitor batch removed, and whether more is left to trim."""

    dead: int
    completed: int
    locks: int
    more: bool
    cancelled: int = 0
    expired: int = 0


@dataclass(frozen=True)
class Renewal:
    """What a worker's control call (extend.lua) found, for one queue."""

    lost: list[str]  # ids whose lease this worker no longer holds (renewing calls only)
    cancel_requested: list[str]  # ids of this worker's runs someone asked to cancel


@dataclass(frozen=True)
class TaskRecord:
    """A task's raw stored data, as read for TaskInfo and the admin."""

    queue: str
    id: str
    raw_message: bytes | None
    raw_info: bytes | None
    raw_errors: bytes | None
    raw_result: bytes | None


@dataclass(frozen=True)
class CancelResult:
    """What a cancel did to each id asked for (cancel.lua)."""

    cancelled: list[str] = field(default_factory=list)  # queued: now 'cancelled', never run
    requested: list[str] = field(default_factory=list)  # running: asked to stop
    # left as they were, with their state: ended already ('completed', 'dead', 'cancelled',
    # 'expired'), or 'active' with a record too damaged to carry the request
    finished: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # in no set of the queue

    def merged(self, other: CancelResult) -> CancelResult:
        return CancelResult([*self.cancelled, *other.cancelled],
                            [*self.requested, *other.requested],
                            {**self.finished, **other.finished},
                            [*self.missing, *other.missing])


@dataclass(frozen=True)
class LimitStatus:
    """One limit of one queue as Redis holds it now (docs/limits.md)."""

    queue: str
    id: str  # a named limit's name, or a task's name (with [key] for a limit_key value)
    running: int
    concurrency: int  # 0: no concurrency limit
    rate_count: int  # 0: no rate limit
    rate_period_ms: int
    tokens: float | None  # rate tokens left now (refilled to Redis' clock)
    waiting: int
    next_waiter_since_ms: int | None  # when the first task in line started waiting


@dataclass(frozen=True)
class PeriodicTick:
    """One tick a scheduler proposes: its time, and the task it would enqueue."""

    tick_ms: int
    id: str
    message: str


@dataclass(frozen=True)
class FireOutcome:
    """What cron_fire did: 'fired', 'nothing due', 'disabled', 'started' or 'skipped'."""

    outcome: str
    fired: list[str]
    last_ms: int


@dataclass(frozen=True)
class Awaited:
    """What a wait for a task's end (get_result(wait=...)) found."""

    before: TaskRecord | None  # the task as the wait began (None: no such task)
    # The task's record once it ended, or as it was found already ended (None: not kept,
    # or the wait timed out).
    record: TaskRecord | None
    ended: bool  # False: the wait timed out
    # The end announced while waiting (a final state, or 'deleted') and when, on Redis'
    # clock (ms); "" and None when it had ended before the wait, or did not end.
    announced: str = ""
    announced_ms: int | None = None
