"""How the live limits read to people: the admin's Limits page and ``bgtasks limits``
show the same rows, worked out once here (docs/limits.md, "Watching limits")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..broker.types import LimitStatus
from ..info import ms_to_datetime
from ..limits import RATE_UNITS
from .display import duration

# How many limits of one queue a page or a command reads at most: limit_key values are
# user data, and a key per customer can make millions of them.
LIMITS_SHOWN = 1000


@dataclass(frozen=True)
class LimitRow:
    """One limit of one queue, with Redis' clock at the moment it was read."""

    status: LimitStatus
    now_ms: int

    @property
    def queue(self) -> str:
        return self.status.queue

    @property
    def id(self) -> str:
        return self.status.id

    @property
    def running(self) -> str | None:
        """'2 / 5': runs now / the concurrency limit; None without a concurrency limit."""
        s = self.status
        return f"{s.running} / {s.concurrency}" if s.concurrency else None

    @property
    def rate(self) -> str | None:
        """'50/s'; None without a rate limit."""
        s = self.status
        if not s.rate_count:
            return None
        unit = next((u for u, ms in RATE_UNITS.items() if ms == s.rate_period_ms), None)
        return f"{s.rate_count}/{unit or f'{s.rate_period_ms}ms'}"

    @property
    def tokens(self) -> str | None:
        """Rate tokens left now, to one decimal ('0.4'); None without a rate limit."""
        return None if self.status.tokens is None else f"{self.status.tokens:.1f}"

    @property
    def waiting_since(self) -> datetime | None:
        """When the first task in line (the next to start) began to wait."""
        return ms_to_datetime(self.status.next_waiter_since_ms)

    @property
    def oldest_wait_seconds(self) -> float | None:
        """How long the first task in line has been waiting (Redis' clock, so hosts with
        a skewed clock agree); None when nothing waits."""
        since = self.status.next_waiter_since_ms
        return None if since is None else max(self.now_ms - since, 0) / 1000

    @property
    def oldest_wait(self) -> str | None:
        """That wait for people: '4m 10s'."""
        seconds = self.oldest_wait_seconds
        return None if seconds is None else duration(seconds)

    def data(self) -> dict[str, Any]:
        """JSON-ready (``bgtasks limits --json``; keys in docs/commands.md)."""
        s = self.status
        return {"queue": s.queue, "id": s.id, "running": s.running,
                "concurrency": s.concurrency or None, "rate": self.rate,
                "rate_count": s.rate_count or None,
                "rate_period_ms": s.rate_period_ms if s.rate_count else None,
                "tokens": None if s.tokens is None else round(s.tokens, 3),
                "waiting": s.waiting, "waiting_since": self.waiting_since,
                "oldest_wait_seconds": self.oldest_wait_seconds}


@dataclass(frozen=True)
class LimitsReport:
    """The live limits of some queues, by queue then id; ``total`` counts every limit
    Redis holds there, more than ``rows`` when a queue has over LIMITS_SHOWN."""

    rows: list[LimitRow]
    total: int

    @property
    def complete(self) -> bool:
        return len(self.rows) >= self.total
