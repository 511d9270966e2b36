"""chain, group and chord: workflows of task calls, enqueued whole (docs/workflows.md).

A workflow is a sequence of steps, each a call or a group of calls, and optionally an
``on_complete`` call. Every member is written at enqueue, with an id derived from the
workflow's (``<workflow id>.<index>``): the first step pending, the others 'blocked' until
the barrier releases them with the previous step's results as their first argument.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from django.db import DEFAULT_DB_ALIAS, transaction

from ..broker import get_broker_for_enqueue
from ..broker.types import EnqueueRequest
from ..broker.workflows import WorkflowStore
from ..conf import get_settings
from ..exceptions import BgTasksError, EnqueueError
from ..hooks import around_enqueue, configured_hooks
from ..message import TaskMessage
from ..testing.capture import active_capture
from .calls import TaskCall

if TYPE_CHECKING:
    from .info import WorkflowInfo

Step = Union[TaskCall, "Group"]
SHAPE_STEPS_SHOWN = 8


class Group:
    """Calls that run in parallel; as a step of a chain, the next step gets the list of
    their results, in the group's order."""

    def __init__(self, calls: Iterable[TaskCall], on_complete: TaskCall | None = None) -> None:
        self.calls: tuple[TaskCall, ...] = tuple(calls)
        for position, call in enumerate(self.calls):
            if not isinstance(call, TaskCall):
                raise TypeError(f"group() takes task calls (task.s(...)); item {position} is "
                                f"{type(call).__name__}: a group of chains or groups is not "
                                f"supported (see docs/workflows.md)")
        if not self.calls:
            raise ValueError("group() needs at least one task call")
        self.finally_call: TaskCall | None = on_complete

    def on_complete(self, call: TaskCall) -> Group:
        """Run ``call`` once every member has ended, whatever the outcome, with
        ``{"succeeded": [ids], "failed": [{"id", "state", "error"}]}``."""
        return Group(self.calls, _call(call, "on_complete()"))

    def enqueue(self) -> WorkflowInfo:
        """Write every member (and the on_complete call); returns the WorkflowInfo."""
        return Chain([Group(self.calls)], self.finally_call).enqueue()

    def __len__(self) -> int:
        return len(self.calls)


class Chain:
    """Steps that run one after the other, each given the previous one's result."""

    def __init__(self, steps: Sequence[Step | Chain], on_complete: TaskCall | None = None,
                 ) -> None:
        flat: list[Step] = []
        for position, step in enumerate(steps):
            if isinstance(step, Chain):
                if step.finally_call is not None:
                    raise ValueError("a chain inside a chain cannot have on_complete(): put "
                                     "it on the outer workflow")
                flat.extend(step.steps)
            elif isinstance(step, Group):
                if step.finally_call is not None:
                    raise ValueError("a group inside a chain cannot have on_complete(): put "
                                     "it on the outer workflow")
                flat.append(step)
            else:
                flat.append(_call(step, f"chain() item {position}"))
        if not flat:
            raise ValueError("chain() needs at least one task call")
        self.steps: tuple[Step, ...] = tuple(flat)
        self.finally_call: TaskCall | None = on_complete

    def on_complete(self, call: TaskCall) -> Chain:
        """Run ``call`` once every member has ended, whatever the outcome (see Group)."""
        return Chain(self.steps, _call(call, "on_complete()"))

    def enqueue(self) -> WorkflowInfo:
        """Write every member of the workflow; returns its WorkflowInfo."""
        return enqueue_plan(Plan.of(self.steps, self.finally_call))


def group(*calls: TaskCall | Iterable[TaskCall]) -> Group:
    """``group(a.s(1), a.s(2))`` or ``group(a.s(i) for i in ids)``."""
    if len(calls) == 1 and not isinstance(calls[0], TaskCall):
        return Group(calls[0])
    return Group(calls)  # type: ignore[arg-type]


def chain(*steps: Step | Chain) -> Chain:
    """``chain(fetch.s(url), parse.s(), store.s())``: each step gets the previous one's
    result as its first argument; a group as a step gets (and gives) a list."""
    return Chain(steps)


