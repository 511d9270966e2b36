"""task_dead for tasks whose last attempt ended outside their thread: the recoverer (a
lease that expired), the supervisor (a worker process that died) and the timeout watchdog
(a task that ignored its timeout) send it, so that a receiver counting dead tasks counts
them all (docs/api.md's recipe)."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from demo import tasks
from django_bgtasks import signals
from django_bgtasks.exceptions import TaskTimeout, WorkerLost
from django_bgtasks.worker.config import WorkerConfig
from django_bgtasks.worker.execution import TaskExecutor
from django_bgtasks.worker.inflight import InFlight, Running
from django_bgtasks.worker.processor import Processor
from django_bgtasks.worker.recoverer import Recoverer
from django_bgtasks.worker.timeouts import TimeoutWatchdog
from helpers import wait_until

QUEUE = "default"


@pytest.fixture
def dead_signals():
    """The task_dead signals this process receives, as (sender, task_info, exception)."""
    received: list[tuple] = []

    def receiver(sender, task_info, exception, **kwargs):
        received.append((sender, task_info, exception))

    signals.task_dead.connect(receiver)
    yield received
    signals.task_dead.disconnect(receiver)


def test_the_recoverer_sends_task_dead_for_a_last_attempt_whose_lease_expired(
        broker, dead_signals):
    config = WorkerConfig(queues={QUEUE: 1}, lease_seconds=0.3)
    last = tasks.record.using(max_retries=0).enqueue("last").id
    again = tasks.record.using(max_retries=3).enqueue("again").id
    claimed = broker.claim(QUEUE, "gone-host:1:abcdef", [], 2, config.lease_ms, 100, 10**9)
    assert {c.id for c in claimed.claimed} == {last, again}
    recoverer = Recoverer(broker, config)

    def swept() -> bool:
        recoverer.tick()  # the first sweep only starts the grace period of one lease
        return broker.counts(QUEUE)["dead"] == 1

    wait_until(swept, timeout=10, interval=0.1, message="the expired leases recovered")
    assert broker.counts(QUEUE)["pending"] == 1  # the other one goes back, no signal
    [(sender, info, exception)] = dead_signals
    assert sender is tasks.record
    assert (info.id, info.state, info.attempts) == (last, "dead", 1)
    assert isinstance(exception, WorkerLost) and "lease expired" in str(exception)
    assert str(exception) == info.last_error


def test_the_supervisor_sends_task_dead_for_the_last_attempt_of_a_dead_process(
        broker, dead_signals):
    from django_bgtasks.worker.supervisor import Child, Supervisor

    supervisor = Supervisor(WorkerConfig(queues={QUEUE: 1}, processes=1, threads=1))
    task_id = tasks.record.using(max_retries=0).enqueue("held").id
    # a worker process that dies at once (a plain child: no fork of this threaded process)
    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "raise SystemExit(3)"],
                         os.environ)
    [claimed] = broker.claim(QUEUE, supervisor._child_worker_id(0, pid), [], 1, 60_000, 100,
                             10**9).claimed
    assert claimed.id == task_id
    supervisor._children[0] = Child(pid, time.monotonic())

    wait_until(lambda: (supervisor._reap(), supervisor._children[0] is None)[1], timeout=5,
               interval=0.01, message="the dead process reaped")

    [(sender, info, exception)] = dead_signals
    assert sender is tasks.record and (info.id, info.state) == (task_id, "dead")
    assert isinstance(exception, WorkerLost)
    assert f"worker process {pid} died (exit code 3)" in str(exception)


def test_the_watchdog_sends_task_dead_for_a_last_attempt_that_ignored_its_timeout(
        broker, dead_signals):
    task_id = tasks.record.using(max_retries=0).enqueue("stuck").id
    executor = TaskExecutor("w-stuck")
    [claimed] = broker.claim(QUEUE, "w-stuck", [], 1, 60_000, 100, 10**9).claimed
    entry = Running(claimed, QUEUE, executor.decode(claimed))
    table = InFlight()
    processor = Processor(broker, WorkerConfig(queues={QUEUE: 1}, processes=1, threads=1),
                          "w-stuck", executor, table)
    watchdog = TimeoutWatchdog(table, processor, executor)
    done = threading.Event()

    def stuck() -> None:
        table.add(entry)
        table.start(entry, time.monotonic() - 1)  # already past its deadline
        while not done.is_set():
            try:
                time.sleep(0.01)
            except TaskTimeout:
                pass  # ignores it, as a task blocked in C code would

    thread = threading.Thread(target=stuck)
    thread.start()
    try:
        wait_until(lambda: entry.thread_ident is not None, timeout=2, interval=0.01)
        wait_until(lambda: (watchdog.tick(), dead_signals)[1], timeout=10, interval=0.1,
                   message="the watchdog gives up on the task after its grace period")
    finally:
        done.set()
        thread.join(2)
    [(sender, info, exception)] = dead_signals
    assert sender is tasks.record and (info.id, info.state) == (task_id, "dead")
    assert isinstance(exception, TaskTimeout)
