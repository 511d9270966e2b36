"""Flow control through a Redis Cluster failover, on a real 3+3 cluster (node-timeout 1 s):
a concurrency limit under load while the master of its queue's slot is SIGKILLed (the
replica takes over), and a planned CLUSTER FAILOVER. No slot may leak: at the end every
task ran, the limit was never exceeded, and Redis holds no state for it (idle: forgotten).

A limit's state lives in its queue's slot and changes in the same scripts as the runs it
counts, so a replica holds a consistent prefix of both. What a failover may cost is
at-least-once: a claim acknowledged by the dying master and lost with it lets its task
run again. The figures (pytest -s): how long the limit admitted nothing around the event,
and how many tasks ran twice.
"""

from __future__ import annotations

import time

import pytest

from demo import recording
from demo.tasks import limited_span
from failover import (
    Producer,
    ledger_fixture,
    ledger_server_fixture,
    pending_key,
    whole_cluster_fixture,
)
from helpers import counts, wait_until
from limit_spans import ended, limits_idle, most_at_once, ran_twice, silence_around
from topologies import needs_cluster_tools, redis_cluster

pytestmark = [needs_cluster_tools, pytest.mark.failover]

cluster_topology = pytest.fixture(scope="module", name="cluster_topology")(redis_cluster)
ledger_server = pytest.fixture(scope="module", name="ledger_server")(ledger_server_fixture)

QUEUE = "limited"  # limited_span's queue
LIMIT = 3  # limited_span's concurrency_limit
RUN_SECONDS = 0.1
INTERVAL = 0.05  # 20 enqueues/s of 0.1-s runs: the limit is busy, tasks wait for it
# seconds from the kill to the first run admitted again: the cluster is writable again
# 2.2-2.5 s after a kill (test_failover_cluster), the worker's fetcher backs off up to 5 s
# (failover.WORKER_BACKOFF_ISSUE); generous for a loaded 2-core machine
LIMIT_BACK_WITHIN = 10.0


cluster = pytest.fixture(name="cluster")(whole_cluster_fixture)
ledger = pytest.fixture(name="ledger")(ledger_fixture)


@pytest.fixture
def load(cluster, ledger, ledger_server, start_worker):
    """Factory: a worker (2 processes x 4 threads: more threads than slots) on the queue
    'limited' and a producer of limited_span tasks, flowing; returns the producer."""
    producers: list[Producer] = []

    def start() -> Producer:
        start_worker("--queues", QUEUE, "--processes", "2", "--threads", "4",
                     env={"BGTASKS_REDIS_URL": cluster.url,
                          "BGTASKS_TEST_LEDGER_URL": ledger_server.url,
                          # a claim whose reply died with the master is re-run in 5 s, not 30
                          "BGTASKS_LEASE_SECONDS": "5"})
        producer = Producer("L", lambda token: limited_span.enqueue(token, RUN_SECONDS),
                            INTERVAL)
        producers.append(producer.start())
        wait_until(lambda: len(ended(recording.spans(ledger))) >= 20, timeout=20,
                   message="limited tasks flowing")
        time.sleep(1.0)  # steady state before the event
        return producer

    yield start
    for producer in producers:
        producer.stop()


def judge(title: str, producer: Producer, ledger, event_ms: float) -> None:
    """Wait for every acknowledged task to run, print the figures, assert no slot leaked."""
    wanted = producer.tokens
    wait_until(lambda: ended(recording.spans(ledger)) >= wanted, timeout=60,
               message=f"the {len(wanted)} acknowledged tasks ran")
    spans = recording.spans(ledger)
    before, after = silence_around(spans, event_ms)
    twice = ran_twice(spans)
    # a task that had ended (and was forgotten) before the event and ran again: the enqueue
    # journal wrote it again to the new master (journal.py: at least once)
    first_end = {}
    for span in spans:
        if span["phase"] == "end":
            first_end.setdefault(span["token"], span["t"])
    replayed = sum(1 for token in twice if first_end.get(token, event_ms) < event_ms)
    at_once = most_at_once(spans)
    print(f"\n{title}: {len(wanted)} tasks ({producer.rate():.0f}/s), "
          f"{len(producer.errors)} enqueue errors; the limit admitted nothing from "
          f"{before:.2f}s before the event to {after:.2f}s after; {len(twice)} tasks ran "
          f"twice ({replayed} of them had ended before the event: the journal's replay); "
          f"at most {at_once} runs at once (limit {LIMIT})")
    assert producer.errors == [], "enqueue() failed despite RETRY_FOR"
    assert after < LIMIT_BACK_WITHIN
    assert at_once <= LIMIT  # every process lived: every run's end is in the ledger
    wait_until(lambda: all(counts(QUEUE)[s] == 0 for s in ("pending", "waiting", "active")),
               timeout=15, message="no task left in the queue")
    wait_until(lambda: limits_idle(QUEUE), timeout=15, message="the limit idle (no leak)")


def test_master_killed_under_limited_load(cluster, load, ledger):
    producer = load()
    old = cluster.kill_master_of(pending_key(QUEUE))  # returns once the node is reaped
    killed_ms = time.time() * 1000
    took = cluster.wait_healthy(timeout=15)
    time.sleep(max(0.0, killed_ms / 1000 + 5 - time.time()))  # load goes on after it
    producer.stop()

    judge(f"cluster: kill -9 of {old[1]} (queue {QUEUE!r}'s master), healthy again in "
          f"{took:.2f}s", producer, ledger, killed_ms)


def test_planned_failover_under_limited_load(cluster, load, ledger):
    producer = load()
    started_ms = time.time() * 1000
    old, new = cluster.failover_planned(pending_key(QUEUE), timeout=15)
    time.sleep(max(0.0, started_ms / 1000 + 3 - time.time()))
    producer.stop()

    judge(f"cluster: CLUSTER FAILOVER {old[1]} -> {new[1]} (queue {QUEUE!r})",
          producer, ledger, started_ms)
