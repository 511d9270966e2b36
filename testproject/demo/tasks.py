"""Tasks for scripts/demo, and tasks whose side effects the test suite checks.

All use only the public API of django_bgtasks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from datetime import timedelta

import redis
from django.contrib.auth import get_user_model
from django.core.cache import cache

from demo import chaos_ledger, recording
from django_bgtasks import (
    Retry,
    SkipRetry,
    TaskCancelled,
    TaskTimeout,
    background_task,
    current_task,
)

logger = logging.getLogger(__name__)


# --- demo tasks ----------------------------------------------------------------


@background_task(result_ttl=3600)
def add(a: int, b: int) -> int:
    """Return a + b; the result is kept for an hour, to be seen in the admin."""
    return a + b


@background_task(result_ttl=3600)
def total(results: list[int]) -> int:
    """A chord's callback: the sum of its group's results, once all of them succeeded."""
    return sum(results)


@background_task
def workflow_report(summary: dict) -> str:
    """An on_complete callback: logs how many members of its workflow succeeded."""
    text = f"{len(summary['succeeded'])} succeeded, {len(summary['failed'])} failed"
    logger.info("workflow finished: %s", text)
    return text


@background_task(queue_name="mail")
def send_welcome(user_id: int) -> str:
    """Pretend to send a welcome mail (logs a line); an unknown user is not worth a retry."""
    User = get_user_model()
    try:
        user = User.objects.get(pk=user_id)
    except User.DoesNotExist:
        raise SkipRetry(f"no user with id {user_id}") from None
    logger.info("welcome mail sent to %s (user %s)", user.get_username(), user_id)
    return f"welcome sent to {user.get_username()}"


@background_task(retry_backoff=lambda attempt: 2.0)
def flaky(key: str, failures: int = 2) -> str:
    """Fail on the first `failures` attempts (counted in the cache under `key`), then succeed."""
    cache_key = f"demo:flaky:{key}"
    cache.add(cache_key, 0, None)
    attempt = cache.incr(cache_key)
    if attempt <= failures:
        raise RuntimeError(f"flaky {key}: attempt {attempt} fails on purpose ({failures} planned)")
    return f"flaky {key} succeeded on attempt {attempt}"


@background_task(max_retries=2, retry_backoff=lambda attempt: 1.0)
def always_fails() -> None:
    """Fail every time: after 2 retries it lands in the dead queue."""
    raise RuntimeError("this task always fails (demo)")


@background_task
def reminder(text: str) -> str:
    """Log a reminder; meant to be enqueued with run_after."""
    logger.info("reminder: %s", text)
    return text


# --- test tasks: side effects in Redis (see demo.recording) -----------------------


@background_task
def record(token: str) -> str:
    """Record that `token` ran."""
    recording.record(token)
    return token


@background_task
def sleep_then_record(token: str, seconds: float) -> str:
    """Sleep `seconds`, then record `token` (a run cut short records nothing)."""
    time.sleep(seconds)
    recording.record(token)
    return token


@background_task(max_retries=0, result_ttl=3600)
def run_once(token: str, seconds: float) -> str:
    """Sleep `seconds`, then record `token`; no retry, and the record is kept an hour: a
    test can tell whether its one attempt was charged for something it did not do."""
    time.sleep(seconds)
    recording.record(token)
    return token


@background_task(retry_backoff=lambda attempt: 0.2)
def fail_always(token: str) -> None:
    """Record `token`, then raise ValueError: every attempt leaves one log entry."""
    recording.record(token)
    raise ValueError(f"boom {token}")


@background_task(retry_backoff=lambda attempt: 0.2)
def headers_then_succeed(token: str, failures: int) -> str:
    """Note the headers this run sees (current_task().headers); raise on the first
    `failures` attempts, then record `token`."""
    run = current_task()
    recording.record_headers(token, dict(run.headers) if run else {})
    return fail_then_succeed.func(token, failures)


@background_task(retry_backoff=lambda attempt: 0.2)
def fail_then_succeed(token: str, failures: int) -> str:
    """Raise on the first `failures` attempts, then record `token`."""
    attempt = recording.count_attempt(token)
    if attempt <= failures:
        raise ValueError(f"attempt {attempt} of {token} fails ({failures} planned)")
    recording.record(token)
    return token


@background_task
def record_time(token: str) -> str:
    """Record `token` with the wall-clock time it ran (for run_after and backoff checks)."""
    recording.record_time(token)
    return token


@background_task
def record_redis_time(token: str) -> str:
    """Record `token` with Redis' clock (see recording.record_redis_time)."""
    recording.record_redis_time(token)
    return token


