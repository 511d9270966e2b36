"""One asyncio event loop per worker thread, for tasks written as ``async def``.

A thread's loop is made on its first async task and reused for every later one (clients
that cache a loop-bound connection keep working across tasks); it is closed when the
thread ends. ``interrupt()``, called by the timeout watchdog from its own thread, raises
TaskTimeout inside the coroutine at the point where it awaits, so that the task's own
``except TaskTimeout`` and ``finally`` blocks run, as they do for a sync task.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Generator
from typing import Any

logger = logging.getLogger("django_bgtasks.worker")

# How long the child tasks a coroutine left behind get to finish being cancelled.
LEFTOVER_WAIT = 1.0


class Interruptible:
    """Awaits a coroutine step by step, as ``await`` would, so that an interruption can
    be thrown into it as TaskTimeout where ``Task.cancel()`` alone would raise
    CancelledError (which task code rarely expects, and must not swallow)."""

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self._task: asyncio.Task[Any] | None = None
        self._pending: BaseException | None = None
        self.delivered = False  # an interruption reached the loop (it is not blocked)

    def interrupt(self, exc: BaseException) -> None:
        """In the loop's thread: wake the task and raise ``exc`` where it awaits."""
        self.delivered = True
        if self._task is None or self._task.done():
            return  # it ended before the interruption came through: nothing to stop
        self._pending = exc
        self._task.cancel()  # wakes it whatever it awaits; __await__ swaps the exception

    def __await__(self) -> Generator[Any, Any, Any]:
        self._task = asyncio.current_task()
        send: Any = None
        throw: BaseException | None = None
        while True:
            try:
                yielded = self._coro.throw(throw) if throw is not None else self._coro.send(send)
            except StopIteration as stop:
                return stop.value
            send = throw = None
            try:
                send = yield yielded
            except asyncio.CancelledError as exc:
                throw = exc
            except GeneratorExit:
                self._coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001  (passed on, as `await` does)
                throw = exc
            if self._pending is not None and (throw is None or
                                              isinstance(throw, asyncio.CancelledError)):
                # Woken by interrupt(): by the cancel, or normally when what it awaited
                # (a child task) swallowed that cancel. Not a cancellation of this task,
                # so uncancelled: a TaskGroup or asyncio.timeout() must not see one.
                throw, self._pending = self._pending, None
                self._task.uncancel()


async def _drive(guard: Interruptible) -> Any:
    return await guard


class _ThreadLoop:
    """A thread's loop, closed when the thread's locals go (the thread ended)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __del__(self) -> None:
        close(self.loop)


_local = threading.local()
_lock = threading.Lock()
# Thread ident -> (loop, guard) of the coroutine that thread runs now.
_running: dict[int, tuple[asyncio.AbstractEventLoop, Interruptible]] = {}


def thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop: made on first use, then reused."""
    holder = getattr(_local, "holder", None)
    if holder is None or holder.loop.is_closed():
        holder = _local.holder = _ThreadLoop()
    return holder.loop


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to its end on this thread's loop and return its value (or raise).

    The current context (``current_task()``) reaches the coroutine and the tasks it
    starts; the child tasks it leaves unfinished are cancelled when it ends, as
    ``asyncio.run`` does, so that they never run inside the next task.
    """
    loop = thread_loop()
    guard = Interruptible(coro)
    ident = threading.get_ident()
    task = loop.create_task(_drive(guard))
    with _lock:
        _running[ident] = (loop, guard)
    try:
        return loop.run_until_complete(task)
    except BaseException:
        if not task.done():
            # An exception from outside (the watchdog's thread-level backstop) landed in
            # the loop's own code: the loop's state is unknown, so it is not reused.
            _local.holder = None
            task.cancel()
            close(loop)
        raise
    finally:
        with _lock:
            _running.pop(ident, None)
        if not loop.is_closed():
            _cancel_leftovers(loop)


def interrupt(thread_ident: int, exc_type: type[BaseException]) -> Interruptible | None:
    """Have ``exc_type`` raised inside the coroutine the thread ``thread_ident`` runs now,
    once its loop gets to it (``.delivered`` tells when); None when that thread runs no
    coroutine (then nothing is done)."""
    with _lock:
        found = _running.get(thread_ident)
        if found is None:
            return None
        loop, guard = found
        try:
            # The guard names its own task: a call arriving after that task ended does
            # nothing, even if the loop runs another task's coroutine by then.
            loop.call_soon_threadsafe(guard.interrupt, exc_type())
        except RuntimeError:  # closed meanwhile
            return None
        return guard


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not leftovers:
        return
    for leftover in leftovers:
        leftover.cancel()
    done, pending = loop.run_until_complete(asyncio.wait(leftovers, timeout=LEFTOVER_WAIT))
    for finished in done:
        if not finished.cancelled() and finished.exception() is not None:
            logger.warning("a child task left unfinished by an async task raised while "
                           "cancelled: %r", finished.exception())
    if pending:
        logger.warning("%d child task(s) left unfinished by an async task ignored their "
                       "cancellation; they stay in the thread's event loop", len(pending))


def close(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what ``loop`` still holds, finish its async generators, and close it."""
    if loop.is_closed() or loop.is_running():
        return
    try:
        _cancel_leftovers(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    except Exception:  # noqa: BLE001  (closing must not fail the thread that ends)
        logger.debug("an async task's event loop did not shut down cleanly", exc_info=True)
    finally:
        loop.close()
