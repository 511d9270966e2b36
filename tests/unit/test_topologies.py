"""The topology helpers themselves: a real Redis Cluster and a real Sentinel set start,
are ready, fail over, and leave no process behind. Times are printed (pytest -s) so that
they can be compared with shared/research/redis-topologies.md."""

from __future__ import annotations

import time

import pytest
import redis
from redis.crc import key_slot

from topologies import (
    RedisClusterTopology,
    SentinelTopology,
    needs_cluster_tools,
    needs_sentinel_tools,
    port_is_free,
    redis_cluster,
)

cluster = pytest.fixture(scope="module", name="cluster")(redis_cluster)


@pytest.fixture(autouse=True)
def bgtasks_redis():
    """Overrides conftest's autouse fixture: these tests bring their own servers."""
    return None


def pending_key(queue: str) -> str:
    from django_bgtasks.broker.keys import QueueKeys

    return QueueKeys("bgtasks", queue).all[0]


def write_replicated(address: tuple[str, int], key: str, value: str) -> None:
    """SET on `address`, acknowledged by one replica (WAIT), so a failover keeps it."""
    with redis.Redis(*address) as node:
        node.set(key, value)
        assert node.execute_command("WAIT", 1, 2000) == 1


# --- Cluster -----------------------------------------------------------------------


@needs_cluster_tools
def test_cluster_starts_ready(cluster: RedisClusterTopology):
    print(f"\ncluster: 3+3 nodes ready in {cluster.startup_seconds:.2f}s")
    assert cluster.startup_seconds < 6
    masters, replicas = cluster.masters(), cluster.replicas()
    assert len(masters) == 3 and len(replicas) == 3
    assert {cluster.replica_of(master) for master in masters} == set(replicas)
    ports = [int(node.rsplit(":", 1)[1]) for node in cluster.startup_nodes]
    assert cluster.url == "redis+cluster://" + ",".join(
        f"127.0.0.1:{port}" for port in ports[:3]
    ) + "/0"
    with cluster.client() as client:
        client.set("{a}x", "1")
        client.set("{b}x", "2")
        assert client.get("{a}x") == b"1" and client.get("{b}x") == b"2"


@needs_cluster_tools
def test_queue_names_spread_covers_every_master(cluster: RedisClusterTopology):
    names = cluster.queue_names_spread(6)
    assert len(set(names)) == 6
    owners = [cluster.master_for_key(pending_key(name)) for name in names]
    assert set(owners) == set(cluster.masters())
    host, port = owners[0]
    with redis.Redis(host, port, decode_responses=True) as node:
        # our slot arithmetic agrees with the server's
        assert node.cluster("keyslot", pending_key(names[0])) == key_slot(names[0].encode())
    with cluster.client() as client:
        client.set(pending_key(names[0]), "routed")
    with redis.Redis(host, port) as node:
        assert node.get(pending_key(names[0])) == b"routed"


@needs_cluster_tools
def test_planned_failover(cluster: RedisClusterTopology):
    key = pending_key(cluster.queue_names_spread(3)[1])
    write_replicated(cluster.master_for_key(key), key, "kept")
    started = time.monotonic()
    old, new = cluster.failover_planned(key)
    elapsed = time.monotonic() - started
    print(f"\ncluster: planned failover {old[1]} -> {new[1]} done in {elapsed:.2f}s")
    assert cluster.master_for_key(key) == new
    assert old in cluster.replicas()
    with cluster.client() as client:
        assert client.get(key) == b"kept"


@needs_cluster_tools
def test_kill_master_promotes_its_replica(cluster: RedisClusterTopology):
    key = pending_key(cluster.queue_names_spread(3)[2])
    old = cluster.master_for_key(key)
    replica = cluster.replica_of(old)
    write_replicated(old, key, "kept")
    assert cluster.kill_master_of(key) == old
    assert not cluster.is_running(old[1])
    elapsed = cluster.wait_healthy(timeout=10)
    print(f"\ncluster: kill -9 {old[1]} -> {replica[1]} promoted, healthy in {elapsed:.2f}s")
    assert elapsed < 6
    assert cluster.master_for_key(key) == replica
    with cluster.client() as client:
        assert client.get(key) == b"kept"
    # The old master comes back as a replica of the promoted one.
    cluster.restart_node(old[1])
    rejoined = cluster.wait_healthy(timeout=10)
    print(f"cluster: {old[1]} restarted, rejoined as a replica in {rejoined:.2f}s")
    assert cluster.replica_of(replica) == old


# --- Sentinel ----------------------------------------------------------------------


@needs_sentinel_tools
def test_sentinel_starts_prewired(tmp_path):
    with SentinelTopology(tmp_path) as topology:
        print(f"\nsentinel: 2 data nodes + 3 sentinels ready in {topology.startup_seconds:.2f}s")
        assert topology.startup_seconds < 1
        assert topology.master_address() == topology.data_nodes[0]
        assert len(topology.sentinels) == 3 and topology.master_name == "mymaster"
        with topology.client_for_master() as master:
            master.set("k", "v")
            assert master.execute_command("WAIT", 1, 2000) == 1
        with redis.Redis(*topology.data_nodes[1]) as replica:
            assert replica.get("k") == b"v"


@needs_sentinel_tools
def test_sentinel_kill_master_fails_over(tmp_path):
    with SentinelTopology(tmp_path) as topology:
        started = time.monotonic()
        old = topology.kill_master()
        new = topology.wait_new_master(old, timeout=10)
        elapsed = time.monotonic() - started
        print(f"\nsentinel: kill -9 master -> {new[1]} promoted in {elapsed:.2f}s")
        assert new == topology.data_nodes[1]
        with topology.client_for_master() as master:
            assert master.set("after", "1")


@needs_sentinel_tools
def test_sentinel_forced_failover(tmp_path):
    with SentinelTopology(tmp_path, replicas=2) as topology:
        print(f"\nsentinel: 3 data nodes + 3 sentinels ready in {topology.startup_seconds:.2f}s")
        started = time.monotonic()
        old = topology.force_failover()
        new = topology.wait_new_master(old, timeout=10)
        elapsed = time.monotonic() - started
        print(f"sentinel: SENTINEL FAILOVER {old[1]} -> {new[1]} in {elapsed:.2f}s")
        assert new in topology.data_nodes[1:]
        with topology.client_for_master() as master:
            assert master.set("after", "1")


@needs_sentinel_tools
def test_failed_start_leaves_no_process(tmp_path):
    topology = SentinelTopology(tmp_path, extra_args=["--no-such-option", "1"])
    try:
        with pytest.raises(RuntimeError, match="exited"):
            topology.start()  # the sentinels had started: they must be gone too
        assert topology.running_ports() == []
    finally:
        topology.stop()


@needs_sentinel_tools
def test_stop_reaps_every_child(tmp_path):
    topology = SentinelTopology(tmp_path)
    try:
        topology.start()
        ports = topology.running_ports()
        assert len(ports) == 5
    finally:
        started = time.monotonic()
        topology.stop()
        elapsed = time.monotonic() - started
    print(f"\nsentinel: stop() of 5 servers took {elapsed:.3f}s")
    assert topology.running_ports() == []
    assert all(port_is_free(port) for port in ports)
