"""Fires periodic entries: on every host, with no leader. Each host proposes the ticks due
by Redis' clock; cron_fire.lua admits each tick once, whichever host comes first."""

from __future__ import annotations

import logging

from ..broker.redis import RedisBroker
from ..broker.types import PeriodicTick
from ..conf import get_settings
from ..limits import request_fields
from ..periodic import MAX_CATCH_UP, PeriodicEntry
from .component import Component

logger = logging.getLogger("django_bgtasks.worker")

MAX_SLEEP = 1.0  # re-reads enable switches and Redis' clock at least this often
SETTLE_MS = 2  # wake just after a tick, so it is due on Redis' clock when proposed
# Missed ticks beyond the ones offered are counted up to this many (for the history's
# "missed N" note; a count costs one schedule step each, once per catch-up).
MAX_COUNTED = 10_000


class PeriodicScheduler(Component):
    name = "scheduler"

    def __init__(self, broker: RedisBroker, entries: list[PeriodicEntry]) -> None:
        super().__init__()
        self._broker = broker
        self._entries = entries

    def tick(self) -> float:
        now = self._broker.server_time_ms()
        states: dict[str, dict] = {}
        soonest = now + int(MAX_SLEEP * 1000)
        for entry in self._entries:
            task = entry.task()
            if task.queue_name not in states:
                states[task.queue_name] = self._broker.periodic_states(task.queue_name)
            self._offer(entry, task, states[task.queue_name].get(entry.name), now)
            soonest = min(soonest, entry.schedule.next_after(now))
        return max(0.0, (soonest - now + SETTLE_MS) / 1000)

    def _offer(self, entry: PeriodicEntry, task, state: dict | None, now: int) -> None:
        if state is not None and state.get("enabled") is False:
            return  # switched off: nothing to propose (switching on resets the mark)
        known = state is not None and state.get("spec") == entry.spec_id
        ticks, omitted = due_ticks(entry, int(state["last"]), now) if known else ([], "0")
        if known and not ticks:
            return  # nothing new: no call
        mark = entry.schedule.previous_at_or_before(now) or 0
        late_ms = None if entry.max_lateness is None else int(entry.max_lateness * 1000)
        offered = [PeriodicTick(t, f"cron:{entry.name}:{t}", entry.message(t, now / 1000)
                                .encode()) for t in ticks]
        limits, fair = request_fields(task, entry.args, entry.kwargs, get_settings().LIMITS)
        result = self._broker.fire_periodic(task.queue_name, entry.name, entry.spec_id, mark,
                                            entry.catch_up, late_ms, entry.overlap,
                                            task.priority, task.max_retries, offered,
                                            omitted, limits, fair)
        if result.fired:
            logger.info("periodic %s: enqueued %s", entry.name, ", ".join(result.fired))
        elif result.outcome in ("started", "skipped"):
            logger.info("periodic %s: %s (next tick after %d)", entry.name, result.outcome,
                        result.last_ms)


def due_ticks(entry: PeriodicEntry, last_ms: int, now_ms: int) -> tuple[list[int], str]:
    """The newest ticks after ``last_ms`` up to ``now_ms`` (at most MAX_CATCH_UP),
    ascending: the script picks among them by the entry's catch-up policy. Also how many
    older due ticks were left out ("0", or e.g. "50"; counted up to MAX_COUNTED, then
    "10000+"), so that the entry's history accounts for every missed tick."""
    ticks: list[int] = []
    tick = entry.schedule.previous_at_or_before(now_ms)
    while tick is not None and tick > last_ms and len(ticks) < MAX_CATCH_UP:
        ticks.append(tick)
        tick = entry.schedule.previous_at_or_before(tick - 1)
    omitted = 0
    while tick is not None and tick > last_ms and omitted < MAX_COUNTED:
        omitted += 1
        tick = entry.schedule.previous_at_or_before(tick - 1)
    more = "+" if tick is not None and tick > last_ms else ""
    return ticks[::-1], f"{omitted}{more}"
