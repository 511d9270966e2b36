"""End-to-end: `manage.py runbackground --burst [--fail-on-error]` runs what is due now and
exits (docs/worker.md, "Burst mode").

Due now: the pending tasks, the scheduled and retry tasks whose time has come (moved to
pending first), and what those tasks enqueue that is due, to a fixed point; tasks due
later stay where they are and are not waited for.
"""

from __future__ import annotations

import signal
import time
from datetime import timedelta

from demo import recording, tasks
from helpers import counts, state_of, wait_until

BURST_TIMEOUT = 60.0  # generous: the worker's start-up alone takes a second or two


def test_burst_drains_pending_due_and_enqueued_tasks_leaves_later_ones_and_exits_0(
        run_worker, redis_server):
    r = redis_server.client()
    for i in range(5):
        tasks.record.enqueue(f"pending-{i}")
    due = tasks.record.using(run_after=timedelta(seconds=0.5)).enqueue("was-scheduled")
    later = tasks.record.using(run_after=timedelta(hours=1)).enqueue("later")
    tasks.fan_out.enqueue("tree", 2, later=3600)  # 7 tasks in all, and one scheduled
    time.sleep(0.7)  # "was-scheduled" is due now
    assert state_of(due.id) == "scheduled"  # nothing has moved it yet: the burst must

    worker = run_worker("--burst", "--fail-on-error", "--processes", "2", "--threads", "2")
    assert worker.wait(BURST_TIMEOUT) == 0, worker.log_text()

    tree = {"tree", "tree.a", "tree.b", "tree.a.a", "tree.a.b", "tree.b.a", "tree.b.b"}
    expected = {f"pending-{i}" for i in range(5)} | {"was-scheduled"} | tree
    assert recording.ran(r) == expected
    assert sorted(recording.log(r)) == sorted(expected)  # each once
    assert state_of(later.id) == "scheduled"
    left = counts()
    assert (left["pending"], left["active"], left["scheduled"]) == (0, 0, 2), left
    assert f"burst: {len(expected)} task attempt(s) ran, {len(expected)} succeeded, 0 failed" \
        in worker.log_text()
    wait_until(lambda: not worker.group_alive(), timeout=5, message="no process left")


def test_burst_with_nothing_due_exits_at_once(run_worker):
    tasks.record.using(run_after=timedelta(hours=1)).enqueue("later")
    started = time.monotonic()
    worker = run_worker("--burst", "--processes", "2", "--queues", "default,mail")
    assert worker.wait(BURST_TIMEOUT) == 0, worker.log_text()
    # Start-up (Django, Redis) is most of it; a burst that waited for the scheduled task,
    # or for an idle wait per process, would take far longer.
    assert time.monotonic() - started < 20
    assert "burst: 0 task attempt(s) ran, 0 succeeded, 0 failed" in worker.log_text()
    assert counts()["scheduled"] == 1


def test_fail_on_error_exits_1_when_an_attempt_failed_and_does_not_wait_for_its_retry(
        run_worker, redis_server):
    r = redis_server.client()
    tasks.record.enqueue("fine")
    retried = tasks.flaky.enqueue("flaky-burst", failures=5)  # retries 2 s later
    dead = tasks.skip_retry.enqueue("dead-burst")  # straight to the dead queue
    worker = run_worker("--burst", "--fail-on-error", "--processes", "1")
    assert worker.wait(BURST_TIMEOUT) == 1, worker.log_text()
    assert "burst: 3 task attempt(s) ran, 1 succeeded, 2 failed" in worker.log_text()
    assert {"fine", "dead-burst"} <= recording.ran(r)
    assert state_of(retried.id) == "retry"  # its retry is due later: not waited for
    assert state_of(dead.id) == "dead"


def test_failures_without_fail_on_error_still_exit_0(run_worker):
    tasks.skip_retry.enqueue("dead-burst")
    worker = run_worker("--burst", "--processes", "1")
    assert worker.wait(BURST_TIMEOUT) == 0, worker.log_text()
    assert "burst: 1 task attempt(s) ran, 0 succeeded, 1 failed" in worker.log_text()


def test_sigterm_during_a_burst_drains_as_usual(run_worker, redis_server):
    r = redis_server.client()
    info = tasks.mark_sleep_record.enqueue("long", 30)
    tasks.record.enqueue("queued-behind")
    worker = run_worker("--burst", "--processes", "1", "--threads", "1",
                        "--shutdown-timeout", "1")
    wait_until(lambda: recording.attempts(r, "long") == 1, timeout=BURST_TIMEOUT)
    worker.send(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log_text()
    # The running task went back to the head of its queue, its attempt not counted; the
    # one behind it was never started.
    assert state_of(info.id) == "pending"
    assert recording.ran(r) == set()
    assert counts()["pending"] == 2
