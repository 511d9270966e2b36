"""Django's own @task functions (django.tasks, Django 6.0+), run by our worker through
django_bgtasks.backends.BackgroundTaskBackend (TASKS in testproject.settings).

demo's AppConfig.ready() imports this module on Django 6.0+, so that the worker finds a
"django:demo.django_tasks.<name>" task (it imports by name only an app's tasks modules);
nothing imports it on Django 5.2. Side effects go through demo.recording, like the other
test tasks.
"""

from __future__ import annotations

import asyncio
import time

import django
from django.tasks import TaskContext, task

from demo import recording


@task
def add(a: int, b: int) -> int:
    """Return a + b."""
    return a + b


@task
def record(token: str, seconds: float = 0.0, fail: bool = False) -> str:
    """Count an attempt, sleep `seconds`, record `token`; then raise ValueError if `fail`
    (every attempt fails, after recording)."""
    recording.count_attempt(token)
    for _ in range(round(seconds / 0.02)):
        time.sleep(0.02)  # in steps: a TaskTimeout is raised between two of them
    recording.record(token)
    if fail:
        raise ValueError(f"boom {token}")
    return token


@task
async def record_async(token: str, seconds: float) -> dict:
    """A coroutine function: sleep `seconds` in its event loop, then record `token`."""
    await asyncio.sleep(seconds)
    recording.record(token)
    return {"token": token, "slept": seconds}


@task(takes_context=True)
def attempt_with_context(context: TaskContext, token: str, failures: int) -> int:
    """Log the attempt number the context gives; fail on the first `failures` attempts."""
    recording.client().rpush(f"bgtasks-test:context:{token}", context.attempt)
    if context.attempt <= failures:
        raise RuntimeError(f"{token}: attempt {context.attempt} fails on purpose")
    recording.record(token)
    return context.attempt


@task(backend="immediate")
def immediate_record(token: str) -> str:
    """Bound to Django's ImmediateBackend: our worker must refuse to run it."""
    recording.record(token)
    return token


if django.VERSION >= (6, 1):
    # Django 6.1 passes @task's extra keyword arguments to the backend's task class.

    @task(max_retries=0)
    def fail_once(token: str) -> str:
        """`record` failing, with no retry: the first failure is final."""
        return record.call(token, fail=True)

    @task(timeout=1, max_retries=0)
    def overrun(token: str, seconds: float) -> str:
        """`record` with a 1 s timeout and no retry: TaskTimeout stops a longer sleep."""
        return record.call(token, seconds)


@task
async def whoami_async() -> dict:
    """A coroutine function: what current_task() says inside it, and which thread runs it."""
    import threading

    from django_bgtasks import current_task

    await asyncio.sleep(0)
    run = current_task()
    return {"id": run.id if run else None, "thread": threading.current_thread().name}
