"""The task message: what enqueue writes and the worker reads. JSON only, never pickle."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from .exceptions import InvalidTaskMessage

MESSAGE_VERSION = 1


def _json_problem(value: Any, path: str) -> str | None:
    """Describe why ``value`` would not round-trip through JSON, or None if it would."""
    if value is None or isinstance(value, (bool, str, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value!r}, which JSON cannot hold"
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            problem = _json_problem(item, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return (f"{path} has the key {key!r} of type {type(key).__name__}; JSON object "
                        f"keys must be str")
            problem = _json_problem(item, f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    return f"{path} is of type {type(value).__name__}, which is not JSON serializable"


def validate_arguments(task_name: str, args: tuple | list, kwargs: dict[str, Any]) -> None:
    """Raise TypeError naming the first argument that would not round-trip through JSON."""
    for index, value in enumerate(args):
        problem = _json_problem(value, f"argument {index}")
        if problem:
            raise TypeError(f"{task_name}: {problem} (task arguments must be JSON: "
                            f"str, int, float, bool, None, list, dict with str keys)")
    for key, value in kwargs.items():
        problem = _json_problem(value, f"keyword argument {key!r}")
        if problem:
            raise TypeError(f"{task_name}: {problem} (task arguments must be JSON: "
                            f"str, int, float, bool, None, list, dict with str keys)")


def validate_result(task_name: str, value: Any) -> None:
    """Raise TypeError when a task's return value is not JSON."""
    problem = _json_problem(value, "the return value")
    if problem:
        raise TypeError(f"{task_name}: {problem}; a task must return JSON-serializable data")


# One encoder for every call: json.dumps with options builds a new encoder each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """Compact JSON, as stored in Redis."""
    return _ENCODER.encode(value)


@dataclass(frozen=True)
class TaskMessage:
    """The immutable part of a task, stored as JSON at enqueue."""

    id: str
    name: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    max_retries: int
    timeout: float
    result_ttl: float | None
    unique_key: str | None
    enqueued_at: float  # the producer's clock (epoch seconds): informational only
    run_after: float | None = None  # the requested due time (epoch seconds), if any
    v: int = field(default=MESSAGE_VERSION)

    def encode(self) -> str:
        """The message as JSON text."""
        # Field by field: dataclasses.asdict deep-copies every argument (a third of the
        # cost of an enqueue, measured).
        return dumps({name: getattr(self, name) for name in _FIELDS})

    @classmethod
    def decode(cls, raw: bytes | str | None) -> TaskMessage:
        """Parse a stored message; raise InvalidTaskMessage with a readable reason."""
        if raw is None:
            raise InvalidTaskMessage("the task's message is missing from Redis")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidTaskMessage(f"the task's message is not JSON ({exc}): "
                                     f"{shorten_raw(raw)}") from None
        if not isinstance(data, dict):
            raise InvalidTaskMessage(f"the task's message is not a JSON object: "
                                     f"{shorten_raw(raw)}")
        expected = {
            "id": str, "name": str, "queue": str, "args": list, "kwargs": dict,
            "priority": int, "max_retries": int, "timeout": (int, float),
        }
        for key, kind in expected.items():
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise InvalidTaskMessage(f"the task's message has no valid {key!r}: "
                                         f"{shorten_raw(raw)}")
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("result_ttl", None)
        values.setdefault("unique_key", None)
        values.setdefault("enqueued_at", 0.0)
        return cls(**values)


_FIELDS = tuple(TaskMessage.__dataclass_fields__)


def shorten_raw(raw: bytes | str, limit: int = 200) -> str:
    """A printable excerpt of undecodable data, for error messages and the admin."""
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    text = repr(text)
    return text if len(text) <= limit else text[:limit] + "..."
