"""Real Redis Cluster and Sentinel topologies for tests, on loopback ports of their own.

Every server is a Popen child (never --daemonize: daemonized servers took ~2 s to reap) in
a fresh directory; stop() SIGKILLs and wait()s them all, also after a half-done start().
Recipe, timings and pitfalls: shared/research/redis-topologies.md.
"""

from __future__ import annotations

import ctypes
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.retry import Retry

HOST = "127.0.0.1"
Address = tuple[str, int]
# Client ports come from [10000, 20000), so a node's cluster bus (port + 10000) stays below
# Linux's ephemeral range (32768+), where an outgoing connection could take it meanwhile.
PORT_RANGE = (10000, 20000)
CLUSTER_BUS_OFFSET = 10000


def _executable(name: str) -> str | None:
    if name == "redis-server" and os.environ.get("BGTASKS_TEST_REDIS_SERVER"):
        return os.environ["BGTASKS_TEST_REDIS_SERVER"]
    return shutil.which(name)


def _missing(*names: str) -> str | None:
    missing = [name for name in names if _executable(name) is None]
    if not missing:
        return None
    return f"{', '.join(missing)} not installed (scripts/bootstrap installs them)"


needs_cluster_tools = pytest.mark.skipif(
    bool(_missing("redis-server", "redis-cli")),
    reason=str(_missing("redis-server", "redis-cli")),
)
needs_sentinel_tools = pytest.mark.skipif(
    bool(_missing("redis-server", "redis-sentinel")),
    reason=str(_missing("redis-server", "redis-sentinel")),
)


def port_is_free(port: int) -> bool:
    """True if a server could listen on 127.0.0.1:`port` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # redis sets SO_REUSEADDR too, so a port in TIME_WAIT counts as free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _pick_ports(count: int) -> list[int]:
    """`count` ports that are free, and so are their cluster bus ports."""
    rng = random.SystemRandom()
    ports: list[int] = []
    for _ in range(1000):
        port = rng.randrange(*PORT_RANGE)
        if port not in ports and port_is_free(port) and port_is_free(port + CLUSTER_BUS_OFFSET):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"found only {len(ports)} of {count} free ports in {PORT_RANGE}")


@cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    # In the child before exec: SIGKILL it when the thread that started it dies, so a
    # pytest killed by -9 leaves no server behind. (Start topologies from a thread that
    # outlives them: the main thread, as pytest fixtures do.)
    prctl = _prctl()
    if prctl is not None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _admin(port: int, timeout: float = 2.0) -> redis.Redis:
    """A short-lived client for health probes: decoded, short timeouts, no retries, and
    RESP2, whose replies (flat lists for SENTINEL MASTER...) do not depend on redis-py's
    default protocol."""
    return redis.Redis(
        HOST,
        port,
        protocol=2,
        decode_responses=True,
        socket_connect_timeout=0.5,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _ask(port: int, *args: str):
    """Run one command on the server at `port` (raw reply; INFO is parsed to a dict)."""
    with _admin(port) as client:
        return client.execute_command(*args)


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    """[k1, v1, k2, v2...] (SENTINEL MASTER and friends) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _wait_for(problem: Callable[[], str | None], timeout: float, what: str) -> float:
    """Poll until `problem()` returns None; return the seconds it took. On timeout, fail
    with the last problem seen."""
    started = time.monotonic()
    while True:
        last = problem()
        if last is None:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}: {last}")
        time.sleep(0.02)


