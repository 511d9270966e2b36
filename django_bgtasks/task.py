"""@background_task and BackgroundTask: define, enqueue and look up tasks."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from asgiref.sync import AsyncToSync, sync_to_async
from django.db import DEFAULT_DB_ALIAS, transaction

from . import registry, signals
from .broker import get_broker, get_broker_for_enqueue
from .broker.aio import aget_broker
from .broker.keys import validate_queue_name
from .broker.types import Awaited, EnqueueOutcome, EnqueueRequest, TaskRecord
from .broker.waiting import DELETED
from .conf import get_settings
from .context import running
from .coroutines import run_to_completion
from .exceptions import BgTasksError, EnqueueError, TaskAlreadyExists, TaskNotFound
from .hooks import around_enqueue, configured_hooks
from .info import TaskInfo, TaskProgress, ms_to_datetime
from .limits import normalize_options, request_fields
from .message import (
    TaskMessage,
    check_size,
    dumps,
    validate_arguments,
    validate_headers,
    validate_result,
)
from .testing.capture import active_capture
from .workflows.calls import TaskCall
from .workflows.deps import check_depends_on, enqueue_dependent

Seconds = float | int | timedelta

# The worker id an EAGER run reports (no worker runs it).
EAGER_WORKER_ID = "eager"
MAX_CANCELLED_BY = 200  # characters of cancel(by=...): a name, not a document

logger = logging.getLogger("django_bgtasks")


def _seconds(value: Seconds | None, what: str, allow_zero: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be seconds or a timedelta, not {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{what} must be positive, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class BackgroundTask:
    """A function that can run in the background; see ``background_task``."""

    func: Callable[..., Any]
    name: str
    queue_name: str = "default"
    priority: int = 0
    max_retries: int = 25
    timeout: float = 1800
    retry_backoff: Callable[[int], float] | None = None
    unique_for: float | None = None
    result_ttl: float | None = None
    run_after: datetime | float | None = None  # float: seconds from now (Redis' clock)
    task_id: str | None = None
    # Flow control (docs/limits.md): at most this many runs at once / starts per period,
    # per value of limit_key when given; named limits of BGTASKS["LIMITS"]; round robin
    # between the values of fair_key within the queue.
    concurrency_limit: int | None = None
    rate_limit: str | None = None
    limit_key: Callable[..., Any] | None = None
    limits: tuple[str, ...] = ()
    fair_key: Callable[..., Any] | None = None
    # Not started by then, it is not run (state 'expired'): a timedelta counts from the
    # enqueue, on Redis' clock; an aware datetime is absolute.
    expires: timedelta | datetime | None = None
    # Starts only once these tasks (ids) have succeeded; ends cancelled when one of them
    # ends otherwise (docs/workflows.md).
    depends_on: tuple[str, ...] = ()
    # Written into each run's message (str -> str; docs/tracing.md): given as a mapping,
    # kept as (name, value) pairs so that the task stays hashable.
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        validate_queue_name(self.queue_name)
        if isinstance(self.priority, bool) or not isinstance(self.priority, int) \
                or not -100 <= self.priority <= 100:
            raise ValueError(f"priority must be an integer from -100 to 100, not "
                             f"{self.priority!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) \
                or self.max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, not {self.max_retries!r}")
        if self.retry_backoff is not None and not callable(self.retry_backoff):
            raise TypeError("retry_backoff must be a callable(attempt) -> seconds")
        if self.task_id is not None and (not isinstance(self.task_id, str) or not self.task_id):
            raise ValueError(f"task_id must be a non-empty string, not {self.task_id!r}")
        set_ = object.__setattr__
        _, names = normalize_options(self.name, self.concurrency_limit, self.rate_limit,
                                     self.limit_key, self.limits, self.fair_key)
        set_(self, "limits", names)
        set_(self, "timeout", _seconds(self.timeout, "timeout"))
        set_(self, "unique_for", _seconds(self.unique_for, "unique_for"))
        set_(self, "result_ttl", _seconds(self.result_ttl, "result_ttl"))
        if isinstance(self.run_after, datetime):
            if self.run_after.tzinfo is None:
                raise ValueError("run_after must be an aware datetime (or seconds/timedelta)")
        else:
            set_(self, "run_after", _seconds(self.run_after, "run_after", allow_zero=True))
        _check_expires(self.expires)
        if self.depends_on:
            set_(self, "depends_on", check_depends_on(self.depends_on))
        if self.headers:
            given = dict(self.headers) if isinstance(self.headers, tuple) else self.headers
            set_(self, "headers", tuple(validate_headers(self.name, given).items()))
        set_(self, "__doc__", getattr(self.func, "__doc__", None))
        set_(self, "__wrapped__", self.func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function inline, as if it were not a task."""
        return self.func(*args, **kwargs)

    def using(self, **options: Any) -> BackgroundTask:
        """A copy with other options (queue_name, priority, run_after, task_id, ...)."""
        allowed = {"queue_name", "priority", "max_retries", "timeout", "retry_backoff",
                   "unique_for", "result_ttl", "run_after", "task_id", "concurrency_limit",
                   "rate_limit", "limit_key", "limits", "fair_key", "expires", "depends_on",
                   "headers"}
        unknown = set(options) - allowed
        if unknown:
            raise TypeError(f"using() got unknown options: {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **options)

    def s(self, *args: Any, **kwargs: Any) -> TaskCall:
        """A call of this task for a workflow (chain, group, chord), not enqueued yet;
        its arguments are checked now."""
        return TaskCall.make(self, args, kwargs)

    # -- enqueue ----------------------------------------------------------------------

    def enqueue(self, *args: Any, **kwargs: Any) -> TaskInfo:
        """Put a run of this task in Redis; returns its TaskInfo (``.id`` at once)."""
        validate_arguments(self.name, args, kwargs)
        return self._enqueue([self._message(list(args), kwargs)])[0]

    def enqueue_many(self, items: Iterable[tuple[Sequence[Any], Mapping[str, Any]]],
                     ) -> list[TaskInfo]:
        """Enqueue one run per ``(args, kwargs)`` item, in one round trip per 1,000.

        Every item's arguments are checked before anything is written. Not for tasks with
        a ``task_id`` or ``unique_for`` (use ``enqueue`` for those).
        """
        messages = self._many_messages(items)
        return self._enqueue(messages) if messages else []

    def _many_messages(self, items: Iterable[tuple[Sequence[Any], Mapping[str, Any]]],
                       ) -> list[TaskMessage]:
        if self.task_id is not None or self.unique_for is not None:
            raise ValueError(f"{self.name}: enqueue_many() does not take task_id or "
                             f"unique_for; use enqueue() for each task")
        messages = []
        for position, item in enumerate(items):
            try:
                args, kwargs = item
            except (TypeError, ValueError):
                raise TypeError(f"{self.name}: enqueue_many() item {position} must be an "
                                f"(args, kwargs) pair, not {item!r}") from None
            validate_arguments(f"{self.name} (item {position})", args, kwargs)
            messages.append(self._message(list(args), dict(kwargs)))
        return messages

    def _enqueue(self, messages: list[TaskMessage]) -> list[TaskInfo]:
        hooks = configured_hooks()
        if hooks:  # without any, this test is all an enqueue pays for them
            with around_enqueue(hooks, messages) as messages:
                return self._enqueue_now(messages)
        return self._enqueue_now(messages)

    def _enqueue_now(self, messages: list[TaskMessage]) -> list[TaskInfo]:
        cfg = get_settings()
        capture = active_capture(cfg)
        if capture is not None:  # wins over EAGER: recorded, not run, nothing written
            self._check_sizes([msg.encode() for msg in messages], cfg.MAX_MESSAGE_BYTES)
            return capture.record(self, messages, self._waits_for_commit())
        if cfg.EAGER:
            return self._enqueue_eagerly(messages, cfg.MAX_MESSAGE_BYTES)
        if self.depends_on:
            return self._enqueue_dependents(messages)
        requests = self._requests(messages, cfg.MAX_MESSAGE_BYTES)
        deferred = self._defer_to_commit(messages, requests)
        if deferred is not None:
            return deferred
        return self._send(messages, requests)

    def _enqueue_dependents(self, messages: list[TaskMessage]) -> list[TaskInfo]:
        if (self._waits_for_commit()
                and transaction.get_connection(DEFAULT_DB_ALIAS).in_atomic_block):
            transaction.on_commit(lambda: [enqueue_dependent(self, m) for m in messages])
            return [TaskInfo.from_message(m, "blocked") for m in messages]
        return [enqueue_dependent(self, msg) for msg in messages]

    def _enqueue_eagerly(self, messages: list[TaskMessage], limit: int) -> list[TaskInfo]:
        # refused as Redis would refuse it: a project's tests see it
        self._check_sizes([msg.encode() for msg in messages], limit)
        return [self._run_eagerly(msg) for msg in messages]

    def _requests(self, messages: list[TaskMessage], limit: int) -> list[EnqueueRequest]:
        """The broker's requests for ``messages``, refused whole if one is too large."""
        requests = [self._request(msg) for msg in messages]
        self._check_sizes([req.message for req in requests], limit)
        return requests

    def _defer_to_commit(self, messages: list[TaskMessage], requests: list[EnqueueRequest],
                         ) -> list[TaskInfo] | None:
        """Inside a transaction of this thread (and ENQUEUE_ON_COMMIT): the write waits for
        the commit, and the infos the tasks will have; None: write now."""
        if not (self._waits_for_commit()
                and transaction.get_connection(DEFAULT_DB_ALIAS).in_atomic_block):
            return None
        transaction.on_commit(lambda: self._send(messages, requests))
        expires_at = self._expires_at(None)
        return [TaskInfo.from_message(m, "scheduled" if self._due_later(m) else "pending",
                                      expires_at=expires_at) for m in messages]

    # -- enqueue from async code --------------------------------------------------------

    async def aenqueue(self, *args: Any, **kwargs: Any) -> TaskInfo:
        """enqueue() for async code: the same checks, errors and signal, written through
        redis.asyncio on the running event loop."""
        validate_arguments(self.name, args, kwargs)
        return (await self._aenqueue([self._message(list(args), kwargs)]))[0]

    async def aenqueue_many(self, items: Iterable[tuple[Sequence[Any], Mapping[str, Any]]],
                            ) -> list[TaskInfo]:
        """enqueue_many() for async code."""
        messages = self._many_messages(items)
        return await self._aenqueue(messages) if messages else []

    async def _aenqueue(self, messages: list[TaskMessage]) -> list[TaskInfo]:
        hooks = configured_hooks()
        if hooks:  # the hooks' blocks run on the event loop, around the awaited write
            with around_enqueue(hooks, messages) as messages:
                return await self._aenqueue_now(messages)
        return await self._aenqueue_now(messages)

    async def _aenqueue_now(self, messages: list[TaskMessage]) -> list[TaskInfo]:
        cfg = get_settings()
        capture = active_capture(cfg)
        if capture is not None:  # as enqueue(); a transaction can only be a waiting thread's
            self._check_sizes([msg.encode() for msg in messages], cfg.MAX_MESSAGE_BYTES)
            if _sync_thread_waits():
                return await sync_to_async(capture.record)(self, messages,
                                                           self._waits_for_commit())
            return capture.record(self, messages, False)
        if cfg.EAGER:  # the function runs as Django runs sync code called from async code
            return await sync_to_async(self._enqueue_eagerly)(messages, cfg.MAX_MESSAGE_BYTES)
        if self.depends_on:  # several scripts in a row, through the sync client
            return await sync_to_async(self._enqueue_dependents)(messages)
        requests = self._requests(messages, cfg.MAX_MESSAGE_BYTES)
        # A transaction is never open in the loop's thread (Django refuses atomic() there);
        # it may be in a sync thread that waits for this coroutine (async_to_sync): look
        # there, in that thread, as enqueue() would.
        if _sync_thread_waits():
            deferred = await sync_to_async(self._defer_to_commit)(messages, requests)
            if deferred is not None:
                return deferred
        try:
            outcomes = await (await aget_broker()).enqueue_many(requests)
        except BgTasksError as exc:
            raise self._enqueue_error(requests, exc) from exc
        return self._written(messages, requests, outcomes)

    def _check_sizes(self, messages: list[str], limit: int) -> None:
        """Refuse the whole call, before anything is written, if a message is too large."""
        for position, text in enumerate(messages):
            check_size(text, limit, self.name if len(messages) == 1 else
                       f"{self.name} (item {position}; nothing of the batch was enqueued)")

    def _waits_for_commit(self) -> bool:
        """Whether an enqueue inside a transaction waits for its commit (a subclass may
        decide otherwise, as the Django Tasks adapter does)."""
        return get_settings().ENQUEUE_ON_COMMIT

    def _message(self, args: list[Any], kwargs: dict[str, Any], task_id: str | None = None,
                 workflow: str | None = None) -> TaskMessage:
        """The message of a run; a workflow member's id and workflow are given (built
        once: a copy per member cost a third of a group's enqueue)."""
        now = time.time()
        run_after = None
        if isinstance(self.run_after, datetime):
            run_after = self.run_after.timestamp()
        elif self.run_after:
            run_after = now + self.run_after
        return TaskMessage(
            id=task_id or self.task_id or uuid.uuid4().hex, name=self.name,
            queue=self.queue_name,
            args=args, kwargs=kwargs, priority=self.priority, max_retries=self.max_retries,
            timeout=self.timeout, result_ttl=self.result_ttl, unique_key=self._unique_key(
                args, kwargs), enqueued_at=now, run_after=run_after, workflow=workflow,
            headers=dict(self.headers) if self.headers else None,
        )

    def _unique_key(self, args: list[Any], kwargs: dict[str, Any]) -> str | None:
        if self.unique_for is None:
            return None
        if self.task_id:
            return f"id:{self.task_id}"
        canonical = json.dumps([self.name, args, kwargs], sort_keys=True, separators=(",", ":"))
        return f"{self.name}:{hashlib.sha1(canonical.encode()).hexdigest()}"

    def _due_later(self, msg: TaskMessage) -> bool:
        return msg.run_after is not None and msg.run_after > msg.enqueued_at

    def _request(self, msg: TaskMessage, workflow: str = "", blocked: bool = False,
                 ) -> EnqueueRequest:
        run_at_ms = delay_ms = None
        if isinstance(self.run_after, datetime):
            run_at_ms = int(self.run_after.timestamp() * 1000)
        elif self.run_after:
            delay_ms = int(self.run_after * 1000)
        limits = fair = ""
        if self.limits or self.fair_key or self.concurrency_limit or self.rate_limit:
            limits, fair = request_fields(self, msg.args, msg.kwargs, get_settings().LIMITS)
        return EnqueueRequest(
            queue=msg.queue, id=msg.id, message=msg.encode(), priority=msg.priority,
            max_retries=msg.max_retries, run_at_ms=run_at_ms, delay_ms=delay_ms,
            unique_key=msg.unique_key,
            unique_ttl_ms=int(self.unique_for * 1000) if self.unique_for else None,
            limits=limits, fair_key=fair, expires=self._expires_field(), workflow=workflow,
            blocked=blocked,
        )

    def _expires_field(self) -> str:
        """The enqueue script's expiry argument: '' none, ms from Redis' now, or '@' and
        an absolute time in ms."""
        if self.expires is None:
            return ""
        if isinstance(self.expires, datetime):
            return f"@{int(self.expires.timestamp() * 1000)}"
        return str(int(self.expires.total_seconds() * 1000))

    def _expires_at(self, enqueued_ms: int | None) -> datetime | None:
        """When a run enqueued at ``enqueued_ms`` (Redis' clock, as stored) expires."""
        if isinstance(self.expires, datetime) or self.expires is None:
            return self.expires
        if enqueued_ms is None:  # not written yet (on commit, captured): the local clock
            return datetime.now(UTC) + self.expires
        base = datetime.fromtimestamp(enqueued_ms / 1000, tz=UTC)
        return base + timedelta(milliseconds=int(self.expires.total_seconds() * 1000))

    def _send(self, messages: list[TaskMessage], requests: list[EnqueueRequest],
              ) -> list[TaskInfo]:
        try:
            broker = get_broker_for_enqueue()  # a cluster's client connects as it is made
            outcomes = (broker.enqueue_many(requests) if len(requests) > 1
                        else [broker.enqueue(requests[0])])
        except BgTasksError as exc:
            raise self._enqueue_error(requests, exc) from exc
        return self._written(messages, requests, outcomes)

    def _enqueue_error(self, requests: list[EnqueueRequest], exc: BgTasksError) -> EnqueueError:
        what = f"id {requests[0].id}" if len(requests) == 1 else f"{len(requests)} tasks"
        return EnqueueError(f"could not enqueue {self.name} ({what}): {exc}")

    def _written(self, messages: list[TaskMessage], requests: list[EnqueueRequest],
                 outcomes: list[EnqueueOutcome]) -> list[TaskInfo]:
        """The infos of tasks the broker answered for, announced; TaskAlreadyExists for
        the first the broker refused."""
        infos = []
        for msg, req, outcome in zip(messages, requests, outcomes, strict=True):
            if outcome.status == "exists":
                raise TaskAlreadyExists(
                    f"a task with id {req.id!r} already exists in queue {req.queue!r}",
                    outcome.holder_id)
            if outcome.status == "locked":
                raise TaskAlreadyExists(
                    f"{self.name} is unique for {self.unique_for:g}s and task "
                    f"{outcome.holder_id!r} holds the lock in queue {req.queue!r}",
                    outcome.holder_id)
            # Redis' enqueue time, as stored: get_task_info() later reads the same one.
            infos.append(TaskInfo.from_message(msg, outcome.state, outcome.enqueued_ms,
                                               self._expires_at(outcome.enqueued_ms)))
        self._announce_enqueued(infos)
        return infos

    def _announce_enqueued(self, infos: list[TaskInfo]) -> None:
        """Send task_enqueued for tasks now written (a subclass may announce more)."""
        if signals.task_enqueued.has_listeners():
            for info in infos:
                signals.task_enqueued.send(sender=self, task_info=info)

    def _run_attempt(self, msg: TaskMessage, attempt: int, worker_id: str) -> Any:
        """Call the function for attempt ``attempt`` of ``msg``: the one call the worker
        and EAGER make (a subclass may wrap it, as the Django Tasks adapter does). For an
        ``async def`` function this returns its coroutine, which the caller runs."""
        return self.func(*msg.args, **msg.kwargs)

    def _run_eagerly(self, msg: TaskMessage) -> TaskInfo:
        # Arguments go through JSON as they would through Redis (tuples become lists).
        args, kwargs = json.loads(dumps([msg.args, msg.kwargs]))
        msg = dataclasses.replace(msg, args=args, kwargs=kwargs)
        self._announce_enqueued([TaskInfo.from_message(msg, "pending")])
        info = dataclasses.replace(TaskInfo.from_message(msg, "active"), attempts=1,
                                   worker=EAGER_WORKER_ID)
        signals.task_started.send(sender=self, task_info=info)
        with running(msg, 1, EAGER_WORKER_ID) as run:
            result = self._run_attempt(msg, 1, EAGER_WORKER_ID)
            if inspect.iscoroutine(result):  # an async def task: run to its end, here
                result = run_to_completion(result)
        validate_result(self.name, result)
        info = dataclasses.replace(info, state="completed", result=result,
                                   progress=TaskProgress.local(run._control.progress))
        signals.task_succeeded.send(sender=self, task_info=info, result=result)
        return info

    # -- results ----------------------------------------------------------------------

    def get_result(self, task_id: str, wait: Seconds | None = None) -> TaskInfo:
        """The task's current TaskInfo, fresh from Redis, whatever its queue; with
        ``wait``, once it has ended (see get_task_info)."""
        return get_task_info(task_id, wait=wait)

    async def aget_result(self, task_id: str, wait: Seconds | None = None) -> TaskInfo:
        """get_result() for async code, read through redis.asyncio."""
        return await aget_task_info(task_id, wait=wait)

    def cancel(self, task_id: str, by: str | None = None) -> TaskInfo:
        """Cancel a task (see ``cancel_task``)."""
        return _cancel(task_id, by, self)


def get_task_info(task_id: str, wait: Seconds | None = None) -> TaskInfo:
    """Look up any task by id; raises TaskNotFound when Redis has no such task.

    With ``wait`` (seconds or a timedelta), return once the task is in a final state
    (completed, dead, cancelled, expired), woken by its end; raise TimeoutError when it
    has not ended within ``wait``, TaskNotFound when it is deleted meanwhile."""
    if wait is None:
        return _task_info(task_id, get_broker().read_task(task_id))
    seconds = _wait_seconds(wait)
    return _awaited_info(task_id, get_broker().wait_for_end(task_id, seconds), seconds)


async def aget_task_info(task_id: str, wait: Seconds | None = None) -> TaskInfo:
    """get_task_info() for async code, read (and waited for) through redis.asyncio."""
    broker = await aget_broker()
    if wait is None:
        return _task_info(task_id, await broker.read_task(task_id))
    seconds = _wait_seconds(wait)
    return _awaited_info(task_id, await broker.wait_for_end(task_id, seconds), seconds)


def cancel_task(task_id: str, by: str | None = None) -> TaskInfo:
    """Cancel a task, whatever its queue, and return its fresh TaskInfo: a queued one
    (pending, scheduled, retry, waiting) is 'cancelled' at once and never runs; a running
    one is asked to stop (``cancel_requested``; its worker ends it); an ended one is left
    as it is. ``by`` says who asked (kept as ``cancelled_by``). Raises TaskNotFound."""
    return _cancel(task_id, by, None)


def _cancel(task_id: str, by: str | None, sender: BackgroundTask | None) -> TaskInfo:
    if not isinstance(task_id, str) or not task_id:
        raise ValueError(f"task_id must be a non-empty string, not {task_id!r}")
    if by is not None and (not isinstance(by, str) or len(by) > MAX_CANCELLED_BY):
        raise ValueError(f"by must be a string of at most {MAX_CANCELLED_BY} characters "
                         f"(or None), not {by!r:.80}")
    broker = get_broker()
    found = _task_info(task_id, broker.read_task(task_id))
    outcome = broker.cancel(found.queue_name, [task_id], by or "")
    info = _task_info(task_id, broker.read_task(task_id, [found.queue_name]))
    if task_id in outcome.cancelled:
        announce_cancelled([info], sender)
    return info


def announce_cancelled(infos: Iterable[TaskInfo], sender: BackgroundTask | None = None,
                       ) -> None:
    """Send task_cancelled for tasks a cancel ended (queued ones: a running one's worker
    sends it). The tasks are cancelled whatever a receiver does: one that raises is
    logged, as the worker does for outcomes."""
    for info in infos:
        replies = signals.task_cancelled.send_robust(
            sender=sender or registry.lookup(info.name), task_info=info)
        for receiver, response in replies:
            if isinstance(response, Exception):
                logger.error("a receiver of task_cancelled (%s) raised; task %s stays "
                             "cancelled", getattr(receiver, "__qualname__", receiver),
                             info.id, exc_info=response)


def _task_info(task_id: str, record: TaskRecord | None) -> TaskInfo:
    if record is None:
        raise TaskNotFound(f"no task with id {task_id!r} (never enqueued, or it finished "
                           f"and was not kept: set result_ttl to keep finished tasks)")
    return TaskInfo.from_record(record)


def _check_expires(value: Any) -> None:
    """``expires``: a positive timedelta or an aware datetime; ValueError otherwise."""
    if value is None:
        return
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"expires must be an aware datetime (or a timedelta), not the "
                             f"naive {value!r}")
    elif not isinstance(value, timedelta):
        raise ValueError(f"expires must be a timedelta or an aware datetime, not {value!r}")
    elif value <= timedelta(0):
        raise ValueError(f"expires must be a positive timedelta, not {value!r}")


