"""End-to-end: flow control through failures. A whole worker host SIGKILLed while its runs
hold every slot of a concurrency limit, and a Redis restart while limited tasks run and
others wait. Whatever happens, no slot may leak: at the end the limit is idle (Redis forgets
it), every task ran, and the live processes never ran more than the limit at once.

The judge is the ledger (a second Redis the tasks note their start and end in);
limit_spans.py reads it. The cluster failover variant is tests/failover/test_failover_limits.py.
"""

from __future__ import annotations

import signal
import time

import pytest

from demo import recording
from demo.tasks import limited_span
from helpers import counts, wait_until
from limit_spans import ended, limits_idle, most_at_once, ran_twice, start_times

# Fault runs (a skewed clock, stalls, restarts, downtime): once per CI run (marker soak).
pytestmark = pytest.mark.soak

LEDGER_ENV = "BGTASKS_TEST_LEDGER_URL"
LIMIT = 3  # limited_span's concurrency_limit
LEASE = 2.0  # seconds, the workers' BGTASKS_LEASE_SECONDS
# A dead host's runs come back once their lease expires and a recoverer sweeps (every
# lease/4); the rest is a loaded 2-core machine's scheduling
DEAD_HOST_MARGIN = 4.0


@pytest.fixture
def workers(start_worker, ledger_server, settings):
    """Start workers serving the queue 'limited', recording on the ledger (lease 2 s
    unless told)."""
    settings.BGTASKS_TEST_LEDGER_URL = ledger_server.url

    def start(*args: str, lease: float = LEASE):
        return start_worker("--queues", "limited", *args,
                            env={LEDGER_ENV: ledger_server.url,
                                 "BGTASKS_LEASE_SECONDS": str(lease)})

    return start


def nothing_left() -> bool:
    left = counts("limited")
    return left["pending"] == left["waiting"] == left["active"] == 0


def test_a_dead_host_frees_its_slots_when_its_lease_expires(workers, ledger):
    """Host A (supervisor and children) SIGKILLed while its 3 runs hold every slot and 5
    tasks wait: host B starts runs within the lease (plus a margin), every task ends, the
    limit ends idle."""
    host_a = workers("--processes", "1", "--threads", "4")
    held = [limited_span.enqueue(f"held{i}", 3.0).id for i in range(LIMIT)]
    waiting = [limited_span.enqueue(f"next{i}", 0.2).id for i in range(5)]
    wait_until(lambda: len(recording.spans(ledger)) == LIMIT, timeout=20,
               message="host A runs 3 tasks")
    assert counts("limited")["waiting"] == len(waiting)
    dead_pids = {s["pid"] for s in recording.spans(ledger)}
    host_b = workers("--processes", "1", "--threads", "4")
    host_b.wait_for_log(" starting: Redis ")
    time.sleep(1.0)  # B is claiming (and refused: every slot is A's)
    assert len(recording.spans(ledger)) == LIMIT, "B started a run while A held every slot"

    host_a.send_group(signal.SIGKILL)
    killed_ms = time.time() * 1000
    assert host_a.wait(10) == -signal.SIGKILL

    wait_until(lambda: ended(recording.spans(ledger)) >= {f"next{i}" for i in range(5)},
               timeout=30, message="the waiting tasks ran")
    spans = recording.spans(ledger)
    live = {s["pid"] for s in spans} - dead_pids
    freed_after = (start_times(spans, pids=live)[0] - killed_ms) / 1000
    print(f"\ndead host: its slots were used again {freed_after:.2f}s after the kill "
          f"(lease {LEASE:g}s)")
    assert freed_after < LEASE + DEAD_HOST_MARGIN
    wait_until(lambda: ended(recording.spans(ledger)) >= {f"held{i}" for i in range(LIMIT)},
               timeout=30, message="the dead host's runs ran again, to their end")
    live = {s["pid"] for s in recording.spans(ledger)} - dead_pids
    assert most_at_once(recording.spans(ledger), pids=live) <= LIMIT
    wait_until(nothing_left, timeout=10, message="no task left in the queue")
    wait_until(lambda: limits_idle("limited"), timeout=10, message="the limit idle")
    assert host_b.is_running()
    assert set(held) | set(waiting)  # ids kept for the failure message's sake


@pytest.mark.single_redis(reason="restarts the redis-server (AOF kept)")
@pytest.mark.parametrize("how", ["shutdown", "crash"])
def test_a_redis_restart_leaks_no_slot(workers, ledger, redis_server, how):
    """Redis restarted, after a SHUTDOWN or a SIGKILL, while 3 limited tasks run and 27
    wait: afterwards every task ends, the limit held throughout and ends idle, nothing ran
    twice. (Redis writes the AOF before it replies, so a process crash loses no write a
    worker saw acknowledged; appendfsync everysec matters only if the host dies.)"""
    tokens = {f"t{i}" for i in range(30)}
    for token in sorted(tokens):
        limited_span.enqueue(token, 0.3)
    # the default lease (30 s): the outage outlasts no lease
    worker = workers("--processes", "2", "--threads", "4", lease=30)
    wait_until(lambda: len(ended(recording.spans(ledger))) >= 6, timeout=30,
               message="limited tasks flowing")
    assert counts("limited")["waiting"] > 0

    redis_server.stop() if how == "shutdown" else redis_server.kill()
    time.sleep(3.0)  # the runs under way end and wait to be acknowledged
    redis_server.start()  # same port, same AOF
    back_ms = time.time() * 1000

    wait_until(lambda: ended(recording.spans(ledger)) >= tokens, timeout=60,
               message="every task ran")
    wait_until(nothing_left, timeout=10, message="no task left in the queue")
    wait_until(lambda: limits_idle("limited"), timeout=10, message="the limit idle")
    assert worker.is_running()
    spans = recording.spans(ledger)
    resumed = (min(t for t in start_times(spans) if t > back_ms) - back_ms) / 1000
    print(f"\nRedis {how}: limited runs resumed {resumed:.2f}s after Redis was back; "
          f"{len(ran_twice(spans))} tasks ran twice; at most {most_at_once(spans)} at once")
    assert most_at_once(spans) <= LIMIT
    assert ran_twice(spans) == {}
