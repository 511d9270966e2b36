"""Cancelling tasks (cancel.lua, RedisBroker.cancel, cancel_task / BackgroundTask.cancel):
a queued task ends 'cancelled' in one call and gives back its lock, limit slot or waiter
place; a running one is asked to stop; an ended one is left alone. Driven through the
public API and the broker, as a worker drives it; test_e2e_cancel runs real workers."""

from __future__ import annotations

import json

import pytest

from demo.tasks import record
from django_bgtasks import TaskNotFound, background_task, cancel_task, get_task_info, signals
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.bulk import BulkJobStore
from django_bgtasks.broker.types import Ack
from helpers import drive, seed_waiting

HOUR_MS = 3_600_000
LEASE_MS = 60_000


@background_task(unique_for=3600)
def unique_report(key: str) -> str:
    return key


def claim(queue: str, n: int, acks=()) -> list:
    return get_broker().claim(queue, "w1", list(acks), n, LEASE_MS, 10_000, 10**12).claimed


def queued(state: str, queue: str = "default", token: str = "t") -> str:
    """One task of ``queue`` (no other pending task there) in a queued ``state``."""
    if state == "scheduled":
        return record.using(queue_name=queue, run_after=3600).enqueue(token).id
    if state == "waiting":
        return seed_waiting(queue, token)
    task_id = record.using(queue_name=queue).enqueue(token).id
    if state == "retry":
        drive([task_id], "retry", queue, delay_ms=HOUR_MS, error="ValueError: later")
    return task_id


def in_sets(task_id: str, queue: str = "default") -> list[str]:
    broker = get_broker()
    keys = broker.queue_keys(queue)
    with broker.translate_errors():
        return [s for s in ("pending", "waiting", "active", "scheduled", "retry", "dead",
                            "completed", "cancelled", "expired")
                if broker.client.zscore(getattr(keys, s), task_id) is not None]


@pytest.fixture
def sent():
    """The task_cancelled signals sent during the test: [(sender, task_info)]."""
    caught = []

    def receiver(sender, task_info, **_):
        caught.append((sender, task_info))

    signals.task_cancelled.connect(receiver)
    yield caught
    signals.task_cancelled.disconnect(receiver)


# -- queued tasks ---------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["pending", "scheduled", "retry", "waiting"])
def test_a_queued_task_is_cancelled_in_one_call(state, sent):
    task_id = queued(state)
    assert get_task_info(task_id).state == state

    info = cancel_task(task_id, by="alice")

    assert info.state == "cancelled"
    assert info.cancelled_by == "alice" and info.cancelled_at is not None
    assert info.finished_at == info.cancelled_at
    assert not info.cancel_requested
    assert in_sets(task_id) == ["cancelled"]
    assert get_task_info(task_id) == info  # stored, not only returned
    assert [(s, i.id, i.state) for s, i in sent] == [(record, task_id, "cancelled")]
    # a worker claims nothing: it never runs
    assert claim("default", 10) == []


def test_the_task_method_cancels_and_sends_itself_as_sender(sent):
    task_id = record.using(run_after=3600).enqueue("x").id

    info = record.cancel(task_id)

    assert info.state == "cancelled" and info.cancelled_by is None
    assert [s for s, _ in sent] == [record]


def test_cancelling_frees_the_uniqueness_lock():
    first = unique_report.enqueue("k").id
    with pytest.raises(Exception, match="holds the lock"):
        unique_report.enqueue("k")

    cancel_task(first)

    assert unique_report.enqueue("k").id != first


def test_a_cancelled_waiter_leaves_its_place_and_the_next_waiter_still_starts():
    limited = record.using(queue_name="lim", concurrency_limit=1)
    ids = [limited.enqueue(f"t{i}").id for i in range(3)]
    [running] = claim("lim", 3)
    assert [get_task_info(i).state for i in ids] == ["active", "waiting", "waiting"]

    assert cancel_task(ids[1]).state == "cancelled"

    assert get_broker().limits("lim")[0][0].waiting == 1  # ids[2] alone
    again = claim("lim", 3, [Ack(running.id, running.attempt, "done")])
    assert [c.id for c in again] == [ids[2]]


def test_a_woken_task_cancelled_before_its_claim_passes_the_wake_up_on():
    limited = record.using(queue_name="lim", concurrency_limit=1)
    ids = [limited.enqueue(f"t{i}").id for i in range(3)]
    [running] = claim("lim", 3)
    claim("lim", 0, [Ack(running.id, running.attempt, "done")])  # wakes ids[1]
    assert [get_task_info(i).state for i in ids[1:]] == ["pending", "waiting"]

    cancel_task(ids[1])

    assert get_task_info(ids[2]).state == "pending"
    assert [c.id for c in claim("lim", 3)] == [ids[2]]


# -- running and ended tasks ----------------------------------------------------------------


