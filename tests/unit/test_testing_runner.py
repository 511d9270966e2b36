"""django_bgtasks.testing.run_captured(): captured tasks run as the worker would run them,
with what they enqueue, to a fixed point."""

from __future__ import annotations

import asyncio

import django
import pytest

from django_bgtasks import Retry, SkipRetry, background_task, current_task, signals
from django_bgtasks.testing import (
    CAPTURE_WORKER_ID,
    CaptureLimitExceeded,
    capture_tasks,
    run_captured,
)

LOG: list[object] = []


@background_task
def step(n: int) -> int:
    LOG.append(("step", n, current_task().attempt, current_task().worker_id))
    if n > 0:
        step.enqueue(n - 1)
        note.enqueue(f"after {n}")
    return n


@background_task
def note(text: str) -> str:
    LOG.append(("note", text))
    return text.upper()


@background_task
def forever() -> None:
    forever.enqueue()


@background_task(max_retries=3, retry_backoff=lambda attempt: 3600)
def flaky(failures: int) -> str:
    attempt = current_task().attempt
    LOG.append(("flaky", attempt))
    if attempt <= failures:
        raise Retry(delay=60) if attempt == 1 else RuntimeError(f"attempt {attempt}")
    return f"ok on {attempt}"


@background_task(max_retries=1)
def broken(why: str) -> None:
    raise ValueError(why)


@background_task
def gives_up() -> None:
    raise SkipRetry("not worth it")


@background_task
def returns_a_set() -> object:
    return {1}


@pytest.fixture(autouse=True)
def empty_log():
    LOG.clear()


def test_runs_in_order_with_what_they_enqueue_to_a_fixed_point(raw):
    with capture_tasks() as capture:
        step.enqueue(2)
        note.enqueue("first")
    assert LOG == []
    infos = run_captured(capture)
    assert LOG == [("step", 2, 1, CAPTURE_WORKER_ID), ("note", "first"),
                   ("step", 1, 1, CAPTURE_WORKER_ID), ("note", "after 2"),
                   ("step", 0, 1, CAPTURE_WORKER_ID), ("note", "after 1")]
    assert [(i.name, i.state, i.result) for i in infos] == [
        (step.name, "completed", 2), (note.name, "completed", "FIRST"),
        (step.name, "completed", 1), (note.name, "completed", "AFTER 2"),
        (step.name, "completed", 0), (note.name, "completed", "AFTER 1")]
    assert all(i.attempts == 1 and i.worker == CAPTURE_WORKER_ID and i.finished_at
               for i in infos)
    assert len(capture) == 6 and capture.pending == [] and capture.results == infos
    assert run_captured(capture) == []  # nothing left: nothing runs twice
    assert raw.dbsize() == 0


def test_runs_the_active_capture_by_default():
    with capture_tasks():
        note.enqueue("x")
        [info] = run_captured()
    assert info.result == "X"


def test_a_loop_hits_the_round_limit_with_a_clear_error():
    with capture_tasks() as capture:
        forever.enqueue()
        with pytest.raises(CaptureLimitExceeded, match=rf"after 5 rounds \(5 runs\) with 1 "
                                                       rf"task\(s\) still pending "
                                                       rf"\({forever.name} x1\)"):
            run_captured(max_rounds=5)
    assert len(capture.pending) == 1


def test_the_task_limit_stops_a_wide_fan_out():
    with capture_tasks() as capture:
        note.enqueue_many([([str(n)], {}) for n in range(10)])
        with pytest.raises(CaptureLimitExceeded, match=r"after 4 task runs \(4 runs\) with "
                                                       r"6 task\(s\) still pending"):
            run_captured(max_tasks=4)
    assert [r.args for r in capture.pending] == [[str(n)] for n in range(4, 10)]


