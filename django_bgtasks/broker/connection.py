"""Builds the redis-py client from BGTASKS: one Redis (REDIS_URL), a Redis Cluster
(a redis+cluster:// URL or CLUSTER_NODES), a master behind Sentinel (SENTINELS and
MASTER_NAME), or a django-redis CACHE_ALIAS."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from ..conf import Settings
from ..exceptions import BgTasksError, BrokerUnavailable, InvalidRedisSetting
from .errors import TRANSIENT_ERRORS, is_transient

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
URL_SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)
MALFORMED = ("{what} is a malformed Redis URL ({reason}): is the password percent-encoded? "
             "Write '/', '#', '?', '@' and ':' in a password as %2F, %23, %3F, %40 and %3A.")
CLUSTER_RETRY_FOR = 10.0  # seconds; a failover takes 2-3 s with node-timeout 1 s, 18 s at 15 s
SINGLE_RETRY_FOR = 0.0


@dataclass(frozen=True)
class Client:
    """The client, what to call its target in messages (never with credentials), what
    kind of deployment it talks to, and how long enqueue() rides out a failover."""

    redis: Any  # redis.Redis, or redis.cluster.RedisCluster
    target: str
    kind: str  # 'single', 'cluster', 'sentinel' or 'cache'
    retry_for: float
    sentinel: Sentinel | None = None
    master_name: str | None = None


def describe_target(url: str) -> str:
    """The Redis URL without credentials, safe to log and to show."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    if parts.scheme in CLUSTER_SCHEMES:
        _, nodes = split_cluster_url(url)
        return f"{parts.scheme}://{','.join(f'{h}:{p}' for h, p in nodes)}"
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    db = parts.path.lstrip("/") or "0"
    return f"{parts.scheme}://{host}:{port}/{db}"


