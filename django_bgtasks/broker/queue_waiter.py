"""Waiting for work on several queues of a Redis Cluster.

BLPOP over the queues' notify lists is refused there (their keys live in different hash
slots), so each queue gets a thread blocking on its own list, over its own connection,
while the fetcher waits; the first token popped wakes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

logger = logging.getLogger("django_bgtasks.worker")

SLICE = 1.0  # seconds per BLPOP: an armed thread re-checks the fetcher's deadline this often
ERROR_PAUSE = 0.5  # after a failed BLPOP (a failover): the fetcher's claims report errors


class QueueWaiter:
    """One blocking thread per queue; ``wait()`` arms them until a token or a timeout.

    A thread still inside its BLPOP when the wait ends may take one more token (at most
    SLICE later): it ends this process's next wait at once, and other hosts find the task
    at their own next fetch."""

    def __init__(self, client: Any,
                 translate_errors: Callable[[], AbstractContextManager[None]],
                 slice_cap: float = SLICE) -> None:
        self._client = client
        self._slice = min(SLICE, slice_cap)  # below the socket timeout
        self._translate = translate_errors
        self._cond = threading.Condition()
        self._deadline = 0.0  # monotonic: the threads block on their lists until then
        self._woken: str | None = None
        self._threads: dict[str, threading.Thread] = {}
        self._closed = False

    def wait(self, notify_keys: Mapping[str, str], timeout: float) -> str | None:
        """Block until a token is popped from one of the queues' lists, or ``timeout``;
        returns that queue's name, or None."""
        with self._cond:
            for queue, key in notify_keys.items():
                if queue not in self._threads:
                    thread = threading.Thread(target=self._block_on, args=(queue, key),
                                              name=f"bgtasks-wait-{queue}", daemon=True)
                    self._threads[queue] = thread
                    thread.start()
            # A token a thread popped after the previous wait had ended is work announced
            # meanwhile: it ends this wait at once instead of being dropped.
            self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._woken is not None
                                or time.monotonic() >= self._deadline, timeout)
            woken, self._woken, self._deadline = self._woken, None, 0.0
            return woken

    def interrupt(self) -> None:
        """End the current wait now (its caller is stopping)."""
        with self._cond:
            self._deadline = 0.0
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._deadline = 0.0
            self._cond.notify_all()

    def _block_on(self, queue: str, key: str) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or (
                    self._woken is None and self._deadline > time.monotonic()))
                if self._closed:
                    return
                remaining = self._deadline - time.monotonic()
            try:
                with self._translate():
                    reply = self._client.blpop(
                        [key], timeout=max(0.01, min(self._slice, remaining)))
            except Exception as exc:  # noqa: BLE001  (the thread must outlive a failover)
                logger.debug("waiting on queue %s: %s", queue, exc)
                time.sleep(ERROR_PAUSE)
                continue
            if reply is not None:
                with self._cond:
                    if self._woken is None:
                        self._woken = queue
                    self._cond.notify_all()
