"""Waiting for a task's end (get_result(wait=...)): what both brokers share of it.

watch.lua checks the task and registers its waiter in one step; the end of the task
(announce_final in _common.lua) adds an entry to its queue's K_FINISHED stream, which the
waiter reads with XREAD BLOCK from the stream id watch.lua returned. Each read blocks for
a slice shorter than the client's socket timeout, as every blocking wait of the broker
does. Entries of other tasks are skipped. When the time is up, unwatch.lua takes the
registration back and reports an end the last read may have missed.

The steps are written once, as a generator of Redis calls (``waiting_steps``), that the
sync broker runs with blocking calls and the async broker with awaited ones.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from ..exceptions import BgTasksError
from .keys import FINAL_STATES
from .packing import as_text
from .types import Awaited, TaskRecord

READ_COUNT = 100  # stream entries one read takes at most
DELETED = "deleted"  # the end a deletion announces (delete_ids in _common.lua)


@dataclass(frozen=True)
class Watch:
    """A registered (or already ended) wait for ``task_id`` of ``queue``."""

    queue: str
    task_id: str
    record: TaskRecord
    waiting: bool  # False: the task had ended
    last_id: str  # the stream id to read after


@dataclass(frozen=True)
class Call:
    """One Redis call of a wait, for the broker to make: ``kind`` 'queues' (the known
    queues), 'script' (args: queue, script name, its arguments), 'xread' (args: queue,
    stream id, block ms) or 'read' (args: task id, queue; the task's record)."""

    kind: str
    args: tuple[Any, ...] = ()


Steps = Generator[Call, Any, Awaited]


def waiting_steps(task_id: str, timeout: float, slice_seconds: float) -> Steps:
    """The calls of a wait of up to ``timeout`` seconds for ``task_id`` to end, each read
    blocking at most ``slice_seconds``; returns what it found."""
    deadline = time.monotonic() + timeout
    watch = None
    for queue in (yield Call("queues")):  # a task lives in one queue: ask each in turn
        watch = parse_watch(queue, task_id, (yield Call("script", (queue, "watch",
                                                                   [task_id]))))
        if watch is not None:
            break
    if watch is None:
        return Awaited(None, None, False)
    if not watch.waiting:
        return Awaited(watch.record, watch.record, True)
    last, end = watch.last_id, None
    try:
        while end is None and (block := block_ms(deadline, slice_seconds)):
            last, end = scan((yield Call("xread", (watch.queue, last, block))), task_id, last)
    except BaseException:  # an error, or a cancelled coroutine: the registration goes
        with suppress(BgTasksError):  # else the task's end clears it
            yield Call("script", (watch.queue, "unwatch", [task_id, last]))
        raise
    if end is None:
        end = unwatched((yield Call("script", (watch.queue, "unwatch", [task_id, last]))))
    if end is None:
        return Awaited(watch.record, None, False)
    state, entry_id = end
    record = yield Call("read", (task_id, watch.queue))
    return Awaited(watch.record, record, True, state, entry_ms(entry_id) if entry_id else None)


def parse_watch(queue: str, task_id: str, reply: list[Any]) -> Watch | None:
    """watch.lua's reply; None when the task is not in ``queue``."""
    status = as_text(reply[0])
    if status == "absent":
        return None
    msg, info, errors, result = reply[2:6]
    return Watch(queue, task_id, TaskRecord(queue, task_id, msg, info, errors, result),
                 status == "waiting", as_text(reply[1]))


def block_ms(deadline: float, slice_seconds: float) -> int:
    """How long the next read blocks (ms): what is left, cut to the slice; 0: no time
    left (XREAD's BLOCK 0 would mean forever)."""
    left = min(deadline - time.monotonic(), slice_seconds)
    return int(left * 1000) if left >= 0.001 else 0


def scan(reply: Any, task_id: str, last_id: str) -> tuple[str, tuple[str, str] | None]:
    """An XREAD reply (RESP2 list or RESP3 dict): the stream id to read after next, and
    ``task_id``'s end (state, entry id) if it is among the entries."""
    streams = reply.items() if isinstance(reply, dict) else (reply or [])
    for _key, entries in streams:
        for entry_id, fields in entries:
            last_id = as_text(entry_id)
            values = {as_text(k): as_text(v) for k, v in fields.items()}
            if values.get("id") == task_id:
                return last_id, (values.get("state", ""), last_id)
    return last_id, None


def entry_ms(entry_id: str) -> int | None:
    """When a stream entry was added: its id's first part, Redis' clock in ms."""
    head = entry_id.partition("-")[0]
    return int(head) if head.isdigit() else None


def unwatched(reply: list[Any]) -> tuple[str, str] | None:
    """unwatch.lua's reply as an end (state, entry id; "" when found in the record), or
    None when the task has not ended."""
    state, entry_id = reply[0], reply[1]
    if entry_id:
        return as_text(state), as_text(entry_id)
    if state is None:  # gone, with no end announced to this waiter: no longer stored
        return DELETED, ""
    return (as_text(state), "") if as_text(state) in FINAL_STATES else None
