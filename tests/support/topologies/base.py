"""What both topologies share: free loopback ports, server processes that die with the
test run, waiting for readiness, and the start/stop/restart bookkeeping.

Every server is a Popen child (never --daemonize: daemonized servers took ~2 s to reap) in
a fresh directory; stop() SIGKILLs and wait()s them all, also after a half-done start().
Recipe, timings and pitfalls: shared/research/redis-topologies.md.
"""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"
Address = tuple[str, int]
# Client ports come from [10000, 20000), so a node's cluster bus (port + 10000) stays below
# Linux's ephemeral range (32768+), where an outgoing connection could take it meanwhile.
PORT_RANGE = (10000, 20000)
CLUSTER_BUS_OFFSET = 10000
T = TypeVar("T", bound="_Topology")


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


def started(topology_class: type[T], tools: Sequence[str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[T]:
    """The body of a topology fixture: skip the test when redis-server or one of `tools`
    is missing, else a started topology, stopped (every child reaped) afterwards."""
    reason = _missing("redis-server", *tools)
    if reason:
        pytest.skip(reason)
    with topology_class(tmp_path_factory.mktemp("topology")) as topology:
        yield topology
