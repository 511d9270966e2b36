"""The task message: what enqueue writes and the worker reads. JSON only, never pickle."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .exceptions import InvalidTaskMessage, MessageTooLarge

MESSAGE_VERSION = 1
# The most a message's headers may take, as JSON: they travel with every claim, and are
# meant for a trace context or a tenant's name, not for data (that is what arguments are).
MAX_HEADERS_BYTES = 8 * 1024


def _is_utf8(text: str) -> bool:
    # Redis stores bytes: a lone surrogate ('\ud800') has no UTF-8 form.
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _json_problem(value: Any, path: str) -> str | None:
    """Describe why ``value`` would not round-trip through JSON, or None if it would."""
    if isinstance(value, str):
        return None if _is_utf8(value) else (
            f"{path} holds a lone surrogate ({value!r}), which is not UTF-8 text")
    if value is None or isinstance(value, (bool, int)):
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
            if not _is_utf8(key):
                return f"{path} has the key {key!r}, a lone surrogate, which is not UTF-8 text"
            problem = _json_problem(item, f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    return f"{path} is of type {type(value).__name__}, which is not JSON serializable"


def validate_arguments(task_name: str, args: Sequence[Any], kwargs: Mapping[str, Any],
                       ) -> None:
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


def validate_headers(task_name: str, headers: Any) -> dict[str, str]:
    """The headers as a plain dict; TypeError or ValueError naming the first bad header
    (a non-str name or value, an empty name, text that is not UTF-8), or ValueError when
    all of them take more than MAX_HEADERS_BYTES as JSON."""
    if not isinstance(headers, Mapping):
        raise TypeError(f"{task_name}: headers must be a mapping of str to str, not "
                        f"{type(headers).__name__}")
    for name, value in headers.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"{task_name}: the header name {name!r} is not a non-empty str")
        if not isinstance(value, str):
            raise TypeError(f"{task_name}: the header {name!r} has a value of type "
                            f"{type(value).__name__}; header values must be str")
        if not (_is_utf8(name) and _is_utf8(value)):
            raise ValueError(f"{task_name}: the header {name!r} holds a lone surrogate, "
                             f"which is not UTF-8 text")
    plain = dict(headers)
    size = len(dumps(plain).encode())
    if size > MAX_HEADERS_BYTES:
        largest = max(plain, key=lambda n: len(n) + len(plain[n]))
        raise ValueError(f"{task_name}: the headers take {size:,} bytes as JSON, over "
                         f"{MAX_HEADERS_BYTES:,} (the largest is {largest!r}); nothing was "
                         f"enqueued. Headers are for small values such as a trace context.")
    return plain


def validate_result(task_name: str, value: Any) -> None:
    """Raise TypeError when a task's return value is not JSON."""
    problem = _json_problem(value, "the return value")
    if problem:
        raise TypeError(f"{task_name}: {problem}; a task must return JSON-serializable data")


def check_size(text: str, limit: int, what: str) -> None:
    """Raise MessageTooLarge when the message ``text`` is over ``limit`` bytes of UTF-8."""
    if len(text) * 4 <= limit:  # at most 4 bytes a character: most are never encoded here
        return
    size = len(text.encode())
    if size > limit:
        raise MessageTooLarge(
            f"{what}: its message is {size:,} bytes, over BGTASKS['MAX_MESSAGE_BYTES'] = "
            f"{limit:,} bytes; nothing was enqueued. Pass a reference to the data (a primary "
            f"key, a file or object-store path) instead of the data, or raise the setting.")


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
    # The periodic entry that fired this task (its run_after is then the tick it stands
    # for); only written when set, so ordinary messages do not grow.
    periodic: str | None = None
    # The workflow this task is a member of (docs/workflows.md): its worker always sends
    # the return value, which the workflow's next step may take. Only written when set.
    workflow: str | None = None
    # Integrations' values (a trace context...; docs/tracing.md), never the task's
    # arguments: str -> str, only written when not empty, so other messages are unchanged.
    headers: dict[str, str] | None = None

    def encode(self) -> str:
        """The message as JSON text."""
        # Field by field: dataclasses.asdict deep-copies every argument (a third of the
        # cost of an enqueue, measured).
        data = {name: getattr(self, name) for name in _FIELDS}
        if self.periodic is not None:
            data["periodic"] = self.periodic
        if self.workflow is not None:
            data["workflow"] = self.workflow
        if self.headers:
            data["headers"] = self.headers
        return dumps(data)

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
        except RecursionError:
            raise InvalidTaskMessage(f"the task's message is nested too deeply to read: "
                                     f"{shorten_raw(raw)}") from None
        if not isinstance(data, dict):
            raise InvalidTaskMessage(f"the task's message is not a JSON object: "
                                     f"{shorten_raw(raw)}")
        for key, valid in _CHECKS.items():
            if not valid(data.get(key, _ABSENT)):
                raise InvalidTaskMessage(f"the task's message has no valid {key!r}: "
                                         f"{shorten_raw(raw)}")
        if _has_lone_surrogate(raw, data):
            raise InvalidTaskMessage(f"the task's message holds text that is not valid "
                                     f"Unicode: {shorten_raw(raw)}")
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("result_ttl", None)
        values.setdefault("unique_key", None)
        values.setdefault("enqueued_at", 0.0)
        return cls(**values)


def _is_number(value: Any, positive: bool = False) -> bool:
    """A finite int or float (not a bool); above zero when ``positive``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and (value > 0 or not positive)
    except OverflowError:  # an int beyond any float
        return False


def _is(kind: type) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, kind) and not isinstance(value, bool)


_ABSENT = object()

# What each field of a stored message must hold for the worker to run it. Anything else
# is outside damage: the task goes dead at once rather than fail later in the worker (a
# str result_ttl, a NaN timeout...).
_CHECKS = {
    "id": _is(str), "name": _is(str), "queue": _is(str), "args": _is(list),
    "kwargs": _is(dict), "priority": _is(int), "max_retries": _is(int),
    "timeout": lambda v: _is_number(v, positive=True),
    "result_ttl": lambda v: v in (None, _ABSENT) or _is_number(v, positive=True),
    "unique_key": lambda v: v in (None, _ABSENT) or isinstance(v, str),
    "enqueued_at": lambda v: v is _ABSENT or _is_number(v),
    "run_after": lambda v: v in (None, _ABSENT) or _is_number(v),
    "periodic": lambda v: v in (None, _ABSENT) or isinstance(v, str),
    "workflow": lambda v: v in (None, _ABSENT) or isinstance(v, str),
    "headers": lambda v: v in (None, _ABSENT) or (isinstance(v, dict) and all(
        isinstance(value, str) for value in v.values())),
}


def _has_lone_surrogate(raw: bytes | str, data: Any) -> bool:
    """True when the decoded text holds half a UTF-16 pair (from a \\ud800 escape, or its
    bytes, which json.loads lets through): it cannot be written out as UTF-8 again, in a
    log line or a page. Only text with an escape or such bytes pays for the full check."""
    probe = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    if b"\\u" not in probe and b"\xed" not in probe:
        return False
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except RecursionError:
        pass  # cannot tell; the readers of such data cope with it (display.json_value)
    return False


_FIELDS = tuple(f for f in TaskMessage.__dataclass_fields__
                if f not in ("periodic", "workflow", "headers"))


def shorten_raw(raw: bytes | str, limit: int = 200) -> str:
    """A printable excerpt of undecodable data, for error messages and the admin."""
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    text = repr(text)
    return text if len(text) <= limit else text[:limit] + "..."