@background_task
def record_tick(label: str) -> str:
    """Record the run of a periodic task with the tick it stands for (recording.ticks)."""
    recording.record_tick(label)
    return label


@background_task(timeout=60)
def slow_tick(label: str, seconds: float) -> str:
    """Record a start, sleep ``seconds``, record an end (for overlap tests)."""
    recording.record_tick(label, "start")
    time.sleep(seconds)
    recording.record_tick(label, "end")
    return label


@background_task
def retry_then_record(token: str, delay: float) -> str:
    """First attempt asks for `Retry(delay=delay)` (its time recorded); the next records `token`."""
    recording.record_time(token)
    if recording.count_attempt(token) == 1:
        raise Retry(delay=delay)
    recording.record(token)
    return token


@background_task
def skip_retry(token: str) -> None:
    """Record `token`, then raise SkipRetry: straight to the dead queue, whatever max_retries."""
    recording.record(token)
    raise SkipRetry(f"skip {token}")


# --- test tasks for the end-to-end worker tests (tests/e2e/test_e2e_*.py) ---------------


@background_task
def fan_out(token: str, depth: int, later: float = 0.0) -> str:
    """Record `token`, then enqueue two children `token.a` and `token.b` one level deeper,
    down to depth 0; with `later`, it also schedules `token.later` that many seconds ahead."""
    recording.record(token)
    if depth > 0:
        for branch in ("a", "b"):
            fan_out.enqueue(f"{token}.{branch}", depth - 1)
    if later:
        record.using(run_after=timedelta(seconds=later)).enqueue(f"{token}.later")
    return token


@background_task
def mark_sleep_record(token: str, seconds: float) -> str:
    """Count an attempt for `token` when it starts, sleep `seconds`, then record `token`.

    The attempt counter tells a test that the task really started (and how many times);
    `bgtasks-test:pid:<token>` holds the pid of the process that last started it.
    """
    recording.client().set(f"bgtasks-test:pid:{token}", os.getpid())
    recording.count_attempt(token)
    time.sleep(seconds)
    recording.record(token)
    return token


@background_task(max_retries=1, retry_backoff=lambda attempt: 0.2)
def exit_process(token: str) -> None:
    """Count an attempt, then kill the worker process it runs in (no cleanup at all)."""
    recording.count_attempt(token)
    os._exit(1)


@background_task(timeout=1, max_retries=1, retry_backoff=lambda attempt: 0.2)
def sleep_in_steps(token: str, seconds: float) -> str:
    """Count an attempt, then sleep `seconds` in small steps: interruptible by TaskTimeout."""
    recording.count_attempt(token)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.02)
    recording.record(token)
    return token


def _run_swallowing(token: str, seconds: float, error: type[BaseException]) -> str:
    """Count an attempt, then keep running for `seconds`, swallowing every `error` raised
    in this thread (short sleeps: such an exception lands between two bytecodes)."""
    recording.count_attempt(token)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            time.sleep(0.02)
        except error:
            recording.record(f"{token}:swallowed")
    recording.record(token)
    return token


def _run_noting(token: str, seconds: float, error: type[BaseException], note: str) -> str:
    """Count an attempt, then run for `seconds` in short sleeps; an `error` raised in this
    thread is recorded as `<token>:<note>` and goes on up."""
    recording.count_attempt(token)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            time.sleep(0.02)
    except error:
        recording.record(f"{token}:{note}")
        raise
    recording.record(token)
    return token


@background_task(timeout=1, max_retries=0)
def ignore_timeout(token: str, seconds: float) -> str:
    """Keep running for `seconds`, swallowing every TaskTimeout."""
    return _run_swallowing(token, seconds, TaskTimeout)


# --- cancelling running tasks, progress (tests/e2e/test_e2e_cancel_running.py) -----------


@background_task(max_retries=5)
def cooperative(token: str, seconds: float) -> str:
    """Report progress and poll for a cancel request every 20 ms, for up to `seconds`."""
    recording.count_attempt(token)
    run = current_task()
    steps = int(seconds / 0.02)
    for step in range(steps):
        run.set_progress(step + 1, total=steps, message=f"step {step + 1}")
        if run.cancel_requested:
            recording.record(f"{token}:saw-cancel")
            raise TaskCancelled("stopping as asked")
        time.sleep(0.02)
    recording.record(token)
    return token


@background_task(max_retries=5)
def ignore_cancel(token: str, seconds: float) -> str:
    """Never look at cancel_requested; note the TaskCancelled raised in it, and let it go."""
    return _run_noting(token, seconds, TaskCancelled, "interrupted")


