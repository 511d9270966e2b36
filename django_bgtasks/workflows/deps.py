"""``task.using(depends_on=[id, ...]).enqueue(...)``: a task that starts only once every
task it depends on has succeeded, and ends cancelled, with the reason, as soon as one of
them ends otherwise (dead, cancelled, expired, deleted): it never waits forever.

It is a small workflow of its own (a gate): the dependencies report their end to its
barrier, as members do, from the moment wf_watch.lua marks them; one that has ended
already is reported here, at enqueue.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import TYPE_CHECKING

from ..broker import get_broker_for_enqueue
from ..broker.workflows import WorkflowStore, keep_ms
from ..conf import get_settings
from ..exceptions import BgTasksError, EnqueueError, TaskNotFound
from ..info import TaskInfo
from ..message import TaskMessage, dumps

if TYPE_CHECKING:
    from ..task import BackgroundTask

MAX_DEPENDENCIES = 1000


def check_depends_on(value: object) -> tuple[str, ...]:
    """``depends_on`` as a tuple of task ids; ValueError naming what is wrong."""
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise ValueError(f"depends_on must be a list of task ids, not {value!r:.80}")
    ids = tuple(dict.fromkeys(value))
    for item in ids:
        if not isinstance(item, str) or not item:
            raise ValueError(f"depends_on holds {item!r:.80}, which is not a task id")
    if len(ids) > MAX_DEPENDENCIES:
        raise ValueError(f"depends_on holds {len(ids):,} tasks; at most {MAX_DEPENDENCIES:,}")
    return ids


def enqueue_dependent(task: BackgroundTask, msg: TaskMessage) -> TaskInfo:
    """Write ``msg`` blocked behind ``task.depends_on``; its TaskInfo (fresh: 'pending'
    when every dependency had succeeded already, 'cancelled' when one had failed)."""
    from ..task import _task_info

    deps = task.depends_on
    try:
        broker = get_broker_for_enqueue()
        queues = []
        for dep in deps:
            record = broker.read_task(dep)
            if record is None:
                raise TaskNotFound(
                    f"{task.name}: depends_on names task {dep!r}, which Redis does not know "
                    f"(never enqueued, or it finished and was not kept: give the tasks "
                    f"others depend on a result_ttl); nothing was enqueued")
            queues.append(record.queue)
        gate = uuid.uuid4().hex
        store = WorkflowStore(broker)
        count = len(deps)
        meta = {"n": count + 1, "steps": [[0, count, 1], [count, 1, 0]], "fin": -1,
                "ids": [*deps, msg.id], "noinput": True,
                "shape": f"{msg.name.rsplit('.', 1)[-1]} after {count} "
                         f"task{'s' if count != 1 else ''}"}
        same = len(set(queues)) == 1
        store.create(gate, meta, {"0": queues[0] if same else queues, "1": msg.queue})
        msg = dataclasses.replace(msg, workflow=gate)
        req = task._request(msg, dumps([[gate, count]]), blocked=True)
        task._check_sizes([req.message], get_settings().MAX_MESSAGE_BYTES)
        task._written([msg], [req], [broker.enqueue(req)])
        _watch(store, gate, deps, queues)
        record = broker.read_task(msg.id, [msg.queue])
        if record is None:
            # Released here (every dependency had succeeded), then run by a worker and
            # dropped (no result_ttl) before this read: it was enqueued all the same.
            return TaskInfo.from_message(msg, "pending")
        return _task_info(msg.id, record)
    except BgTasksError as exc:
        if isinstance(exc, TaskNotFound):
            raise
        raise EnqueueError(f"could not enqueue {task.name} (id {msg.id}) after its "
                           f"dependencies: {exc}") from exc


def _watch(store: WorkflowStore, gate: str, deps: tuple[str, ...], queues: list[str],
           ) -> None:
    """Mark each dependency; report at once those that ended already."""
    by_queue: dict[str, list[tuple[str, int]]] = {}
    for index, (dep, queue) in enumerate(zip(deps, queues, strict=True)):
        by_queue.setdefault(queue, []).append((dep, index))
    reports = []
    for queue, pairs in by_queue.items():
        for (dep, index), (state, result, error) in zip(
                pairs, store.watch(queue, gate, pairs), strict=True):
            if state == "missing":
                reports.append((index, "deleted", "", f"{dep} is not in Redis any more"))
            elif state == "refused":
                reports.append((index, "refused", "", f"{dep} refused: {error}"))
            elif state != "watched":
                reports.append((index, state, result if state == "completed" else "", error))
    if reports:
        kept = keep_ms()
        store.carry_out(gate, store.report(gate, reports, kept), kept)
