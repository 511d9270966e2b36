"""Worker parts in-process, given their collaborators by hand (real Redis where they need
one, no mocks): the in-flight table, the timeout watchdog, the supervisor's handling of a
dead process, and the cluster's queue waiter."""

from __future__ import annotations

import threading
import time

from demo import tasks
from django_bgtasks.broker.types import Ack
from django_bgtasks.exceptions import TaskTimeout
from django_bgtasks.worker.config import WorkerConfig
from django_bgtasks.worker.execution import TaskExecutor
from django_bgtasks.worker.inflight import InFlight, Running
from django_bgtasks.worker.processor import Processor
from django_bgtasks.worker.timeouts import TimeoutWatchdog
from helpers import wait_until

QUEUE = "default"


def claimed_entries(broker, n: int) -> list[Running]:
    for i in range(n):
        tasks.record.enqueue(f"t{i}")
    executor = TaskExecutor("w-parts")
    result = broker.claim(QUEUE, "w-parts", [], n, 30_000, 100, 10**9)
    return [Running(c, QUEUE, executor.decode(c)) for c in result.claimed]


def test_inflight_tracks_an_attempt_until_its_ack_is_taken(broker):
    [entry] = claimed_entries(broker, 1)
    table = InFlight()
    table.add(entry)
    assert table.controlled(True, 0.0) == {QUEUE: [entry]} and table.busy_threads() == 1
    assert table.start(entry, time.monotonic() + 60)
    ack = Ack(entry.claimed.id, entry.claimed.attempt, "done")
    assert table.finish(entry, ack) and not table.finish(entry, ack)  # decided once
    table.release_thread(entry)
    assert table.busy_threads() == 0 and table.owes_ack(entry.claimed.id)
    table.acknowledged([ack])
    assert table.controlled(True, 0.0) == {} and not table.owes_ack(entry.claimed.id)


def test_take_unstarted_decides_only_what_no_thread_took(broker):
    first, second = claimed_entries(broker, 2)
    table = InFlight()
    table.add(first)
    table.add(second)
    table.start(first, time.monotonic() + 60)
    taken = table.take_unstarted(lambda e: Ack(e.claimed.id, e.claimed.attempt, "requeue"))
    assert [entry for entry, _ in taken] == [second]
    assert not table.start(second, time.monotonic() + 60)  # a thread comes too late


def test_the_watchdog_interrupts_an_overdue_task_in_its_own_thread_only(broker):
    overdue, innocent = claimed_entries(broker, 2)
    table = InFlight()
    config = WorkerConfig(queues={QUEUE: 1}, processes=1, threads=1)
    executor = TaskExecutor("w-parts")
    processor = Processor(broker, config, "w-parts", executor, table)
    watchdog = TimeoutWatchdog(table, processor, executor)
    interrupted = threading.Event()

    def run(entry: Running) -> None:
        table.add(entry)
        table.start(entry, time.monotonic() - 1)  # already past its deadline
        try:
            while True:
                time.sleep(0.01)
        except TaskTimeout:
            interrupted.set()

    thread = threading.Thread(target=run, args=(overdue,))
    thread.start()
    wait_until(lambda: overdue.thread_ident is not None, timeout=2, interval=0.01)
    watchdog.tick()
    thread.join(2)
    assert interrupted.is_set() and not thread.is_alive()

    # the thread has left that task for another: the old entry never interrupts it again
    table.release_thread(overdue)
    table.add(innocent)
    table.start(innocent, time.monotonic() + 60)
    interrupted.clear()
    overdue.interrupted_at = None  # even were it not marked as interrupted already
    assert not table.interrupt(overdue, lambda ident: interrupted.set())
    assert not interrupted.is_set()


def test_the_supervisor_returns_a_dead_process_tasks_at_once_and_backs_off(broker):
    import os
    import sys

    from django_bgtasks import get_task_info
    from django_bgtasks.worker.supervisor import Child, Supervisor

    supervisor = Supervisor(WorkerConfig(queues={QUEUE: 1}, processes=1, threads=1))
    task_id = tasks.record.enqueue("held").id
    # a worker process that dies at once (a plain child: no fork of this threaded process)
    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "raise SystemExit(3)"],
                         os.environ)
    worker_id = supervisor._child_worker_id(0, pid)
    [claimed] = broker.claim(QUEUE, worker_id, [], 1, 60_000, 100, 10**9).claimed
    assert claimed.id == task_id
    supervisor._children[0] = Child(pid, time.monotonic())

    wait_until(lambda: (supervisor._reap(), supervisor._children[0] is None)[1], timeout=5,
               interval=0.01, message="the dead process reaped")

    info = get_task_info(task_id)
    assert (info.state, info.attempts) == ("pending", 1)  # now, not after its 60 s lease
    assert f"worker process {pid} died (exit code 3)" in info.last_error
    assert supervisor._restart_at[0] > time.monotonic()  # it died young: restart later


def test_the_queue_waiter_wakes_on_the_queue_that_got_work_and_on_interrupt(broker, raw):
    from django_bgtasks.broker.queue_waiter import QueueWaiter

    waiter = QueueWaiter(broker.client, broker.translate_errors, slice_cap=0.2)
    keys = {q: broker.queue_keys(q).notify for q in ("qw-a", "qw-b")}
    try:
        timer = threading.Timer(0.1, lambda: raw.rpush(keys["qw-b"], "1"))
        timer.start()
        assert waiter.wait(keys, 5.0) == "qw-b"
        timer.join()
        timer = threading.Timer(0.1, waiter.interrupt)
        timer.start()
        started = time.monotonic()
        assert waiter.wait(keys, 5.0) is None
        assert time.monotonic() - started < 1.0
        timer.join()
    finally:
        waiter.close()