@background_task(max_retries=5)
def swallow_cancel(token: str, seconds: float) -> str:
    """Keep running for `seconds`, swallowing every TaskCancelled."""
    return _run_swallowing(token, seconds, TaskCancelled)


@background_task(max_retries=5)
async def async_ignore_cancel(token: str, seconds: float) -> str:
    """An async task awaiting past its cancel request: TaskCancelled comes through its loop."""
    recording.count_attempt(token)
    try:
        await asyncio.sleep(seconds)
    except TaskCancelled:
        recording.record(f"{token}:interrupted")
        raise
    recording.record(token)
    return token


@background_task(result_ttl=3600)
def report_progress(token: str, steps: int, pause: float) -> str:
    """Report steps of progress, `pause` apart; the last one is 'done'."""
    run = current_task()
    for step in range(steps):
        run.set_progress(step + 1, total=steps, message="done" if step + 1 == steps
                         else f"rendering <{token}>")
        time.sleep(pause)
    recording.record(token)
    return token


class UnprintableError(Exception):
    """An exception whose message cannot be formatted: its ``__str__`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("this __str__ is broken")


@background_task(timeout=1, max_retries=0)
def fail_unprintably(token: str) -> None:
    """Record `token`, then raise an exception whose message cannot be formatted."""
    recording.record(token)
    raise UnprintableError()


@background_task(max_retries=0)
def return_non_json(token: str) -> object:
    """Record `token`, then return a value JSON cannot hold."""
    recording.record(token)
    return object()


@background_task(retry_backoff=lambda attempt: 0.5)
def sleep_then_record_patiently(token: str, seconds: float) -> str:
    """Sleep `seconds`, then record `token`, waiting up to 15 s for Redis to answer.

    For tests that stop Redis under a worker: the task's own side effect must not be the
    thing that fails (the worker's handling of the outage is what they check).
    """
    time.sleep(seconds)
    deadline = time.monotonic() + 15
    while True:
        try:
            recording.record(token)
            return token
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@background_task(max_retries=1, retry_backoff=lambda attempt: 0.2)
def segfault(token: str) -> None:
    """Count an attempt, then crash the worker process with SIGSEGV (a C-level fault)."""
    recording.count_attempt(token)
    import ctypes

    ctypes.string_at(0)  # reads address 0: the kernel kills the process


# --- the chaos run (bench/chaos.py) ----------------------------------------------------


@background_task(max_retries=10, retry_backoff=lambda attempt: 0.3)
def chaos_step(token: str, kind: str, seconds: float) -> None:
    """One task of the chaos run: log the execution, sleep `seconds`, then fail or complete.

    kind "fail_always" fails every execution; "fail_first" fails its first; others
    complete. The log (demo.chaos_ledger) is the run's evidence of what really ran.
    """
    _chaos_execution(token, kind, seconds)


def _chaos_execution(token: str, kind: str, seconds: float) -> None:
    ledger = recording.client()
    execution = chaos_ledger.began(ledger, token)
    if seconds:
        time.sleep(seconds)
    if kind == "fail_always" or (kind == "fail_first" and execution == 1):
        raise ValueError(f"{token}: execution {execution} fails on purpose ({kind})")
    chaos_ledger.completed(ledger, token)


@background_task(max_retries=10, retry_backoff=lambda attempt: 0.1, result_ttl=3600)
def wf_chaos_member(n: int, kind: str, seconds: float) -> int:
    """A chord member of the workflow chaos test (tests/e2e/test_chaos_workflows.py): one
    chaos_step execution under token str(n), then return n (the callback checks the order)."""
    _chaos_execution(str(n), kind, seconds)
    return n


# --- async def tasks (tests/e2e/test_e2e_async.py) ---------------------------------------


@background_task(result_ttl=3600)
async def async_add(a: int, b: int, seconds: float = 0.05) -> int:
    """Await asyncio.sleep(`seconds`), then return a + b (kept an hour)."""
    await asyncio.sleep(seconds)
    return a + b


@background_task(result_ttl=3600)
async def async_whoami() -> dict:
    """What current_task() says inside the coroutine, and inside a child asyncio task."""

    async def child() -> str | None:
        await asyncio.sleep(0.01)
        run = current_task()
        return run.id if run else None

    here = current_task()
    return {"id": here.id if here else None, "attempt": here.attempt if here else None,
            "child_id": await asyncio.create_task(child()),
            "thread": threading.current_thread().name}


@background_task(timeout=1, max_retries=1, retry_backoff=lambda attempt: 0.2)
async def async_past_timeout(token: str, seconds: float) -> str:
    """Count an attempt, await a sleep of `seconds`; record `<token>:caught` when
    TaskTimeout reaches it there, `<token>:finally` in any case, `token` on success."""
    recording.count_attempt(token)
    try:
        await asyncio.sleep(seconds)
    except TaskTimeout:
        recording.record(f"{token}:caught")
        raise
    finally:
        recording.record(f"{token}:finally")
    recording.record(token)
    return token


@background_task(timeout=1, max_retries=0)
async def async_block_in_steps(token: str, seconds: float) -> str:
    """Block the event loop with time.sleep in small steps for `seconds` (no await):
    only a thread-level TaskTimeout can stop it; record `<token>:caught` if it does."""
    return _run_noting(token, seconds, TaskTimeout, "caught")


@background_task(timeout=1, max_retries=0)
async def async_block(token: str, seconds: float) -> str:
    """Block the event loop in one time.sleep(`seconds`): nothing interrupts it."""
    recording.count_attempt(token)
    time.sleep(seconds)
    recording.record(token)
    return token


LOOPS_KEY = "bgtasks-test:loops"  # LIST of JSON {"token", "pid", "thread", "loop"}


@background_task
async def async_note_loop(token: str, seconds: float) -> str:
    """Await a sleep of `seconds`, then note which process, thread and loop ran it."""
    await asyncio.sleep(seconds)
    recording.client().rpush(LOOPS_KEY, json.dumps({
        "token": token, "pid": os.getpid(), "thread": threading.current_thread().name,
        "loop": id(asyncio.get_running_loop())}))
    return token


@background_task
async def async_record_tick(label: str) -> str:
    """record_tick, from a coroutine (for async periodic entries)."""
    await asyncio.sleep(0)
    recording.record_tick(label)
    return label


# -- flow control (test_e2e_limits, docs/limits.md) -------------------------------------------


@background_task(queue_name="limited", concurrency_limit=3)
def limited_span(token: str, seconds: float) -> str:
    """At most 3 runs at once, all workers together: each notes its start and end."""
    recording.record_span(token, "start")
    time.sleep(seconds)
    recording.record_span(token, "end")
    return token


@background_task(queue_name="limited", rate_limit="10/s")
def rated_span(token: str) -> str:
    """At most 10 starts a second (a burst of 10): each notes its start."""
    recording.record_span(token, "start")
    return token


@background_task(queue_name="limited", limits=["demo-api"])
def api_call(token: str, seconds: float) -> str:
    """A call to a shared external API, limited by BGTASKS["LIMITS"]["demo-api"]."""
    recording.record_span(token, "start")
    time.sleep(seconds)
    recording.record_span(token, "end")
    return token


@background_task(queue_name="limited", concurrency_limit=1,
                 limit_key=lambda account, token: f"acct:{account}")
def per_account(account: int, token: str) -> str:
    """One run at a time per account."""
    recording.record_span(token, "start")
    time.sleep(0.1)
    recording.record_span(token, "end")
    return token


@background_task(queue_name="limited", fair_key=lambda tenant, token: tenant)
def tenant_step(tenant: str, token: str) -> str:
    """Tasks of several tenants, taken in turn."""
    recording.record(token)
    return token


# --- workflows (tests/e2e/test_e2e_workflows.py, docs/workflows.md) -----------------------


@background_task(result_ttl=3600)
def wf_step(value: object, token: str, fail: bool = False) -> object:
    """Record `token` with what it was given, then return [value, token] (a chain's next
    link gets it); with `fail`, raise instead (max_retries=0 via .using in the tests)."""
    recording.record(f"{token}={json.dumps(value)}")
    if fail:
        raise ValueError(f"{token} fails on purpose")
    return [value, token]


@background_task(result_ttl=3600)
def wf_square(n: int) -> int:
    """n * n: a group's member whose result a chord's callback sums."""
    return n * n


@background_task(result_ttl=3600)
def wf_collect(results: list, token: str) -> int:
    """A chord's callback: record `token` and what it got, once per run (the ledger's log
    shows a second run), and return the sum of the results."""
    recording.record(f"{token}={json.dumps(results)}")
    return sum(r for r in results if isinstance(r, (int, float)))


@background_task(result_ttl=3600)
def wf_report(summary: dict, token: str) -> dict:
    """on_complete: record `token` with how many succeeded and failed; return them."""
    counts = {"succeeded": len(summary["succeeded"]), "failed": len(summary["failed"])}
    recording.record(f"{token}={json.dumps(counts)}")
    return counts