def test_a_running_task_gets_the_request_and_stays_active(sent):
    task_id = record.enqueue("x").id
    drive([task_id], None)

    info = cancel_task(task_id, by="alice")
    again = cancel_task(task_id, by="bob")

    assert info.state == "active" and info.cancel_requested
    assert info.cancelled_by == "alice" and info.cancelled_at is not None
    # the first ask is kept: who and when
    assert (again.cancelled_by, again.cancelled_at) == ("alice", info.cancelled_at)
    assert in_sets(task_id) == ["active"]
    assert sent == []  # its worker announces the end


@pytest.mark.parametrize("outcome, state", [("done", "completed"), ("dead", "dead")])
def test_an_ended_task_is_left_as_it_is(outcome, state, sent):
    task_id = record.enqueue("x").id
    drive([task_id], outcome, result_ttl_ms=HOUR_MS, error="E: x")
    before = get_task_info(task_id)

    after = cancel_task(task_id, by="alice")

    assert after == before and after.state == state and after.cancelled_by is None
    assert sent == []


def test_cancelling_twice_keeps_the_first_cancel(sent):
    task_id = record.using(run_after=3600).enqueue("x").id
    first = cancel_task(task_id, by="alice")

    assert cancel_task(task_id, by="bob") == first
    assert len(sent) == 1


def test_an_unknown_id_is_task_not_found():
    with pytest.raises(TaskNotFound):
        cancel_task("no-such-task")


@pytest.mark.parametrize("task_id, by, name", [
    ("", None, "task_id"), (42, None, "task_id"), ("x", 7, "by"), ("x", "b" * 201, "by")])
def test_bad_arguments_are_refused_naming_them(task_id, by, name):
    with pytest.raises(ValueError, match=f"^{name} must be"):
        cancel_task(task_id, by=by)


def test_the_broker_reports_each_id_in_one_call():
    pending = queued("pending", token="p")
    scheduled = queued("scheduled", token="s")
    done = record.enqueue("d").id
    # one claim takes both pending tasks: ack `done`, keep `pending` running
    claimed = {c.id: c for c in claim("default", 10)}
    assert set(claimed) == {pending, done}
    claim("default", 0, [Ack(done, claimed[done].attempt, "done", result_ttl_ms=HOUR_MS)])

    result = get_broker().cancel("default", [scheduled, pending, done, "gone"], "ops")

    assert result.cancelled == [scheduled]
    assert result.requested == [pending]
    assert result.finished == {done: "completed"}
    assert result.missing == ["gone"]


def test_a_damaged_record_does_not_break_the_cancel(raw):
    task_id = record.using(run_after=3600).enqueue("x").id
    keys = get_broker().queue_keys("default")
    raw.hset(keys.info, task_id, b'{"state": 7, "attempts": "x", "cancel": "who"}')

    assert get_broker().cancel("default", [task_id]).cancelled == [task_id]
    stored = json.loads(raw.hget(keys.info, task_id))
    assert stored["state"] == "cancelled" and stored["cancel"]["by"] == ""
    assert get_task_info(task_id).state == "cancelled"


# -- cancel all (bulk jobs) -----------------------------------------------------------------


def run_job(queue: str, state: str, batch: int = 2):
    store = BulkJobStore(get_broker())
    queued_job = store.queue(queue, state, "cancel", "alice")
    assert queued_job.outcome == "ok"
    job = store.claim(queue, "runner", LEASE_MS)
    steps = 0
    while job is not None and job.status == "running":
        job = store.step(job, "runner", LEASE_MS, batch)
        steps += 1
        assert steps < 50
    return job


def test_cancel_all_pending_tasks_in_bounded_batches():
    ids = [record.using(queue_name="bulk").enqueue(f"t{i}").id for i in range(5)]

    job = run_job("bulk", "pending", batch=2)

    assert job.status == "done" and (job.done, job.total) == (5, 5)
    assert job.describe() == "cancel all 5 pending tasks of queue bulk"
    assert {get_task_info(i).state for i in ids} == {"cancelled"}
    assert {get_task_info(i).cancelled_by for i in ids} == {"alice"}


def test_cancel_all_running_tasks_asks_each_once():
    ids = [record.using(queue_name="bulk").enqueue(f"t{i}").id for i in range(5)]
    drive(ids, None, "bulk")
    cancel_task(ids[0], by="bob")  # asked before: counted once, by bob

    job = run_job("bulk", "active", batch=2)

    assert job.status == "done" and job.done == 4 and job.total == 5
    infos = [get_task_info(i) for i in ids]
    assert all(i.state == "active" and i.cancel_requested for i in infos)
    assert [i.cancelled_by for i in infos] == ["bob"] + ["alice"] * 4


def test_cancel_all_refuses_ended_states():
    with pytest.raises(ValueError, match="not possible"):
        BulkJobStore(get_broker()).queue("default", "dead", "cancel", "alice")