def _wait_seconds(wait: Seconds) -> float:
    seconds = _seconds(wait, "wait", allow_zero=True) or 0.0
    if not math.isfinite(seconds):
        raise ValueError(f"wait must be a finite number of seconds, not {wait!r}")
    return seconds


def _awaited_info(task_id: str, awaited: Awaited, seconds: float) -> TaskInfo:
    """The TaskInfo a wait returns: the ended task as stored; a completed task that was not
    kept (no result_ttl) as it was when the wait began, with its end's state and time and
    no result."""
    before = _task_info(task_id, awaited.before)
    if not awaited.ended:
        raise TimeoutError(f"task {task_id!r} did not end within {seconds:g} s (it was "
                           f"{before.state} when the wait began)")
    if awaited.announced == DELETED:
        raise TaskNotFound(f"task {task_id!r} was deleted while waiting for its end")
    if awaited.record is not None:
        return TaskInfo.from_record(awaited.record)
    return dataclasses.replace(before, state=awaited.announced, result=None,
                               finished_at=ms_to_datetime(awaited.announced_ms))


def _sync_thread_waits() -> bool:
    """True when a sync thread waits for the running coroutine (async_to_sync): that is
    when asgiref sets the executor sync_to_async(thread_sensitive=True) runs code in."""
    return getattr(AsyncToSync.executors, "current", None) is not None


@overload
def background_task(func: Callable[..., Any], /) -> BackgroundTask: ...
@overload
def background_task(*, queue_name: str = ..., priority: int = ..., max_retries: int = ...,
                    timeout: Seconds = ..., retry_backoff: Callable[[int], float] | None = ...,
                    unique_for: Seconds | None = ..., result_ttl: Seconds | None = ...,
                    concurrency_limit: int | None = ..., rate_limit: str | None = ...,
                    limit_key: Callable[..., Any] | None = ...,
                    limits: Sequence[str] = ..., fair_key: Callable[..., Any] | None = ...,
                    expires: timedelta | datetime | None = ...,
                    ) -> Callable[[Callable[..., Any]], BackgroundTask]: ...


def background_task(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Turn a function into a task, registered as ``"<module>.<qualname>"``."""
    def decorate(function: Callable[..., Any]) -> BackgroundTask:
        if not callable(function):
            raise TypeError("@background_task decorates a function")
        task = BackgroundTask(func=function,
                              name=f"{function.__module__}.{function.__qualname__}", **options)
        registry.register(task)
        return task

    return decorate(func) if func is not None else decorate
