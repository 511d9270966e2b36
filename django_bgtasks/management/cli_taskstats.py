"""``bgtasks taskstats``: per task name statistics as text and JSON (the rows:
ops.taskstats, shared with the admin's task statistics page)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..ops.display import milliseconds, percent
from ..ops.taskstats import QUANTILES, WINDOW_LABELS, TaskStatsRow
from .cli_format import table

NAMES = [f"p{round(q * 100)}" for q in QUANTILES]


def taskstats_data(rows: Sequence[TaskStatsRow], window: str) -> dict[str, Any]:
    """{"window": ..., "tasks": [...]}; times in ms (null: nothing observed)."""
    return {"window": window, "tasks": [{
        "queue": r.queue, "task": r.task, "enqueued": r.enqueued, "started": r.started,
        "runs": r.runs, "failed": r.failed, "failure_rate": r.failure_rate,
        "ended_unrun": r.not_run,
        "duration_ms": dict(zip(NAMES, r.duration, strict=True)),
        "latency_ms": dict(zip(NAMES, r.latency, strict=True)),
    } for r in rows]}


def taskstats_text(rows: Sequence[TaskStatsRow], window: str) -> str:
    """One line per task name and queue, then what the window is."""
    label = WINDOW_LABELS[window].lower()
    if not rows:
        return f"No task counted ({label})."
    return table(
        ["task", "queue", "runs", "failed", "fail%", *(f"dur {n}" for n in NAMES),
         *(f"lat {n}" for n in NAMES), "enqueued", "unrun"],
        [[r.task, r.queue, r.runs, r.failed, percent(r.failure_rate),
          *(milliseconds(ms) for ms in r.duration), *(milliseconds(ms) for ms in r.latency),
          r.enqueued, r.not_run] for r in rows]) + f"\n{len(rows)} task name(s), {label}."
