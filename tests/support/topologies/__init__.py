"""Real Redis Cluster and Sentinel topologies for tests, on loopback ports of their own:
base (ports, server processes, bookkeeping), cluster (3+3, and the suite's session
cluster) and sentinel (master, replicas, three sentinels)."""

from .base import HOST, Address, needs_cluster_tools, needs_sentinel_tools, port_is_free
from .cluster import (
    ClusterNodeView,
    RedisClusterTopology,
    SessionCluster,
    WholeCluster,
    redis_cluster,
)
from .sentinel import SentinelTopology, redis_sentinel

__all__ = [
    "HOST",
    "Address",
    "ClusterNodeView",
    "RedisClusterTopology",
    "SentinelTopology",
    "SessionCluster",
    "WholeCluster",
    "needs_cluster_tools",
    "needs_sentinel_tools",
    "port_is_free",
    "redis_cluster",
    "redis_sentinel",
]
