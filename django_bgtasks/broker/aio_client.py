"""Builds the redis.asyncio client from BGTASKS, for the same deployments as
connection.make_client(): one Redis, a Redis Cluster, a master behind Sentinel, or the
Redis of a django-redis CACHE_ALIAS. The URL checks, node lists, credentials and the
names messages give the target are connection.py's: only the client classes differ."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from ..conf import Settings
from .connection import (
    CLUSTER_RETRY_FOR,
    SINGLE_RETRY_FOR,
    Client,
    check_url,
    cluster_nodes,
    describe_target,
    is_cluster,
    make_client,
    retry_window,
    sentinel_options,
    sentinel_target,
    timeouts,
    unreachable,
)


async def make_async_client(cfg: Settings) -> Client:
    """A redis.asyncio client for the configured deployment, bound to the running loop
    (a cluster's is initialised here: it learns the slots before its first command)."""
    if cfg.CACHE_ALIAS:
        return _cache_client(cfg)
    check_url(cfg.REDIS_URL)  # before redis-py reads it: its errors quote the URL
    if is_cluster(cfg):
        return await _cluster_client(cfg)
    if cfg.SENTINELS:
        sentinels, master_options = sentinel_options(cfg)
        sentinel = Sentinel(sentinels, sentinel_kwargs={**timeouts(cfg), **cfg.SENTINEL_KWARGS},
                            **timeouts(cfg))
        client = sentinel.master_for(cfg.MASTER_NAME, health_check_interval=30,
                                     **timeouts(cfg), **master_options)
        return Client(client, sentinel_target(cfg, sentinels), "sentinel",
                      retry_window(cfg, CLUSTER_RETRY_FOR), sentinel, cfg.MASTER_NAME)
    client = redis.asyncio.Redis.from_url(cfg.REDIS_URL, health_check_interval=30,
                                          **timeouts(cfg))
    return Client(client, describe_target(cfg.REDIS_URL), "single",
                  retry_window(cfg, SINGLE_RETRY_FOR))


async def _cluster_client(cfg: Settings) -> Client:
    first, nodes, target = cluster_nodes(cfg)
    client = RedisCluster.from_url(first, startup_nodes=[ClusterNode(h, p) for h, p in nodes],
                                   **timeouts(cfg))
    try:
        await client.initialize()
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        await client.aclose()
        raise unreachable(target, exc) from exc
    return Client(client, target, "cluster", retry_window(cfg, CLUSTER_RETRY_FOR))


def _cache_client(cfg: Settings) -> Client:
    """django-redis has no asyncio client: one to the same server, with the same
    connection options (credentials, db, TLS) as the cache's own client."""
    sync = make_client(cfg)  # the URL checks and the error that never quotes LOCATION
    pool = sync.redis.connection_pool
    if hasattr(pool, "get_master_address"):
        raise NotImplementedError(
            "aenqueue() does not follow a django-redis cache behind Sentinel: set "
            "BGTASKS['SENTINELS'] and MASTER_NAME instead of CACHE_ALIAS")
    kwargs: dict[str, Any] = dict(pool.connection_kwargs)
    for sync_class, async_class in ((redis.SSLConnection, redis.asyncio.SSLConnection),
                                    (redis.UnixDomainSocketConnection,
                                     redis.asyncio.UnixDomainSocketConnection)):
        if issubclass(pool.connection_class, sync_class):
            kwargs["connection_class"] = async_class
            break
    # Options only the sync client knows (its parser, its retry object) are left out.
    for name in ("parser_class", "retry", "redis_connect_func", "event_dispatcher"):
        kwargs.pop(name, None)
    client = redis.asyncio.Redis(connection_pool=redis.asyncio.ConnectionPool(**kwargs))
    return Client(client, sync.target, "cache", sync.retry_for)
