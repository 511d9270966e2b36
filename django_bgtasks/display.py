"""How tasks read to people, shared by the admin pages and ``manage.py bgtasks``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.utils.timesince import timesince, timeuntil
from django.utils.translation import gettext as _

from .info import TaskInfo


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


def call_args(info: TaskInfo) -> str:
    """The arguments as a call list: '"a", 2, key=true'."""
    parts = [json_value(arg) for arg in info.args]
    parts += [f"{key}={json_value(value)}" for key, value in info.kwargs.items()]
    return ", ".join(parts)


def shorten(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters with a trailing '...'."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:max(limit - 3, 0)] + "..."


def first_line(text: str | None) -> str:
    """The first non-empty line of a (possibly multi-line) error."""
    return next((line.strip() for line in str(text or "").splitlines() if line.strip()), "")
