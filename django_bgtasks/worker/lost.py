"""The task_dead signal for tasks dead-lettered outside any task thread: their lease
expired (recoverer) or their worker process died (supervisor) on their last attempt; and
task_expired, for tasks a claim or the poller ended 'expired' instead of running them;
and task_cancelled for those a recovery ended cancelled (their cancel was requested).

Without it a receiver counting dead tasks would miss exactly the tasks that died with
their worker. The sweep that dead-lettered them reports their ids; their TaskInfo is read
back from Redis, where the recovery just wrote the WorkerLost error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from .. import registry, signals
from ..broker.redis import RedisBroker
from ..exceptions import BgTasksError, WorkerLost
from ..info import TaskInfo
from .execution import _send_robustly

if TYPE_CHECKING:
    from ..task import BackgroundTask

logger = logging.getLogger("django_bgtasks.worker")


def _sender(name: str) -> BackgroundTask | None:
    """The task the signal names as sender, as the worker would resolve it; None when
    this process does not know it (a resolver may refuse a name by raising)."""
    try:
        return registry.resolve(name)
    except Exception:  # noqa: BLE001  (an unknown task still gets its signal)
        return None


def announce_dead(broker: RedisBroker, queue: str, task_ids: Sequence[str]) -> None:
    """Send task_dead for each task of ``queue`` a recovery just moved to the dead queue.
    Best effort: if Redis cannot be read now, the tasks are dead all the same."""
    for info in _read_ended(broker, queue, task_ids, "dead"):
        _send_robustly(signals.task_dead, sender=_sender(info.name), task_info=info,
                       exception=WorkerLost(info.last_error))


def announce_expired(broker: RedisBroker, queue: str, task_ids: Sequence[str]) -> None:
    """Log, and send task_expired for, tasks of ``queue`` that a claim or the poller ended
    'expired' (never run). The record is read only when a receiver listens."""
    if not task_ids:
        return
    logger.info("%d task(s) of queue %s expired before they started: %s", len(task_ids),
                queue, ", ".join(task_ids[:10]))
    if not signals.task_expired.has_listeners():
        return
    for info in _read_ended(broker, queue, task_ids, "expired"):
        _send_robustly(signals.task_expired, sender=_sender(info.name), task_info=info)


def _read_ended(broker: RedisBroker, queue: str, task_ids: Sequence[str], state: str,
                ) -> Iterator[TaskInfo]:
    """The infos of tasks of ``queue`` that just ended ``state``, read back from Redis;
    one that cannot be read (Redis out of reach, trimmed or deleted since) is skipped."""
    for task_id in task_ids:
        try:
            record = broker.read_task(task_id, [queue])
        except BgTasksError as exc:
            logger.warning("could not read %s task %s of queue %s to send task_%s: %s",
                           state, task_id, queue, state, exc)
            continue
        if record is not None:
            yield TaskInfo.from_record(record)


def announce_cancelled(broker: RedisBroker, queue: str, task_ids: Sequence[str]) -> None:
    """Send task_cancelled for each task of ``queue`` a recovery just ended cancelled (its
    cancel was requested when its worker died)."""
    for info in _read_ended(broker, queue, task_ids, "cancelled"):
        _send_robustly(signals.task_cancelled, sender=_sender(info.name), task_info=info)
