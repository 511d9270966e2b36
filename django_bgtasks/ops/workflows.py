"""Workflows as the admin and ``bgtasks workflow`` show them: one workflow's facts, its
members a page at a time, its final members (a chord's callback, on_complete, a
dependency gate's dependent) with their state and result, and the recent workflows.

Every read is bounded: a page of members is read in chunks (workflows.info.members: a
few commands per queue, never one per member), a final member as a task's page reads it
(ops.summary.TaskDetail), and the list reads at most RECENT_MOST barriers, without the
members' live states."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import overload

from ..broker.keys import validate_workflow_id
from ..broker.redis import RedisBroker
from ..broker.workflows import WorkflowStore
from ..workflows.info import (
    Member,
    WorkflowInfo,
    WorkflowNotFound,
    cancel_workflow,
    members,
    read_workflow,
)
from .inspect import Inspector
from .summary import TaskDetail

RECENT_MOST = 100  # workflows a list reads at most (one read of a barrier each)


@dataclass(frozen=True)
class FinalMember:
    """A member whose outcome is the workflow's: what it is, its row, and the task as its
    page reads it (None once it is not stored any more)."""

    label: str  # 'Callback', 'Last link', 'On complete' or 'Dependent task'
    member: Member
    detail: TaskDetail | None


class MemberList:
    """A workflow's members as a lazy sequence for Django's Paginator: count() from the
    workflow's size, each slice read on its own."""

    def __init__(self, workflows: Workflows, info: WorkflowInfo) -> None:
        self._workflows = workflows
        self._info = info

    def count(self) -> int:
        return self._info.size

    def __len__(self) -> int:
        return self._info.size

    @overload
    def __getitem__(self, index: int) -> Member: ...

    @overload
    def __getitem__(self, index: slice) -> list[Member]: ...

    def __getitem__(self, index: slice | int) -> list[Member] | Member:
        if isinstance(index, int):
            found = self[index:index + 1]
            if not found:
                raise IndexError(index)
            return found[0]
        start, stop, _ = index.indices(self._info.size)
        return self._workflows.members(self._info, start, stop)

    def __iter__(self) -> Iterator[Member]:
        return iter(self._workflows.members(self._info, 0, self._info.size))


class Workflows:
    """Read and cancel workflows, over one broker; one instance per request or command."""

    def __init__(self, broker: RedisBroker) -> None:
        self.store = WorkflowStore(broker)
        self.inspector = Inspector(broker)

    def get(self, workflow_id: str) -> WorkflowInfo:
        """The workflow with its members' live counts; WorkflowNotFound for an id that
        names none, a malformed one too."""
        return read_workflow(self.store, _valid(workflow_id))

    def exists(self, workflow_id: str) -> bool:
        """Whether a workflow of that id is kept (one read of its barrier)."""
        try:
            read_workflow(self.store, _valid(workflow_id), live=False)
        except WorkflowNotFound:
            return False
        return True

    def members(self, info: WorkflowInfo, start: int, stop: int) -> list[Member]:
        return members(self.store, info, start, stop)

    def member_list(self, info: WorkflowInfo) -> MemberList:
        return MemberList(self, info)

    def finals(self, info: WorkflowInfo) -> list[FinalMember]:
        """The members whose outcome people look for first, each with its task read."""
        found = []
        for label, index in final_indexes(info):
            [member] = self.members(info, index, index + 1)
            found.append(FinalMember(label, member,
                                     self.inspector.detail(member.id, member.queue)))
        return found

    def recent(self, most: int = RECENT_MOST) -> list[WorkflowInfo]:
        """The newest workflows still kept, newest first: at most ``most`` (<= RECENT_MOST)
        barriers read, their counts the barrier's (ended states, and 'unfinished')."""
        most = max(0, min(most, RECENT_MOST))
        if not most:
            return []
        found = []
        for workflow_id, _ in self.store.listed(0, most - 1):
            try:
                found.append(read_workflow(self.store, workflow_id, live=False))
            except (WorkflowNotFound, ValueError):  # kept past WORKFLOW_KEEP, or damage
                continue
        return found

    def cancel(self, workflow_id: str, by: str) -> tuple[WorkflowInfo, bool]:
        """cancel_workflow() (members not started are cancelled, running ones asked to
        stop; a dependency gate's dependent, not the tasks it waits for), unless it was
        cancelled already or every member has ended: then nothing changes, and its state
        (and a failure's reason) stays. Returns the workflow as it is now, and whether it
        was cancelled; WorkflowNotFound as get() raises it."""
        workflow_id = _valid(workflow_id)
        before = read_workflow(self.store, workflow_id, live=False)
        if not cancellable(before):
            return before, False
        return cancel_workflow(workflow_id, by=by), True


def cancellable(info: WorkflowInfo) -> bool:
    """Whether a cancel would change anything: some member has not ended, and the
    workflow was not cancelled already."""
    return info.finished_at is None and info.state != "cancelled"


def final_indexes(info: WorkflowInfo) -> list[tuple[str, int]]:
    """(label, member index) of the members whose outcome is the workflow's."""
    found = []
    if info.kind == "dependencies":
        found.append(("Dependent task", info.size - 1))
    elif info.callback_id:
        after_group = len(info.steps) > 1 and info.steps[-2][2]
        found.append(("Callback" if after_group else "Last link", info.steps[-1][0]))
    if info.on_complete >= 0:
        found.append(("On complete", info.on_complete))
    return found


def _valid(workflow_id: str) -> str:
    try:
        return validate_workflow_id(workflow_id)
    except ValueError as exc:  # not an id at all: as unknown as any other
        raise WorkflowNotFound(f"no workflow with id {workflow_id!r:.80}: {exc}") from None
