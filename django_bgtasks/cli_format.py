"""Text and JSON renderings of what the Inspector reads, for ``manage.py bgtasks``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from . import display
from .broker.inspect import QueueStats, TaskRow, WorkerInfo
from .display import relative, shorten
from .info import STATES, TaskInfo, ms_to_datetime

ARGS_WIDTH = 50
ERROR_WIDTH = 70


# -- small pieces -----------------------------------------------------------------------


def iso(when: datetime | None) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") \
        if when else ""


def when_text(when: datetime | None) -> str:
    """ISO time and how far it is from now: '2024-05-01T10:00:00Z (2 hours ago)'."""
    return f"{iso(when)} ({relative(when)})" if when else "-"


def call_args(info: TaskInfo, limit: int = ARGS_WIDTH) -> str:
    """The arguments as a call list, shortened: '"a", 2, key=true'."""
    if info.message_error:
        return "<undecodable>"
    return shorten(display.call_args(info), limit)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table; numbers right-aligned, everything else left-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], int) for row in rows) and bool(rows)
               for i in range(len(headers))]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]

    def fmt(line: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w)
                         for c, w, num in zip(line, widths, numeric, strict=True)).rstrip()

    out = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    out += [fmt(line) for line in cells[1:]]
    return "\n".join(out)


def to_json(value: Any) -> str:
    """Indented JSON; datetimes as ISO strings, dataclasses as objects."""
    try:
        return json.dumps(value, indent=2, default=_json_default, ensure_ascii=False)
    except RecursionError:  # damaged data, nested deeper than the stack allows
        return json.dumps(display.TOO_DEEP)


# -- stats ------------------------------------------------------------------------------


def stats_data(stats: Sequence[QueueStats], workers: Sequence[WorkerInfo]) -> dict[str, Any]:
    """{"queues": [...], "workers": [...]}, flat and JSON-ready."""
    return {
        "queues": [{"name": s.name, **s.counts, "processed_today": s.processed_today,
                    "failed_today": s.failed_today, "paused": s.paused} for s in stats],
        "workers": [dataclasses.asdict(w) for w in workers],
    }


def stats_text(stats: Sequence[QueueStats], workers: Sequence[WorkerInfo]) -> str:
    """The queue table, then the live workers."""
    headers = ["queue", *STATES, "processed today", "failed today", "paused"]
    rows: list[list[Any]] = [
        [s.name, *(s.counts[state] for state in STATES), s.processed_today, s.failed_today,
         "PAUSED" if s.paused else "no"] for s in stats]
    if len(stats) > 1:
        rows.append(["(all)", *(sum(s.counts[state] for s in stats) for state in STATES),
                     sum(s.processed_today for s in stats),
                     sum(s.failed_today for s in stats), ""])
    parts = [table(headers, rows) if stats else "No queues yet (nothing was ever enqueued)."]
    if workers:
        parts.append(f"\nLive workers: {len(workers)}")
        parts.append(table(
            ["host", "pid", "queues", "P x T", "in flight", "started"],
            [[w.host, w.pid, w.queues, f"{w.processes} x {w.threads}", w.in_flight,
              relative(w.started)] for w in workers]))
    else:
        parts.append("\nLive workers: none")
    return "\n".join(parts)


# -- tasks ------------------------------------------------------------------------------


def task_data(info: TaskInfo) -> dict[str, Any]:
    """Every TaskInfo field, JSON-ready (error times as ISO strings)."""
    # Not dataclasses.asdict: its deep copy fails on data nested as deep as damage allows.
    data = {f.name: getattr(info, f.name) for f in dataclasses.fields(info)}
    for key in ("args", "kwargs", "result"):
        data[key] = _showable(data[key])
    data["errors"] = [_error_data(e) for e in info.errors]
    return data


def row_data(row: TaskRow) -> dict[str, Any]:
    return {**task_data(row.info), "when": row.when}


def list_text(rows: Sequence[TaskRow], state: str) -> str:
    """One line per task: id, task, arguments, attempts, the state's time, last error."""
    time_header = {"pending": "enqueued", "active": "lease expires", "scheduled": "run after",
                   "retry": "next retry", "dead": "died", "completed": "kept until"}[state]
    return table(
        ["id", "task", "queue", "args", "attempts", time_header, "last error"],
        [[r.info.id, r.info.name, r.info.queue_name, call_args(r.info),
          f"{r.info.attempts}/{r.info.max_retries + 1}", when_text(r.when),
          shorten(r.info.last_error, ERROR_WIDTH)] for r in rows])


def show_text(info: TaskInfo) -> str:
    """Everything known about one task, for a human."""
    lines = [
        f"id:           {info.id}",
        f"task:         {info.name}",
        f"queue:        {info.queue_name}",
        f"state:        {info.state}",
        f"priority:     {info.priority}",
        f"attempts:     {info.attempts} (max retries {info.max_retries})",
        f"enqueued at:  {when_text(info.enqueued_at)}",
        f"run after:    {when_text(info.run_after)}",
        f"started at:   {when_text(info.started_at)}",
        f"finished at:  {when_text(info.finished_at)}",
    ]
    if info.message_error:
        lines.append(f"message:      UNDECODABLE: {info.message_error}")
    else:
        lines.append("args:         " + _indent(to_json(info.args)))
        lines.append("kwargs:       " + _indent(to_json(info.kwargs)))
    if info.state == "completed" or info.result is not None:
        lines.append("result:       " + _indent(to_json(info.result)))
    lines.append(f"last error:   {info.last_error or '-'}")
    if info.errors:
        lines.append("error history:")
        for entry in info.errors:
            at = ms_to_datetime(entry.get("at"))
            worker = f" on {entry['worker']}" if entry.get("worker") else ""
            lines.append(f"  attempt {entry.get('attempt', '?')}, {when_text(at)}{worker}: "
                         f"{shorten(str(entry.get('error') or ''), 200)}")
    if info.traceback:
        lines += ["traceback:", info.traceback.rstrip()]
    return "\n".join(lines)


# -- helpers ----------------------------------------------------------------------------


def _showable(value: Any) -> Any:
    """``value``, or a placeholder when it nests too deeply to be written out as JSON."""
    try:
        json.dumps(value, indent=2, default=_json_default)
    except RecursionError:
        return display.TOO_DEEP
    return value


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _indent(text: str) -> str:
    return text.replace("\n", "\n" + " " * 14)


def _error_data(entry: dict[str, Any]) -> dict[str, Any]:
    at = ms_to_datetime(entry.get("at"))
    return {**entry, "at": iso(at) if at else entry.get("at")}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)
