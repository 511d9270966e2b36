"""A failed attempt always gets an outcome, however its failure or its retry policy
misbehaves; and the timeout watchdog never interrupts a task for another one's overrun."""

from __future__ import annotations

import math

import pytest

from demo import recording, tasks
from django_bgtasks import Retry, background_task, get_task_info
from django_bgtasks.backoff import MAX_RETRY_DELAY, decide_failure
from django_bgtasks.worker.execution import TaskExecutor
from helpers import state_of, wait_until

QUEUE = "default"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("broken __str__")


@background_task(max_retries=2)
def fails_unprintably() -> None:
    raise Unprintable()


@background_task(max_retries=2)
def retries_with(delay: str) -> None:
    error = Retry(delay=1)
    error.delay = float(delay)  # set after the check: what a subclass could do
    raise error


def _raising_backoff(attempt: int) -> float:
    raise KeyError("no such curve")


@background_task(max_retries=2, retry_backoff=_raising_backoff)
def backoff_raises() -> None:
    raise ValueError("task failed")


@background_task(max_retries=2, retry_backoff=lambda attempt: float("nan"))
def backoff_nan() -> None:
    raise ValueError("task failed")


@background_task(max_retries=2, retry_backoff=lambda attempt: float("inf"))
def backoff_inf() -> None:
    raise ValueError("task failed")


@background_task(max_retries=2, retry_backoff=lambda attempt: "soon")
def backoff_not_a_number() -> None:
    raise ValueError("task failed")


def _run_one(broker, task, *args):
    """Enqueue, claim and run ``task`` in this process; write its outcome to Redis."""
    task_id = task.enqueue(*args).id
    [claimed] = broker.claim(QUEUE, "test-worker", [], 1, 30_000, 100, 3_600_000).claimed
    executor = TaskExecutor("test-worker")
    ack = executor.run(claimed, executor.decode(claimed))
    result = broker.claim(QUEUE, "test-worker", [ack], 0, 30_000, 100, 3_600_000)
    assert result.ignored == []
    return task_id, ack


@pytest.mark.django_db(transaction=True)  # the executor closes stale db connections
def test_an_exception_whose_message_cannot_be_formatted_is_still_recorded(broker):
    task_id, ack = _run_one(broker, fails_unprintably)
    assert ack.outcome == "retry"
    assert "Unprintable: <the exception's message could not be formatted: RuntimeError>" \
        in ack.error
    assert state_of(task_id) == "retry"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("task, args, problem", [
    (retries_with, ("inf",), "Retry(delay=...) gave inf"),
    (retries_with, ("nan",), "Retry(delay=...) gave nan"),
    (backoff_raises, (), "retry_backoff raised KeyError"),
    (backoff_nan, (), "retry_backoff gave nan"),
    (backoff_inf, (), "retry_backoff gave inf"),
    (backoff_not_a_number, (), "retry_backoff raised ValueError"),
])
def test_a_broken_retry_policy_falls_back_to_the_default_backoff(broker, task, args, problem):
    task_id, ack = _run_one(broker, task, *args)
    assert ack.outcome == "retry"
    assert problem in ack.error and "the default backoff was used" in ack.error
    assert 15 <= ack.delay_ms / 1000 <= 15 + 1 + 20  # default curve, attempt 1
    info = get_task_info(task_id)
    assert info.state == "retry" and problem in info.last_error


@pytest.mark.parametrize("delay", [math.inf, -math.inf, math.nan, -1])
def test_retry_refuses_a_delay_that_is_not_a_finite_number_of_seconds(delay):
    with pytest.raises(ValueError, match="finite number of seconds"):
        Retry(delay=delay)


def test_a_huge_delay_is_capped():
    decision = decide_failure(ValueError(), 1, 3, lambda attempt: 1e300)
    assert decision.delay == MAX_RETRY_DELAY and not decision.note


def test_a_failure_nobody_can_format_does_not_get_another_task_interrupted(
        start_worker, redis_server):
    r = redis_server.client()
    # One thread: the second task runs in the thread the first one failed in. The first
    # has timeout=1; the second runs 2.5 s.
    worker = start_worker("--processes", "1", "--threads", "1")
    first = tasks.fail_unprintably.enqueue("unprintable").id
    second = tasks.sleep_then_record.enqueue("innocent", 2.5).id

    wait_until(lambda: state_of(first) == "dead", timeout=10, message="first task dead")
    wait_until(lambda: "innocent" in recording.ran(r), timeout=10,
               message="the second task ran to its end")
    wait_until(lambda: state_of(second) is None, timeout=5, message="second task acked")
    log = worker.log_text()
    assert "exceeded its timeout" not in log
    assert "could not be formatted" in log
    assert worker.is_running()
