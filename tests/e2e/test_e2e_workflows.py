"""End-to-end: workflows on a real `manage.py runbackground`: each link of a chain gets the
previous result, a chord's callback gets its group's results in order and runs once, a
failure cancels what follows with the reason, on_complete runs whatever happens, a
dependency gates its dependent, and a requeued dead member resumes its workflow."""

from __future__ import annotations

import json

import pytest

from demo import recording
from demo.tasks import record, wf_collect, wf_report, wf_square, wf_step
from django_bgtasks import (
    TaskNotFound,
    cancel_workflow,
    chain,
    chord,
    get_task_info,
    get_workflow,
    group,
)
from django_bgtasks.broker import get_broker
from helpers import wait_until

WORKER = ("--processes", "1", "--threads", "4")


def ended(workflow_id: str, timeout: float = 30) -> object:
    return wait_until(lambda: get_workflow(workflow_id).finished_at is not None and
                      get_workflow(workflow_id), timeout=timeout,
                      message=f"workflow {workflow_id} ended")


def logged(r) -> list[str]:
    return [t.decode() for t in r.lrange(recording.LOG_KEY, 0, -1)]


def test_a_chain_passes_each_result_to_the_next_link(start_worker, redis_server):
    r = redis_server.client()
    start_worker(*WORKER)
    info = chain(wf_step.s("start", "a"), wf_step.s("b"), wf_step.s("c")).enqueue()
    assert info.size == 3 and info.counts == {"pending": 1, "blocked": 2}
    done = ended(info.id)
    assert done.state == "succeeded"
    assert done.counts == {"completed": 3}
    assert logged(r) == ['a="start"', 'b=["start", "a"]', 'c=[["start", "a"], "b"]']
    last = get_task_info(f"{info.id}.2")
    assert last.result == [[["start", "a"], "b"], "c"]
    assert last.workflows == (info.id,)


def test_a_chord_gets_every_result_in_group_order_once(start_worker, redis_server):
    r = redis_server.client()
    start_worker(*WORKER)
    info = chord(group(wf_square.s(i) for i in range(50)), wf_collect.s("sum")).enqueue()
    assert info.shape == "chord(group(50 x wf_square), wf_collect)"
    done = ended(info.id)
    assert done.state == "succeeded"
    squares = [i * i for i in range(50)]
    assert logged(r) == [f"sum={json.dumps(squares)}"]
    assert get_task_info(done.callback_id).result == sum(squares)


def test_a_dead_member_cancels_the_callback_and_on_complete_still_runs(
        start_worker, redis_server):
    r = redis_server.client()
    start_worker(*WORKER)
    failing = wf_step.using(max_retries=0)
    header = group([wf_square.s(1), failing.s(2, "boom", fail=True), wf_square.s(3)])
    info = chain(header, wf_collect.s("never"), wf_step.s("never-2")).on_complete(
        wf_report.s("report")).enqueue()
    done = ended(info.id)
    assert done.state == "failed"
    assert f"{info.id}.1 ended dead" in done.reason and "boom fails on purpose" in done.reason
    assert done.counts == {"dead": 1, "completed": 3, "cancelled": 2}
    for later in (f"{info.id}.3", f"{info.id}.4"):
        task = get_task_info(later)
        assert task.state == "cancelled"
        assert f"workflow {info.id}: {info.id}.1 ended dead" in task.cancelled_by
    assert "never" not in " ".join(logged(r))
    assert 'report={"succeeded": 2, "failed": 3}' in logged(r)


def test_requeueing_a_dead_member_resumes_the_workflow(start_worker, redis_server):
    r = redis_server.client()
    start_worker(*WORKER)
    key = "wf-resume-flag"
    r.set(key, "fail")
    info = chain(wf_step.using(max_retries=0).s(1, "first", fail=True),
                 wf_step.s("second")).enqueue()
    wait_until(lambda: get_workflow(info.id).state == "failed", timeout=20)
    assert get_task_info(f"{info.id}.1").state == "cancelled"
    # requeue the dead link by hand, now built to succeed: its message is rewritten as an
    # operator's fix would be, then "run now"
    broker = get_broker()
    first = f"{info.id}.0"
    msg = json.loads(r.hget(broker.queue_keys("default").msg, first))
    msg["kwargs"]["fail"] = False
    r.hset(broker.queue_keys("default").msg, first, json.dumps(msg))
    assert broker.requeue("default", [first]) == [first]
    done = wait_until(lambda: get_workflow(info.id).state == "succeeded" and
                      get_workflow(info.id), timeout=20, message="the workflow resumed")
    assert done.counts == {"completed": 2}
    assert logged(r)[-1] == 'second=[1, "first"]'


def test_depends_on_starts_after_its_dependencies_and_is_cancelled_when_one_fails(
        start_worker, redis_server):
    r = redis_server.client()
    slow = [wf_step.s(i, f"dep-{i}").enqueue() for i in range(3)]
    after = record.using(depends_on=[t.id for t in slow]).enqueue("after-all")
    assert after.state == "blocked"
    failing = wf_step.using(max_retries=0).s(0, "dep-fails", fail=True).enqueue()
    never = record.using(depends_on=[slow[0].id, failing.id]).enqueue("never-runs")
    start_worker(*WORKER)
    wait_until(lambda: "after-all" in recording.ran(r), timeout=20)
    wait_until(lambda: get_task_info(never.id).state == "cancelled", timeout=20)
    assert "never-runs" not in recording.ran(r)
    assert f"{failing.id} ended dead" in get_task_info(never.id).cancelled_by
    # a dependency that ended already: decided at enqueue
    done_now = record.using(depends_on=[slow[1].id]).enqueue("after-done")
    assert done_now.state == "pending"
    cancelled_now = record.using(depends_on=[failing.id]).enqueue("after-dead")
    assert cancelled_now.state == "cancelled"
    with pytest.raises(TaskNotFound, match="no-such-task"):
        record.using(depends_on=["no-such-task"]).enqueue("x")


def test_cancel_workflow_cancels_members_not_started(start_worker, redis_server):
    r = redis_server.client()
    info = chain(group(wf_square.s(i) for i in range(20)), wf_collect.s("cancelled-sum"),
                 ).enqueue()
    cancelled = cancel_workflow(info.id, by="tests")
    assert cancelled.state == "cancelled"
    assert cancelled.counts == {"cancelled": 21}
    start_worker(*WORKER)
    record.enqueue("marker")
    wait_until(lambda: "marker" in recording.ran(r), timeout=20)
    assert not any(t.startswith("cancelled-sum") for t in logged(r))
    assert get_workflow(info.id).finished_at is not None
