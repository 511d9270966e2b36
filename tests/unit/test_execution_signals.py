"""A receiver of our worker signals that raises must not keep a task's outcome from being
written (it ran in the worker's own TaskExecutor, here in the test process)."""

from __future__ import annotations

import pytest

from demo import tasks
from django_bgtasks import signals
from django_bgtasks.worker.execution import TaskExecutor


def raising_receiver(**kwargs):
    raise RuntimeError("a broken receiver")


@pytest.mark.django_db(transaction=True)  # the executor closes stale db connections
@pytest.mark.parametrize("task, signal, outcome", [
    (tasks.add, signals.task_succeeded, "done"),
    (tasks.always_fails, signals.task_retried, "retry"),
])
def test_a_raising_receiver_is_logged_and_the_outcome_kept(broker, caplog, task, signal,
                                                           outcome):
    task.enqueue(*([1, 2] if task is tasks.add else []))
    [claimed] = broker.claim("default", "test-worker", [], 1, 30_000, 100, 3_600_000).claimed
    executor = TaskExecutor("test-worker")
    signal.connect(raising_receiver)
    try:
        ack = executor.run(claimed, executor.decode(claimed))
    finally:
        signal.disconnect(raising_receiver)
    assert ack.outcome == outcome
    assert "raised; the task's outcome is kept" in caplog.text
    assert "a broken receiver" in caplog.text
