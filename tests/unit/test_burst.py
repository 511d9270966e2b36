"""Burst mode's parts in-process (real Redis): the processor's fixed point, moving due
tasks, the tally; and the command's refusal of option combinations that mean nothing."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from demo import recording, tasks
from django_bgtasks.worker.burst import BurstTally, forward_due_now
from django_bgtasks.worker.config import WorkerConfig
from django_bgtasks.worker.execution import TaskExecutor
from django_bgtasks.worker.inflight import InFlight
from django_bgtasks.worker.processor import Processor
from helpers import counts, state_of

QUEUES = {"default": 1, "mail": 1}


def run_burst(broker, threads: int = 2) -> Counter:
    """Run one burst processor until it exits; returns the outcomes it wrote."""
    outcomes: Counter = Counter()
    config = WorkerConfig(queues=QUEUES, processes=1, threads=threads, burst=True)
    processor = Processor(broker, config, "w-burst", TaskExecutor("w-burst"), InFlight(),
                          on_outcomes=outcomes.update)
    processor.start()
    assert processor.exited.wait(30), "the burst processor did not exit"
    assert processor.drained
    return outcomes


def test_a_burst_processor_runs_to_a_fixed_point_and_stops(broker, raw):
    tasks.fan_out.enqueue("tree", 2, later=3600)
    tasks.record.using(queue_name="mail").enqueue("mail-one")
    late = tasks.record.using(run_after=timedelta(hours=1)).enqueue("late")
    outcomes = run_burst(broker)
    assert outcomes == Counter(done=8)
    assert recording.ran(raw) == {"tree", "tree.a", "tree.b", "tree.a.a", "tree.a.b",
                                  "tree.b.a", "tree.b.b", "mail-one"}
    assert state_of(late.id) == "scheduled"
    assert counts()["scheduled"] == 2  # "late" and "tree.later"


def test_a_burst_processor_counts_failures_and_leaves_later_retries(broker, raw):
    retried = tasks.flaky.enqueue("flaky-unit", failures=5)  # retried 2 s later
    tasks.skip_retry.enqueue("dead-unit")
    assert run_burst(broker) == Counter(retry=1, dead=1)
    assert state_of(retried.id) == "retry"


def test_a_burst_processor_with_nothing_due_exits_at_once(broker):
    assert run_burst(broker) == Counter()


def test_forward_due_now_moves_only_what_is_due(broker, raw):
    due = tasks.record.using(run_after=timedelta(milliseconds=1)).enqueue("due")
    later = tasks.record.using(run_after=timedelta(hours=1)).enqueue("later")
    time.sleep(0.05)
    assert forward_due_now(broker, QUEUES) == 1
    assert (state_of(due.id), state_of(later.id)) == ("pending", "scheduled")
    assert forward_due_now(broker, QUEUES) == 0


def test_the_tally_sums_slots_and_counts_requeues_as_neither():
    tally = BurstTally(3)
    tally.count(0, ["done", "done", "retry"])
    tally.count(2, ["dead", "requeue", "done"])
    summary = tally.summary()
    assert (summary.ran, summary.succeeded, summary.failed) == (5, 3, 2)
    assert summary.line() == "burst: 5 task attempt(s) ran, 3 succeeded, 2 failed"


@pytest.mark.parametrize("args,match", [
    (["--burst", "--reload"], "cannot be combined"),
    (["--fail-on-error"], "needs --burst"),
    (["--reload", "--fail-on-error"], "needs --burst"),
])
def test_runbackground_refuses_meaningless_combinations(args, match):
    with pytest.raises(CommandError, match=match):
        call_command("runbackground", *args)
