"""The chaos run's ledger: what every execution of `demo.tasks.chaos_step` did, written by
the task itself into a Redis apart from the queue's (bench/chaos.py restarts that one).

bench/chaos.py judges delivery from these entries alone, never from the queue's own
bookkeeping. Plain redis-py; the readers need no Django.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import redis

STARTS = "bgtasks-chaos:starts"  # LIST of "token pid ms": an execution began
ENDS = "bgtasks-chaos:ends"  # LIST of "token pid ms": an execution's body completed
EXECUTIONS = "bgtasks-chaos:executions"  # HASH token -> executions begun
COMPLETED = "bgtasks-chaos:completed"  # SET of tokens completed at least once


@dataclass(frozen=True)
class Entry:
    token: str
    pid: int
    at: float  # seconds since the epoch (this machine's clock, as the chaos loop's)


def _now_ms() -> int:
    return int(time.time() * 1000)


def began(client: redis.Redis, token: str) -> int:
    """Log that an execution of `token` began; returns which execution this is (1, 2...)."""
    pipe = client.pipeline(transaction=True)
    pipe.rpush(STARTS, f"{token} {os.getpid()} {_now_ms()}")
    pipe.hincrby(EXECUTIONS, token, 1)
    return int(pipe.execute()[1])


def completed(client: redis.Redis, token: str) -> None:
    """Log that an execution of `token` ran its body to the end."""
    pipe = client.pipeline(transaction=True)
    pipe.rpush(ENDS, f"{token} {os.getpid()} {_now_ms()}")
    pipe.sadd(COMPLETED, token)
    pipe.execute()


def _entries(client: redis.Redis, key: str) -> list[Entry]:
    found = []
    for raw in client.lrange(key, 0, -1):
        token, pid, ms = raw.decode().split()
        found.append(Entry(token, int(pid), int(ms) / 1000))
    return found


def completed_count(client: redis.Redis) -> int:
    """How many tokens completed at least once (cheap enough to poll)."""
    return int(client.scard(COMPLETED))


def executions(client: redis.Redis) -> dict[str, int]:
    """token -> executions begun."""
    return {k.decode(): int(v) for k, v in client.hgetall(EXECUTIONS).items()}


def read(client: redis.Redis) -> tuple[list[Entry], list[Entry]]:
    """(starts, ends), each in the order they were written."""
    return _entries(client, STARTS), _entries(client, ENDS)
