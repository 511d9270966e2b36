"""Flow control definitions (docs/limits.md): rate strings, limit ids, and the limits one
task run is admitted under. The admission itself happens in Redis, in the claim script.

A limit counts the runs of one queue (its state lives in that queue's Redis slot, so
taking and giving back a slot are part of the transitions that start and end a run).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

RATE_UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000}
RATE_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")
MAX_RATE = 1_000_000
MAX_CONCURRENCY = 1_000_000
# A named limit: letters, digits, '_' and '-' (no '.', so no task name looks like one).
LIMIT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class Rate:
    """At most ``count`` starts per ``period_ms``: a token bucket holding ``count`` tokens
    (the burst), refilled at ``count`` per period."""

    count: int
    period_ms: int

    def __str__(self) -> str:
        unit = next(u for u, ms in RATE_UNITS.items() if ms == self.period_ms)
        return f"{self.count}/{unit}"


def parse_rate(text: str, what: str = "rate_limit") -> Rate:
    """``"100/m"`` -> Rate(100, 60000); ValueError naming ``what`` otherwise."""
    match = RATE_PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{what} must be 'N/s', 'N/m' or 'N/h' (N a whole number), "
                         f"not {text!r}")
    count = int(match.group(1))
    if not 1 <= count <= MAX_RATE:
        raise ValueError(f"{what}: the count must be from 1 to {MAX_RATE:,}, not {count}")
    return Rate(count, RATE_UNITS[match.group(2)])


def check_concurrency(value: Any, what: str = "concurrency_limit") -> int:
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 1 <= value <= MAX_CONCURRENCY:
        raise ValueError(f"{what} must be a whole number from 1 to {MAX_CONCURRENCY:,}, "
                         f"not {value!r}")
    return value


def check_limit_name(name: Any) -> str:
    if not isinstance(name, str) or not LIMIT_NAME.match(name):
        raise ValueError(f"a limit name is 1-100 letters, digits, '_' or '-', not {name!r}")
    return name


@dataclass(frozen=True)
class NamedLimit:
    """An entry of ``BGTASKS["LIMITS"]``."""

    name: str
    concurrency: int | None
    rate: Rate | None


def parse_named_limit(name: Any, spec: Any) -> NamedLimit:
    """Validate one ``LIMITS`` entry; ValueError says what is wrong."""
    check_limit_name(name)
    if not isinstance(spec, Mapping):
        raise ValueError(f"LIMITS[{name!r}] must be a dict with 'concurrency' and/or 'rate'")
    unknown = set(spec) - {"concurrency", "rate"}
    if unknown:
        raise ValueError(f"LIMITS[{name!r}] has unknown keys: {', '.join(sorted(unknown))}")
    if not spec:
        raise ValueError(f"LIMITS[{name!r}] sets neither 'concurrency' nor 'rate'")
    concurrency = spec.get("concurrency")
    if concurrency is not None:
        check_concurrency(concurrency, f"LIMITS[{name!r}]['concurrency']")
    rate = spec.get("rate")
    return NamedLimit(name, concurrency,
                      parse_rate(rate, f"LIMITS[{name!r}]['rate']") if rate is not None else None)


def key_value(func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
              task_name: str, what: str) -> str:
    """The value of ``limit_key`` / ``fair_key`` for one call, as text; errors name it."""
    try:
        value = func(*args, **kwargs)
    except Exception as exc:
        raise ValueError(f"{task_name}: {what} raised {type(exc).__name__}: {exc}") from exc
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"{task_name}: {what} must return a str or an int, not {value!r}")
    text = str(value)
    if not text or len(text) > MAX_KEY_LENGTH or not text.isprintable():
        raise ValueError(f"{task_name}: {what} must return 1-{MAX_KEY_LENGTH} printable "
                         f"characters, not {text!r}")
    return text


def task_limit_id(task_name: str, key: str | None) -> str:
    """The id of a task's own limit: its name, per key value when it has ``limit_key``."""
    return task_name if key is None else f"{task_name}[{key}]"


def limits_json(specs: list[tuple[str, int | None, Rate | None]]) -> str:
    """What the enqueue script stores: [[id, concurrency, rate count, period ms], ...],
    0 for "none"."""
    return json.dumps([[lid, concurrency or 0, rate.count if rate else 0,
                        rate.period_ms if rate else 0] for lid, concurrency, rate in specs],
                      separators=(",", ":"), ensure_ascii=False)


def normalize_options(task_name: str, concurrency_limit: Any, rate_limit: Any,
                      limit_key: Any, limits: Any, fair_key: Any,
                      ) -> tuple[Rate | None, tuple[str, ...]]:
    """Check a task's flow-control options; returns its parsed rate and its named limits
    as a tuple. ValueError / TypeError say what is wrong."""
    if concurrency_limit is not None:
        check_concurrency(concurrency_limit)
    rate = parse_rate(rate_limit) if rate_limit is not None else None
    if limit_key is not None:
        if not callable(limit_key):
            raise TypeError("limit_key must be a callable(*args, **kwargs) -> str")
        if concurrency_limit is None and rate is None:
            raise ValueError(f"{task_name}: limit_key needs concurrency_limit or rate_limit "
                             f"(the limits it applies per key value)")
    if fair_key is not None and not callable(fair_key):
        raise TypeError("fair_key must be a callable(*args, **kwargs) -> str")
    if isinstance(limits, str) or not isinstance(limits, (list, tuple)):
        raise TypeError(f"limits must be a list of limit names, not {limits!r}")
    names = tuple(check_limit_name(name) for name in limits)
    if len(set(names)) != len(names):
        raise ValueError(f"limits names a limit twice: {list(names)!r}")
    return rate, names


def request_fields(task: Any, args: list[Any], kwargs: dict[str, Any],
                   named: Mapping[str, Any]) -> tuple[str, str]:
    """(limits JSON, fair key) that enqueue stores with one run of ``task``; ('', '') for a
    task without flow control. ``named``: BGTASKS["LIMITS"]."""
    fair = (key_value(task.fair_key, args, kwargs, task.name, "fair_key")
            if task.fair_key is not None else "")
    specs: list[tuple[str, int | None, Rate | None]] = []
    if task.concurrency_limit is not None or task.rate_limit is not None:
        key = (key_value(task.limit_key, args, kwargs, task.name, "limit_key")
               if task.limit_key is not None else None)
        specs.append((task_limit_id(task.name, key), task.concurrency_limit,
                      parse_rate(task.rate_limit) if task.rate_limit is not None else None))
    for name in task.limits:
        if name not in named:
            raise ValueError(f"{task.name}: the limit {name!r} is not in BGTASKS['LIMITS']")
        limit = parse_named_limit(name, named[name])
        specs.append((name, limit.concurrency, limit.rate))
    return (limits_json(specs) if specs else ""), fair
