"""``depends_on`` at enqueue, when every dependency has succeeded already: the dependent is
released by the enqueue itself, so a running worker may claim it, run it and drop its record
(no result_ttl) before enqueue reads it back. The enqueue must still return its TaskInfo
(seen on a real worker: 3 to 13 enqueues in 300 raised TaskNotFound)."""

from __future__ import annotations

from demo.tasks import record
from django_bgtasks.workflows import deps
from django_bgtasks.workflows.info import read_workflow
from helpers import drive, state_of


def test_a_dependent_run_before_enqueue_reads_it_back_is_still_enqueued(monkeypatch):
    first = record.using(result_ttl=3600).enqueue("first")
    drive([first.id], "done", result_ttl_ms=3_600_000)
    watch = deps._watch

    def watch_then_a_worker_runs_it(store, gate, ids, queues):
        watch(store, gate, ids, queues)  # every dependency succeeded: releases the dependent
        dependent = read_workflow(store, gate, live=False).ids[-1]
        drive([dependent], "done")  # claimed, run, acked and dropped (no result_ttl)

    monkeypatch.setattr(deps, "_watch", watch_then_a_worker_runs_it)
    info = record.using(depends_on=[first.id]).enqueue("after")
    assert info.state == "pending"
    assert state_of(info.id) is None  # it ran, and was not kept
