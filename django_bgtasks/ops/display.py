"""How tasks read to people, shared by the admin pages and ``manage.py bgtasks``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.utils.timesince import timesince, timeuntil
from django.utils.translation import gettext as _


def relative(when: datetime | None, now: datetime | None = None) -> str:
    """'in 3 minutes', '2 hours ago' or 'now' (empty for no time)."""
    if not isinstance(when, datetime):
        return ""
    now = now or datetime.now(UTC)
    if abs((when - now).total_seconds()) < 60:
        return _("now")
    # timesince joins with non-breaking spaces, which terminals and grep handle poorly.
    if when > now:
        delay = timeuntil(when, now, depth=1).replace("\xa0", " ")
        return _("in %(delay)s") % {"delay": delay}
    delay = timesince(when, now, depth=1).replace("\xa0", " ")
    return _("%(delay)s ago") % {"delay": delay}


# Data read back from Redis (damaged, or from another producer) can nest deeper than the
# stack allows to write it out again: it reads as this instead of failing the page.
TOO_DEEP = "<nested too deeply to show>"


def json_value(value: Any) -> str:
    """One argument or result as compact JSON text."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except RecursionError:
        return TOO_DEEP


def pretty_json(value: Any) -> str:
    """A value as indented JSON text, keys sorted."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    except RecursionError:
        return TOO_DEEP


def call_args(args: list[Any], kwargs: dict[str, Any]) -> str:
    """The arguments as a call list: '"a", 2, key=true'."""
    parts = [json_value(arg) for arg in args]
    parts += [f"{key}={json_value(value)}" for key, value in kwargs.items()]
    return ", ".join(parts)


def size(count: int) -> str:
    """A number of bytes for people: '812 bytes', '64 KB', '2.6 MB' (KB = 1,024 bytes)."""
    if count < 1024:
        return f"{count:,} bytes"
    value = float(count)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            return f"{value:,.1f}".removesuffix(".0") + f" {unit}"
    raise AssertionError("unreachable")


# A task's page shows at most this much of each block (arguments, result, a traceback):
# the whole is a download away.
SHOW_BYTES = 64 * 1024


@dataclass(frozen=True)
class Shown:
    """Text for a page, cut to at most ``limit`` bytes; ``total`` is the whole's size."""

    text: str
    total: int
    cut: bool
    limit: int = SHOW_BYTES


def shown(text: str, total: int | None = None, limit: int = SHOW_BYTES) -> Shown:
    """``text``, cut to ``limit`` bytes of UTF-8; ``total``: the size of the whole that
    ``text`` is the start of (a stored value read in part), else its own."""
    data = text.encode("utf-8", "replace")
    whole = len(data) if total is None else total
    if len(data) <= limit and len(data) >= whole:
        return Shown(text, whole, False, limit)
    return Shown(data[:limit].decode("utf-8", "ignore"), whole, True, limit)


def shorten(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters with a trailing '...'."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:max(limit - 3, 0)] + "..."


def first_line(text: str | None) -> str:
    """The first non-empty line of a (possibly multi-line) error."""
    return next((line.strip() for line in str(text or "").splitlines() if line.strip()), "")


def duration(seconds: float) -> str:
    """A length of time for people: '0.4s', '3m 5s', '2h 10m', '3d 4h'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s"


def milliseconds(value: float | None) -> str:
    """A measured time for people: '4 ms', '250 ms', then as duration() ('1.2s', '3m 5s');
    '–' for none (nothing observed)."""
    if value is None:
        return "–"
    return f"{value:.0f} ms" if value < 1000 else duration(value / 1000)


def percent(fraction: float | None) -> str:
    """0.125 -> '12.5%'; '–' for none (nothing to divide by)."""
    return "–" if fraction is None else f"{fraction * 100:.1f}%"
