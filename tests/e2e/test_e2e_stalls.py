"""End-to-end: Redis stalls (SIGSTOP) under a busy worker, longer than SOCKET_TIMEOUT and
longer than the lease. A stall is not the workers' fault: no task may be charged an
attempt for it, lose an outcome to it, or end dead because of it.

A claim sent just before a stall is run by Redis when it wakes, but its reply never reaches
the worker (the socket timed out); leases cannot be renewed during the stall; outcomes
finished during it arrive after the leases expired. The tasks record what ran in a second
Redis (the ledger), which never stalls.
"""

from __future__ import annotations

import signal
import time

import pytest

from demo import recording, tasks
from django_bgtasks import get_task_info
from helpers import RedisServer, counts, wait_until

pytestmark = [pytest.mark.single_redis(reason="stops the redis-server process (SIGSTOP)"),
              pytest.mark.soak]  # a fault run: once per CI run

LEASE = 3.0
SOCKET_TIMEOUT = 1.5



def stall(server: RedisServer, seconds: float) -> None:
    server.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        server.process.send_signal(signal.SIGCONT)


def test_redis_stalls_cost_no_attempt_and_no_outcome(start_worker, redis_server,
                                                      ledger_server, ledger):
    tokens = [f"s{i}" for i in range(400)]
    ids = [r.id for r in tasks.run_once.enqueue_many([([t, 0.05], {}) for t in tokens])]
    worker = start_worker("--processes", "2", "--threads", "4", env={
        "BGTASKS_TEST_LEDGER_URL": ledger_server.url,
        "BGTASKS_LEASE_SECONDS": str(LEASE),
        "BGTASKS_SOCKET_TIMEOUT": str(SOCKET_TIMEOUT),
    })
    wait_until(lambda: len(recording.ran(ledger)) >= 20, timeout=15, message="tasks flowing")
    for seconds in (2.5, 2.5):  # longer than SOCKET_TIMEOUT, shorter than the lease
        stall(redis_server, seconds)
        time.sleep(0.7)
    stall(redis_server, 2 * LEASE)  # longer than the lease

    def settled():
        now = counts()
        return now if now["completed"] + now["dead"] == len(tokens) else None

    final = wait_until(settled, timeout=60, message="every task completed or dead")
    assert final["dead"] == 0, f"{final['dead']} tasks ended dead"
    assert recording.ran(ledger) == set(tokens)
    charged = {task_id: info.attempts for task_id in ids
               if (info := get_task_info(task_id)).attempts != 1}
    assert charged == {}, f"{len(charged)} tasks were charged more than one attempt"
    log = worker.log_text()
    assert "WorkerLost" not in log and "lease was lost" not in log
    assert worker.is_running()
    runs = recording.log(ledger)
    print(f"\n{len(tokens)} tasks through three stalls (2.5 s, 2.5 s, {2 * LEASE:g} s; lease "
          f"{LEASE:g} s, socket timeout {SOCKET_TIMEOUT:g} s): "
          f"{len(runs) - len(set(runs))} ran twice, none charged an attempt")
