"""Side effects of the test tasks, kept in Redis, so tests check what a task really did.

Tasks write here (in whatever worker process runs them); tests read the same keys with
their own client. Deliberately plain redis-py, independent of django_bgtasks.
"""

from __future__ import annotations

import json
import os
import threading
import time

import redis
from django.conf import settings
from redis.cluster import ClusterNode, RedisCluster

# RAN_KEY and LOG_KEY share a hash tag: record() writes both in one MULTI, which a Redis
# Cluster accepts only within one slot.
RAN_KEY = "bgtasks-test:{ledger}:ran"  # SET of tokens that ran
LOG_KEY = "bgtasks-test:{ledger}:log"  # LIST of tokens in the order they ran (repeats: duplicates)
TIMES_KEY = "bgtasks-test:times"  # LIST of JSON {"token", "t"} from record_time
ATTEMPTS_PREFIX = "bgtasks-test:attempts:"  # STRING counter per token

_lock = threading.Lock()
_client: redis.Redis | RedisCluster | None = None
_client_owner: tuple[int, str] | None = None


def client() -> redis.Redis | RedisCluster:
    """This process's client for the ledger (settings.BGTASKS_TEST_LEDGER_URL, else
    settings.REDIS_URL); a forked child makes its own."""
    global _client, _client_owner
    url = getattr(settings, "BGTASKS_TEST_LEDGER_URL", None) or settings.REDIS_URL
    owner = (os.getpid(), url)
    with _lock:
        if _client is None or _client_owner != owner:
            _client = connect(url)
            _client_owner = owner
        return _client


def connect(url: str) -> redis.Redis | RedisCluster:
    """A client for `url`: redis://... or, for the tests' cluster topology,
    redis+cluster://host:port,host:port/0 (no credentials)."""
    if not url.startswith("redis+cluster://"):
        return redis.Redis.from_url(url)
    hosts = url.removeprefix("redis+cluster://").partition("/")[0]
    nodes = [ClusterNode(host, int(port)) for host, _, port in
             (item.rpartition(":") for item in hosts.split(","))]
    return RedisCluster(startup_nodes=nodes)


def record(token: str) -> None:
    """Note that `token` ran: added to RAN_KEY and appended to LOG_KEY, atomically."""
    pipe = client().pipeline(transaction=True)
    pipe.sadd(RAN_KEY, token)
    pipe.rpush(LOG_KEY, token)
    pipe.execute()


def record_time(token: str) -> None:
    """Append {"token": token, "t": time.time()} to TIMES_KEY."""
    client().rpush(TIMES_KEY, json.dumps({"token": token, "t": time.time()}))


def record_redis_time(token: str) -> None:
    """Append {"token": token, "t": <the ledger Redis' clock>} to TIMES_KEY: comparable
    with due times, which are judged on Redis' clock, whatever this host's clock says."""
    seconds, micros = client().time()
    client().rpush(TIMES_KEY, json.dumps({"token": token, "t": seconds + micros / 1e6}))


TICKS_KEY = "bgtasks-test:ticks"  # LIST of JSON runs of periodic tasks (record_tick)


def record_tick(label: str, phase: str = "run") -> None:
    """Append a periodic run to TICKS_KEY: {"label", "phase", "id", "entry",
    "tick" (ms, the tick the run stands for: current_task().scheduled_for), "t" (ms, the
    ledger Redis' clock), "attempt"}."""
    from django_bgtasks import current_task

    run = current_task()
    seconds, micros = client().time()
    tick = run.scheduled_for.timestamp() * 1000 if run and run.scheduled_for else None
    client().rpush(TICKS_KEY, json.dumps({
        "label": label, "phase": phase, "id": run.id if run else None,
        "entry": run.periodic_entry if run else None,
        "tick": None if tick is None else round(tick), "t": seconds * 1000 + micros / 1000,
        "attempt": run.attempt if run else None}))


SPANS_KEY = "bgtasks-test:spans"  # LIST of JSON {"token", "phase", "t"} from record_span


def record_span(token: str, phase: str) -> None:
    """Note that `token` starts or ends ("start" / "end") now, on the ledger Redis' clock
    (one clock for every worker: the flow-control tests compare runs across processes)."""
    seconds, micros = client().time()
    client().rpush(SPANS_KEY, json.dumps({"token": token, "phase": phase, "pid": os.getpid(),
                                          "t": seconds * 1000 + micros / 1000}))


HEADERS_KEY = "bgtasks-test:headers"  # HASH token -> JSON of the headers its run saw


def record_headers(token: str, headers: dict[str, str]) -> None:
    """Note the headers the run of `token` saw (current_task().headers)."""
    client().hset(HEADERS_KEY, token, json.dumps(headers))


def headers_seen(r: redis.Redis, token: str) -> dict[str, str] | None:
    """What record_headers noted for `token` (None: nothing yet)."""
    raw = r.hget(HEADERS_KEY, token)
    return None if raw is None else json.loads(raw)


def count_attempt(token: str) -> int:
    """Count one more attempt for `token`; returns the count including this one."""
    return int(client().incr(ATTEMPTS_PREFIX + token))


# --- readers, for tests (they pass their own client) ---------------------------


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def ran(r: redis.Redis) -> set[str]:
    """Tokens that ran at least once."""
    return {_text(v) for v in r.smembers(RAN_KEY)}


def log(r: redis.Redis) -> list[str]:
    """Tokens in the order their runs were recorded, duplicates included."""
    return [_text(v) for v in r.lrange(LOG_KEY, 0, -1)]


def times(r: redis.Redis) -> list[dict]:
    """record_time entries in order: [{"token": str, "t": float}, ...]."""
    return [json.loads(v) for v in r.lrange(TIMES_KEY, 0, -1)]


def attempts(r: redis.Redis, token: str) -> int:
    """How many attempts fail_then_succeed (or count_attempt) counted for `token`."""
    return int(r.get(ATTEMPTS_PREFIX + token) or 0)


def spans(r: redis.Redis) -> list[dict]:
    return [json.loads(_text(v)) for v in r.lrange(SPANS_KEY, 0, -1)]


def ticks(r: redis.Redis, label: str | None = None) -> list[dict]:
    """The runs record_tick saw, in order (of one label, or all)."""
    runs = [json.loads(raw) for raw in r.lrange(TICKS_KEY, 0, -1)]
    return [run for run in runs if label is None or run["label"] == label]
