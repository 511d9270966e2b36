"""Builds the redis-py client from BGTASKS: REDIS_URL, or a django-redis CACHE_ALIAS."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis

from ..conf import Settings


def describe_target(url: str) -> str:
    """The Redis URL without credentials, safe to log and to show."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    db = parts.path.lstrip("/") or "0"
    return f"{parts.scheme}://{host}:{port}/{db}"


def make_client(cfg: Settings) -> tuple[redis.Redis, str]:
    """A client and a printable description of its target."""
    if cfg.CACHE_ALIAS:
        from django_redis import get_redis_connection

        client = get_redis_connection(cfg.CACHE_ALIAS)
        kwargs = client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return client, f"cache alias {cfg.CACHE_ALIAS!r} ({where})"
    client = redis.Redis.from_url(
        cfg.REDIS_URL,
        socket_timeout=cfg.SOCKET_TIMEOUT,
        socket_connect_timeout=cfg.CONNECT_TIMEOUT,
        health_check_interval=30,
    )
    return client, describe_target(cfg.REDIS_URL)
