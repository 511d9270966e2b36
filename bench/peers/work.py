"""The work every system's task does, through one module-level Redis client per process.

redis-py's connection pool notices a fork and reconnects, so the client made at import
serves the forked worker processes of every system too.
"""

from __future__ import annotations

import json
import os
import time

import redis

COUNTER = "bench:counter"
STAMPS = "bench:stamps"
# ZSET for bench/workflows.py: "first" = the earliest task body, "last" = the latest
# (seconds, this host's clock).
SPAN = "bench:span"

# Connects on first use: importing this module (run.py does, for the key names) is free.
client = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0"))


def incr() -> None:
    """The task body every system runs for the throughput figures."""
    client.incr(COUNTER)


def stamp(kind: str, ref: float) -> None:
    """Record [kind, ref, start]: the run.py reads start - ref (ref: enqueue or due time)."""
    started = time.time()
    client.rpush(STAMPS, json.dumps([kind, ref, started]))


def incr_in_span() -> None:
    """incr(), and this run's time in SPAN, in one round trip: ZADD LT / GT keep the
    earliest and the latest whichever thread writes last."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.zadd(SPAN, {"first": now}, lt=True)
    pipe.zadd(SPAN, {"last": now}, gt=True)
    pipe.incr(COUNTER)
    pipe.execute()
