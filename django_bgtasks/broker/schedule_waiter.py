"""Sleeping until a timeout or until an enqueue publishes an earlier due time (the
poller's wait)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .errors import TRANSIENT_ERRORS

if TYPE_CHECKING:
    from .redis import RedisBroker


class ScheduleWaiter:
    """Sleeps until a timeout or until some enqueue publishes an earlier due time."""

    def __init__(self, broker: RedisBroker) -> None:
        self._broker = broker
        self._pubsub = None

    def wait(self, timeout: float) -> bool:
        """True when woken by a publication, False on timeout."""
        deadline = time.monotonic() + timeout
        with self._broker.translate_errors():
            try:
                if self._pubsub is None:
                    self._pubsub = self._broker.client.pubsub(ignore_subscribe_messages=True)
                    self._pubsub.subscribe(self._broker.keys.wake_channel)
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    if self._pubsub.get_message(timeout=remaining) is not None:
                        return True
            except TRANSIENT_ERRORS:
                self.close()
                raise

    def close(self) -> None:
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            finally:
                self._pubsub = None
