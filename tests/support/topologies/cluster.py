"""A real 3+3 Redis Cluster for tests, and the suite's session Redis when
BGTASKS_TEST_TOPOLOGY=cluster."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from .base import (
    CLUSTER_BUS_OFFSET,
    HOST,
    Address,
    _ask,
    _executable,
    _missing,
    _pick_ports,
    _Topology,
    _wait_for,
    port_is_free,
    started,
)


@dataclass(frozen=True)
class ClusterNodeView:
    """One line of CLUSTER NODES."""

    node_id: str
    address: Address
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, line: str) -> ClusterNodeView:
        node_id, addr, flags, master_id, _ping, _pong, _epoch, _link, *slots = line.split()
        host, port = addr.split("@")[0].rsplit(":", 1)
        ranges = []
        for item in slots:
            if item.startswith("["):
                continue  # a slot being migrated
            first, _, last = item.partition("-")
            ranges.append((int(first), int(last or first)))
        return cls(
            node_id,
            (host, int(port)),
            frozenset(flags.split(",")),
            None if master_id == "-" else master_id,
            tuple(ranges),
        )

    @property
    def failed(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})

    @property
    def is_master(self) -> bool:
        """A master that is not failed and serves slots."""
        return "master" in self.flags and not self.failed and bool(self.slots)

    @property
    def is_replica(self) -> bool:
        return "slave" in self.flags and not self.failed

    def serves(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


class RedisClusterTopology(_Topology):
    """3 masters + 3 replicas, made by `redis-cli --cluster create` (~2 s to ready)."""

    NODES = 6
    BASE_ARGS = ("--cluster-enabled", "yes", "--cluster-node-timeout", "1000")

    def __init__(
        self, base_dir: Path, extra_args: Sequence[str] = (), startup_timeout: float = 20.0
    ) -> None:
        """`extra_args` go to every redis-server after ours (e.g. "--appendonly", "yes")."""
        super().__init__(base_dir, "cluster", startup_timeout)
        self.extra_args = list(extra_args)
        self.ports: list[int] = []

    def _start(self) -> None:
        self.ports = _pick_ports(self.NODES)
        for port in self.ports:
            bus = port + CLUSTER_BUS_OFFSET
            assert port_is_free(bus), f"cluster bus port {bus} is taken"
            argv = self._redis_server_argv(port, [*self.BASE_ARGS, *self.extra_args])
            self._add(port, argv)
        for server in self._servers.values():
            server.wait_serving()
        create = subprocess.run(
            [_executable("redis-cli") or "redis-cli", "--cluster", "create",
             *self.startup_nodes, "--cluster-replicas", "1", "--cluster-yes"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if create.returncode != 0:
            raise RuntimeError(f"cluster create failed:\n{create.stdout}{create.stderr}")
        self.wait_healthy(self.startup_timeout)

    @property
    def startup_nodes(self) -> list[str]:
        """Every node as "host:port"."""
        return [f"{HOST}:{port}" for port in self.ports]

    @property
    def url(self) -> str:
        """redis+cluster://host:p1,host:p2,host:p3/0 (a cluster has only db 0)."""
        return f"redis+cluster://{','.join(self.startup_nodes[:3])}/0"

    def client(self, **kwargs) -> RedisCluster:
        """A new redis-py RedisCluster for the test's own reads; kwargs go to it."""
        kwargs = {"socket_timeout": 10, **kwargs}
        nodes = [ClusterNode(HOST, port) for port in self.running_ports()]
        return RedisCluster(startup_nodes=nodes, **kwargs)

    def _view(self, port: int) -> list[ClusterNodeView]:
        return [ClusterNodeView.parse(line) for line in _ask(port, "CLUSTER", "NODES").splitlines()]

    def nodes(self) -> list[ClusterNodeView]:
        """CLUSTER NODES as seen by a running node, preferring one whose cluster_state is ok."""
        fallback = None
        for port in self.running_ports():
            try:
                view = self._view(port)
                if "cluster_state:ok" in _ask(port, "CLUSTER", "INFO"):
                    return view
            except redis.ConnectionError:
                continue
            fallback = fallback or view
        if fallback is None:
            raise RuntimeError("no cluster node answers")
        return fallback

    def masters(self) -> list[Address]:
        """Masters serving slots, in slot order."""
        return [n.address for n in sorted(self.nodes(), key=lambda n: n.slots) if n.is_master]

    def replicas(self) -> list[Address]:
        """Replicas that are not failed (which master each follows: replica_of)."""
        return sorted(n.address for n in self.nodes() if n.is_replica)

    def replica_of(self, master: Address) -> Address:
        """A healthy replica of `master` (redis-cli pairs them at random: ask, don't guess)."""
        view = self.nodes()
        master_id = next(n.node_id for n in view if n.address == master)
        for node in view:
            if node.is_replica and node.master_id == master_id:
                return node.address
        raise LookupError(f"{master} has no healthy replica")

    def master_for_key(self, key: str | bytes) -> Address:
        """The master serving the slot of `key` (hash tags count)."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        for node in self.nodes():
            if node.is_master and node.serves(slot):
                return node.address
        raise LookupError(f"no master serves slot {slot}")

    def kill_master_of(self, key: str | bytes) -> Address:
        """SIGKILL the master serving `key` and reap it; return its address."""
        master = self.master_for_key(key)
        self._servers[master[1]].kill()
        return master

    def failover_planned(self, key: str | bytes, timeout: float = 10.0) -> tuple[Address, Address]:
        """CLUSTER FAILOVER on a replica of `key`'s master; wait until that replica serves
        the key and the cluster is healthy. Returns (old master, new master)."""
        old = self.master_for_key(key)
        new = self.replica_of(old)
        assert _ask(new[1], "CLUSTER", "FAILOVER") == "OK"

        def problem() -> str | None:
            try:
                serving = self.master_for_key(key)
            except (LookupError, redis.RedisError) as exc:
                return repr(exc)  # views change hands mid-failover
            return f"{key!r} still on {serving}" if serving != new else self._health_problem()

        _wait_for(problem, timeout, f"planned failover {old} -> {new}")
        return old, new

    def wait_healthy(self, timeout: float = 10.0) -> float:
        """Until every running node says cluster_state:ok, all of them route every slot to
        the same running master, and every running replica's link is up; returns seconds."""
        return _wait_for(self._health_problem, timeout, "a healthy cluster")

    def _health_problem(self) -> str | None:
        live = self.running_ports()
        routes = set()
        for port in live:
            try:
                if "cluster_state:ok" not in _ask(port, "CLUSTER", "INFO"):
                    return f"{port}: cluster_state is not ok"
                view = self._view(port)
                masters = [n for n in view if n.is_master]
                if sum(last - first + 1 for n in masters for first, last in n.slots) != (
                    REDIS_CLUSTER_HASH_SLOTS
                ):
                    return f"{port}: not every slot has a master"
                dead = [n.address for n in masters if n.address[1] not in live]
                if dead:
                    return f"{port}: routes slots to stopped {dead}"
                # e.g. a demoted master not yet a replica, a restarted one not yet told
                unsettled = [
                    n.address
                    for n in view
                    if n.address[1] in live and not (n.is_master or n.is_replica)
                ]
                if unsettled:
                    return f"{port}: {unsettled} neither serve slots nor replicate"
                routes.add(frozenset((n.address, n.slots) for n in masters))
                me = next(n for n in view if "myself" in n.flags)
                if "slave" in me.flags:
                    link = _ask(port, "INFO", "replication").get("master_link_status")
                    if link != "up":
                        return f"{port}: replica link is {link}"
            except redis.RedisError as exc:
                return f"{port}: {exc!r}"
        if len(routes) > 1:
            return "nodes disagree on which master serves which slots"
        return None

    def queue_names_spread(self, n: int, prefix: str = "bgtasks") -> list[str]:
        """`n` queue names whose keys (tag `{queue}`) land on every master, round-robin."""
        from django_bgtasks.broker.keys import QueueKeys

        masters = [node for node in self.nodes() if node.is_master]
        masters.sort(key=lambda node: node.slots)
        if n < len(masters):
            raise ValueError(f"{n} names cannot cover {len(masters)} masters")
        names: list[str] = []
        candidates = (f"spread{i}" for i in range(100_000))
        while len(names) < n:
            wanted = masters[len(names) % len(masters)]
            for name in candidates:
                slots = {key_slot(key.encode()) for key in QueueKeys(prefix, name).all}
                assert len(slots) == 1, f"the keys of queue {name!r} span slots {slots}"
                if wanted.serves(slots.pop()):
                    names.append(name)
                    break
            else:
                raise LookupError(f"no queue name lands on {wanted.address}")
        return names


