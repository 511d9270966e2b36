"""``bgtasks limits``: the live limits as text and JSON (the rows: ops.limit_rows, shared
with the admin's Limits page)."""

from __future__ import annotations

from typing import Any

from ..ops.limit_rows import LIMITS_SHOWN, LimitsReport
from .cli_format import table


def limits_data(report: LimitsReport) -> dict[str, Any]:
    """{"limits": [...], "total": N, "complete": bool}; each limit's keys in
    docs/commands.md."""
    return {"limits": [row.data() for row in report.rows], "total": report.total,
            "complete": report.complete}


def limits_text(report: LimitsReport, queue: str | None = None) -> str:
    """One line per limit, by queue then id; a note when not every limit was read."""
    if not report.rows:
        where = f" in queue {queue!r}" if queue else ""
        return (f"No limit is in use{where}: nothing runs under a limit, no task waits for "
                "one, and every rate's bucket is full.")
    lines = [table(
        ["queue", "limit", "running", "rate", "tokens", "waiting", "oldest waiter"],
        [[row.queue, row.id, row.running or "-", row.rate or "-", row.tokens or "-",
          row.status.waiting, row.oldest_wait or "-"] for row in report.rows])]
    if not report.complete:
        lines.append(f"Showing {len(report.rows)} of {report.total} limits: at most "
                     f"{LIMITS_SHOWN} per queue are read.")
    return "\n".join(lines)
