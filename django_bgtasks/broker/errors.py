"""Which Redis errors mean "not now" (a failover, a restart, a network blip) rather than
"never", and riding them out for a while."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis

from ..backoff import reconnect_delay
from ..exceptions import BgTasksError, BrokerUnavailable

# Redis errors that mean "not now", not "never": retry later. A failover shows as any of
# these (a cluster: CLUSTERDOWN, TRYAGAIN; Sentinel: the master unknown for a moment).
TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError,
                    redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError,
                    redis.exceptions.MasterDownError, redis.exceptions.SlotNotCoveredError)
# Replies of a server that is changing roles or starting: the same command succeeds later.
TRANSIENT_REPLIES = ("NOREPLICAS", "READONLY", "LOADING", "UNBLOCKED", "TRYAGAIN",
                     "CLUSTERDOWN", "MASTERDOWN")


def ride_out(call: Callable[[], Any], seconds: float) -> Any:
    """``call()``, retried with backoff (50 ms doubling to 250 ms) for up to ``seconds``
    while it fails with "Redis is away or failing over"; any other error, or the last
    one, is raised."""
    deadline = time.monotonic() + seconds
    attempt = 0
    while True:
        try:
            return call()
        except BgTasksError as exc:
            time.sleep(retry_delay(exc, attempt, deadline))
            attempt += 1


async def aride_out(call: Callable[[], Awaitable[Any]], seconds: float) -> Any:
    """ride_out() for a coroutine function: the same policy, sleeping without blocking
    the event loop."""
    deadline = time.monotonic() + seconds
    attempt = 0
    while True:
        try:
            return await call()
        except BgTasksError as exc:
            await asyncio.sleep(retry_delay(exc, attempt, deadline))
            attempt += 1


def retry_delay(exc: BgTasksError, attempt: int, deadline: float) -> float:
    """How long to wait before attempt ``attempt + 1`` after ``exc``; re-raises ``exc``
    (the caller's current exception) when it is not worth retrying or time is up."""
    delay = reconnect_delay(attempt, base=0.05, cap=0.25, jitter=False)
    if not worth_retrying(exc) or time.monotonic() + delay > deadline:
        raise exc
    return delay


def worth_retrying(exc: BgTasksError) -> bool:
    """True when ``exc`` says Redis is away or failing over; a refused password is not
    (redis-py makes it a ConnectionError, but it stays refused: fail at once)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, redis.AuthenticationError):
            return False
        cause = cause.__cause__
    return isinstance(exc, BrokerUnavailable) or (
        exc.__cause__ is not None and is_transient(exc.__cause__))


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` means "Redis is away or failing over", not "refused"."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(TRANSIENT_REPLIES)
