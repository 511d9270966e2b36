"""WorkflowInfo, get_workflow, cancel_workflow: a workflow read fresh from Redis."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..broker import get_broker
from ..broker.keys import FINAL_STATES, STATES, validate_workflow_id
from ..broker.packing import as_text
from ..broker.workflows import WorkflowStore, keep_ms
from ..exceptions import TaskNotFound
from ..info import ms_to_datetime

if TYPE_CHECKING:
    from .canvas import Plan

MEMBER_STATES_READ_MAX = 10_000  # members whose live state get_workflow reads one by one
READ_CHUNK = 1000


class WorkflowNotFound(TaskNotFound):
    """No workflow with that id (never enqueued, or kept past BGTASKS['WORKFLOW_KEEP'])."""


@dataclass(frozen=True)
class Member:
    """One member as the workflow lists it."""

    index: int
    id: str
    queue: str
    step: int | str  # its step's number, or 'fin' (on_complete)
    role: str  # 'member', 'callback' (a chord's), 'on_complete' or 'dependency'
    state: str  # its live state ('unknown': not in Redis any more)


@dataclass(frozen=True)
class WorkflowInfo:
    """A workflow: its shape, size, state and members' counts by state.

    ``state``: running, succeeded (its last step succeeded), failed (a member ended dead,
    cancelled, expired or deleted: ``reason`` says which), cancelled (cancel_workflow)."""

    id: str
    shape: str
    size: int
    state: str
    reason: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    created_at: datetime | None = None
    finished_at: datetime | None = None  # every member ended
    steps: tuple[tuple[int, int, bool], ...] = ()
    on_complete: int = -1  # the on_complete member's index, or -1
    callback_id: str = ""  # a chord's callback, else the last step's single call
    kind: str = "workflow"  # or 'dependencies' (a task's depends_on)
    ids: tuple[str, ...] = ()  # explicit member ids (dependencies); else <id>.<index>

    @property
    def ended(self) -> int:
        """How many members have ended (completed, dead, cancelled, expired)."""
        return sum(n for s, n in self.counts.items() if s in FINAL_STATES)

    @property
    def progress(self) -> float:
        """The share of members that ended, 0..1."""
        return self.ended / self.size if self.size else 1.0

    def member_id(self, index: int) -> str:
        """The task id of member ``index``."""
        return self.ids[index] if self.ids else f"{self.id}.{index}"

    @classmethod
    def planned(cls, workflow_id: str, plan: Plan) -> WorkflowInfo:
        """What enqueue wrote (or will write on commit)."""
        first = plan.steps[0][1]
        counts = {"pending": first, "blocked": len(plan.calls) - first}
        return cls(workflow_id, plan.shape, len(plan.calls), "running", counts=counts,
                   steps=plan.steps, on_complete=plan.fin,
                   callback_id=_callback(workflow_id, plan.steps))


def _callback(workflow_id: str, steps: tuple[tuple[int, int, bool], ...]) -> str:
    first, count, is_group = steps[-1]
    return f"{workflow_id}.{first}" if len(steps) > 1 and count == 1 and not is_group else ""


def get_workflow(workflow_id: str) -> WorkflowInfo:
    """The workflow, fresh from Redis; WorkflowNotFound when there is none."""
    store = WorkflowStore(get_broker())
    return read_workflow(store, workflow_id)


def read_workflow(store: WorkflowStore, workflow_id: str, live: bool = True) -> WorkflowInfo:
    validate_workflow_id(workflow_id)
    fields = ["meta", "state", "reason", "created", "finished",
              *(f"c:{s}" for s in sorted(FINAL_STATES))]
    raw = dict(zip(fields, store.read(workflow_id, fields), strict=True))
    if raw["meta"] is None:
        raise WorkflowNotFound(f"no workflow with id {workflow_id!r} (never enqueued, or "
                               f"kept past BGTASKS['WORKFLOW_KEEP'])")
    meta = json.loads(raw["meta"])
    steps = tuple((int(s[0]), int(s[1]), bool(s[2])) for s in meta["steps"])
    size = int(meta["n"])
    ids = tuple(meta.get("ids") or ())
    info = WorkflowInfo(
        id=workflow_id, shape=str(meta.get("shape", "")), size=size,
        state=as_text(raw["state"] or b"unknown"), reason=as_text(raw["reason"] or b""),
        created_at=ms_to_datetime(int(raw["created"] or 0)),
        finished_at=ms_to_datetime(int(raw["finished"] or 0)),
        steps=steps, on_complete=int(meta.get("fin", -1)),
        callback_id="" if ids else _callback(workflow_id, steps),
        kind="dependencies" if ids else "workflow", ids=ids)
    final = {s: int(raw[f"c:{s}"] or 0) for s in FINAL_STATES}
    if live and size <= MEMBER_STATES_READ_MAX:
        return _with_counts(info, dict(Counter(m.state for m in members(store, info, 0, size))))
    counts = {s: n for s, n in final.items() if n}
    counts["unfinished"] = size - sum(final.values())
    return _with_counts(info, counts)


def _with_counts(info: WorkflowInfo, counts: dict[str, int]) -> WorkflowInfo:
    ordered = {s: counts[s] for s in (*STATES, "unknown", "unfinished") if counts.get(s)}
    return WorkflowInfo(**{**info.__dict__, "counts": ordered})


def members(store: WorkflowStore, info: WorkflowInfo, start: int, stop: int) -> list[Member]:
    """Members ``start``..``stop - 1`` with their live states."""
    spans: list[tuple[int | str, int, int]] = [
        (n, first, count) for n, (first, count, _) in enumerate(info.steps)]
    if info.on_complete >= 0:
        spans.append(("fin", info.on_complete, 1))
    queues = _step_queues(store, info.id, [str(s[0]) for s in spans])
    rows: list[tuple[int, str, str, int | str, str]] = []
    last = len(info.steps) - 1
    for step, first, count in spans:
        where = queues.get(str(step))
        for index in range(max(first, start), min(first + count, stop)):
            queue = where[index - first] if isinstance(where, list) else (where or "default")
            if step == "fin":
                role = "on_complete"
            elif info.kind == "dependencies":
                role = "dependency" if step == 0 else "member"
            else:
                role = "callback" if info.callback_id and step == last else "member"
            rows.append((index, info.member_id(index), queue, step, role))
    states = _live_states(store, [(r[2], r[1]) for r in rows])
    # a member kept by no one (completed without result_ttl): the barrier's count says
    gone = [r[0] for r in rows if states.get((r[2], r[1]), "unknown") == "unknown"]
    counted = dict(zip(gone, store.read(info.id, [f"d:{i}" for i in gone]), strict=True))
    return [Member(*r, state=_counted_or(counted.get(r[0]), states.get((r[2], r[1]), "unknown")))
            for r in sorted(rows, key=lambda r: r[0])]


def _counted_or(counted: bytes | None, live: str) -> str:
    return as_text(counted) if counted else live


def _step_queues(store: WorkflowStore, workflow_id: str, steps: list[str],
                 ) -> dict[str, Any]:
    values = store.read(workflow_id, [f"q:{s}" for s in steps])
    return {s: json.loads(v) for s, v in zip(steps, values, strict=True) if v is not None}


def _live_states(store: WorkflowStore, pairs: list[tuple[str, str]],
                 ) -> dict[tuple[str, str], str]:
    by_queue: dict[str, list[str]] = {}
    for queue, task_id in pairs:
        by_queue.setdefault(queue, []).append(task_id)
    found: dict[tuple[str, str], str] = {}
    for queue, ids in by_queue.items():
        for start in range(0, len(ids), READ_CHUNK):
            chunk = ids[start:start + READ_CHUNK]
            for task_id, raw in zip(chunk, store.member_records(queue, chunk), strict=True):
                state = "unknown"
                if raw is not None:
                    try:
                        value = json.loads(raw).get("state")
                    except (ValueError, AttributeError):
                        value = None
                    state = value if value in STATES else "unknown"
                found[(queue, task_id)] = state
    return found


def cancel_workflow(workflow_id: str, by: str | None = None) -> WorkflowInfo:
    """Cancel a workflow: members not started are cancelled (never run), running ones are
    asked to stop, the barrier marks it cancelled. Returns its fresh WorkflowInfo."""
    validate_workflow_id(workflow_id)
    store = WorkflowStore(get_broker())
    read_workflow(store, workflow_id, live=False)  # WorkflowNotFound
    store.carry_out(workflow_id, store.cancel(workflow_id, by or ""), keep_ms())
    return read_workflow(store, workflow_id)
