"""TaskInfo: what a task looks like from outside, built from its stored record."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .broker.keys import STATES
from .broker.types import TaskRecord
from .exceptions import InvalidTaskMessage
from .message import TaskMessage, shorten_raw

__all__ = ["STATES", "TaskInfo", "TaskProgress", "ms_to_datetime", "seconds_to_datetime"]


def ms_to_datetime(value: Any) -> datetime | None:
    """Redis milliseconds as an aware UTC datetime (None when unset or not a time)."""
    return _to_datetime(value, 1000)


def seconds_to_datetime(value: Any) -> datetime | None:
    """A message's epoch seconds (a producer's float) as an aware UTC datetime, exactly:
    through milliseconds it could move by a microsecond."""
    return _to_datetime(value, 1)


def _to_datetime(value: Any, per_second: int) -> datetime | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        return None  # `not >` also turns away NaN
    try:
        return datetime.fromtimestamp(value / per_second, tz=UTC)
    except (OverflowError, ValueError, OSError):  # damaged data: beyond any calendar
        return None


@dataclass(frozen=True)
class TaskProgress:
    """How far a run got, as its task last reported (``current_task().set_progress``)."""

    current: float
    total: float | None
    message: str | None
    updated_at: datetime | None  # when the worker wrote it (Redis' clock)

    @property
    def fraction(self) -> float | None:
        """current / total, within 0..1 (None without a positive total)."""
        if not self.total or self.total <= 0:
            return None
        return min(1.0, max(0.0, self.current / self.total))

    @classmethod
    def local(cls, progress: tuple[float, float | None, str | None] | None,
              ) -> TaskProgress | None:
        """What an EAGER run set (nothing written anywhere: no update time)."""
        return None if progress is None else cls(*progress, updated_at=None)

    @classmethod
    def from_stored(cls, value: Any) -> TaskProgress | None:
        """From a record's ``progress`` field; None when absent or damaged."""
        if not isinstance(value, dict) or not _is_number(value.get("current")):
            return None
        total, message = value.get("total"), value.get("message")
        return cls(current=value["current"], total=total if _is_number(total) else None,
                   message=message if isinstance(message, str) else None,
                   updated_at=ms_to_datetime(value.get("updated_at")))


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and value == value and abs(value) != float("inf"))


