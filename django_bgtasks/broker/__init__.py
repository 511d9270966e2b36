"""Access to the configured broker (one per process and settings)."""

from __future__ import annotations

import os
import threading

from django.core.signals import setting_changed

from ..conf import get_settings
from .redis import RedisBroker

_lock = threading.Lock()
_cache: dict[tuple, RedisBroker] = {}


def get_broker() -> RedisBroker:
    """The broker for the current BGTASKS settings, created on first use."""
    cfg = get_settings()
    key = (os.getpid(), cfg.REDIS_URL, cfg.CACHE_ALIAS, cfg.PREFIX, cfg.SOCKET_TIMEOUT,
           cfg.CONNECT_TIMEOUT)
    broker = _cache.get(key)
    if broker is None:
        with _lock:
            broker = _cache.get(key)
            if broker is None:
                from .connection import make_client

                client, target = make_client(cfg)
                broker = _cache[key] = RedisBroker(client, cfg.PREFIX, target)
    return broker


def reset_brokers(**kwargs) -> None:
    """Forget cached brokers (settings changed, or a process was forked)."""
    with _lock:
        for broker in _cache.values():
            if broker_owns_client(broker):
                broker.close()
        _cache.clear()


def broker_owns_client(broker: RedisBroker) -> bool:
    # A django-redis client belongs to the cache framework, which closes it itself.
    return not broker.target.startswith("cache alias")


setting_changed.connect(reset_brokers, dispatch_uid="django_bgtasks.reset_brokers")


def forget_brokers_after_fork() -> None:
    """In a forked child: drop the parent's brokers without closing its sockets."""
    with _lock:
        _cache.clear()