class WholeCluster(RedisCluster):
    """A RedisCluster that treats the cluster as one Redis where redis-py would pick one
    node: KEYS and DBSIZE ask every master (a test's "nothing was written" sees them all),
    CONFIG SET sets every node (a setting the product reads from any of them)."""

    COMMAND_FLAGS = {
        **RedisCluster.COMMAND_FLAGS,
        "KEYS": RedisCluster.PRIMARIES,
        "DBSIZE": RedisCluster.PRIMARIES,
        "CONFIG SET": RedisCluster.ALL_NODES,
    }


class SessionCluster:
    """The suite's Redis under BGTASKS_TEST_TOPOLOGY=cluster: a 3+3 cluster holding the
    tasks and the tests' ledger, and one plain redis-server for django-redis' cache (which
    has no cluster client). It offers what the tests use of a RedisServer; a cluster is not
    restarted (tests that stop or kill Redis are marked single_redis)."""

    def __init__(self, base_dir: Path) -> None:
        from helpers import RedisServer

        self.topology = RedisClusterTopology(Path(base_dir) / "cluster")
        self.cache_server = RedisServer(Path(base_dir) / "cache")
        self._started = False

    @property
    def url(self) -> str:
        """The cluster's redis+cluster:// URL (BGTASKS["REDIS_URL"] and the ledger)."""
        return self.topology.url

    @property
    def cache_url(self) -> str:
        """The plain redis-server of the django-redis cache."""
        return self.cache_server.url

    def client(self, **kwargs) -> WholeCluster:
        """A new WholeCluster client: key commands go to the key's master; FLUSHALL, KEYS
        and DBSIZE to every master, CONFIG SET to every node."""
        nodes = [ClusterNode(HOST, port) for port in self.topology.running_ports()]
        return WholeCluster(startup_nodes=nodes, **{"socket_timeout": 10, **kwargs})

    def is_running(self) -> bool:
        """True while every node of the cluster and the cache server run."""
        ports = self.topology.ports
        return (self._started and self.cache_server.is_running()
                and all(self.topology.is_running(port) for port in ports))

    def start(self) -> None:
        """Start the cluster and the cache server (once: a stopped cluster stays stopped)."""
        if self._started:
            assert self.is_running(), "a SessionCluster cannot be restarted"
            return
        missing = _missing("redis-server", "redis-cli")
        if missing:  # a failure, not a skip: the whole suite was asked to run on a cluster
            raise RuntimeError(f"BGTASKS_TEST_TOPOLOGY=cluster: {missing}")
        self.topology.start()
        self.cache_server.start()
        self._started = True

    def stop(self) -> None:
        """SIGKILL every cluster node, SHUTDOWN the cache server."""
        self.topology.stop()
        self.cache_server.stop()

    def kill(self) -> None:
        """SIGKILL everything."""
        self.topology.stop()
        self.cache_server.kill()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<SessionCluster {self.url} cache {self.cache_url} {state}>"


# Fixture body, wired by name: `redis_cluster = pytest.fixture(scope="module")(redis_cluster)`.


def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterTopology]:
    """A started 3+3 cluster, stopped (every child reaped) afterwards."""
    yield from started(RedisClusterTopology, ("redis-cli",), tmp_path_factory)
