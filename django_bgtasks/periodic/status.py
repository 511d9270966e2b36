"""Periodic entries as the admin and the CLI show and act on them: each declared entry
joined with its state in Redis (enabled, last tick, history) and judged on Redis' clock.

Reads only; the two writes (switch on/off, run now) are one Lua script each.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ..broker import get_broker
from ..broker.redis import RedisBroker
from ..conf import get_settings
from ..info import TaskInfo, ms_to_datetime
from ..limits import request_fields
from ..ops.inspect import Inspector
from .declared import PeriodicEntry, entries

# A tick not admitted this long after it was due means no scheduler fired it (the
# schedulers propose every due tick within about a second).
OVERDUE_AFTER_MS = 10_000
NEXT_RUNS = 3
# History outcomes that put a task in the queue.
RUN_OUTCOMES = ("fired", "run now")


@dataclass(frozen=True)
class HistoryItem:
    """One line of an entry's history: a tick and what became of it."""

    tick: datetime | None
    at: datetime | None  # when Redis decided (fired, skipped...)
    outcome: str  # 'fired', 'run now', 'started', 'too late', 'overlap', 'missed N', ...
    task_id: str

    @property
    def lateness(self) -> float | None:
        """Seconds from the tick to its decision (for a fire: to its enqueue)."""
        if self.tick is None or self.at is None:
            return None
        return (self.at - self.tick).total_seconds()


@dataclass(frozen=True)
class LastRun:
    """The entry's latest enqueued task and what became of it."""

    item: HistoryItem
    task: TaskInfo | None  # None once the record is gone (finished and not kept)

    @property
    def start_lateness(self) -> float | None:
        """Seconds from the tick to the start of the task's latest attempt."""
        if self.task is None or self.task.started_at is None or self.item.tick is None:
            return None
        return (self.task.started_at - self.item.tick).total_seconds()

    @property
    def outcome(self) -> str:
        if self.task is None:
            return "finished (record not kept)"
        return self.task.state


@dataclass(frozen=True)
class EntryStatus:
    entry: PeriodicEntry
    queue: str
    now: datetime
    enabled: bool
    # 'ok', 'new' (no scheduler has seen the entry yet), 'changed' (the schedulers run
    # another spec of it) or 'overdue' (a tick is due and has not fired).
    health: str
    mark: datetime | None  # the newest tick the schedulers have dealt with
    next_runs: list[datetime]
    overdue_tick: datetime | None
    last_run: LastRun | None
    history: list[HistoryItem] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.entry.name


def _history_item(raw: dict[str, Any]) -> HistoryItem:
    task_id = raw.get("id")
    return HistoryItem(ms_to_datetime(raw.get("tick")), ms_to_datetime(raw.get("at")),
                       str(raw.get("outcome") or "?"), task_id if isinstance(task_id, str) else "")


def _tick_datetime(ms: int) -> datetime:
    # Redis' clock and the schedule's ticks, never stored data (ms_to_datetime's case): always
    # a time, so these fields need no None.
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def upcoming(entry: PeriodicEntry, after_ms: int, count: int) -> list[datetime]:
    """The entry's next ``count`` ticks after ``after_ms``, ascending."""
    runs, tick = [], after_ms
    for _ in range(count):
        tick = entry.schedule.next_after(tick)
        runs.append(_tick_datetime(tick))
    return runs


class PeriodicEntries:
    """Every declared entry with its state in Redis; switching, running now."""

    def __init__(self, broker: RedisBroker | None = None) -> None:
        self.broker = broker or get_broker()
        valid, self.problems = entries()
        self._entries = {entry.name: entry for entry in valid}

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> PeriodicEntry:
        """The declared entry ``name``; LookupError naming the known ones otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "none are declared"
            raise LookupError(f"no periodic entry named {name!r} (known: {known})") from None

    def statuses(self) -> list[EntryStatus]:
        """Every entry, by name, with its last run (without the full history)."""
        now = self.broker.server_time_ms()
        states: dict[str, dict[str, dict[str, Any]]] = {}
        result = []
        for name in self.names():
            entry = self._entries[name]
            queue = entry.task().queue_name
            if queue not in states:
                states[queue] = self.broker.periodic_states(queue)
            history = self.broker.periodic_history(queue, name)
            result.append(self._status(entry, queue, states[queue].get(name), history, now))
        return result

    def status(self, name: str) -> EntryStatus:
        """One entry with its history of the last 100 ticks, newest first."""
        entry = self.get(name)
        queue = entry.task().queue_name
        now = self.broker.server_time_ms()
        state = self.broker.periodic_states(queue).get(name)
        history = self.broker.periodic_history(queue, name)
        status = self._status(entry, queue, state, history, now)
        return replace(status, history=[_history_item(raw) for raw in history])

    def _status(self, entry: PeriodicEntry, queue: str, state: dict[str, Any] | None,
                history: list[dict[str, Any]], now: int) -> EntryStatus:
        schedule = entry.schedule
        enabled = not (state is not None and state.get("enabled") is False)
        last_ms = state.get("last") if state else None
        mark = last_ms if isinstance(last_ms, (int, float)) and not isinstance(last_ms, bool) \
            else None
        next_runs = upcoming(entry, now, NEXT_RUNS)
        overdue_tick = None
        if state is None or mark is None or not state.get("spec"):
            health = "new"  # (switched off before any scheduler saw it: no spec yet)
        elif state.get("spec") != entry.spec_id:
            health = "changed"
        else:
            health = "ok"
            due = schedule.previous_at_or_before(now - OVERDUE_AFTER_MS)
            if enabled and due is not None and due > mark:
                health, overdue_tick = "overdue", ms_to_datetime(due)
        return EntryStatus(entry, queue, _tick_datetime(now), enabled, health,
                           ms_to_datetime(mark), next_runs, overdue_tick,
                           self._last_run(queue, history))

    def _last_run(self, queue: str, history: list[dict[str, Any]]) -> LastRun | None:
        for raw in history:
            item = _history_item(raw)
            if item.outcome in RUN_OUTCOMES and item.task_id:
                # Its state and start are all a page shows: a summary, however big it is.
                return LastRun(item, Inspector(self.broker).summaries(queue, [item.task_id])[0])
        return None

    # -- actions ----------------------------------------------------------------------

    def set_enabled(self, name: str, enabled: bool) -> bool:
        """Switch the entry on or off on every host (each sees it at its next tick).
        Switching on never fires the ticks missed while off. True when it changed."""
        entry = self.get(name)
        now = self.broker.server_time_ms()
        mark = entry.schedule.previous_at_or_before(now) or 0
        return self.broker.enable_periodic(entry.task().queue_name, name, enabled, mark)

    def run_now(self, name: str, request_id: str | None = None) -> tuple[str, str]:
        """Enqueue the entry's task with its configured arguments, now, outside the
        schedule. ``request_id`` makes a resent request find its task instead of adding
        another. Returns (task id, 'ok' or 'exists')."""
        entry = self.get(name)
        task = entry.task()
        task_id = f"cron:{name}:now:{request_id or uuid.uuid4().hex}"
        now_s = self.broker.server_time_ms() / 1000  # as every other time: Redis' clock
        message = replace(entry.message(0, now_s), id=task_id, run_after=now_s)
        self.broker.register_queue(task.queue_name)  # so that the task can be looked up
        limits, fair = request_fields(task, entry.args, entry.kwargs, get_settings().LIMITS)
        status = self.broker.run_periodic_now(task.queue_name, name, task_id,
                                              message.encode(), task.priority,
                                              task.max_retries, limits, fair)
        return task_id, status
