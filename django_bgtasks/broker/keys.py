"""Every Redis key name used by django-bgtasks; nothing else formats keys.

All keys of one queue share the hash tag ``{queue}`` so that every script touching a
queue runs in one Redis Cluster slot. Per-task data lives in per-queue hashes (field =
task id) rather than one key per task, so that scripts declare every key they touch in
``KEYS`` even when the task ids are only found inside the script (dequeue, forward,
recover). See docs/design.md, "Redis layout".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

# The task states; each is one per-queue ZSET of the same name ('waiting': over a limit).
# 'blocked': a workflow member held until the step before it, or its dependencies, end.
STATES: tuple[str, ...] = ("pending", "waiting", "blocked", "active", "scheduled", "retry",
                           "dead", "completed", "cancelled", "expired")
# The states a task ends in (nothing moves it on by itself): get_result(wait=...) returns.
FINAL_STATES: frozenset[str] = frozenset({"completed", "dead", "cancelled", "expired"})
# What "run now" (requeue.lua) and "delete" (delete.lua) apply to: a running task is never
# moved nor deleted under its worker.
RUNNABLE: tuple[str, ...] = ("scheduled", "retry", "dead")
DELETABLE: tuple[str, ...] = tuple(s for s in STATES if s != "active")
# What "cancel" (cancel.lua) acts on: the queued states end cancelled, a running task is
# asked to stop.
CANCELLABLE: tuple[str, ...] = ("pending", "waiting", "blocked", "active", "scheduled",
                                 "retry")

# Per-queue keys, in the order the scripts receive them in KEYS.
QUEUE_KEY_NAMES: tuple[str, ...] = (
    "pending",  # ZSET id -> priority/FIFO score
    "active",  # ZSET id -> lease expiry (ms)
    "scheduled",  # ZSET id -> run_after (ms)
    "retry",  # ZSET id -> next attempt (ms)
    "dead",  # ZSET id -> died at (ms)
    "completed",  # ZSET id -> result expiry (ms)
    "msg",  # HASH id -> message JSON (immutable)
    "info",  # HASH id -> mutable record JSON (state, attempts, timestamps, last error)
    "errors",  # HASH id -> JSON list of failed attempts (bounded)
    "result",  # HASH id -> return value JSON (only with result_ttl)
    "unique",  # HASH lock key -> id holding it
    "unique_exp",  # ZSET lock key -> lock expiry (ms)
    "notify",  # LIST of wake-up tokens for idle workers (bounded)
    "seq",  # STRING counter for FIFO order within a priority
    "paused",  # STRING present while the queue is paused
    # Flow control (docs/limits.md): tasks over a limit wait here, not in pending.
    "waiting",  # ZSET id -> the score it had in pending (its place when it goes back)
    "limits",  # HASH limit id -> JSON state (running, tokens, last refill, its values)
    "lwait",  # ZSET (scores 0) "<limit id>\0<pending score>\0<id>": each limit's waiters
    "lwake",  # ZSET limit id -> when its next rate token is due (ms), while it has waiters
    "fair",  # HASH "<fair key>\0<priority>" -> the last place given to that key's tasks
    # Task control (docs/lifecycle.md): two more final states, and waiting for an outcome.
    "cancelled",  # ZSET id -> cancelled at (ms): kept like dead tasks, trimmed by the janitor
    "expired",  # ZSET id -> expired at (ms): not started by its `expires` time
    "rwait",  # HASH id -> how many get_result(wait=...) callers wait for it
    "finished",  # STREAM id, state: the awaited tasks that reached a final state (bounded)
    # Workflows (docs/workflows.md): members held back, and the outbox of their outcomes.
    "blocked",  # ZSET id -> enqueued at (ms): waits for its workflow step or dependencies
    "wfout",  # HASH id -> JSON outcome of a workflow member, until its barriers counted it
    # Operability (docs/metrics.md): monotonic counters and histograms, per task name.
    "metrics",  # HASH "<kind>|<task>[|<outcome>][|<bucket>]" -> count (metrics.py reads it)
)


def validate_queue_name(name: str) -> str:
    """Return ``name`` if it can be used as a queue name, else raise ValueError."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"queue name must be a non-empty string, not {name!r}")
    if any(c in name for c in "{}:") or any(c.isspace() for c in name):
        raise ValueError(f"queue name {name!r} must not contain braces, colons or spaces")
    return name


