"""Redis Cluster failover under load, on a real 3+3 cluster (node-timeout 1 s), with a real
worker: a master SIGKILLed, and a planned CLUSTER FAILOVER.

Two producers enqueue continuously, one on a queue of the master that fails over (A), one
on a queue of another master (B); one `runbackground` serves both. The figures are printed
(pytest -s) for docs/production.md; shared/research/redis-topologies.md has the raw
redis-py measurements they compare with.
"""

from __future__ import annotations

import time

import pytest

from demo import tasks
from failover import (
    Producer,
    expect_within,
    ledger_fixture,
    ledger_server_fixture,
    pending_key,
    run_count,
    runs,
    verdict,
    wait_all_ran,
    whole_cluster_fixture,
)
from topologies import needs_cluster_tools, redis_cluster

pytestmark = [needs_cluster_tools, pytest.mark.failover]

cluster_topology = pytest.fixture(scope="module", name="cluster_topology")(redis_cluster)
ledger_server = pytest.fixture(scope="module", name="ledger_server")(ledger_server_fixture)

INTERVAL = 0.01  # each producer: 100 enqueues/s
# seconds; research: writes succeed again 2.2-2.5 s after the kill (node-timeout 1 s)
# enqueue() retries every 0.25 s at most. The journal's replay is off the call path (a
# thread of its own), yet the worst call still took 2.53-3.66 s in four runs on a loaded
# 2-core machine: the election itself varies, hence the margin
ENQUEUE_RESUME_LIMIT = 4.5
WORK_RESUME_LIMIT = 3.0  # the worker runs queue A's new tasks again
OTHER_QUEUE_LIMIT = 1.5  # queue B's master stays up: at most the ~1 s of CLUSTERDOWN


cluster = pytest.fixture(name="cluster")(whole_cluster_fixture)
ledger = pytest.fixture(name="ledger")(ledger_fixture)


@pytest.fixture
def load(cluster, ledger, ledger_server, start_worker):
    """Factory: the worker on queues A (the master that will fail over) and B (another
    master), both producers running and their tasks flowing; returns (A, B, producers)."""
    producers: list[Producer] = []

    def start() -> tuple[str, str, list[Producer]]:
        queue_a, queue_b, _ = cluster.queue_names_spread(3)
        start_worker("--queues", f"{queue_a},{queue_b}", "--processes", "1", "--threads", "4",
                     env={"BGTASKS_REDIS_URL": cluster.url,
                          "BGTASKS_TEST_LEDGER_URL": ledger_server.url,
                          # a claim whose reply died with the master is re-run in 5 s, not 30
                          "BGTASKS_LEASE_SECONDS": "5"})
        for name, queue in (("A", queue_a), ("B", queue_b)):
            task = tasks.record_time.using(queue_name=queue)
            producers.append(Producer(name, task.enqueue, INTERVAL).start())
        deadline = time.monotonic() + 20
        while {t.split(":")[0] for t in runs(ledger)} != {"A", "B"}:
            assert time.monotonic() < deadline, "the worker ran nothing within 20 s"
            time.sleep(0.1)
        time.sleep(1.0)  # steady state before the event
        return queue_a, queue_b, producers

    yield start
    for producer in producers:
        producer.stop()


def report(title: str, since: float, producers: list[Producer], ledger, drained: float):
    """Print the figures of one run; returns the verdict of each producer by name."""
    ledger_runs = runs(ledger)
    verdicts = {p.name: verdict(ledger_runs, p, since) for p in producers}
    print(f"\n{title}")
    for p in producers:
        v = verdicts[p.name]
        resumed = "-" if v.resumed_after is None else f"{v.resumed_after:.2f}s"
        print(f"  queue {p.name}: {v.acked} acknowledged ({p.rate():.0f}/s), {v.lost} lost, "
              f"{len(p.errors)} enqueue errors; slowest enqueue {p.worst_call():.2f}s "
              f"(median {p.median_call() * 1000:.1f} ms); first run of a task acknowledged "
              f"after the event {resumed}; worst enqueue-to-run {v.worst_wait:.2f}s")
        for when, error in p.errors[:3]:
            print(f"    error at +{when - since:.2f}s: {error}")
    reruns = run_count(ledger) - len(ledger_runs)
    print(f"  every acknowledged task ran {drained:.1f}s after the producers stopped; "
          f"{reruns} ran twice")
    return verdicts


def test_master_killed_under_load(cluster, load, ledger):
    queue_a, queue_b, producers = load()
    old = cluster.kill_master_of(pending_key(queue_a))  # returns once the node is reaped
    killed_at = time.time()
    replica_took = cluster.wait_healthy(timeout=15)
    time.sleep(max(0.0, killed_at + 5 - time.time()))  # load goes on after the failover
    for producer in producers:
        producer.stop()
    drained = wait_all_ran(ledger, producers, timeout=30)

    verdicts = report(f"cluster: kill -9 of {old[1]} (queue A's master) under load; cluster "
                      f"healthy again {replica_took:.2f}s after the kill", killed_at,
                      producers, ledger, drained)
    for p in producers:
        assert verdicts[p.name].lost == 0, f"queue {p.name}: acknowledged tasks never ran"
        assert p.errors == [], f"queue {p.name}: enqueue() failed despite RETRY_FOR"
    assert producers[0].worst_call() < ENQUEUE_RESUME_LIMIT
    assert producers[0].count_since(killed_at + 3) > 100  # A was served again, not just once
    expect_within("queue A's work resuming", verdicts["A"].resumed_after, WORK_RESUME_LIMIT)
    expect_within("queue B's worst enqueue-to-run", verdicts["B"].worst_wait, OTHER_QUEUE_LIMIT)


def test_planned_failover_under_load(cluster, load, ledger):
    queue_a, queue_b, producers = load()
    started_at = time.time()
    old, new = cluster.failover_planned(pending_key(queue_a), timeout=15)
    took = time.time() - started_at
    time.sleep(max(0.0, started_at + 3 - time.time()))
    for producer in producers:
        producer.stop()
    drained = wait_all_ran(ledger, producers, timeout=30)

    verdicts = report(f"cluster: CLUSTER FAILOVER {old[1]} -> {new[1]} (queue A) under load, "
                      f"done in {took:.2f}s", started_at, producers, ledger, drained)
    for p in producers:
        assert verdicts[p.name].lost == 0, f"queue {p.name}: acknowledged tasks never ran"
        assert p.errors == [], f"queue {p.name}: enqueue() failed"
    print(f"  worst enqueue stall: {max(p.worst_call() for p in producers) * 1000:.0f} ms")
