"""A real Redis Sentinel topology for tests: a master, its replicas and three sentinels."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis

from .base import (
    HOST,
    Address,
    _ask,
    _executable,
    _pairs,
    _pick_ports,
    _Topology,
    _wait_for,
    started,
)


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


# Fixture body, wired by name: `redis_sentinel = pytest.fixture(scope="module")(redis_sentinel)`.


def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    """A started master + replica + 3 sentinels, stopped afterwards."""
    yield from started(SentinelTopology, ("redis-sentinel",), tmp_path_factory)
