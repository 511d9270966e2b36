"""End-to-end: a cancelled task never runs on a real `manage.py runbackground`, whatever
queued state it was cancelled in, and what it held (a limit's waiter place) goes on to the
next task. The tasks' own side effects (demo.recording) say what ran."""

from __future__ import annotations

from demo import recording
from demo.tasks import record
from django_bgtasks import cancel_task, get_task_info
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.types import Ack
from helpers import drive, wait_until

LEASE_MS = 60_000


def claim(n: int, acks=()) -> list:
    return get_broker().claim("default", "seeder", list(acks), n, LEASE_MS, 10_000,
                              10**12).claimed


def test_tasks_cancelled_in_every_queued_state_never_run(start_worker, redis_server):
    r = redis_server.client()
    # retry: a failed attempt, due again in a second
    retry = record.enqueue("c-retry").id
    drive([retry], "retry", delay_ms=1000, error="ValueError: once more")
    # waiting: two tasks wait behind a running one under a concurrency limit of 1
    limited = record.using(concurrency_limit=1)
    blocker, waiter, next_waiter = (limited.enqueue(t).id
                                    for t in ("c-blocker", "c-waiting", "w-next"))
    [running] = claim(3)
    assert running.id == blocker
    assert get_task_info(waiter).state == get_task_info(next_waiter).state == "waiting"
    pending = record.enqueue("c-pending").id
    scheduled = record.using(run_after=1).enqueue("c-scheduled").id
    cancelled = [retry, waiter, pending, scheduled]

    assert [cancel_task(i, by="e2e").state for i in cancelled] == ["cancelled"] * 4
    # the blocker ends: the limit's next waiter (not the cancelled one) is woken
    claim(0, [Ack(blocker, running.attempt, "done")])
    start_worker("--processes", "1", "--threads", "4")
    record.using(run_after=2.5).enqueue("marker")  # due after every other due time

    wait_until(lambda: "marker" in recording.ran(r), timeout=30, message="the marker ran")
    wait_until(lambda: "w-next" in recording.ran(r), timeout=10,
               message="the next waiter of the limit ran")
    ran = recording.ran(r)
    assert not {t for t in ran if t.startswith("c-")}, ran
    assert [get_task_info(i).state for i in cancelled] == ["cancelled"] * 4
    assert {get_task_info(i).cancelled_by for i in cancelled} == {"e2e"}


def test_a_task_cancelled_while_a_worker_waits_for_its_due_time_never_runs(
        start_worker, redis_server):
    r = redis_server.client()
    start_worker("--processes", "1", "--threads", "2")
    soon = record.using(run_after=1).enqueue("c-soon").id
    assert cancel_task(soon).state == "cancelled"
    record.using(run_after=2).enqueue("marker-2")

    wait_until(lambda: "marker-2" in recording.ran(r), timeout=30, message="the marker ran")
    assert "c-soon" not in recording.ran(r)
    assert get_task_info(soon).state == "cancelled"
