"""Workflows in Redis: the barrier of each workflow (wf_barrier.lua, in the workflow's own
slot), the members' outbox in their queues (announce_final), and the forwarding between
them that makes a member's end count exactly once (docs/workflows.md)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..conf import get_settings
from .keys import WorkflowKeys
from .packing import as_text
from .redis import RedisBroker

logger = logging.getLogger("django_bgtasks.workflows")

ACTION_CHUNK = 1000  # members released or cancelled per script call
FORWARD_BATCH = 500  # outbox entries forwarded per round
REASON_MAX = 300  # characters of a failure's reason carried into cancels
LISTED_MOST = 100_000  # workflows the list keeps (newest)


@dataclass(frozen=True)
class Action:
    """What a barrier decided: release these members of ``queue`` (``text``: the input
    spliced in as their first argument, '' none) or cancel them (``text``: by whom)."""

    kind: str
    queue: str
    text: str
    ids: list[str]


@dataclass(frozen=True)
class Outcome:
    """One outbox entry: how a member (or a watched dependency) ended, and the barriers
    it reports to."""

    task_id: str
    raw: bytes
    state: str
    result: str
    error: str
    targets: list[tuple[str, int]]

    @classmethod
    def parse(cls, task_id: str, raw: bytes) -> Outcome | None:
        try:
            data = json.loads(raw)
            targets = [(str(t[0]), int(t[1])) for t in data["t"]]
            state = str(data["s"])
        except (ValueError, KeyError, TypeError, IndexError):
            return None
        result = data.get("r")
        error = data.get("e")
        return cls(task_id, raw, state, result if isinstance(result, str) else "null",
                   error if isinstance(error, str) else "", targets)


class WorkflowStore:
    """The named Redis operations of workflows, over one broker."""

    def __init__(self, broker: RedisBroker) -> None:
        self._broker = broker

    def keys(self, workflow_id: str) -> WorkflowKeys:
        return WorkflowKeys(self._broker.keys.prefix, workflow_id)

    def _barrier(self, workflow_id: str, args: Sequence[Any]) -> Any:
        """A barrier call. With WAIT_REPLICAS, confirmed by replicas before the caller
        takes the outbox entries out: a failover of the barrier's master cannot then drop
        a count whose entry is gone (without it, it can, as it can drop acks)."""
        key = self.keys(workflow_id).barrier
        broker = self._broker
        if broker._wait_replicas:
            return broker.run_script_confirmed("wf_barrier", [key], args,
                                               f"workflow {workflow_id}'s barrier")
        with broker.translate_errors():
            return broker._scripts["wf_barrier"](keys=[key], args=list(args))

    # -- the producer's side ------------------------------------------------------------

    def create(self, workflow_id: str, meta: dict[str, Any],
               step_queues: dict[str, str | list[str]]) -> bool:
        """Write a new workflow's barrier (before any member exists) and list it; False
        when it exists already (a resent call)."""
        fields: list[Any] = []
        for step, queues in step_queues.items():
            fields += [f"q:{step}", json.dumps(queues, separators=(",", ":"))]
        created = self._barrier(workflow_id, ["create", json.dumps(meta), *fields])
        broker = self._broker
        with broker.translate_errors():
            broker.client.zadd(broker.keys.workflows, {workflow_id: broker.server_time_ms()})
            # an index for the admin and the CLI, not the workflows: the newest are enough
            broker.client.zremrangebyrank(broker.keys.workflows, 0, -LISTED_MOST - 1)
        return bool(created)

    def watch(self, queue: str, workflow_id: str, pairs: Sequence[tuple[str, int]],
              ) -> list[tuple[str, str, str]]:
        """Make tasks of ``queue`` report their end to the workflow (a dependency gate):
        per task, ('watched', '', '') or the end it reached already (state, result JSON,
        error), or ('missing', '', '')."""
        args: list[Any] = [workflow_id]
        for task_id, index in pairs:
            args += [task_id, index]
        reply = self._broker._run("wf_watch", queue, args)
        return [(as_text(reply[i]), as_text(reply[i + 1]), as_text(reply[i + 2]))
                for i in range(0, len(reply), 4)]

    # -- the barrier ----------------------------------------------------------------------

    def report(self, workflow_id: str, reports: Sequence[tuple[int, str, str, str]],
               keep_ms: int) -> list[Action]:
        """Count members' ends ((index, state, result JSON, error)); the actions that
        follow, the same again for an end counted before."""
        args: list[Any] = ["report", workflow_id, keep_ms]
        for index, state, result, error in reports:
            args += [index, state, result, error[:REASON_MAX]]
        return _actions(self._barrier(workflow_id, args))

    def cancel(self, workflow_id: str, reason: str) -> list[Action]:
        """Mark the workflow cancelled; the cancels of its members that have not ended."""
        return _actions(self._barrier(workflow_id, ["cancel", workflow_id, reason]))

    def apply(self, workflow_id: str, actions: Iterable[Action],
              ) -> dict[str, list[tuple[str, bytes]]]:
        """Carry out a barrier's actions (each safe to apply twice). Returns, per queue,
        the outbox entries of the members these actions ended (to forward in turn).
        With WAIT_REPLICAS, each write is confirmed by replicas before the caller takes
        the outbox entry out: a failover of a member's master cannot then drop a release
        that nothing would make again."""
        broker = self._broker
        run = broker._run_confirmed if broker._wait_replicas else broker._run
        ended: dict[str, list[tuple[str, bytes]]] = {}
        by_workflow = f"workflow {workflow_id}:"
        for action in actions:
            for start in range(0, len(action.ids), ACTION_CHUNK):
                ids = action.ids[start:start + ACTION_CHUNK]
                if action.kind == "release":
                    _, forward = run("wf_release", action.queue, [
                        broker.keys.wake_channel, by_workflow, action.text, *ids])
                    done = [(as_text(forward[i]), forward[i + 1])
                            for i in range(0, len(forward), 2)]
                else:
                    cancelled = broker.cancel(action.queue, ids, action.text,
                                              confirmed=True).cancelled
                    done = self.outbox(action.queue, cancelled)
                if done:
                    ended.setdefault(action.queue, []).extend(done)
        return ended

    # -- the outbox -------------------------------------------------------------------------

    def outbox(self, queue: str, ids: Sequence[str]) -> list[tuple[str, bytes]]:
        """The outbox entries of these tasks of ``queue`` (those that have one)."""
        broker = self._broker
        if not ids:
            return []
        with broker.translate_errors():
            values = broker.client.hmget(broker.queue_keys(queue).wfout, list(ids))
        return [(i, v) for i, v in zip(ids, values, strict=True) if v is not None]

    def outbox_scan(self, queue: str, most: int) -> list[tuple[str, bytes]]:
        """Up to about ``most`` entries of ``queue``'s outbox, any."""
        broker = self._broker
        found: list[tuple[str, bytes]] = []
        with broker.translate_errors():
            for key, value in broker.client.hscan_iter(broker.queue_keys(queue).wfout,
                                                       count=FORWARD_BATCH):
                found.append((as_text(key), value))
                if len(found) >= most:
                    break
        return found

    def settle(self, queue: str, entries: Sequence[tuple[str, bytes]]) -> None:
        """Take forwarded entries out of the outbox (each only if unchanged)."""
        args: list[Any] = []
        for task_id, raw in entries:
            args += [task_id, raw]
        if args:
            broker = self._broker
            with broker.translate_errors():
                broker._scripts["wf_settle"](keys=[broker.queue_keys(queue).wfout], args=args)

    def carry_out(self, workflow_id: str, actions: Iterable[Action], keep_ms: int) -> None:
        """apply() the actions, then forward the ends they caused (a producer's or an
        operator's call: a worker's forwarder has its own loop in forward_entries)."""
        for queue, ended in self.apply(workflow_id, actions).items():
            self.forward_entries(queue, ended, keep_ms=keep_ms)

    def forward(self, queue: str, ids: Sequence[str], *, keep_ms: int) -> int:
        """forward_entries() of the outbox entries these tasks of ``queue`` have."""
        return self.forward_entries(queue, self.outbox(queue, ids), keep_ms=keep_ms)

    def forward_entries(self, queue: str, entries: Sequence[tuple[str, bytes]], *,
                        keep_ms: int) -> int:
        """Carry these outbox entries of ``queue`` (id, entry as written) to their
        barriers, carry out what the barriers decide, then take the entries out. Dying
        anywhere in here loses nothing: the entries stay until the end, and every step
        is safe to apply again. Returns how many entries were forwarded."""
        work: list[tuple[str, Sequence[tuple[str, bytes]]]] = []
        for start in range(0, len(entries), FORWARD_BATCH):
            work.append((queue, entries[start:start + FORWARD_BATCH]))
        forwarded = 0
        rounds = 0
        while work and rounds < 1000:  # releases can end members (expiry): bounded
            rounds += 1
            name, batch = work.pop()
            outcomes: list[Outcome] = []
            for task_id, raw in batch:
                outcome = Outcome.parse(task_id, raw)
                if outcome is None:
                    logger.error("workflow outbox of queue %s: the entry of task %s is not "
                                 "readable, dropped: %r", name, task_id, raw[:200])
                else:
                    outcomes.append(outcome)
            for workflow_id, reports in _by_workflow(outcomes).items():
                actions = self.report(workflow_id, reports, keep_ms)
                for other, ended in self.apply(workflow_id, actions).items():
                    work.append((other, ended))
            self.settle(name, batch)
            forwarded += len(batch)
        return forwarded

    def read(self, workflow_id: str, fields: Sequence[str]) -> list[bytes | None]:
        broker = self._broker
        if not fields:
            return []
        with broker.translate_errors():
            return list(broker.client.hmget(self.keys(workflow_id).barrier, list(fields)))

    def member_records(self, queue: str, ids: Sequence[str]) -> list[bytes | None]:
        """The records (info JSON) of these tasks of ``queue``."""
        broker = self._broker
        with broker.translate_errors():
            return list(broker.client.hmget(broker.queue_keys(queue).info, list(ids)))

    def listed(self, start: int = 0, stop: int = 99) -> list[tuple[str, int]]:
        """Workflow ids, newest first, with when they were created (ms)."""
        broker = self._broker
        with broker.translate_errors():
            rows = broker.client.zrevrange(broker.keys.workflows, start, stop, withscores=True)
        return [(as_text(i), int(score)) for i, score in rows]


def keep_ms() -> int:
    """BGTASKS["WORKFLOW_KEEP"] in ms: how long an ended workflow's barrier is kept."""
    return int(get_settings().WORKFLOW_KEEP * 1000)


def _by_workflow(outcomes: Iterable[Outcome]) -> dict[str, list[tuple[int, str, str, str]]]:
    grouped: dict[str, list[tuple[int, str, str, str]]] = {}
    for outcome in outcomes:
        result = outcome.result if outcome.state == "completed" else ""
        for workflow_id, index in outcome.targets:
            grouped.setdefault(workflow_id, []).append(
                (index, outcome.state, result, outcome.error))
    return grouped


def _actions(reply: Any) -> list[Action]:
    return [Action(as_text(a[0]), as_text(a[1]), as_text(a[2]), [as_text(i) for i in a[3:]])
            for a in reply or []]
