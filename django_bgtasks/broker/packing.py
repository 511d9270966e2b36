"""Turning requests into script arguments and replies into results, and the small
helpers of the broker's hand-packed commands."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from .types import EnqueueOutcome, EnqueueRequest, TaskRecord

ENQUEUE_BATCH = 1000  # tasks per enqueue call: bounded work inside Redis (~10 ms)
ENQUEUE_FIELDS = 13  # script arguments per task (enqueue.lua)
# The per-queue hashes a task's record is read from, in TaskRecord's order.
TASK_HASHES = ("msg", "info", "errors", "result")


def enqueue_fields(req: EnqueueRequest) -> list[Any]:
    return [req.id, req.message, req.priority,
            "" if req.run_at_ms is None else req.run_at_ms,
            "" if req.delay_ms is None else req.delay_ms,
            req.unique_key or "", req.unique_ttl_ms or 0, req.max_retries, req.limits,
            req.fair_key, req.expires, req.workflow, "1" if req.blocked else ""]


def queue_batches(reqs: Sequence[EnqueueRequest]) -> Iterator[tuple[str, list[int]]]:
    """``reqs`` split per queue and batch of ENQUEUE_BATCH: (queue, indexes into ``reqs``)."""
    by_queue: dict[str, list[int]] = {}
    for index, req in enumerate(reqs):
        by_queue.setdefault(req.queue, []).append(index)
    for queue, indexes in by_queue.items():
        for start in range(0, len(indexes), ENQUEUE_BATCH):
            yield queue, indexes[start:start + ENQUEUE_BATCH]


def enqueue_batches(reqs: Sequence[EnqueueRequest], wake_channel: str,
                    ) -> Iterator[tuple[str, list[int], list[Any]]]:
    """The enqueue script calls for ``reqs``: (queue, indexes into ``reqs``, arguments),
    one per queue and batch of ENQUEUE_BATCH."""
    for queue, chunk in queue_batches(reqs):
        args: list[Any] = [wake_channel]
        for index in chunk:
            args += enqueue_fields(reqs[index])
        yield queue, chunk, args


def split_unlisted(reply: list) -> tuple[bool, list]:
    """(whether enqueue.lua found the queue unlisted, the per-task reply)."""
    if reply and as_text(reply[0]) == "unlisted":
        return True, reply[1:]
    return False, reply


def task_record(task_id: str, queues: Sequence[str], replies: Sequence[Any],
                ) -> TaskRecord | None:
    """The record of ``task_id`` from HGETs of TASK_HASHES in each of ``queues``."""
    width = len(TASK_HASHES)
    for index, queue in enumerate(queues):
        msg, info, errors, result = replies[index * width:(index + 1) * width]
        if msg is not None or info is not None:
            return TaskRecord(queue, task_id, msg, info, errors, result)
    return None


def enqueue_outcomes(reply: list) -> list[EnqueueOutcome]:
    outcomes = []
    for i in range(0, len(reply), 4):
        status, value, due, enqueued = (as_text(part) for part in reply[i:i + 4])
        if status == "ok":
            outcomes.append(EnqueueOutcome("ok", value, "", int(float(due)) if due else None,
                                           int(float(enqueued)) if enqueued else None))
        else:
            outcomes.append(EnqueueOutcome(status, "", value, None))
    return outcomes


CACHE_LIMIT = 256  # queues whose keys a process keeps: names can come from a URL


def remember(cache: dict, key: Any, value: Any) -> Any:
    """``cache[key] = value``, emptying the cache first when it is full: any queue name an
    admin URL carries reaches these caches, and a process must not grow with them."""
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def socket_timeout(client: Any) -> float | None:
    """The socket timeout ``client`` was made with (plain, Sentinel or cluster), if any."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if kwargs is None:
        kwargs = getattr(getattr(client, "nodes_manager", None), "connection_kwargs", None)
    value = (kwargs or {}).get("socket_timeout")
    return float(value) if value else None


def encode_arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


def whole_number(value: Any) -> int:
    """A count from stored JSON; anything else (damage) reads as 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return 0
    return max(0, int(value)) if abs(value) < 2**53 else 0


def json_object(raw: bytes | str) -> dict[str, Any]:
    """A stored JSON object; anything else (damage from outside) reads as empty."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def as_text(value: bytes | str) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
