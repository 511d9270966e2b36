"""``runbackground --burst``: what "due now" means, and the tally of what a burst ran.

A burst runs the pending tasks of its queues, plus the scheduled and retry tasks whose
due time has passed (moved to pending first, as the poller would), plus whatever those
tasks enqueue that is due, until a fixed point: a worker process exits once a claim
found nothing in any of its queues, it holds no task, and moving due tasks moved none.
It never waits for a due time in the future.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable
from dataclasses import dataclass

from ..broker.redis import RedisBroker
from .lost import announce_expired

# The exit status of a burst worker process that found its queues drained: the
# supervisor does not replace it (any other exit of a process is handled as usual).
DRAINED_EXIT = 75

# How the outcomes of a burst are counted: a retry or a dead end is a failure; a task put
# back by a shutdown ('requeue') was not attempted to the end, and counts as neither.
FAILED_OUTCOMES = frozenset({"retry", "dead"})


def forward_due_now(broker: RedisBroker, queues: Iterable[str]) -> int:
    """Move every scheduled and retry task already due to pending; returns how many."""
    moved = 0
    for queue in queues:
        while True:
            result = broker.forward_due(queue)
            announce_expired(broker, queue, result.expired)
            moved += len(result.moved) if isinstance(result.moved, list) else result.moved
            if not result.more:
                break
    return moved


@dataclass(frozen=True)
class BurstSummary:
    """What a burst's processes reported: attempts that ended, and how."""

    succeeded: int
    failed: int

    @property
    def ran(self) -> int:
        return self.succeeded + self.failed

    def line(self) -> str:
        """The one line ``runbackground --burst`` prints on stderr at the end."""
        return (f"burst: {self.ran} task attempt(s) ran, {self.succeeded} succeeded, "
                f"{self.failed} failed")


class BurstTally:
    """Per-slot counters shared with the forked worker processes (one writer per slot:
    the slot's current process, whose exchanges with Redis take turns under one lock;
    the supervisor only reads)."""

    def __init__(self, slots: int) -> None:
        self._succeeded = multiprocessing.RawArray("q", slots)
        self._failed = multiprocessing.RawArray("q", slots)

    def count(self, slot: int, outcomes: Iterable[str]) -> None:
        """Count the outcomes a process just wrote to Redis."""
        for outcome in outcomes:
            if outcome == "done":
                self._succeeded[slot] += 1
            elif outcome in FAILED_OUTCOMES:
                self._failed[slot] += 1

    def summary(self) -> BurstSummary:
        return BurstSummary(sum(self._succeeded), sum(self._failed))