def url_scheme(url: str) -> str:
    """The URL's scheme in lower case ('' without '://'), read without parsing the rest
    (urllib's errors about the rest may quote it)."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else ""


def check_url(url: Any, setting: str = "REDIS_URL") -> None:
    """InvalidRedisSetting unless ``url`` is a Redis URL that redis-py reads as written.

    A '/', '#' or '?' in a password ends the URL's host part early: urllib then reads the
    rest of it as the port (and redis-py's error quotes it), the path or the query, or
    drops it without a word. The error names the setting and what is wrong, never any part
    of the URL."""
    if not isinstance(url, str) or url_scheme(url) not in URL_SCHEMES:
        raise InvalidRedisSetting(f"BGTASKS[{setting!r}] must be a redis://, rediss://, "
                                  "unix://, redis+cluster:// or rediss+cluster:// URL.")
    reason = _malformed(url)
    if reason:
        raise InvalidRedisSetting(MALFORMED.format(what=f"BGTASKS[{setting!r}]", reason=reason))


def _malformed(url: str) -> str | None:
    """What makes ``url`` unreadable or misread, in words that quote none of it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "urllib cannot read it"
    if "#" in url:  # redis-py ignores a fragment: what follows a '#' would be dropped
        return "a '#' in it"
    if "@" in parts.path or "@" in parts.query:  # the credentials end at the last '@'
        return "an '@' after the host"
    if any("=" not in item for item in parts.query.split("&") if item):
        return "a query option without '='"  # redis-py drops it without a word
    plain = url
    if parts.scheme == "unix":
        if not parts.path:
            return "no socket path"
    elif parts.scheme in CLUSTER_SCHEMES:
        try:
            plain = split_cluster_url(url)[0]
        except ValueError:
            return "its hosts are not host:port,host:port"
    else:
        try:
            parts.port  # noqa: B018 - urllib checks the port when it is read
        except ValueError:
            return "the port is not a number from 0 to 65535"
    if parts.scheme != "unix" and not re.fullmatch(r"(/\d*)?", parts.path):
        return "the database after the host is not a number"  # redis-py would use db 0
    try:
        redis.connection.parse_url(plain)
    except ValueError:
        return "redis-py cannot read it"
    return None


def split_cluster_url(url: str) -> tuple[str, list[tuple[str, int]]]:
    """``redis+cluster://[user:pass@]h1:p1,h2:p2[/0][?options]`` as a plain URL to the
    first node (carrying the credentials and options for every node) and all the nodes."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    nodes = [parse_node(item) for item in hosts.split(",") if item.strip()]
    if not nodes:
        raise ValueError("a redis+cluster:// URL names at least one host:port")
    scheme = CLUSTER_SCHEMES[parts.scheme]
    auth = f"{userinfo}@" if userinfo else ""
    query = f"?{parts.query}" if parts.query else ""
    first = f"{scheme}://{auth}{nodes[0][0]}:{nodes[0][1]}{parts.path}{query}"
    return first, nodes


def parse_node(text: Any) -> tuple[str, int]:
    """``"host:port"`` or ``(host, port)`` as (host, port); ValueError otherwise (which
    does not quote ``text``: from a URL, it may be part of a password)."""
    if isinstance(text, (list, tuple)) and len(text) == 2:
        host, port = text
    elif isinstance(text, str) and ":" in text:
        host, _, port = text.strip().rpartition(":")
    else:
        raise ValueError("not host:port")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError("not host:port") from None
    host = str(host)
    # a URL ("redis://:pw@h") is not a host: redis-py's connection errors would quote it
    if not host or not 0 < port < 65536 or any(c in host for c in "/@?# "):
        raise ValueError("not host:port")
    return host, port


def parse_nodes(value: Any, setting: str) -> list[tuple[str, int]]:
    """CLUSTER_NODES or SENTINELS as (host, port) pairs, or an InvalidRedisSetting that
    names the setting and the item's position (never its text)."""
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidRedisSetting(f"BGTASKS[{setting!r}] must be a non-empty list of "
                                  "'host:port'.")
    nodes = []
    for index, item in enumerate(value):
        try:
            nodes.append(parse_node(item))
        except ValueError:
            raise InvalidRedisSetting(f"BGTASKS[{setting!r}][{index}] is not 'host:port' or "
                                      "(host, port).") from None
    return nodes


def timeouts(cfg: Settings) -> dict[str, Any]:
    return {"socket_timeout": cfg.SOCKET_TIMEOUT, "socket_connect_timeout": cfg.CONNECT_TIMEOUT}


def is_cluster(cfg: Settings) -> bool:
    """True when the settings name a Redis Cluster (whose client connects as it is made)."""
    return bool(cfg.CLUSTER_NODES) or url_scheme(cfg.REDIS_URL) in CLUSTER_SCHEMES


def creation_retry_for(cfg: Settings) -> float:
    """How long enqueue() waits for a client that cannot be made yet: only a cluster's
    client connects as it is made (others connect on first use, where the broker rides
    out the wait itself), so this is the cluster's RETRY_FOR."""
    return retry_window(cfg, CLUSTER_RETRY_FOR) if is_cluster(cfg) else 0.0


def retry_window(cfg: Settings, default: float) -> float:
    """RETRY_FOR, or the topology's default when it is not set."""
    return default if cfg.RETRY_FOR is None else cfg.RETRY_FOR


def make_client(cfg: Settings) -> Client:
    """The client for the configured deployment."""
    if cfg.CACHE_ALIAS:
        from django_redis import get_redis_connection

        try:
            client = get_redis_connection(cfg.CACHE_ALIAS)
        except ValueError:  # django-redis parses the cache's LOCATION: urllib quotes it
            where = f"the LOCATION of cache {cfg.CACHE_ALIAS!r} (BGTASKS['CACHE_ALIAS'])"
            raise InvalidRedisSetting(MALFORMED.format(
                what=where, reason="redis-py cannot read it")) from None
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        behind_sentinel = hasattr(pool, "get_master_address")
        default = CLUSTER_RETRY_FOR if behind_sentinel else SINGLE_RETRY_FOR
        return Client(client, f"cache alias {cfg.CACHE_ALIAS!r} ({where})", "cache",
                      retry_window(cfg, default))
    check_url(cfg.REDIS_URL)  # before redis-py reads it: its errors quote the URL
    if is_cluster(cfg):
        return _cluster_client(cfg, retry_window(cfg, CLUSTER_RETRY_FOR))
    if cfg.SENTINELS:
        return _sentinel_client(cfg, retry_window(cfg, CLUSTER_RETRY_FOR))
    client = redis.Redis.from_url(cfg.REDIS_URL, health_check_interval=30, **timeouts(cfg))
    return Client(client, describe_target(cfg.REDIS_URL), "single",
                  retry_window(cfg, SINGLE_RETRY_FOR))


def cluster_nodes(cfg: Settings) -> tuple[str, list[tuple[str, int]], str]:
    """A cluster's (URL of the first node, with the credentials and options for every
    node; all nodes; the target as messages name it), for the sync and async clients."""
    if url_scheme(cfg.REDIS_URL) in CLUSTER_SCHEMES:
        first, nodes = split_cluster_url(cfg.REDIS_URL)
    else:  # CLUSTER_NODES, with REDIS_URL's credentials and options (its host unused)
        nodes = parse_nodes(cfg.CLUSTER_NODES, "CLUSTER_NODES")
        parts = urlsplit(cfg.REDIS_URL)
        auth = parts.netloc.rpartition("@")[0]
        query = f"?{parts.query}" if parts.query else ""
        first = (f"{parts.scheme}://{auth + '@' if auth else ''}{nodes[0][0]}:{nodes[0][1]}"
                 f"{query}")
    # as describe_target() names a redis+cluster:// URL: messages say "Redis at <target>"
    scheme = urlsplit(first).scheme
    return first, nodes, f"{scheme}+cluster://{','.join(f'{h}:{p}' for h, p in nodes)}"


def _cluster_client(cfg: Settings, retry_for: float) -> Client:
    first, nodes, target = cluster_nodes(cfg)
    try:
        client = RedisCluster(url=first, startup_nodes=[ClusterNode(h, p) for h, p in nodes[1:]],
                              **timeouts(cfg))
    except redis.exceptions.RedisClusterException as exc:
        # RedisCluster connects in its constructor: no node answered (a worker started
        # before the cluster retries on BrokerUnavailable, as on one Redis)
        raise unreachable(target, exc) from exc
    return Client(client, target, "cluster", retry_for)


def unreachable(target: str, exc: Exception) -> BrokerUnavailable:
    """Our error for a Redis we cannot use: a refused password (redis-py makes it a
    ConnectionError, but Redis was reached: say what is wrong), or no answer, including a
    cluster client's RedisClusterException (not a RedisError) with no node or slot map."""
    if isinstance(exc.__cause__, redis.AuthenticationError):  # every cluster node refused
        exc = exc.__cause__
    detail = str(exc).rstrip(".")  # messages go on with "; retrying in ..."
    if isinstance(exc, redis.AuthenticationError):
        return BrokerUnavailable(f"authentication to Redis at {target} failed: {detail}")
    return BrokerUnavailable(f"cannot reach Redis at {target}: {detail}")


def translated(target: str, exc: Exception) -> BgTasksError:
    """Our exception for a redis-py one (sync or asyncio: the same classes), naming the
    target (never its credentials)."""
    if isinstance(exc, (redis.exceptions.RedisClusterException, *TRANSIENT_ERRORS)):
        return unreachable(target, exc)  # a refused password included
    detail = str(exc).rstrip(".")  # messages go on with "; retrying in ..."
    if is_transient(exc):  # reached, but changing roles or starting (NOREPLICAS...)
        return BrokerUnavailable(f"Redis at {target} cannot take this now (a "
                                 f"failover or a restart): {detail}")
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return BgTasksError(
            f"Redis at {target} is out of memory (used memory > maxmemory, policy "
            f"noeviction) and refused the command; nothing was written: {detail}")
    if isinstance(exc, redis.ResponseError):
        return BgTasksError(f"Redis at {target} refused the command: {detail}")
    return BgTasksError(f"Redis at {target}: {detail}")


def sentinel_options(cfg: Settings) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The sentinels, and the master's connection options from REDIS_URL (credentials,
    db, TLS), for the sync and async clients."""
    sentinels = parse_nodes(cfg.SENTINELS, "SENTINELS")
    url = redis.connection.parse_url(cfg.REDIS_URL)
    master_options = {k: v for k, v in url.items()
                      if k not in ("host", "port", "path", "connection_class")}
    if url_scheme(cfg.REDIS_URL) == "rediss":
        master_options.setdefault("ssl", True)
    return sentinels, master_options


def sentinel_target(cfg: Settings, sentinels: list[tuple[str, int]]) -> str:
    where = ",".join(f"{h}:{p}" for h, p in sentinels)
    return f"Sentinel master {cfg.MASTER_NAME!r} (sentinels {where})"


def _sentinel_client(cfg: Settings, retry_for: float) -> Client:
    sentinels, master_options = sentinel_options(cfg)
    sentinel = Sentinel(sentinels, sentinel_kwargs={**timeouts(cfg), **cfg.SENTINEL_KWARGS},
                        **timeouts(cfg))
    client = sentinel.master_for(cfg.MASTER_NAME, health_check_interval=30, **timeouts(cfg),
                                 **master_options)
    return Client(client, sentinel_target(cfg, sentinels), "sentinel", retry_for, sentinel,
                  cfg.MASTER_NAME)
