"""The benchmark's tasks: a no-op, and one Redis INCR (the work every peer is given)."""

import os

import redis

from django_bgtasks import background_task

_client: tuple[int, redis.Redis] | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), redis.Redis.from_url(os.environ["BGTASKS_REDIS_URL"]))
    return _client[1]


@background_task
def noop(i: int) -> None:
    """Do nothing: measures the queue's own overhead."""


@background_task
def incr(i: int) -> None:
    """One INCR on a counter the benchmark watches."""
    _redis().incr("bench:counter")
