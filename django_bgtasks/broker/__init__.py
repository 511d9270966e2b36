"""Access to the configured broker (one per process and settings)."""

from __future__ import annotations

import os
import threading

from django.core.signals import setting_changed

from ..conf import Settings, get_settings
from ..exceptions import BrokerUnavailable
from .connection import creation_retry_for, make_client
from .errors import ride_out
from .redis import RedisBroker

# The settings a broker is built from: a change to any of them makes a new one.
CONNECTION_SETTINGS = ("REDIS_URL", "CACHE_ALIAS", "PREFIX", "SOCKET_TIMEOUT", "CONNECT_TIMEOUT",
                       "CLUSTER_NODES", "SENTINELS", "MASTER_NAME", "SENTINEL_KWARGS",
                       "RETRY_FOR", "WAIT_REPLICAS", "WAIT_TIMEOUT", "ENQUEUE_JOURNAL_SECONDS")
_lock = threading.Lock()
_cache: dict[tuple, RedisBroker] = {}
# The connection key of the Settings object seen last: get_settings() returns the same
# (immutable) object until a setting changes, so enqueue() need not rebuild the key.
_last_key: tuple[Settings | None, tuple] = (None, ())


def _connection_key(cfg: Settings) -> tuple:
    global _last_key
    seen, key = _last_key
    if seen is not cfg:
        key = tuple(repr(getattr(cfg, name)) for name in CONNECTION_SETTINGS)
        _last_key = (cfg, key)
    return key


def get_broker() -> RedisBroker:
    """The broker for the current BGTASKS settings, created on first use."""
    cfg = get_settings()
    key = (os.getpid(), _connection_key(cfg))
    broker = _cache.get(key)
    if broker is None:
        with _lock:
            broker = _cache.get(key)
            if broker is None:
                broker = _cache[key] = make_broker(cfg)
    return broker


def make_broker(cfg: Settings | None = None, watch_master: bool = True) -> RedisBroker:
    """A new broker, not cached (get_broker() shares one per process). ``watch_master``
    False: no Sentinel watcher thread, for a process that forks (the supervisor)."""
    cfg = cfg or get_settings()
    return RedisBroker(make_client(cfg), cfg.PREFIX, cfg.WAIT_REPLICAS, cfg.WAIT_TIMEOUT,
                       watch_master=watch_master,
                       journal_seconds=cfg.ENQUEUE_JOURNAL_SECONDS)


def get_broker_for_enqueue() -> RedisBroker:
    """get_broker(), waiting up to RETRY_FOR for a cluster that cannot be reached yet (its
    client connects as it is made), as enqueue() waits out a failover once it has one."""
    try:
        return get_broker()
    except BrokerUnavailable:
        window = creation_retry_for(get_settings())  # not on every enqueue: it parses a URL
        if not window:
            raise
        return ride_out(get_broker, window)


def reset_brokers(**kwargs) -> None:
    """Forget cached brokers (settings changed, or a process was forked)."""
    with _lock:
        for broker in _cache.values():
            broker.close(close_client=broker_owns_client(broker))
        _cache.clear()


def broker_owns_client(broker: RedisBroker) -> bool:
    # A django-redis client belongs to the cache framework, which closes it itself.
    return broker.kind != "cache"


setting_changed.connect(reset_brokers, dispatch_uid="django_bgtasks.reset_brokers")


def forget_brokers_after_fork() -> None:
    """In a forked child: drop the parent's brokers without closing its sockets."""
    with _lock:
        _cache.clear()
