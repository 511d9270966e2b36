"""Following a Sentinel failover at once.

redis-py finds the master through Sentinel only when it opens a connection, so pooled
connections keep writing to the old master after a failover. After a forced failover the
old master accepts writes for about 11 s more and then drops them when it becomes a
replica (126,413 acknowledged writes lost, measured). This thread listens for Sentinel's
``+switch-master`` and moves the pool the moment the master changes, so every next command
goes to the new master.

It never closes a connection another thread is using: closing a socket under a thread
that is writing to it fails that call with ``ValueError: I/O operation on closed file``,
which is neither a connection error nor retried (seen once in CI, an enqueue refused
during a forced failover). Instead the pool is told the new address: idle connections
are closed at once, and one in use is closed by the pool when its thread hands it back,
as it no longer points at the master.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import redis
from redis.sentinel import SentinelConnectionPool

from ..backoff import reconnect_delay

logger = logging.getLogger("django_bgtasks")

POLL = 1.0  # seconds between checks of the stop flag while listening


class MasterSwitchWatcher:
    """A daemon thread subscribed to ``+switch-master`` on one sentinel at a time."""

    def __init__(self, pool: SentinelConnectionPool,
                 on_switch: Callable[[tuple[str, int]], None] | None = None) -> None:
        self._pool = pool
        self._on_switch = on_switch
        self._name = pool.service_name
        self._sentinels = list(pool.sentinel_manager.sentinels)
        self._stop = threading.Event()
        self.switches = 0  # masters switched to, for tests and logs
        self._thread = threading.Thread(target=self._run, name="bgtasks-sentinel-watch",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            sentinel = self._sentinels[failures % len(self._sentinels)]
            try:
                self._listen(sentinel)
                failures = 0
            except redis.RedisError as exc:
                failures += 1
                logger.debug("sentinel watch: %s; trying the next sentinel", exc)
                self._stop.wait(reconnect_delay(failures, cap=2.0))

    def _listen(self, sentinel: redis.Redis) -> None:
        pubsub = sentinel.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe("+switch-master")
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=POLL)
                if message is not None:
                    self._switched(message.get("data"))
        finally:
            pubsub.close()

    def _switched(self, data: Any) -> None:
        # "<master name> <old ip> <old port> <new ip> <new port>"
        text = data.decode() if isinstance(data, bytes) else str(data)
        fields = text.split()
        if len(fields) != 5 or fields[0] != self._name:
            return
        try:
            new_master = (fields[3], int(fields[4]))
        except ValueError:
            return
        logger.warning("Sentinel moved master %s from %s:%s to %s:%s: reconnecting",
                       *fields)
        _point_at(self._pool, new_master)
        self._pool.disconnect(inuse_connections=False)
        self.switches += 1
        if self._on_switch is not None:
            try:
                self._on_switch(new_master)
            except Exception:  # noqa: BLE001  (the watcher must keep watching)
                logger.exception("sentinel watch: the switch handler failed")


def _point_at(pool: SentinelConnectionPool, master: tuple[str, int]) -> None:
    """Make `pool` take `master` as the master, so that it refuses (closes) a connection
    to any other server when that connection is released. redis-py keeps the address on
    a proxy object since 5.0.2, on the pool itself before."""
    holder = getattr(pool, "proxy", pool)
    holder.master_address = master


def master_address(client: Any) -> tuple[str, int] | None:
    """The master a Sentinel-managed client's pool last found (None for other clients)."""
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, SentinelConnectionPool):
        return None
    return getattr(getattr(pool, "proxy", pool), "master_address", None)


def is_sentinel_client(client: Any) -> bool:
    """True for a client whose pool finds its master through Sentinel (ours, or a
    django-redis SentinelClient's)."""
    return isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool)


def watch_master_switches(client: Any, on_switch: Callable[[tuple[str, int]], None] | None = None
                          ) -> MasterSwitchWatcher | None:
    """A watcher for a Sentinel-managed client (None for any other client); ``on_switch``
    is called with the new master's address after the pool was moved to it."""
    if is_sentinel_client(client):
        return MasterSwitchWatcher(client.connection_pool, on_switch)
    return None