def chord(header: Group | Iterable[TaskCall], callback: TaskCall) -> Chain:
    """``chord(group(...), summarize.s())``: ``summarize(results)`` once every member of
    the group succeeded, results in the group's order; never if one failed."""
    if not isinstance(header, Group):
        header = Group(header)
    if header.finally_call is not None:
        raise ValueError("a chord's group cannot have on_complete(): put it on the chord")
    return Chain([header, _call(callback, "chord() callback")])


def _call(value: Any, where: str) -> TaskCall:
    if not isinstance(value, TaskCall):
        raise TypeError(f"{where} must be a task call (task.s(...)), not "
                        f"{type(value).__name__}")
    return value


@dataclass(frozen=True)
class Plan:
    """The members of a workflow in index order, and its steps."""

    calls: tuple[TaskCall, ...]
    steps: tuple[tuple[int, int, bool], ...]  # (first index, count, is a group)
    fin: int  # the on_complete member's index, or -1

    @classmethod
    def of(cls, steps: Sequence[Step], finally_call: TaskCall | None) -> Plan:
        calls: list[TaskCall] = []
        spans = []
        for step in steps:
            members = step.calls if isinstance(step, Group) else (step,)
            spans.append((len(calls), len(members), isinstance(step, Group)))
            calls.extend(members)
        fin = -1
        if finally_call is not None:
            fin = len(calls)
            calls.append(finally_call)
        plan = cls(tuple(calls), tuple(spans), fin)
        plan.check(get_settings().WORKFLOW_MAX_RESULTS)
        return plan

    def check(self, most: int) -> None:
        for call in self.calls:
            task = call.task
            if task.task_id is not None or task.unique_for is not None:
                raise ValueError(f"{task.name}: a workflow member cannot have task_id or "
                                 f"unique_for (its id is the workflow's: <id>.<index>)")
            if getattr(task, "depends_on", ()):
                raise ValueError(f"{task.name}: a workflow member cannot have depends_on "
                                 f"(the workflow orders its members)")
        for _, count, _ in self.steps[:-1]:
            if count > most:
                raise ValueError(
                    f"a group of {count:,} calls hands its results to the next step, over "
                    f"BGTASKS['WORKFLOW_MAX_RESULTS'] = {most:,}; nothing was enqueued. Split "
                    f"it, or have the members store their results and the next step read "
                    f"them.")
        main = self.fin if self.fin >= 0 else len(self.calls)
        if self.fin >= 0 and main > most:
            raise ValueError(
                f"on_complete() gets the ids of all {main:,} members, over "
                f"BGTASKS['WORKFLOW_MAX_RESULTS'] = {most:,}; nothing was enqueued. Use "
                f"get_workflow() from a task of your own instead.")

    @property
    def shape(self) -> str:
        parts = []
        for first, count, is_group in self.steps:
            if is_group:
                names = sorted({c.label for c in self.calls[first:first + count]})
                parts.append(f"group({count} x {'/'.join(names)})")
            else:
                parts.append(self.calls[first].label)
        if len(parts) > SHAPE_STEPS_SHOWN:  # a long chain: its ends say enough
            parts = [*parts[:3], f"... {len(parts) - 5:,} more", *parts[-2:]]
        text = parts[0] if len(parts) == 1 else f"chain({', '.join(parts)})"
        if len(parts) == 2 and self.steps[0][2] and not self.steps[1][2]:
            text = f"chord({parts[0]}, {parts[1]})"
        if self.fin >= 0:
            text += f".on_complete({self.calls[self.fin].label})"
        return text


def _step_queues(plan: Plan) -> dict[str, str | list[str]]:
    """Each step's members' queue: one name, or one per member when they differ."""
    out: dict[str, str | list[str]] = {}
    spans = [(str(n), first, count) for n, (first, count, _) in enumerate(plan.steps)]
    if plan.fin >= 0:
        spans.append(("fin", plan.fin, 1))
    for name, first, count in spans:
        queues = [c.task.queue_name for c in plan.calls[first:first + count]]
        out[name] = queues[0] if len(set(queues)) == 1 else queues
    return out