class _Server:
    """One redis-server or redis-sentinel child; argv is fixed, so restart is the same node."""

    def __init__(self, port: int, argv: Sequence[str], log_path: Path) -> None:
        self.port = port
        self.argv = list(argv)
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        _prctl()  # load libc here, not in the forked child
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def signal_kill(self) -> None:
        # The whole group: a master killed mid-sync leaves its forked RDB child running.
        if self.alive:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL and reap."""
        self.signal_kill()
        if self.process is not None:
            self.process.wait()

    def wait_serving(self, timeout: float = 5.0) -> None:
        """Until our own process answers on the port (INFO's process_id is its pid: a
        stale server on the port must not pass for ours)."""

        def problem() -> str | None:
            if not self.alive:
                tail = self.log_path.read_text(errors="replace").splitlines()[-20:]
                raise RuntimeError(
                    f"server on port {self.port} exited with {self.process.returncode}:\n"
                    + "\n".join(tail)
                )
            try:
                pid = int(_ask(self.port, "INFO", "server")["process_id"])
            except redis.ConnectionError as exc:
                return str(exc)
            assert pid == self.process.pid, f"port {self.port} is served by pid {pid}, not ours"
            return None

        _wait_for(problem, timeout, f"server on port {self.port}")


class _Topology:
    """Bookkeeping shared by both topologies: the children, start/stop, restart."""

    def __init__(self, base_dir: Path, kind: str, startup_timeout: float) -> None:
        self.base_dir = Path(base_dir)
        self.kind = kind
        self.startup_timeout = startup_timeout
        self.dir: Path | None = None
        self.startup_seconds: float | None = None  # how long the last start() took
        self._servers: dict[int, _Server] = {}

    def start(self) -> None:
        """Start every server and wait until the topology is ready; on any failure,
        kill whatever was started and re-raise."""
        assert not self._servers, "already started"
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.kind}-", dir=self.base_dir))
        started = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """SIGKILL every child, then reap them all (~0.01 s); safe to call twice."""
        for server in self._servers.values():
            server.signal_kill()
        for server in self._servers.values():
            server.kill()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _add(self, port: int, argv: Sequence[str]) -> _Server:
        assert port_is_free(port), f"port {port} is taken (a stale server of an earlier run?)"
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)  # fresh: self.dir is new for every start()
        server = _Server(port, argv, node_dir / "server.log")
        self._servers[port] = server
        server.spawn()
        return server

    def _redis_server_argv(self, port: int, extra_args: Sequence[str]) -> list[str]:
        return [
            _executable("redis-server") or "redis-server",
            "--port", str(port),
            "--bind", HOST,
            "--dir", str(self.dir / str(port)),
            "--daemonize", "no",
            "--logfile", "",
            "--save", "",
            "--appendonly", "no",
            "--repl-diskless-sync-delay", "0",
            *extra_args,
        ]  # fmt: skip

    def is_running(self, port: int) -> bool:
        """True while the server on `port` runs."""
        return self._servers[port].alive

    def running_ports(self) -> list[int]:
        """Ports of the servers that run now."""
        return [port for port, server in self._servers.items() if server.alive]

    def restart_node(self, port: int) -> None:
        """SIGKILL the server on `port` if it runs, start it again with the same arguments
        and directory, and wait until it answers (not until the topology is healthy)."""
        server = self._servers[port]
        server.kill()
        server.spawn()
        server.wait_serving()


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


class SentinelTopology(_Topology):
    """1 master, 1 or 2 replicas and 3 sentinels, pre-wired (ready in well under 1 s)."""

    master_name = "mymaster"
    SENTINELS = 3
    QUORUM = 2

    def __init__(
        self,
        base_dir: Path,
        replicas: int = 1,
        extra_args: Sequence[str] = (),
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 10000,
        startup_timeout: float = 10.0,
    ) -> None:
        """`extra_args` go to every data node (any of them may become master), e.g.
        ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "2")."""
        super().__init__(base_dir, "sentinel", startup_timeout)
        assert replicas in (1, 2)
        self.replica_count = replicas
        self.extra_args = list(extra_args)
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.data_ports: list[int] = []
        self.sentinel_ports: list[int] = []

    @property
    def sentinels(self) -> list[Address]:
        """Every sentinel as (host, port)."""
        return [(HOST, port) for port in self.sentinel_ports]

    @property
    def data_nodes(self) -> list[Address]:
        """Every redis-server, the first master at start."""
        return [(HOST, port) for port in self.data_ports]

    def _start(self) -> None:
        ports = _pick_ports(1 + self.replica_count + self.SENTINELS)
        self.data_ports, self.sentinel_ports = ports[: -self.SENTINELS], ports[-self.SENTINELS :]
        master, *replicas = self.data_ports
        # In order, each group up before the next: a replica or sentinel whose first
        # connection is refused tries again only 1 s later.
        self._add(master, self._redis_server_argv(master, self.extra_args)).wait_serving()
        for port in replicas:
            replicaof = ["--replicaof", HOST, str(master), *self.extra_args]
            self._add(port, self._redis_server_argv(port, replicaof))
        for port in replicas:
            self._servers[port].wait_serving()
        ids = {port: secrets.token_hex(20) for port in self.sentinel_ports}
        for port in self.sentinel_ports:
            config = self.dir / str(port) / "sentinel.conf"  # sentinel rewrites it: one each
            config.parent.mkdir()
            config.write_text(self._sentinel_config(port, ids))
            self._add(port, [_executable("redis-sentinel") or "redis-sentinel", str(config)])
        for port in self.sentinel_ports:
            self._servers[port].wait_serving()
        _wait_for(self._ready_problem, self.startup_timeout, "a ready sentinel set")

    def _sentinel_config(self, port: int, ids: dict[int, str]) -> str:
        # Pre-wired: each sentinel already knows the replicas and the other sentinels,
        # which skips ~2 s of discovery (and 10 s when a replica links late).
        name = self.master_name
        lines = [
            f"port {port}",
            f"bind {HOST}",
            f"dir {self.dir / str(port)}",
            "daemonize no",
            'logfile ""',
            f"sentinel myid {ids[port]}",
            f"sentinel monitor {name} {HOST} {self.data_ports[0]} {self.QUORUM}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            *(f"sentinel known-replica {name} {HOST} {p}" for p in self.data_ports[1:]),
            *(
                f"sentinel known-sentinel {name} {HOST} {other} {other_id}"
                for other, other_id in ids.items()
                if other != port
            ),
        ]
        return "\n".join(lines) + "\n"

    def _ready_problem(self) -> str | None:
        for port in self.sentinel_ports:
            try:
                master = _pairs(_ask(port, "SENTINEL", "MASTER", self.master_name))
                if master["flags"] != "master":
                    return f"sentinel {port}: master flags {master['flags']}"
                if int(master["num-other-sentinels"]) != self.SENTINELS - 1:
                    return f"sentinel {port}: {master['num-other-sentinels']} other sentinels"
                if int(master["num-slaves"]) != self.replica_count:
                    return f"sentinel {port}: {master['num-slaves']} replicas"
                for replica in map(_pairs, _ask(port, "SENTINEL", "REPLICAS", self.master_name)):
                    # (its master-link-status here lags: INFO below asks the replica itself)
                    if replica["flags"] != "slave":
                        return f"sentinel {port}: replica {replica['port']} {replica['flags']}"
            except redis.RedisError as exc:
                return f"sentinel {port}: {exc!r}"
        for port in self.data_ports[1:]:
            link = _ask(port, "INFO", "replication").get("master_link_status")
            if link != "up":
                return f"replica {port}: link {link}"
        return None

    def master_address(self) -> Address:
        """The master's address, as a running sentinel reports it."""
        for port in self.sentinel_ports:
            if self.is_running(port):
                return self._named_master(port)
        raise RuntimeError("no sentinel runs")

    def _named_master(self, sentinel_port: int) -> Address:
        host, port = _ask(sentinel_port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return host, int(port)

    def kill_master(self) -> Address:
        """SIGKILL the current master and reap it; return its address."""
        master = self.master_address()
        self._servers[master[1]].kill()
        return master

    def force_failover(self) -> Address:
        """SENTINEL FAILOVER (no agreement needed); return the old master's address.

        The old master stays a master for ~11 s (research, "SENTINEL FAILOVER"): clients
        that keep their connection to it lose their writes."""
        old = self.master_address()
        assert _ask(self.sentinel_ports[0], "SENTINEL", "FAILOVER", self.master_name) == "OK"
        return old

    def wait_new_master(self, old: Address, timeout: float = 15.0) -> Address:
        """Until every running sentinel names the same master, not `old`, and that server
        says role:master; return its address."""

        found: list[Address] = []

        def problem() -> str | None:
            named = set()
            for port in self.running_ports():
                if port in self.sentinel_ports:
                    try:
                        named.add(self._named_master(port))
                    except redis.RedisError as exc:
                        return f"sentinel {port}: {exc!r}"
            if len(named) != 1 or old in named:
                return f"sentinels name {sorted(named)}"
            (new,) = named
            try:
                role = _ask(new[1], "INFO", "replication")["role"]
            except redis.RedisError as exc:
                return f"{new}: {exc!r}"
            if role != "master":
                return f"{new} is still {role}"
            found.append(new)
            return None

        _wait_for(problem, timeout, f"a master other than {old}")
        return found[-1]

    def client_for_master(self, **kwargs) -> redis.Redis:
        """A plain redis.Redis to the current master (it does not follow a failover)."""
        host, port = self.master_address()
        return redis.Redis(host, port, **{"socket_timeout": 10, **kwargs})


# Fixture bodies, wired by name: `redis_cluster = pytest.fixture(scope="module")(redis_cluster)`.
# Each skips the test when the binaries are missing.


def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterTopology]:
    """A started 3+3 cluster, stopped (every child reaped) afterwards."""
    reason = _missing("redis-server", "redis-cli")
    if reason:
        pytest.skip(reason)
    with RedisClusterTopology(tmp_path_factory.mktemp("topology")) as cluster:
        yield cluster


def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    """A started master + replica + 3 sentinels, stopped afterwards."""
    reason = _missing("redis-server", "redis-sentinel")
    if reason:
        pytest.skip(reason)
    with SentinelTopology(tmp_path_factory.mktemp("topology")) as sentinel:
        yield sentinel
