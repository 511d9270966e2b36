"""Cancelling a running task and its progress, at the broker (the scripts' side) and in
the task's own API: extend.lua (the worker's control call) writes progress and reports
cancel requests, the ack 'cancelled' ends a run cancelled, and a run whose cancel was
requested never runs again, however it ends (a failure, a shutdown, a lost worker)."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from demo import tasks
from django_bgtasks import (
    TaskCancelled,
    TaskInfo,
    TaskProgress,
    background_task,
    current_task,
    get_task_info,
)
from django_bgtasks.broker.types import Ack
from helpers import request_cancel

Q = "default"
LEASE_MS = 60_000
DEAD_MAX, DEAD_AGE_MS = 10_000, 10**12


def start(broker, *tokens: str, **using) -> list[str]:
    """Enqueue one demo task per token and claim them all (the queue holds nothing else)."""
    ids = [tasks.record.using(**using).enqueue(token).id for token in tokens]
    claimed = broker.claim(Q, "w1", [], len(ids), LEASE_MS, DEAD_MAX, DEAD_AGE_MS).claimed
    assert sorted(c.id for c in claimed) == sorted(ids)
    return ids


def ack(broker, task_id: str, outcome: str, attempt: int = 1, **fields) -> list[str]:
    """Send one ack as a worker does; returns the ids it did not apply to."""
    return broker.claim(Q, "w1", [Ack(task_id, attempt, outcome, **fields)], 0, LEASE_MS,
                        DEAD_MAX, DEAD_AGE_MS).ignored


def record(broker, raw, task_id: str) -> dict:
    return json.loads(raw.hget(broker.queue_keys(Q).info, task_id))


def in_set(broker, raw, state: str, task_id: str) -> bool:
    return raw.zscore(getattr(broker.queue_keys(Q), state), task_id) is not None


# -- extend.lua: the control call -----------------------------------------------------


def test_the_control_call_reports_cancel_requests_of_this_attempt_only(broker):
    asked, other = start(broker, "asked", "other")
    request_cancel(asked, by="alice")
    found = broker.renew(Q, [(asked, 1, ""), (other, 1, "")], 0)
    assert found.cancel_requested == [asked] and found.lost == []
    # a stale attempt of it (its worker was replaced) is not told
    assert broker.renew(Q, [(asked, 7, "")], 0).cancel_requested == []
    assert get_task_info(asked).state == "active"  # the worker ends it, not the request


def test_the_control_call_writes_progress_with_redis_time_and_keeps_it_unchanged(broker, raw):
    [task_id] = start(broker, "p")
    seconds, micros = raw.time()
    before = seconds * 1000 + micros // 1000
    broker.renew(Q, [(task_id, 1, json.dumps([3, 10, "rendering"]))], 0)
    stored = record(broker, raw, task_id)["progress"]
    assert stored["current"] == 3 and stored["total"] == 10
    assert stored["message"] == "rendering" and stored["updated_at"] >= before

    broker.renew(Q, [(task_id, 1, "")], 0)  # nothing new: left as it was
    assert record(broker, raw, task_id)["progress"] == stored
    broker.renew(Q, [(task_id, 1, json.dumps([4, None, None]))], 0)
    progress = get_task_info(task_id).progress
    assert progress == TaskProgress(4, None, None, progress.updated_at)
    assert progress.updated_at is not None and progress.fraction is None


def test_the_control_call_ignores_damaged_progress_and_other_attempts(broker, raw):
    [task_id] = start(broker, "p")
    for bad in ("not json", "[]", '["3", 10]', '{"current": 3}', "[1e999]"):
        broker.renew(Q, [(task_id, 1, bad)], 0)
    assert "progress" not in record(broker, raw, task_id)
    broker.renew(Q, [(task_id, 2, json.dumps([1, 2, "x"]))], LEASE_MS)  # not its attempt
    assert "progress" not in record(broker, raw, task_id)


def test_a_control_call_without_a_lease_renews_nothing_and_reports_nothing_lost(broker, raw):
    [task_id] = start(broker, "t")
    active = broker.queue_keys(Q).active
    raw.zadd(active, {task_id: 1_000}, xx=True)
    assert broker.renew(Q, [(task_id, 1, ""), ("ghost", 1, "")], 0).lost == []
    assert raw.zscore(active, task_id) == 1_000
    assert broker.renew(Q, [(task_id, 1, ""), ("ghost", 1, "")], LEASE_MS).lost == ["ghost"]
    assert raw.zscore(active, task_id) > 1_000


# -- claim.lua: how a run with a cancel request ends ------------------------------------


def test_the_ack_cancelled_ends_a_run_cancelled_with_who_and_when(broker, raw):
    [task_id] = start(broker, "c")
    request_cancel(task_id, by="alice")
    asked_at = record(broker, raw, task_id)["cancel"]["at"]
    assert ack(broker, task_id, "cancelled", error="TaskCancelled: stopping",
               progress=json.dumps([5, 8, "half"])) == []

    info = get_task_info(task_id)
    assert info.state == "cancelled" and info.finished_at is not None
    assert in_set(broker, raw, "cancelled", task_id)
    assert not in_set(broker, raw, "active", task_id)
    assert record(broker, raw, task_id)["cancel"] == {"by": "alice", "at": asked_at}
    assert info.last_error == "TaskCancelled: stopping"
    assert (info.progress.current, info.progress.total, info.progress.message) == (5, 8, "half")


def test_a_run_that_cancels_itself_unasked_says_so(broker, raw):
    [task_id] = start(broker, "self")
    ack(broker, task_id, "cancelled", error="django_bgtasks.exceptions.TaskCancelled: no")
    assert get_task_info(task_id).state == "cancelled"
    assert record(broker, raw, task_id)["cancel"]["by"] == "the task itself"


@pytest.mark.parametrize("outcome, fields", [
    ("retry", {"delay_ms": 0, "error": "ValueError: boom"}),
    ("dead", {"error": "ValueError: boom"}),
    ("requeue", {}),
])
def test_a_run_whose_cancel_was_requested_never_runs_again(broker, raw, outcome, fields):
    # The worker decided before it learned of the request: Redis still ends it cancelled.
    [task_id] = start(broker, "r")
    request_cancel(task_id)
    assert ack(broker, task_id, outcome, **fields) == []
    assert get_task_info(task_id).state == "cancelled"
    assert [s for s in ("pending", "retry", "dead", "active", "cancelled")
            if in_set(broker, raw, s, task_id)] == ["cancelled"]
    assert broker.claim(Q, "w1", [], 10, LEASE_MS, DEAD_MAX, DEAD_AGE_MS).claimed == []


def test_a_run_that_succeeds_despite_a_request_is_completed_with_its_result(broker, raw):
    [task_id] = start(broker, "ok", result_ttl=60)
    request_cancel(task_id, by="bob")
    ack(broker, task_id, "done", result='"ok"', result_ttl_ms=60_000,
        progress=json.dumps([10, 10, "done"]))
    info = get_task_info(task_id)
    assert info.state == "completed" and info.result == "ok"
    assert info.progress.message == "done"
    assert record(broker, raw, task_id)["cancel"]["by"] == "bob"


def test_progress_is_kept_on_the_final_record(broker, raw):
    kept, dead = start(broker, "kept", "dead", result_ttl=60)
    for task_id in (kept, dead):
        broker.renew(Q, [(task_id, 1, json.dumps([2, 4, "mid"]))], 0)
    ack(broker, kept, "done", result='"x"', result_ttl_ms=60_000)  # no newer progress
    ack(broker, dead, "dead", error="ValueError: boom")
    for task_id in (kept, dead):
        assert get_task_info(task_id).progress.message == "mid"


@background_task(unique_for=3600)
def unique_job() -> None:
    pass


def test_cancelling_a_unique_task_gives_its_lock_back(broker):
    unique = unique_job
    first = unique.enqueue().id
    broker.claim(Q, "w1", [], 1, LEASE_MS, DEAD_MAX, DEAD_AGE_MS)
    request_cancel(first)
    ack(broker, first, "cancelled", error="TaskCancelled")
    assert unique.enqueue().id != first


# -- recovery: a lost worker never revives a run whose cancel was requested -------------


def test_a_lost_lease_with_a_cancel_request_ends_cancelled(broker, raw):
    asked, plain = start(broker, "asked", "plain")
    request_cancel(asked)
    raw.zadd(broker.queue_keys(Q).active, {asked: 1_000, plain: 1_000}, xx=True)
    swept = broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS)
    assert swept.cancelled == [asked] and swept.moved == [plain]
    info = get_task_info(asked)
    assert info.state == "cancelled" and info.last_error.startswith("WorkerLost")
    # its worker, cut off only, cannot take it back
    assert broker.renew(Q, [(asked, 1, "")], LEASE_MS).lost == [asked]
    assert get_task_info(asked).state == "cancelled"


def test_a_dead_worker_process_with_a_cancel_request_releases_it_cancelled(broker):
    asked, plain = start(broker, "asked", "plain")
    request_cancel(asked)
    back, dead, cancelled = broker.release_worker(Q, "w1", "WorkerLost: killed", DEAD_MAX,
                                                  DEAD_AGE_MS)
    assert (back, dead, cancelled) == ([plain], [], [asked])
    assert get_task_info(asked).state == "cancelled"


# -- the task's side: current_task() ---------------------------------------------------


@background_task
def eager_progress(n: int) -> int:
    run = current_task()
    for i in range(n):
        run.set_progress(i + 1, total=n, message="counting")
    run.raise_if_cancelled()  # EAGER: nobody can ask
    assert not run.cancel_requested
    return n


@override_settings(BGTASKS={"EAGER": True})
def test_eager_runs_keep_their_progress_in_memory():
    info = eager_progress.enqueue(3)
    assert info.state == "completed" and info.result == 3
    assert info.progress == TaskProgress(3, 3, "counting", None)
    assert info.progress.fraction == 1.0


@pytest.mark.parametrize("args, kwargs, error", [
    (("3",), {}, "current must be a number"),
    ((True,), {}, "current must be a number"),
    ((float("nan"),), {}, "current must be finite"),
    ((1,), {"total": float("inf")}, "total must be finite"),
    ((1,), {"message": 5}, "message must be a string"),
])
def test_set_progress_refuses_bad_values_naming_the_argument(args, kwargs, error):
    from django_bgtasks.context import running

    with running(_message(), 1, "w") as run:
        with pytest.raises((TypeError, ValueError), match=error):
            run.set_progress(*args, **kwargs)
        assert run._control.progress is None  # nothing kept


def _message():
    import time

    from django_bgtasks.message import TaskMessage

    return TaskMessage(id="t", name="demo.tasks.record", queue=Q, args=["x"], kwargs={},
                       priority=0, max_retries=0, timeout=60.0, result_ttl=None,
                       unique_key=None, enqueued_at=time.time())


def test_a_long_message_is_cut_and_raise_if_cancelled_raises_once_asked():
    from django_bgtasks.context import running

    with running(_message(), 1, "w") as run:
        run.set_progress(1, message="x" * 1000)
        assert len(run._control.progress[2]) == 200
        run._control.cancel_requested = True  # what the worker's heartbeat does
        assert run.cancel_requested
        with pytest.raises(TaskCancelled):
            run.raise_if_cancelled()


def test_damaged_stored_progress_reads_as_none():
    for value in (None, "x", [], {"current": "3"}, {"current": float("nan")}):
        assert TaskProgress.from_stored(value) is None
    kept = TaskProgress.from_stored({"current": 2, "total": "9", "message": 3})
    assert kept == TaskProgress(2, None, None, None)
    assert TaskInfo.__dataclass_fields__["progress"].default is None


# -- the worker's executor: how a run's end becomes an outcome --------------------------


@pytest.mark.django_db(transaction=True)  # the executor closes stale db connections
@pytest.mark.parametrize("task, args, asked, outcome", [
    (tasks.cooperative, ("c", 1.0), True, "cancelled"),      # stops as asked
    (tasks.always_fails, (), True, "cancelled"),             # fails after a request
    (tasks.always_fails, (), False, "retry"),                # fails, nobody asked
    (tasks.add, (1, 2), True, "done"),                       # succeeds despite it
])
def test_the_executor_ends_a_run_cancelled_after_a_request(broker, task, args, asked,
                                                           outcome):
    from django_bgtasks import signals
    from django_bgtasks.context import RunControl
    from django_bgtasks.worker.execution import TaskExecutor

    task.enqueue(*args)
    [claimed] = broker.claim(Q, "w1", [], 1, LEASE_MS, DEAD_MAX, DEAD_AGE_MS).claimed
    executor, control = TaskExecutor("w1"), RunControl()
    control.cancel_requested = asked  # what the heartbeat sets
    received = []

    def receiver(sender, task_info, **kwargs):
        received.append((sender, task_info.state, task_info.id))

    signals.task_cancelled.connect(receiver)
    try:
        ack = executor.run(claimed, executor.decode(claimed), control)
    finally:
        signals.task_cancelled.disconnect(receiver)
    assert ack.outcome == outcome
    assert received == ([(task, "cancelled", claimed.id)] if outcome == "cancelled" else [])
    if task is tasks.cooperative:
        assert json.loads(ack.progress)[:2] == [1, 50]  # its last progress rides the ack
        assert ack.error.endswith("TaskCancelled: stopping as asked")