def member_message(call: TaskCall, workflow_id: str, index: int) -> TaskMessage:
    return call.task._message(list(call.args), dict(call.kwargs), f"{workflow_id}.{index}",
                              workflow_id)


def enqueue_plan(plan: Plan, workflow_id: str | None = None) -> WorkflowInfo:
    workflow_id = workflow_id or uuid.uuid4().hex
    messages = [member_message(call, workflow_id, i) for i, call in enumerate(plan.calls)]
    hooks = configured_hooks()
    if hooks:  # each member's write is wrapped, as an enqueue()'s is
        with around_enqueue(hooks, messages) as messages:
            return _enqueue_members(plan, workflow_id, messages)
    return _enqueue_members(plan, workflow_id, messages)


def _enqueue_members(plan: Plan, workflow_id: str, messages: list[TaskMessage],
                     ) -> WorkflowInfo:
    from .info import WorkflowInfo  # info reads the barrier through this module's store

    cfg = get_settings()
    capture = active_capture(cfg)
    if capture is not None or cfg.EAGER:  # refused as Redis would refuse them
        for call, msg in zip(plan.calls, messages, strict=True):
            call.task._check_sizes([msg.encode()], cfg.MAX_MESSAGE_BYTES)
    if capture is not None:  # the first step is what would run now; the rest waits on it
        first, count, _ = plan.steps[0]
        for call, msg in zip(plan.calls[first:first + count], messages[first:first + count],
                             strict=True):
            capture.record(call.task, [msg], call.task._waits_for_commit())
        return WorkflowInfo.planned(workflow_id, plan)
    if cfg.EAGER:
        from .eager import run_eagerly
        return run_eagerly(plan, workflow_id, messages)
    requests = []
    first_step = plan.steps[0][1]  # the members before this index run now; the rest wait
    for index, (call, msg) in enumerate(zip(plan.calls, messages, strict=True)):
        # What dumps([[workflow_id, index]]) gives (a hex id, an int), without an encoder
        # call for each of a group's 100,000 members (enqueue_many's speed is the aim).
        req = call.task._request(msg, f'[["{workflow_id}",{index}]]', index >= first_step)
        call.task._check_sizes([req.message], cfg.MAX_MESSAGE_BYTES)
        requests.append(req)
    if (cfg.ENQUEUE_ON_COMMIT
            and transaction.get_connection(DEFAULT_DB_ALIAS).in_atomic_block):
        transaction.on_commit(lambda: _write(plan, workflow_id, requests))
    else:
        _write(plan, workflow_id, requests)
    return WorkflowInfo.planned(workflow_id, plan)


def _write(plan: Plan, workflow_id: str, requests: list[EnqueueRequest]) -> None:
    """The barrier first, then the blocked members, then the first step: whatever the
    first step does, everything it can report to or release exists already."""
    meta: dict[str, Any] = {"n": len(plan.calls), "steps": [list(s) for s in plan.steps],
                            "fin": plan.fin, "shape": plan.shape}
    try:
        broker = get_broker_for_enqueue()
        store = WorkflowStore(broker)
        store.create(workflow_id, meta, _step_queues(plan))
        blocked = [r for r in requests if r.blocked]
        if blocked:
            _check(broker.enqueue_many(blocked), blocked)
        first = [r for r in requests if not r.blocked]
        _check(broker.enqueue_many(first), first)
    except BgTasksError as exc:
        raise EnqueueError(f"could not enqueue workflow {workflow_id} ({plan.shape}): "
                           f"{exc}") from exc


def _check(outcomes: Sequence[Any], requests: Sequence[EnqueueRequest]) -> None:
    for outcome, req in zip(outcomes, requests, strict=True):
        if outcome.status != "ok":
            raise EnqueueError(f"workflow member {req.id} was refused by queue {req.queue}: "
                               f"{outcome.status} {outcome.holder_id}")
