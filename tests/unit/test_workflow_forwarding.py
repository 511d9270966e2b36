"""A forwarder may die anywhere in WorkflowStore.forward: after the barrier counted the ends,
or after it released the next step, before it took the entries out of the outbox. Another
forwarder (the maintenance process's sweep) then forwards the same entries again. The chaos
test (tests/e2e/test_chaos_workflows.py) hits these points when a kill's timing allows; here
each one is certain: the forward dies there (an exception in its place), then runs again.
Each member is counted once, the callback released once, with its input spliced in once."""

from __future__ import annotations

import json

import pytest

from demo.tasks import wf_collect, wf_square
from django_bgtasks import chord, get_task_info, get_workflow, group
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.types import Ack
from django_bgtasks.broker.workflows import WorkflowStore
from django_bgtasks.workflows.info import read_workflow

KEEP_MS = 60_000


class Died(Exception):
    """The forwarder's process ended here."""


def finish(queue: str, n: int) -> list[str]:
    """Claim the queue's ``n`` pending tasks and ack each done with its square (they are
    wf_square(k) calls); returns the members whose ends wait in the outbox."""
    broker = get_broker()
    claimed = broker.claim(queue, "tests", [], 10, 60_000, 10**6, 10**12).claimed
    assert len(claimed) == n
    acks = []
    for task in claimed:
        k = json.loads(task.raw_message)["args"][0]
        acks.append(Ack(task.id, task.attempt, "done", result=json.dumps(k * k),
                        result_ttl_ms=3_600_000))
    return broker.claim(queue, "tests", acks, 0, 60_000, 10**6, 10**12).forward


@pytest.mark.parametrize("dies_after", ["report", "release"])
def test_a_forward_made_again_after_its_forwarder_died_counts_and_releases_once(
        monkeypatch, dies_after):
    info = chord(group([wf_square.s(2), wf_square.s(3)]), wf_collect.s("sum")).enqueue()
    callback = info.callback_id
    store = WorkflowStore(get_broker())
    ended = finish("default", 2)
    assert sorted(ended) == [f"{info.id}.0", f"{info.id}.1"]

    def die(*args, **kwargs):
        raise Died

    with monkeypatch.context() as m:
        m.setattr(WorkflowStore, "apply" if dies_after == "report" else "settle", die)
        with pytest.raises(Died):
            store.forward("default", ended, keep_ms=KEEP_MS)
    assert len(store.outbox("default", ended)) == 2  # left behind
    expected = "blocked" if dies_after == "report" else "pending"
    assert get_task_info(callback).state == expected

    assert store.forward("default", ended, keep_ms=KEEP_MS) == 2  # the sweep
    assert store.outbox("default", ended) == []
    barrier = read_workflow(store, info.id, live=False)
    assert barrier.counts == {"completed": 2, "unfinished": 1}
    released = get_task_info(callback)
    assert released.state == "pending"
    assert released.args == [[4, 9], "sum"]  # the input spliced in once
    broker = get_broker()
    assert broker.counts("default")["pending"] == 1

    claimed = broker.claim("default", "tests", [], 10, 60_000, 10**6, 10**12).claimed
    assert [t.id for t in claimed] == [callback]  # queued once
    done = Ack(callback, claimed[0].attempt, "done", result="13", result_ttl_ms=3_600_000)
    forward = broker.claim("default", "tests", [done], 0, 60_000, 10**6, 10**12).forward
    assert store.forward("default", forward, keep_ms=KEEP_MS) == 1
    final = get_workflow(info.id)
    assert final.state == "succeeded" and final.finished_at is not None
    assert final.counts == {"completed": 3}
    assert read_workflow(store, info.id, live=False).counts == {"completed": 3}
