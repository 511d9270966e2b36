"""Workflows against a real Redis, driven the way a worker drives them (claim, ack,
forward), so each rule of the barrier is checked step by step: counted once, actions
replayed and safe twice, results spliced exactly, failures, validation at enqueue."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django.core import checks

from demo.tasks import record, wf_collect, wf_square, wf_step
from django_bgtasks import (
    WorkflowNotFound,
    chain,
    chord,
    get_task_info,
    get_workflow,
    group,
)
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.types import Ack
from django_bgtasks.broker.workflows import WorkflowStore

KEEP_MS = 3_600_000


@pytest.fixture(autouse=True)
def enqueue_at_once(settings):
    settings.BGTASKS = {**settings.BGTASKS, "ENQUEUE_ON_COMMIT": False}


def store() -> WorkflowStore:
    return WorkflowStore(get_broker())


def run_pending(results: dict[str, str] | None = None, outcome: str = "done",
                forward: bool = True, queue: str = "default") -> list[str]:
    """Claim every pending task of ``queue`` and ack it (``results``: id -> result JSON,
    else null); forward the ends unless told not to. Returns the ids run."""
    broker = get_broker()
    claimed = broker.claim(queue, "w", [], 1000, 60_000, 1000, 10**12).claimed
    acks = [Ack(c.id, c.attempt, outcome, result=(results or {}).get(c.id, "null"),
                error="ValueError: no" if outcome != "done" else "")
            for c in claimed]
    reply = broker.claim(queue, "w", acks, 0, 60_000, 1000, 10**12)
    if forward and reply.forward:
        store().forward_entries(queue, reply.forward, keep_ms=KEEP_MS)
    return [c.id for c in claimed]


def test_a_member_reported_twice_is_counted_once_and_its_actions_replayed_harmlessly():
    info = chain(wf_step.s(0.1, "a"), wf_step.s("b")).enqueue()
    first = f"{info.id}.0"
    run_pending({first: "0.30000000000000004"}, forward=False)
    entry = get_broker().client.hget(get_broker().queue_keys("default").wfout, first)
    assert json.loads(entry)["s"] == "completed"
    # the forwarder dies after the barrier counted it, before taking the entry out: the
    # next forwarder reports it again, and the release runs twice
    s = store()
    actions = s.report(info.id, [(0, "completed", "0.30000000000000004", "")], KEEP_MS)
    s.apply(info.id, actions)
    assert s.forward("default", [first], keep_ms=KEEP_MS) == 1
    assert s.forward("default", [first], keep_ms=KEEP_MS) == 0  # taken out
    second = get_task_info(f"{info.id}.1")
    assert second.state == "pending"
    # the result spliced in once, exactly as JSON wrote it (no float rounding)
    raw = get_broker().client.hget(get_broker().queue_keys("default").msg, second.id)
    assert b'"args":[0.30000000000000004,"b"]' in raw
    workflow = get_workflow(info.id)
    assert workflow.counts == {"pending": 1, "completed": 1}


def test_a_chord_callback_is_released_once_with_results_in_group_order():
    info = chord(group(wf_square.s(i) for i in range(5)), wf_collect.s("sum")).enqueue()
    ids = [f"{info.id}.{i}" for i in range(5)]
    # the members end in reverse order, over two claim calls
    broker = get_broker()
    claimed = broker.claim("default", "w", [], 10, 60_000, 1000, 10**12).claimed
    assert sorted(c.id for c in claimed) == sorted(ids)
    for half in (claimed[3:], claimed[:3]):
        acks = [Ack(c.id, c.attempt, "done", result=str(int(c.id.rsplit(".", 1)[1]) ** 2))
                for c in reversed(half)]
        forward = broker.claim("default", "w", acks, 0, 60_000, 1000, 10**12).forward
        store().forward_entries("default", forward, keep_ms=KEEP_MS)
        for fwd in forward:  # each end forwarded again: nothing more happens
            store().forward_entries("default", [fwd], keep_ms=KEEP_MS)
    callback = get_task_info(info.callback_id)
    assert callback.state == "pending"
    assert callback.args == [[0, 1, 4, 9, 16], "sum"]
    assert get_broker().counts("default")["pending"] == 1
    run_pending({callback.id: "30"})
    done = get_workflow(info.id)
    assert (done.state, done.counts, done.finished_at is not None) == (
        "succeeded", {"completed": 6}, True)


@pytest.mark.parametrize("how", ["dead", "expired", "deleted", "cancelled"])
def test_a_member_that_ends_unsuccessfully_fails_the_workflow_and_cancels_what_follows(how):
    member = wf_step
    if how == "expired":
        member = wf_step.using(expires=datetime(2001, 1, 1, tzinfo=UTC))
    info = chain(group([wf_step.s(1, "ok"), member.s(2, "bad")]), wf_collect.s("never"),
                 wf_step.s("never-2")).enqueue()
    bad = f"{info.id}.1"
    s = store()
    if how == "dead":
        broker = get_broker()
        claimed = {c.id: c for c in broker.claim("default", "w", [], 5, 60_000, 1000,
                                                 10**12).claimed}
        acks = [Ack(bad, claimed[bad].attempt, "dead", error="ValueError: broken"),
                Ack(f"{info.id}.0", claimed[f"{info.id}.0"].attempt, "done", result="1")]
        forward = broker.claim("default", "w", acks, 0, 60_000, 1000, 10**12).forward
        s.forward_entries("default", forward, keep_ms=KEEP_MS)
    else:
        if how == "deleted":
            get_broker().delete("default", [bad])
        elif how == "cancelled":
            get_broker().cancel("default", [bad], "ops")
        run_pending({f"{info.id}.0": "1"})  # an expired one ends at this claim
        s.forward("default", [bad], keep_ms=KEEP_MS)  # what the sweep would do
    workflow = get_workflow(info.id)
    assert workflow.state == "failed"
    assert workflow.reason.startswith(f"{bad} ended {how}")
    for later in (f"{info.id}.2", f"{info.id}.3"):
        task = get_task_info(later)
        assert task.state == "cancelled"
        assert task.cancelled_by.startswith(f"workflow {info.id}: {bad} ended {how}")
    assert get_broker().counts("default")["pending"] == 0
    assert workflow.finished_at is not None


def test_on_complete_runs_once_whatever_the_outcome_with_a_summary():
    info = group([wf_step.s(1, "ok"), wf_step.s(2, "bad")]).on_complete(
        wf_collect.s("report")).enqueue()
    broker = get_broker()
    claimed = broker.claim("default", "w", [], 5, 60_000, 1000, 10**12).claimed
    acks = [Ack(c.id, c.attempt, "done" if c.id.endswith(".0") else "dead", result="1",
                error="ValueError: broken") for c in claimed]
    forward = broker.claim("default", "w", acks, 0, 60_000, 1000, 10**12).forward
    store().forward_entries("default", forward, keep_ms=KEEP_MS)
    store().forward_entries("default", forward, keep_ms=KEEP_MS)
    fin = get_task_info(f"{info.id}.2")
    assert fin.state == "pending"
    summary = fin.args[0]
    assert summary["succeeded"] == [f"{info.id}.0"]
    assert summary["failed"] == [{"id": f"{info.id}.1", "state": "dead",
                                  "error": "ValueError: broken"}]
    assert get_workflow(info.id).state == "failed"


def test_arguments_are_checked_when_the_call_is_made():
    with pytest.raises(TypeError, match=r"argument 0 is of type object"):
        wf_square.s(object())
    with pytest.raises(TypeError, match=r"keyword argument 'when'"):
        wf_step.s(1, "x", when=datetime.now())


def test_shapes_and_sizes_that_cannot_work_are_refused_and_nothing_is_written(settings):
    settings.BGTASKS = {**settings.BGTASKS, "WORKFLOW_MAX_RESULTS": 3}
    with pytest.raises(ValueError, match="group of 4 calls .*WORKFLOW_MAX_RESULTS"):
        chord(group(wf_square.s(i) for i in range(4)), wf_collect.s("x")).enqueue()
    with pytest.raises(ValueError, match="on_complete"):
        group(wf_square.s(i) for i in range(4)).on_complete(wf_collect.s("x")).enqueue()
    group(wf_square.s(i) for i in range(4)).enqueue()  # no next step: no bound
    assert get_broker().counts("default")["pending"] == 4
    with pytest.raises(TypeError, match="group of chains"):
        group([chain(wf_square.s(1), wf_square.s(2))])
    with pytest.raises(ValueError, match="task_id"):
        chain(wf_square.using(task_id="mine").s(1), wf_square.s()).enqueue()
    with pytest.raises(ValueError, match="depends_on"):
        record.using(depends_on="not-a-list")
    assert get_broker().counts("default")["blocked"] == 0


def test_an_unknown_workflow_is_reported():
    with pytest.raises(WorkflowNotFound):
        get_workflow("0" * 32)
    with pytest.raises(ValueError, match="workflow id"):
        get_workflow("{bad}")


def test_eager_runs_the_workflow_inline(settings):
    settings.BGTASKS = {**settings.BGTASKS, "EAGER": True}
    info = chord(group(wf_square.s(i) for i in range(4)), wf_collect.s("eager")).enqueue()
    assert info.state == "succeeded"
    assert get_broker().counts("default")["pending"] == 0


def test_workflow_settings_are_checked(settings):
    settings.BGTASKS = {**settings.BGTASKS, "WORKFLOW_KEEP": 0, "WORKFLOW_MAX_RESULTS": 0}
    ids = {e.id for e in checks.run_checks()}
    assert {"bgtasks.E022", "bgtasks.E023"} <= ids


@pytest.mark.single_redis
def test_with_wait_replicas_an_unconfirmed_count_keeps_the_end_in_the_outbox(settings):
    from django_bgtasks.exceptions import BrokerUnavailable

    info = chain(wf_step.s(1, "a"), wf_step.s("b")).enqueue()
    run_pending(forward=False)
    first = f"{info.id}.0"
    settings.BGTASKS = {**settings.BGTASKS, "WAIT_REPLICAS": 1, "WAIT_TIMEOUT": 0.05}
    with pytest.raises(BrokerUnavailable, match="barrier, but 0 of 1 replicas"):
        store().forward("default", [first], keep_ms=KEEP_MS)
    assert get_broker().client.hexists(get_broker().queue_keys("default").wfout, first)
    settings.BGTASKS = {**settings.BGTASKS, "WAIT_REPLICAS": 0}
    assert store().forward("default", [first], keep_ms=KEEP_MS) == 1
    assert get_task_info(f"{info.id}.1").state == "pending"


def test_cancelling_a_dependency_gate_cancels_the_dependent_not_its_dependencies():
    from django_bgtasks import cancel_workflow

    first = record.using(run_after=3600).enqueue("first").id
    dependent = record.using(depends_on=[first]).enqueue("after")
    [gate] = dependent.workflows
    assert cancel_workflow(gate, by="ops").state == "cancelled"
    assert get_task_info(dependent.id).state == "cancelled"
    assert get_task_info(first).state == "scheduled"


@pytest.mark.soak  # a few seconds each: once per CI run (py311-django52) is enough
def test_a_long_chain_is_written_and_named_briefly():
    info = chain(*(wf_step.s(i) if i == 0 else wf_step.s(f"l{i}") for i in range(5000))
                 ).enqueue()
    assert info.shape == ("chain(wf_step, wf_step, wf_step, ... 4,995 more, wf_step, "
                          "wf_step)")
    assert get_workflow(info.id).counts == {"pending": 1, "blocked": 4999}


def test_a_cancelled_workflow_is_not_resumed_and_on_complete_still_runs():
    from django_bgtasks import cancel_workflow

    info = chain(wf_step.s(1, "a"), wf_step.s("b")).on_complete(wf_collect.s("fin")).enqueue()
    run_pending(outcome="dead")  # the first link dies: the second is cancelled
    assert get_workflow(info.id).state == "failed"
    cancelled = cancel_workflow(info.id, by="ops")
    assert cancelled.state == "cancelled"
    fin = get_task_info(f"{info.id}.2")
    assert fin.state == "pending"  # on_complete runs in every case
    run_pending()  # on_complete runs
    first = f"{info.id}.0"
    assert get_broker().requeue("default", [first]) == [first]
    run_pending({first: "1"})
    assert get_task_info(f"{info.id}.1").state == "cancelled"  # not resumed
    assert get_workflow(info.id).state == "cancelled"


def test_too_large_a_member_is_refused_under_capture_too(settings):
    from django_bgtasks.exceptions import MessageTooLarge
    from django_bgtasks.testing.capture import capture_tasks

    settings.BGTASKS = {**settings.BGTASKS, "MAX_MESSAGE_BYTES": 1000}
    with capture_tasks(), pytest.raises(MessageTooLarge):
        chain(wf_step.s("x" * 2000, "a"), wf_step.s("b")).enqueue()


async def _aenqueue_dependent(first: str):
    return await record.using(depends_on=[first]).aenqueue("after")


def test_aenqueue_honours_depends_on():
    from helpers import run_on_new_loop

    first = record.using(run_after=3600).enqueue("first").id
    assert run_on_new_loop(_aenqueue_dependent, first).state == "blocked"


def test_cancelling_a_failed_workflow_that_has_ended_keeps_why_it_failed():
    from django_bgtasks import cancel_workflow

    info = chain(wf_step.s(1, "a"), wf_step.s("b")).enqueue()
    run_pending(outcome="dead")
    failed = get_workflow(info.id)
    assert (failed.state, failed.finished_at is not None) == ("failed", True)
    after = cancel_workflow(info.id, by="ops")
    assert (after.state, after.reason) == ("failed", failed.reason)


@pytest.mark.soak
def test_a_chord_at_the_default_bound_hands_all_its_results_on():
    """10,000 results (WORKFLOW_MAX_RESULTS' default) in one callback: read in slices (a
    single HMGET of them all broke Lua's unpack, and the workflow hung)."""
    n = 10_000
    info = chord(group(wf_square.s(i) for i in range(n)), wf_collect.s("all")).enqueue()
    broker = get_broker()
    while claimed := broker.claim("default", "w", [], 1000, 60_000, 1000, 10**12).claimed:
        acks = [Ack(c.id, c.attempt, "done", result=c.id.rsplit(".", 1)[1]) for c in claimed]
        forward = broker.claim("default", "w", acks, 0, 60_000, 1000, 10**12).forward
        store().forward_entries("default", forward, keep_ms=KEEP_MS)
        if get_task_info(info.callback_id).state == "pending":
            break
    callback = get_task_info(info.callback_id)
    assert callback.args == [list(range(n)), "all"]