def test_retries_run_at_once_and_are_reported(raw):
    with capture_tasks():
        flaky.enqueue(2)
        [info] = run_captured()
    assert LOG == [("flaky", 1), ("flaky", 2), ("flaky", 3)]
    assert (info.state, info.result, info.attempts) == ("completed", "ok on 3", 3)
    assert [e["error"] for e in info.errors] == [
        "django_bgtasks.exceptions.Retry: retry requested", "RuntimeError: attempt 2"]


def test_without_retry_a_failed_attempt_is_reported_as_the_worker_would():
    with capture_tasks():
        flaky.enqueue(2)
        [info] = run_captured(retry=False, raise_errors=False)
    assert (info.state, info.attempts, info.last_error) == ("retry", 1,
                                                            info.errors[0]["error"])
    assert info.run_after is not None


def test_raise_errors_raises_the_tasks_own_exception_and_keeps_the_rest():
    with capture_tasks() as capture:
        broken.enqueue("bad input")
        note.enqueue("later")
        with pytest.raises(ValueError, match="bad input") as failure:
            run_captured()
    assert any(broken.name in note_ and "attempt 2" in note_
               for note_ in failure.value.__notes__)
    assert [r.name for r in capture.pending] == [note.name]
    assert LOG == []


def test_failures_are_recorded_when_asked(raw):
    seen = []

    def on_dead(sender, task_info, exception, **kwargs):
        seen.append((task_info.name, task_info.state, type(exception).__name__))

    signals.task_dead.connect(on_dead)
    try:
        with capture_tasks():
            broken.enqueue("bad")
            gives_up.enqueue()
            returns_a_set.enqueue()
            note.enqueue("still runs")
            infos = run_captured(raise_errors=False)
    finally:
        signals.task_dead.disconnect(on_dead)
    by_name = {i.name: i for i in infos}
    dead = by_name[broken.name]
    assert (dead.state, dead.attempts, dead.last_error) == ("dead", 2, "ValueError: bad")
    assert "Traceback" in dead.traceback and len(dead.errors) == 2
    assert by_name[gives_up.name].state == "dead" and by_name[gives_up.name].attempts == 1
    assert "not JSON serializable" in by_name[returns_a_set.name].last_error
    assert by_name[note.name].result == "STILL RUNS"
    assert seen == [(broken.name, "dead", "ValueError"), (gives_up.name, "dead", "SkipRetry"),
                    (returns_a_set.name, "dead", "TypeError")]


def test_the_worker_signals_are_sent():
    seen = []

    def receiver(signal, sender, task_info, **kwargs):
        seen.append((signal, task_info.state))

    for signal in (signals.task_started, signals.task_succeeded):
        signal.connect(receiver)
    try:
        with capture_tasks():
            note.enqueue("x")
            run_captured()
    finally:
        for signal in (signals.task_started, signals.task_succeeded):
            signal.disconnect(receiver)
    assert seen == [(signals.task_started, "active"), (signals.task_succeeded, "completed")]


def test_a_capture_runs_after_its_block_closed():
    with capture_tasks() as capture:
        step.enqueue(1)
    infos = capture.run()
    assert [i.result for i in infos] == [1, 0, "AFTER 1"]


@background_task
async def fetch(n: int) -> int:
    await asyncio.sleep(0)
    LOG.append(("fetch", n, current_task().id))
    if n > 0:
        await fetch.aenqueue(n - 1)
    return n * 10


def test_async_tasks_run_to_their_end_with_what_they_enqueue():
    with capture_tasks() as capture:
        first = fetch.enqueue(1)
    infos = run_captured(capture)
    assert [(i.state, i.result) for i in infos] == [("completed", 10), ("completed", 0)]
    assert LOG[0] == ("fetch", 1, first.id)


@pytest.mark.skipif(django.VERSION < (6, 0), reason="django.tasks is Django 6.0+")
def test_django_tasks_run_through_their_adapter():
    from demo.django_tasks import add

    with capture_tasks():
        result = add.enqueue(2, 3)
        [info] = run_captured()
    assert (info.id, info.state, info.result) == (result.id, "completed", 5)
