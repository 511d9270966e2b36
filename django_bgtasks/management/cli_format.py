"""Text and JSON renderings of what the Inspector and PeriodicEntries read, for
``manage.py bgtasks``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.core.management.base import OutputWrapper

from ..broker.bulk import BulkJob
from ..info import STATES, TaskInfo, TaskProgress, ms_to_datetime
from ..ops import display
from ..ops.display import relative, shorten
from ..ops.inspect import QueueStats, TaskRow, WorkerInfo
from ..ops.summary import TaskSummary
from ..periodic import PeriodicEntry
from ..periodic.status import EntryStatus, LastRun

ARGS_WIDTH = 50
ERROR_WIDTH = 70


# -- what reaches the terminal ----------------------------------------------------------

# Task ids, arguments, errors, tracebacks and worker names come from Redis, where anything
# may have written them. Printed raw, C0/C1 control characters and DEL set the terminal's
# title, clear or rewrite the screen, and the bidi controls reorder what follows: all are
# shown as escapes instead.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"})
_ESCAPES.update({c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))})
_ESCAPES_BUT_NEWLINE = {c: text for c, text in _ESCAPES.items() if c != 0x0A}
# json.dumps escapes C0 itself; the rest, as \uXXXX, keeps the JSON valid and its data.
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in _ESCAPES if c >= 0x7F}


def safe_text(text: str, newlines: bool = True) -> str:
    """``text`` with its control characters written as escapes (``\\x1b``, ``\\r``,
    ``\\u202e``); newlines kept unless ``newlines`` is False."""
    return text.translate(_ESCAPES_BUT_NEWLINE if newlines else _ESCAPES)


class EscapingOutput:
    """A command's stdout or stderr whose every write goes through safe_text(), so no
    output, present or future, can reach the terminal raw. Django's style codes (colours)
    are added after, and stay codes."""

    def __init__(self, out: OutputWrapper) -> None:
        self._out = out

    def write(self, msg: str = "", style_func: Any = None, ending: str | None = None) -> None:
        self._out.write(safe_text(msg), style_func, ending)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._out, name)


# -- small pieces -----------------------------------------------------------------------


def iso(when: datetime | None) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") \
        if when else ""


def when_text(when: datetime | None, now: datetime | None = None) -> str:
    """ISO time and how far it is from now: '2024-05-01T10:00:00Z (2 hours ago)'."""
    return f"{iso(when)} ({relative(when, now)})" if when else "-"


def call_args(summary: TaskSummary, limit: int = ARGS_WIDTH) -> str:
    """The arguments as a call list, shortened: '"a", 2, key=true'."""
    if summary.info.message_error:
        return "<undecodable>"
    return shorten(summary.preview, limit)


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


def progress_text(progress: TaskProgress | None, width: int = ERROR_WIDTH) -> str:
    """'3 / 10 (30%) rendering', shortened; '' for none."""
    if progress is None:
        return ""
    text = f"{progress.current:g}"
    if progress.total is not None:
        text += f" / {progress.total:g}"
    if progress.fraction is not None:
        text += f" ({progress.fraction:.0%})"
    if progress.message:
        text += f" {progress.message}"
    return shorten(text, width)


def to_json(value: Any) -> str:
    """Indented JSON; datetimes as ISO strings, dataclasses as objects."""
    try:
        return json.dumps(value, indent=2, default=_json_default,
                          ensure_ascii=False).translate(_JSON_ESCAPES)
    except RecursionError:  # damaged data, nested deeper than the stack allows
        return json.dumps(display.TOO_DEEP)


# -- stats ------------------------------------------------------------------------------


def stats_data(stats: Sequence[QueueStats], workers: Sequence[WorkerInfo],
               ages: Mapping[str, float | None] | None = None) -> dict[str, Any]:
    """{"queues": [...], "workers": [...]}, flat and JSON-ready; each queue's
    ``oldest_pending_age_seconds`` is null when nothing is pending."""
    ages = ages or {}
    return {
        "queues": [{"name": s.name, **s.counts, "processed_today": s.processed_today,
                    "failed_today": s.failed_today, "paused": s.paused,
                    "oldest_pending_age_seconds": ages.get(s.name)} for s in stats],
        "workers": [dataclasses.asdict(w) for w in workers],
    }


def age_cell(age: float | None) -> str:
    """How long the oldest pending task has waited: '4.2s', '3m 5s'; '-' for none."""
    return "-" if age is None else display.duration(age)


def stats_text(stats: Sequence[QueueStats], workers: Sequence[WorkerInfo],
               ages: Mapping[str, float | None] | None = None) -> str:
    """The queue table (with each queue's oldest pending age), then the live workers."""
    ages = ages or {}
    headers = ["queue", *STATES, "processed today", "failed today", "paused", "oldest pending"]
    rows: list[list[Any]] = [
        [s.name, *(s.counts[state] for state in STATES), s.processed_today, s.failed_today,
         "PAUSED" if s.paused else "no", age_cell(ages.get(s.name))] for s in stats]
    if len(stats) > 1:
        known = [age for s in stats if (age := ages.get(s.name)) is not None]
        rows.append(["(all)", *(sum(s.counts[state] for s in stats) for state in STATES),
                     sum(s.processed_today for s in stats),
                     sum(s.failed_today for s in stats), "",
                     age_cell(max(known) if known else None)])
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


# -- bulk jobs --------------------------------------------------------------------------


def job_data(job: BulkJob) -> dict[str, Any]:
    """Every field of a bulk job, and its percent done, JSON-ready."""
    return {**dataclasses.asdict(job), "percent": job.percent}


def jobs_text(jobs: Sequence[BulkJob]) -> str:
    """One line per bulk job: queued and running first, then finished, newest first."""
    if not jobs:
        return "No bulk jobs (the admin's \"run all\" and \"delete all\" queue them)."
    return table(
        ["queue", "job", "status", "done", "total", "%", "asked by", "asked", "finished",
         "id"],
        [[j.queue, j.describe() if j.action else "?", _job_status(j), j.done, j.total,
          j.percent, j.requested_by, when_text(j.requested_at),
          when_text(j.finished_at) if j.finished_at else "", j.id] for j in jobs])


def _job_status(job: BulkJob) -> str:
    detail = job.error or job.note or (f"taken over {job.takeovers}x" if job.takeovers else "")
    return f"{job.status}: {detail}" if detail else job.status


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
    """A list's task as far as a list reads it: no result nor error history, the arguments
    only of a short message (``preview`` for every one)."""
    data = task_data(row.info)
    for key in ("result", "errors", "traceback"):
        del data[key]
    if not row.summary.whole:
        data.update(args=None, kwargs=None)
    return {**data, "preview": row.summary.preview,
            "message_bytes": row.summary.message_bytes, "when": row.when}


def list_text(rows: Sequence[TaskRow], state: str) -> str:
    """One line per task: id, task, arguments, attempts, the state's time, last error."""
    time_header = {"pending": "enqueued", "waiting": "waiting since", "blocked": "enqueued",
                   "active": "lease expires", "scheduled": "run after",
                   "retry": "next retry", "dead": "died", "completed": "kept until",
                   "cancelled": "cancelled", "expired": "expired"}[state]
    # a waiting task's reason, a running one's progress: what the list is read for
    reason, progress = state == "waiting", state == "active"
    return table(
        ["id", "task", "queue", "args", "attempts", time_header,
         *(["waiting for"] if reason else []), *(["progress"] if progress else []),
         "last error"],
        [[r.info.id, r.info.name, r.info.queue_name, call_args(r.summary),
          f"{r.info.attempts}/{r.info.max_retries + 1}", when_text(r.when),
          *([shorten(r.info.waiting_for, ERROR_WIDTH)] if reason else []),
          *([progress_text(r.info.progress)] if progress else []),
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
        *([f"expires at:   {when_text(info.expires_at)}"] if info.expires_at else []),
        f"started at:   {when_text(info.started_at)}",
        f"finished at:  {when_text(info.finished_at)}",
    ]
    # flow control (docs/limits.md), only when the task has any
    if info.cancelled_at:
        by = f" by {info.cancelled_by}" if info.cancelled_by else ""
        lines.append(f"{'cancel asked:' if info.cancel_requested else 'cancelled:':<13} "
                     f"{when_text(info.cancelled_at)}{by}")
    lines += [f"{label:<13} {value}" for label, value in (
        ("limits:", ", ".join(info.limits)), ("fair key:", info.fair_key),
        ("waiting for:", info.waiting_for),
        ("waiting from:", when_text(info.waiting_since) if info.waiting_since else ""),
        ("progress:", progress_text(info.progress, 200) + (
            f", at {when_text(info.progress.updated_at)}"
            if info.progress and info.progress.updated_at else "")),
    ) if value]
    if info.message_error:
        lines.append(f"message:      UNDECODABLE: {info.message_error}")
    else:
        lines.append("args:         " + _indent(to_json(info.args)))
        lines.append("kwargs:       " + _indent(to_json(info.kwargs)))
    if info.headers:  # integrations' values (docs/tracing.md), apart from the arguments
        lines.append("headers:      " + _indent(to_json(info.headers)))
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


# -- periodic entries -------------------------------------------------------------------

HEALTH_TEXT = {"ok": "ok", "new": "NEW: not yet seen by a scheduler",
               "changed": "CHANGED: the schedulers last ran another spec of it"}


def schedule_text(entry: PeriodicEntry) -> str:
    """'At 02:30 every day (30 2 * * *)'; an interval is its own words: 'every minute'."""
    words, spec = entry.schedule.describe(), entry.schedule.spec
    return words if words == spec else f"{words} ({spec})"


def health_text(status: EntryStatus) -> str:
    if status.health == "overdue":
        return f"OVERDUE since {iso(status.overdue_tick)}"
    return HEALTH_TEXT.get(status.health, status.health.upper())


def last_run_text(last: LastRun | None) -> str:
    """'2024-05-01T06:30:00Z completed, started 0.4s late', or '-' before any run."""
    if last is None:
        return "-"
    item = last.item
    if item.outcome == "run now":
        return f"{iso(item.tick)} {last.outcome} (run now)"
    if last.start_lateness is not None:
        return f"{iso(item.tick)} {last.outcome}, started {_lateness(last.start_lateness)}"
    if item.lateness is not None:
        return f"{iso(item.tick)} {last.outcome}, enqueued {_lateness(item.lateness)}"
    return f"{iso(item.tick)} {last.outcome}"


def cron_ls_text(statuses: Sequence[EntryStatus]) -> str:
    """One row per entry: switch, schedule, next and last run, health; then a count."""
    if not statuses:
        return "No periodic entries are declared (@periodic_task or BGTASKS['PERIODIC'])."
    rows = [[s.name, "enabled" if s.enabled else "DISABLED", schedule_text(s.entry),
             s.entry.schedule.tz, when_text(s.next_runs[0], s.now) if s.enabled else "-",
             last_run_text(s.last_run), health_text(s)] for s in statuses]
    disabled = sum(not s.enabled for s in statuses)
    notable = [f"{n} {word}" for n, word in (
        (disabled, "disabled"), (sum(s.health == "overdue" for s in statuses), "overdue"),
        (sum(s.health == "new" for s in statuses), "new"),
        (sum(s.health == "changed" for s in statuses), "changed")) if n]
    footer = f"{len(statuses)} periodic entr{'y' if len(statuses) == 1 else 'ies'}"
    footer += f" ({', '.join(notable)})." if notable else "."
    return table(["name", "state", "schedule", "tz", "next run", "last run", "health"],
                 rows) + "\n" + footer


def entry_data(entry: PeriodicEntry) -> dict[str, Any]:
    """The entry as declared, JSON-ready."""
    return {"name": entry.name, "task": entry.task_name, "schedule": entry.schedule.spec,
            "description": entry.schedule.describe(), "tz": entry.schedule.tz,
            "args": entry.args, "kwargs": entry.kwargs, "catch_up": entry.catch_up,
            "max_lateness": entry.max_lateness, "overlap": entry.overlap}


def status_data(status: EntryStatus) -> dict[str, Any]:
    """The entry, its switch, health, next runs and last run, JSON-ready."""
    last = status.last_run
    return {**entry_data(status.entry), "queue": status.queue, "enabled": status.enabled,
            "health": status.health, "overdue_since": status.overdue_tick,
            "mark": status.mark, "next_runs": status.next_runs,
            "last_run": None if last is None else {
                "tick": last.item.tick, "at": last.item.at, "kind": last.item.outcome,
                "task_id": last.item.task_id, "outcome": last.outcome,
                "enqueue_lateness": last.item.lateness,
                "start_lateness": last.start_lateness}}


def local_time(when: datetime, tz: str) -> str:
    """'Sun 2025-03-09 03:00:00 EDT': the time as the entry's zone reads it."""
    return when.astimezone(ZoneInfo(tz)).strftime("%a %Y-%m-%d %H:%M:%S %Z")


def cron_next_text(plans: Sequence[tuple[EntryStatus, list[datetime]]],
                   now: datetime) -> str:
    """Per entry: a heading, then its next runs in its zone, in UTC and from now."""
    if not plans:
        return "No periodic entries are declared (@periodic_task or BGTASKS['PERIODIC'])."
    parts = []
    for status, runs in plans:
        tz = status.entry.schedule.tz
        heading = f"{status.name}: {schedule_text(status.entry)}, {tz}"
        if not status.enabled:
            heading += f" (DISABLED: none of these fire until `bgtasks cron enable {status.name}`)"
        parts.append(heading + "\n" + table(
            ["#", f"time in {tz}", "UTC", "from now"],
            [[n, local_time(run, tz), iso(run), relative(run, now)]
             for n, run in enumerate(runs, 1)]))
    return "\n\n".join(parts)


def cron_next_data(plans: Sequence[tuple[EntryStatus, list[datetime]]]) -> dict[str, Any]:
    """{"entries": [{name, schedule..., enabled, runs: [{utc, local}]}]}."""
    return {"entries": [
        {**entry_data(status.entry), "enabled": status.enabled,
         "runs": [{"utc": iso(run),
                   "local": run.astimezone(ZoneInfo(status.entry.schedule.tz)).isoformat()}
                  for run in runs]}
        for status, runs in plans]}


# -- helpers ----------------------------------------------------------------------------


def _showable(value: Any) -> Any:
    """``value``, or a placeholder when it nests too deeply to be written out as JSON."""
    try:
        json.dumps(value, indent=2, default=_json_default)
    except RecursionError:
        return display.TOO_DEEP
    return value


def _cell(value: Any) -> str:
    # escaped here, not only on output: a row stays one line, and its width is the shown one
    return "" if value is None else safe_text(str(value), newlines=False)


def _lateness(seconds: float) -> str:
    """'0.4s late', '3m 5s late'; a start before its tick (clock skew) reads 'early'."""
    word = "late" if seconds >= 0 else "early"
    seconds = abs(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s {word}"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s"
    return f"{text} {word}"


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