@dataclass(frozen=True)
class QueueKeys:
    """Names of one queue's keys."""

    prefix: str
    queue: str

    def _key(self, suffix: str) -> str:
        return f"{self.prefix}:{{{self.queue}}}:{suffix}"

    @cached_property
    def all(self) -> tuple[str, ...]:
        """All per-queue keys, in QUEUE_KEY_NAMES order (the scripts' KEYS)."""
        return tuple(self._key(name) for name in QUEUE_KEY_NAMES)

    def __getattr__(self, name: str) -> str:
        if name in QUEUE_KEY_NAMES:
            return self._key(name)
        raise AttributeError(name)

    def stats(self, kind: str, day: str) -> str:
        """Daily counter ``kind`` ('processed' or 'failed') for ``day`` (YYYY-MM-DD, UTC)."""
        return self._key(f"stats:{kind}:{day}")

    @property
    def listed(self) -> str:
        """STRING set once the queue is in the global queue set: enqueue.lua reports its
        absence (a FLUSHALL, a restart without persistence), and the caller lists it again."""
        return self._key("listed")

    @property
    def metrics_base(self) -> str:
        """HASH: the metrics hash's values at its last roll (metrics_roll.lua)."""
        return self._key("metrics:base")

    def metrics_slot(self, position: int) -> str:
        """HASH: what the metrics gained in one 5-minute slot, ring position 0-287 (a day);
        field '@' = the slot's number, as a slot is reused the next day."""
        return self._key(f"metrics:w:{position}")

    @property
    def metrics_minutes(self) -> str:
        """HASH minute % 1440 -> "minute processed failed": the 24-hour per-minute chart."""
        return self._key("metrics:min")

    def waker(self, worker_id: str) -> str:
        """LIST a worker process also blocks on while it waits for work: a token there ends
        its wait at once (it is stopping). Short-lived (PEXPIRE)."""
        return self._key(f"waker:{worker_id}")

    @property
    def claims(self) -> str:
        """HASH worker id -> JSON [claim_seq, id, attempt...] of its last claim, until its
        next call shows the reply arrived (claim.lua undoes a claim whose reply was lost)."""
        return self._key("claims")

    @property
    def swept(self) -> str:
        """STRING set by every lease sweep, living half a lease: when it is missing, nobody
        swept for that long (Redis stalled or was out of reach), and recovery waits one
        lease for live workers to renew (recover.lua). Value: that grace's end, in ms."""
        return self._key("swept")

    @property
    def bulk(self) -> str:
        """HASH bulk job id -> JSON of a "run all" / "delete all" job over one of this
        queue's states: the queued and running ones, and the last finished ones (bounded
        by bulk_queue.lua)."""
        return self._key("bulk")

    @property
    def cron(self) -> str:
        """HASH periodic entry name -> JSON state (last tick mark, spec id, enabled, task);
        never expires: the mark is what makes each tick fire once."""
        return self._key("cron")

    def cron_history(self, name: str) -> str:
        """LIST of the entry's last 100 tick outcomes, newest first."""
        return self._key(f"cron-history:{name}")

    def cron_request(self, task_id: str) -> str:
        """STRING set for a day by a "run now" request: a resent request finds it, even
        once the task it made has finished and been forgotten."""
        return self._key(f"cron-request:{task_id}")


def validate_workflow_id(value: str) -> str:
    """Return ``value`` if it can name a workflow (its keys' hash tag), else ValueError."""
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not all(
            c.isascii() and (c.isalnum() or c in "_-") for c in value):
        raise ValueError(f"a workflow id is 1-64 letters, digits, '_' or '-', not {value!r:.80}")
    return value


@dataclass(frozen=True)
class WorkflowKeys:
    """The keys of one workflow: all in its own hash-tag slot, ``{wf:<id>}``, which no
    queue's can be (queue names have no colon)."""

    prefix: str
    workflow_id: str

    @property
    def barrier(self) -> str:
        """HASH of the workflow: its shape, each member's final state, the results a later
        step needs, counts (wf_barrier.lua)."""
        return f"{self.prefix}:{{wf:{self.workflow_id}}}:wf"


@dataclass(frozen=True)
class GlobalKeys:
    """Keys that belong to no queue; only plain commands touch them (never scripts)."""

    prefix: str

    @property
    def queues(self) -> str:
        return f"{self.prefix}:queues"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    @property
    def workflows(self) -> str:
        """ZSET workflow id -> created at (ms): the list the admin and the CLI read."""
        return f"{self.prefix}:workflows"

    @property
    def wake_channel(self) -> str:
        """Pub/sub channel on which pollers learn of a new earliest due time."""
        return f"{self.prefix}:wake"
