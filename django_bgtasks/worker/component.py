"""The shape every background loop shares: start(), shutdown(), a tick that returns how
long to sleep, and broker errors logged with backoff instead of killing the loop."""

from __future__ import annotations

import logging
import threading

from ..backoff import reconnect_delay
from ..exceptions import BgTasksError

logger = logging.getLogger("django_bgtasks.worker")


class Component:
    """A daemon thread calling ``tick()`` until shut down."""

    name = "component"
    backoff_cap = 5.0  # seconds: the longest wait between tries while Redis is away

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0

    def tick(self) -> float:
        """Do one round of work; return the seconds to wait before the next."""
        raise NotImplementedError

    def wait(self, seconds: float) -> None:
        """Sleep between ticks; subclasses may wake earlier on an event of their own."""
        self._stop.wait(seconds)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"bgtasks-{self.name}",
                                        daemon=True)
        self._thread.start()

    def shutdown(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                delay = self.tick()
                if self._failures:
                    logger.info("%s: Redis is reachable again", self.name)
                self._failures = 0
            except BgTasksError as exc:
                delay = reconnect_delay(self._failures, cap=self.backoff_cap)
                self._failures += 1
                logger.warning("%s: %s; retrying in %.1fs", self.name, exc, delay)
            except Exception:
                delay = reconnect_delay(self._failures)
                self._failures += 1
                logger.exception("%s: unexpected error; retrying in %.1fs", self.name, delay)
            if delay > 0 and not self._stop.is_set():
                self.wait(delay)

