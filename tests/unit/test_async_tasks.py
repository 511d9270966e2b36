"""``async def`` tasks in-process: the worker's per-thread event loops (worker.event_loops)
and EAGER runs. The real worker's handling is tests/e2e/test_e2e_async.py."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time

import pytest

from demo import tasks
from django_bgtasks import current_task
from django_bgtasks.exceptions import TaskTimeout
from django_bgtasks.worker import event_loops
from helpers import wait_until


def in_thread(target, *args):
    """Run ``target(*args)`` in a new thread; return (its value or exception, the thread)."""
    outcome = {}

    def run() -> None:
        try:
            outcome["value"] = target(*args)
        except BaseException as exc:  # noqa: BLE001
            outcome["value"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    return outcome.get("value"), thread


# --- worker.event_loops ------------------------------------------------------------------


def test_a_thread_reuses_its_loop_and_another_thread_gets_its_own():
    # The loops themselves, not their id(): the first thread's loop, once collected, may
    # leave its address to the second's (seen on CI).
    async def running_loop() -> asyncio.AbstractEventLoop:
        await asyncio.sleep(0)
        return asyncio.get_running_loop()

    def twice() -> tuple[asyncio.AbstractEventLoop, asyncio.AbstractEventLoop]:
        return event_loops.run(running_loop()), event_loops.run(running_loop())

    (first, second), _ = in_thread(twice)
    (other, _), _ = in_thread(twice)
    assert first is second and other is not first


def test_the_loop_is_closed_when_its_thread_ends():
    def make() -> asyncio.AbstractEventLoop:
        loop = event_loops.thread_loop()
        event_loops.run(asyncio.sleep(0))
        return loop

    loop, thread = in_thread(make)
    assert not thread.is_alive()
    wait_until(loop.is_closed, timeout=5, message="the ended thread's loop is closed")


def test_an_interruption_is_raised_inside_the_coroutine_where_it_awaits():
    seen = []

    async def sleeper() -> str:
        try:
            await asyncio.sleep(30)
        except TaskTimeout:
            seen.append(("caught", asyncio.current_task().cancelling()))
            raise
        finally:
            seen.append("finally")
        return "never"

    def interrupt_soon(ident: int) -> None:
        wait_until(lambda: event_loops.interrupt(ident, TaskTimeout), timeout=5,
                   interval=0.01, message="the thread runs its coroutine")

    def run() -> object:
        threading.Thread(target=interrupt_soon, args=(threading.get_ident(),)).start()
        return event_loops.run(sleeper())

    started = time.monotonic()
    outcome, _ = in_thread(run)
    assert isinstance(outcome, TaskTimeout) and time.monotonic() - started < 5
    # TaskTimeout, not CancelledError; and the task does not count as being cancelled
    assert seen == [("caught", 0), "finally"]


def test_no_coroutine_no_interruption():
    assert event_loops.interrupt(threading.get_ident(), TaskTimeout) is None


def test_the_context_reaches_the_coroutine_and_the_tasks_it_starts():
    from django_bgtasks.context import running
    from django_bgtasks.message import TaskMessage

    msg = TaskMessage(id="ctx-1", name="demo.tasks.async_whoami", queue="default", args=[],
                      kwargs={}, priority=0, max_retries=0, timeout=60, result_ttl=None,
                      unique_key=None, enqueued_at=time.time(), run_after=None)

    def run() -> dict:
        with running(msg, 3, "w-unit"):
            return event_loops.run(tasks.async_whoami.func())

    result, _ = in_thread(run)
    assert (result["id"], result["attempt"], result["child_id"]) == ("ctx-1", 3, "ctx-1")


def test_child_tasks_left_unfinished_are_cancelled_when_the_coroutine_returns():
    cancelled = threading.Event()

    async def orphan() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def leaves_a_child() -> str:
        asyncio.get_running_loop().create_task(orphan())
        await asyncio.sleep(0.01)
        return "done"

    value, _ = in_thread(event_loops.run, leaves_a_child())
    assert value == "done" and cancelled.is_set()


# --- EAGER and plain calls --------------------------------------------------------------


@pytest.fixture
def eager(settings):
    settings.BGTASKS = {**settings.BGTASKS, "EAGER": True}


def test_eager_runs_an_async_task_to_completion_and_a_plain_call_returns_its_coroutine(
        eager, raw):
    info = tasks.async_add.enqueue(2, 5, seconds=0.01)
    assert (info.state, info.result) == ("completed", 7)
    coro = tasks.async_add(1, 2, seconds=0)  # a plain call: what the function returns
    assert inspect.iscoroutine(coro) and asyncio.run(coro) == 3
    whoami = tasks.async_whoami.enqueue().result
    assert whoami["id"] == whoami["child_id"] is not None and whoami["attempt"] == 1
    assert raw.keys("bgtasks:*") == []


def test_eager_inside_a_running_loop_runs_the_task_in_a_thread_of_its_own(eager):
    async def async_caller() -> tuple[object, str, object]:
        info = tasks.async_whoami.enqueue()
        return info.result, threading.current_thread().name, current_task()

    result, caller_thread, outside = asyncio.run(async_caller())
    assert result["id"] is not None and result["child_id"] == result["id"]
    assert result["thread"] != caller_thread
    assert outside is None  # the run's context did not leak into the caller's


def test_an_interruption_a_child_task_swallowed_reaches_the_coroutine_at_its_next_await():
    async def stubborn() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # ignores the cancellation and finishes
        return "child done"

    async def parent() -> str:
        await asyncio.create_task(stubborn())
        await asyncio.sleep(30)  # TaskTimeout arrives here, not 30 s later
        return "never"

    def run() -> object:
        ident = threading.get_ident()
        threading.Thread(target=lambda: wait_until(
            lambda: event_loops.interrupt(ident, TaskTimeout), timeout=5, interval=0.01,
            message="the thread runs its coroutine")).start()
        return event_loops.run(parent())

    started = time.monotonic()
    outcome, _ = in_thread(run)
    assert isinstance(outcome, TaskTimeout) and time.monotonic() - started < 5
