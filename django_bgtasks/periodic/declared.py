"""Periodic entries: a registered task, a schedule, and the arguments to run it with.

Declared with ``@periodic_task`` (which also makes the function an ordinary, enqueueable
task) or in ``BGTASKS["PERIODIC"]``. A stable ``name`` identifies an entry in Redis; a
problem with an entry (bad spec, unknown time zone, duplicate name, non-JSON arguments,
unknown task) is kept for the system checks (bgtasks.E013), never raised at import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .. import registry
from ..message import TaskMessage, validate_arguments
from .schedules import Schedule, parse_schedule

CATCH_UP = ("latest", "all", "skip")
OVERLAP = ("allow", "skip")
MAX_CATCH_UP = 100  # catch_up="all" fires at most this many missed ticks


@dataclass(frozen=True)
class PeriodicEntry:
    """One periodic entry, validated: it fires ``task_name`` on ``schedule``."""

    name: str
    task_name: str
    schedule: Schedule
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    catch_up: str = "latest"
    max_lateness: float | None = None  # seconds; ticks found later than this are dropped
    overlap: str = "allow"

    @property
    def spec_id(self) -> str:
        """Changes when the schedule changes: the entry then starts counting afresh, so
        a new spec never fires the old one's backlog."""
        return hashlib.sha1(f"{self.schedule.spec}|{self.schedule.tz}".encode()).hexdigest()[:16]

    def task(self) -> Any:
        """The registered BackgroundTask this entry runs (None if not registered)."""
        return registry.lookup(self.task_name)

    def message(self, tick_ms: int, now_s: float) -> TaskMessage:
        """The message of the task that stands for ``tick_ms`` (id ``cron:<name>:<tick>``)."""
        task = self.task()
        return TaskMessage(
            id=f"cron:{self.name}:{tick_ms}", name=task.name, queue=task.queue_name,
            args=list(self.args), kwargs=dict(self.kwargs), priority=task.priority,
            max_retries=task.max_retries, timeout=task.timeout, result_ttl=task.result_ttl,
            unique_key=None, enqueued_at=now_s, run_after=tick_ms / 1000, periodic=self.name)


_declared: dict[str, PeriodicEntry] = {}
_problems: list[str] = []


def _build(name: str, task_name: str, spec: Mapping[str, Any]) -> PeriodicEntry:
    """A validated entry, or ValueError naming what is wrong."""
    schedule = parse_schedule(cron=spec.get("cron"), every=_interval(spec.get("every")),
                              tz=spec.get("tz"))
    catch_up, overlap = spec.get("catch_up", "latest"), spec.get("overlap", "allow")
    if catch_up not in CATCH_UP:
        raise ValueError(f"catch_up must be one of {', '.join(CATCH_UP)}, not {catch_up!r}")
    if overlap not in OVERLAP:
        raise ValueError(f"overlap must be one of {', '.join(OVERLAP)}, not {overlap!r}")
    max_lateness = _seconds(spec.get("max_lateness"))
    args, kwargs = list(spec.get("args", ())), dict(spec.get("kwargs") or {})
    try:
        validate_arguments(f"periodic entry {name!r}", args, kwargs)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    return PeriodicEntry(name, task_name, schedule, args, kwargs, catch_up, max_lateness,
                         overlap)


def _interval(value: Any) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    raise ValueError(f"every must be a timedelta or a number of seconds, not {value!r}")


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds <= 0:
        raise ValueError(f"max_lateness must be a positive duration, not {value!r}")
    return float(seconds)


def periodic_task(*, cron: str | None = None, every: timedelta | float | None = None,
                  tz: str | None = None, name: str | None = None, args: Sequence[Any] = (),
                  kwargs: Mapping[str, Any] | None = None, catch_up: str = "latest",
                  max_lateness: timedelta | float | None = None, overlap: str = "allow",
                  **task_options: Any) -> Callable[[Callable[..., Any]], Any]:
    """Run the decorated function on a schedule (``cron="*/5 * * * *"`` in ``tz``, or
    ``every=timedelta(...)``), from every ``runbackground`` host, once per tick.

    The function also becomes an ordinary task (``task_options`` as for
    ``@background_task``) that can be enqueued by hand. ``name`` (default: the task's
    name) identifies the entry; ``catch_up`` after downtime is "latest" (one run for the
    newest missed tick), "all" (each missed tick, at most 100) or "skip"; ticks found
    more than ``max_lateness`` late are dropped; ``overlap="skip"`` skips a tick while
    the previous tick's task is still pending or running.
    """
    from ..task import BackgroundTask, background_task

    def decorate(function: Callable[..., Any]) -> Any:
        task = function if isinstance(function, BackgroundTask) else background_task(
            **task_options)(function)
        declare(name or task.name, task.name, {
            "cron": cron, "every": every, "tz": tz, "args": args, "kwargs": kwargs,
            "catch_up": catch_up, "max_lateness": max_lateness, "overlap": overlap})
        return task

    return decorate


def declare(name: str, task_name: str, spec: Mapping[str, Any]) -> None:
    """Add an entry (keeping a problem for the system checks instead of raising)."""
    if name in _declared:
        _problems.append(f"periodic entry {name!r} is declared twice")
        return
    try:
        _declared[name] = _build(name, task_name, spec)
    except ValueError as exc:
        _problems.append(f"periodic entry {name!r}: {exc}")


def entries() -> tuple[list[PeriodicEntry], list[str]]:
    """Every valid entry (decorated, then BGTASKS["PERIODIC"]) and every problem found."""
    from ..conf import get_settings

    found, problems = dict(_declared), list(_problems)
    for index, spec in enumerate(get_settings().PERIODIC):
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            problems.append(f"BGTASKS['PERIODIC'][{index}] must be a dict with a 'name'")
            continue
        name = spec["name"]
        if name in found:
            problems.append(f"periodic entry {name!r} is declared twice")
            continue
        try:
            found[name] = _build(name, spec.get("task", ""), spec)
        except ValueError as exc:
            problems.append(f"periodic entry {name!r}: {exc}")
    for name, entry in list(found.items()):
        if entry.task() is None:
            problems.append(f"periodic entry {name!r}: no task named {entry.task_name!r} is "
                            f"registered (is it in an installed app's tasks module?)")
            del found[name]
    return list(found.values()), problems
