"""What both brokers (RedisBroker, sync; AsyncBroker, redis.asyncio) hold alike: their
connection's client and traits, the replica confirmation settings, the key names, and the
enqueue journal when a failover can happen under them."""

from __future__ import annotations

from .connection import Client
from .journal import EnqueueJournal
from .keys import GlobalKeys, QueueKeys
from .packing import remember


class BrokerCore:
    """The state and key lookup a broker is built on, for one key prefix."""

    def __init__(self, connection: Client, prefix: str, wait_replicas: int,
                 wait_timeout: float) -> None:
        self.client = connection.redis
        self.target = connection.target
        self.kind = connection.kind
        self.retry_for = connection.retry_for
        self._cluster = connection.kind == "cluster"
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = max(1, int(wait_timeout * 1000))
        self.keys = GlobalKeys(prefix)
        self._prefix = prefix
        self._queue_keys: dict[str, QueueKeys] = {}

    def queue_keys(self, queue: str) -> QueueKeys:
        keys = self._queue_keys.get(queue)
        if keys is None:
            keys = remember(self._queue_keys, queue, QueueKeys(self._prefix, queue))
        return keys

    def _journal_for(self, seconds: float, behind_sentinel: bool) -> EnqueueJournal | None:
        """The enqueue journal, where a master can change under the client (a cluster,
        Sentinel) and it is not turned off; None otherwise."""
        if seconds > 0 and (self._cluster or behind_sentinel):
            return EnqueueJournal(seconds)
        return None
