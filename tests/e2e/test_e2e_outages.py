"""End-to-end: Redis goes away under a running worker for 10 s and for 60 s.

The tasks record what they did in a second Redis (the ledger) that stays up, so what ran
is known independently of the queue's Redis and of the worker's bookkeeping.
"""

from __future__ import annotations

import re
import time

import pytest

from demo import recording, tasks
from django_bgtasks import EnqueueError
from helpers import counts, wait_until

pytestmark = [pytest.mark.soak,
              pytest.mark.single_redis(reason="stops the redis-server for 10 s and 60 s")]



@pytest.mark.parametrize("outage", [10, 60])
def test_redis_down_under_a_running_worker_loses_nothing(
        start_worker, redis_server, ledger_server, ledger, outage):
    tokens = [f"t{i}" for i in range(300)]
    tasks.sleep_then_record.enqueue_many([([token, 0.1], {}) for token in tokens])
    worker = start_worker("--processes", "2", "--threads", "4",
                          env={"BGTASKS_TEST_LEDGER_URL": ledger_server.url})
    wait_until(lambda: len(recording.ran(ledger)) >= 40, timeout=15, message="tasks flowing")

    redis_server.stop()  # SHUTDOWN: the AOF keeps every task
    down_at = time.monotonic()
    ran_at_outage = len(recording.ran(ledger))
    started = time.monotonic()
    with pytest.raises(EnqueueError, match="cannot reach Redis"):
        tasks.record.enqueue("during-outage")
    refused_in = time.monotonic() - started
    time.sleep(max(0.0, outage - (time.monotonic() - down_at)))
    assert worker.is_running()
    ran_during_outage = len(recording.ran(ledger)) - ran_at_outage
    redis_server.start()  # same port, same data
    back_at = time.monotonic()

    wait_until(lambda: recording.ran(ledger) == set(tokens), timeout=60,
               message="every task ran")
    drained_in = time.monotonic() - back_at
    wait_until(lambda: counts() == dict.fromkeys(counts(), 0), timeout=15,
               message="nothing left in Redis")
    assert worker.is_running()
    log = worker.log_text()
    assert "Traceback" not in log
    assert " failed in " not in log  # the outage cost no task an attempt
    retries = [ln for ln in log.splitlines() if "cannot reach Redis" in ln]
    assert retries and all(re.search(r"retrying in [\d.]+s", ln) for ln in retries)
    runs = recording.log(ledger)
    reruns = len(runs) - len(set(runs))
    if outage < 30:  # shorter than the lease (30 s): finished work is acknowledged, not rerun
        assert reruns == 0, f"{reruns} tasks ran twice"
    print(f"\nRedis down {outage} s: enqueue refused in {refused_in * 1000:.0f} ms; "
          f"{ran_during_outage} tasks ran during the outage; {len(retries)} retry lines "
          f"({len(retries) / outage:.1f}/s); all 300 done {drained_in:.1f} s after Redis "
          f"returned; {reruns} reruns")
