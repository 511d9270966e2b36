"""Running an ``async def`` task's coroutine to its end outside the worker (EAGER)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any


def run_to_completion(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on a new event loop and return its value (or raise its exception).

    In a thread that already runs an event loop (an async view or test), the caller's
    loop cannot run it to its end before this returns, so it runs in a thread of its own,
    with a copy of the caller's context (``current_task()`` reaches it): the caller's
    loop waits meanwhile, as it does for a sync task run inline.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    outcome: dict[str, Any] = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome["value"] = context.run(asyncio.run, coro)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread)
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="bgtasks-eager-async")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome.pop("error")
    return outcome["value"]