@dataclass(frozen=True)
class TaskInfo:
    """A snapshot of one task."""

    id: str
    name: str
    queue_name: str
    state: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    attempts: int
    max_retries: int
    enqueued_at: datetime | None
    run_after: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str
    traceback: str
    result: Any
    errors: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    # The worker of the latest attempt (its id; "" before the first).
    worker: str = field(default="", repr=False)
    # Set when the stored message could not be decoded: why, and the raw bytes.
    message_error: str = field(default="", repr=False)
    # The run_after the task was enqueued with (None: at once); run_after moves with retries.
    requested_run_after: datetime | None = field(default=None, repr=False)
    # Flow control (docs/limits.md): the ids of the limits the task runs under, its fair
    # key, and while it waits ('waiting'), why: "limit stripe: 20/20 running".
    limits: tuple[str, ...] = field(default=(), repr=False)
    fair_key: str = field(default="", repr=False)
    waiting_for: str = field(default="", repr=False)
    waiting_since: datetime | None = field(default=None, repr=False)
    # Not started by then, it is not run ('expired'): from the ``expires`` option.
    expires_at: datetime | None = field(default=None, repr=False)
    # How far the latest run got (TaskProgress), kept once it ended; None if never reported.
    progress: TaskProgress | None = field(default=None, repr=False)
    # Who cancelled it, or asked a running task to stop, and when (None: nobody).
    cancelled_by: str | None = field(default=None, repr=False)
    cancelled_at: datetime | None = field(default=None, repr=False)
    # The workflows it is a member of, or a dependency of (docs/workflows.md).
    workflows: tuple[str, ...] = field(default=(), repr=False)
    # The message's headers (integrations' values, such as a trace context; not arguments).
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def cancel_requested(self) -> bool:
        """True while the task runs with a cancel asked for (its worker stops it)."""
        return self.state == "active" and self.cancelled_at is not None

    @classmethod
    def from_message(cls, msg: TaskMessage, state: str, enqueued_ms: int | None = None,
                     expires_at: datetime | None = None) -> TaskInfo:
        """The info known from the message, with the enqueue time Redis stored when given
        (otherwise the producer's clock: before the write, or without one)."""
        return cls(
            id=msg.id, name=msg.name, queue_name=msg.queue, state=state, args=msg.args,
            kwargs=msg.kwargs, priority=msg.priority, attempts=0,
            max_retries=msg.max_retries,
            enqueued_at=ms_to_datetime(enqueued_ms or msg.enqueued_at * 1000),
            run_after=ms_to_datetime((msg.run_after or 0) * 1000),
            started_at=None, finished_at=None, last_error="", traceback="", result=None,
            requested_run_after=seconds_to_datetime(msg.run_after), expires_at=expires_at,
            workflows=(msg.workflow,) if msg.workflow else (),
            headers=dict(msg.headers) if msg.headers else {},
        )

    @classmethod
    def from_record(cls, record: TaskRecord) -> TaskInfo:
        """Build from stored data; undecodable parts become readable placeholders."""
        meta = _load_json(record.raw_info, dict) or {}
        errors = tuple(e for e in (_load_json(record.raw_errors, list) or [])
                       if isinstance(e, dict))
        try:
            msg: TaskMessage | None = TaskMessage.decode(record.raw_message)
            message_error = ""
        except InvalidTaskMessage as exc:
            msg, message_error = None, str(exc)
        result = _load_json(record.raw_result, object) if record.raw_result else None
        last = errors[-1] if errors else {}
        return cls(
            id=record.id,
            name=msg.name if msg else "<undecodable message>",
            queue_name=record.queue,
            state=meta["state"] if meta.get("state") in STATES else "unknown",
            args=msg.args if msg else [],
            kwargs=msg.kwargs if msg else {},
            priority=_int(meta.get("priority"), msg.priority if msg else 0),
            attempts=_int(meta.get("attempts"), 0),
            max_retries=_int(meta.get("max_retries"), msg.max_retries if msg else 0),
            enqueued_at=ms_to_datetime(meta.get("enqueued_at")),
            run_after=ms_to_datetime(meta.get("run_after")),
            started_at=ms_to_datetime(meta.get("started_at")),
            finished_at=ms_to_datetime(meta.get("finished_at")),
            last_error=str(meta.get("last_error") or ""),
            traceback=str(last.get("traceback") or ""),
            result=result,
            errors=errors,
            worker=meta["worker"] if isinstance(meta.get("worker"), str) else "",
            message_error=message_error,
            requested_run_after=seconds_to_datetime(msg.run_after) if msg else None,
            limits=_limit_ids(meta.get("limits")),
            fair_key=meta["fair"] if isinstance(meta.get("fair"), str) else "",
            waiting_for=(meta["waiting_for"] if meta.get("state") == "waiting"
                         and isinstance(meta.get("waiting_for"), str) else ""),
            waiting_since=(ms_to_datetime(meta.get("waiting_since"))
                           if meta.get("state") == "waiting" else None),
            expires_at=ms_to_datetime(meta.get("expires_at")),
            progress=TaskProgress.from_stored(meta.get("progress")),
            workflows=_workflow_ids(meta.get("wf"), msg),
            headers=dict(msg.headers) if msg and msg.headers else {},
            **_cancel_fields(meta.get("cancel")),
        )


def _workflow_ids(value: Any, msg: TaskMessage | None) -> tuple[str, ...]:
    """The workflows of a record's ``wf`` ([[workflow id, index], ...]), its own first."""
    found = [msg.workflow] if msg is not None and msg.workflow else []
    for target in value if isinstance(value, list) else ():
        if (isinstance(target, list) and target and isinstance(target[0], str)
                and target[0] not in found):
            found.append(target[0])
    return tuple(found)


def _cancel_fields(value: Any) -> dict[str, Any]:
    """cancelled_by / cancelled_at from a record's ``cancel`` ({by, at}); a damaged one
    reads as who is unknown (at kept when it is a time)."""
    if not isinstance(value, dict):
        return {}
    at = ms_to_datetime(value.get("at"))
    if at is None:
        return {}
    by = value.get("by")
    return {"cancelled_by": by if isinstance(by, str) and by else None, "cancelled_at": at}


def _limit_ids(value: Any) -> tuple[str, ...]:
    """The limit ids of a stored record's limits ([[id, ...], ...]); () when damaged."""
    if not isinstance(value, list):
        return ()
    return tuple(spec[0] for spec in value
                 if isinstance(spec, list) and spec and isinstance(spec[0], str))


def _int(value: Any, default: int) -> int:
    """A number from a stored record; damaged data falls back instead of raising."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    try:
        return int(value)
    except (ValueError, OverflowError):  # NaN, infinity
        return default


def _load_json(raw: bytes | None, kind: type) -> Any:
    if raw is None:
        return None
    # The scripts' cjson passes invalid UTF-8 through, and a \ud800 escape decodes to half a
    # UTF-16 pair: read both as U+FFFD / '?', so that the record stays readable and every
    # string in it can be written out again (a page, a log line).
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        value = json.loads(text)
        if "\\u" in text:
            value = json.loads(json.dumps(value, ensure_ascii=False).encode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None if kind is not object else f"<undecodable: {shorten_raw(raw)}>"
    return value if isinstance(value, kind) else None
