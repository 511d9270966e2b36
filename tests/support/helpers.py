"""Test infrastructure: a real redis-server, a real worker process, and polling.

No fakes: RedisServer runs the redis-server binary, WorkerProcess runs
`manage.py runbackground` as a subprocess in its own process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REPO_ROOT = Path(__file__).resolve().parents[2]
# What the suite's Redis is (conftest's redis_server): "single" (one redis-server) or
# "cluster" (a 3+3 Redis Cluster; tests marked single_redis are skipped).
TEST_TOPOLOGY = os.environ.get("BGTASKS_TEST_TOPOLOGY") or "single"
if TEST_TOPOLOGY not in ("single", "cluster"):
    raise RuntimeError(f"BGTASKS_TEST_TOPOLOGY={TEST_TOPOLOGY!r}: 'single' or 'cluster'")
MANAGE_PY = REPO_ROOT / "testproject" / "manage.py"

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, message: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy, and return that value.

    Raises AssertionError (with `message`, or the predicate's name) after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"timed out after {timeout:g}s waiting for: {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class RedisServer:
    """A private redis-server on 127.0.0.1 with an append-only file in `data_dir`.

    stop()/start() and restart() keep the data (AOF, SHUTDOWN flushes it); kill() is a
    crash: with appendfsync everysec, up to the last second of writes may be lost.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        startup_timeout: float = 5.0,
        extra_args: Sequence[str] = (),
        client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """`extra_args` go to redis-server after ours (a later option wins: `--port 0`
        with `--tls-port` makes a TLS-only server); `client_kwargs` (password, ssl...) are
        what client(), the start-up probe and stop() need to talk to such a server."""
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or 0
        self.host = "127.0.0.1"
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self.client_kwargs = dict(client_kwargs or {})
        self.log_path = self.data_dir / "redis-server.log"
        self.process: subprocess.Popen | None = None
        self.executable = os.environ.get("BGTASKS_TEST_REDIS_SERVER") or shutil.which(
            "redis-server"
        )
        if not self.executable:
            raise RuntimeError("redis-server not found on PATH: run scripts/bootstrap")

    @property
    def url(self) -> str:
        """redis://127.0.0.1:PORT/0"""
        return f"redis://{self.host}:{self.port}/0"

    def client(self, **kwargs) -> redis.Redis:
        """A new plain redis-py client for this server (db 0); kwargs go to redis.Redis."""
        kwargs = {"socket_timeout": 10, **self.client_kwargs, **kwargs}
        return redis.Redis(host=self.host, port=self.port, db=0, **kwargs)

    def is_running(self) -> bool:
        """True while the redis-server process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server (same port and data dir as before, if it ran already)."""
        if self.is_running():
            return
        pick_port = not self.port
        for _ in range(5 if pick_port else 1):
            if pick_port:
                self.port = free_port()
            if self._start_once():
                return
        raise RuntimeError(
            f"redis-server did not start on port {self.port}; log:\n{_tail(self.log_path)}"
        )

    def _start_once(self) -> bool:
        argv = [
            self.executable,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--daemonize", "no",
            "--logfile", "",
            *self.extra_args,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        probe = self.client(socket_connect_timeout=0.2, socket_timeout=0.5)
        deadline = time.monotonic() + self.startup_timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False  # exited: port taken, bad option...
                try:
                    if probe.ping():
                        return True
                except redis.exceptions.BusyLoadingError:
                    pass  # loading the AOF
                except redis.exceptions.ConnectionError:
                    pass
                time.sleep(0.05)
        finally:
            probe.close()
        self.kill()
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful SHUTDOWN (the AOF is flushed and kept), then wait for the process."""
        if not self.is_running():
            return
        # no retries: redis-py would otherwise spend seconds reconnecting to the stopped server
        no_retry = Retry(NoBackoff(), 0)
        try:
            with self.client(socket_timeout=timeout, retry=no_retry) as client:
                client.shutdown()
        except redis.exceptions.RedisError:
            self.process.terminate()  # SIGTERM is a graceful shutdown for redis too
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the server, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def restart(self) -> None:
        """stop() then start(): same port, same data."""
        self.stop()
        self.start()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<RedisServer {self.url} {state}>"


class WorkerProcess:
    """A `manage.py` command (runbackground) in its own process group, logging to a file."""

    def __init__(
        self,
        args: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        command: str = "runbackground",
    ) -> None:
        self.argv = [sys.executable, str(MANAGE_PY.relative_to(REPO_ROOT)), command, *args]
        self.log_path = Path(log_path)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: subprocess.Popen | None = None
        self.pgid: int | None = None

    def start(self) -> WorkerProcess:
        """Start it (own session, so signals to the group reach only it and its children)."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pgid = self.process.pid  # a session leader's group id is its pid
        return self

    @property
    def pid(self) -> int:
        """pid of the supervisor (the process we started)."""
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """Exit code, or None while running (negative: killed by that signal)."""
        return None if self.process is None else self.process.poll()

    def poll(self) -> int | None:
        """Same as returncode."""
        return self.returncode

    def is_running(self) -> bool:
        """True while the supervisor runs."""
        return self.returncode is None and self.process is not None

    def send(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig` to the supervisor only."""
        assert self.process is not None, "not started"
        self.process.send_signal(sig)

    def send_group(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig` to the whole process group (supervisor and children), like systemd."""
        assert self.pgid is not None, "not started"
        os.killpg(self.pgid, sig)

    def group_alive(self) -> bool:
        """True while any process of the group exists, zombies included: a killed orphan
        stays until init reaps it, so poll with wait_until(lambda: not w.group_alive())."""
        if self.pgid is None:
            return False
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the supervisor to exit and return its exit code.

        Raises AssertionError with the log's tail if it is still running after `timeout`.
        """
        assert self.process is not None, "not started"
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.pid} still running after {timeout:g}s; log tail:\n"
                f"{_tail(self.log_path)}"
            ) from None

    def log_text(self) -> str:
        """Everything it wrote so far (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, substring: str, timeout: float = 15.0, count: int = 1) -> str:
        """Wait until `substring` appears `count` times in the log; return the log.

        Fails at once if the worker exited without writing it.
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            if text.count(substring) >= count:
                return text
            exited = self.returncode is not None
            if exited or time.monotonic() >= deadline:
                text = self.log_text()  # it may have written it just before exiting
                if text.count(substring) >= count:
                    return text
                why = f"exited with {self.returncode}" if exited else f"timed out ({timeout:g}s)"
                raise AssertionError(
                    f"worker {why} before logging {substring!r} x{count}; log tail:\n"
                    f"{_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Teardown: SIGTERM the group, wait `timeout`, then SIGKILL whatever is left."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                self.send_group(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.pgid, signal.SIGKILL)  # also children the supervisor left behind
        except ProcessLookupError:
            pass
        return self.process.wait()

    def __repr__(self) -> str:
        return f"<WorkerProcess pid={self.process and self.process.pid} rc={self.returncode}>"


def counts(queue: str = "default") -> dict[str, int]:
    """How many tasks each state of ``queue`` holds, read through the broker."""
    from django_bgtasks.broker import get_broker

    return get_broker().counts(queue)


def drive(ids: list[str], outcome: str | None, queue: str = "default", **ack: Any) -> None:
    """Claim these (the only pending) tasks of ``queue`` as a worker would, then ack them
    with ``outcome`` (None: they stay active); ``ack`` is the rest of the Ack (error...)."""
    from django_bgtasks.broker import get_broker
    from django_bgtasks.broker.types import Ack

    lease_ms, broker = 60_000, get_broker()
    claimed = broker.claim(queue, "test-host", [], len(ids), lease_ms, 100_000, 10**12).claimed
    assert sorted(c.id for c in claimed) == sorted(ids)
    if outcome:
        acks = [Ack(c.id, c.attempt, outcome, **ack) for c in claimed]
        assert broker.claim(queue, "test-host", acks, 0, lease_ms, 100_000, 10**12).ignored == []


def seed_dead(n: int, queue: str = "default") -> list[str]:
    """``n`` dead tasks in ``queue`` (which must hold no other pending task), the way a
    worker makes them: enqueue_many, then claims of 500 acked 'dead'."""
    from demo.tasks import fail_always
    from django_bgtasks.broker import get_broker
    from django_bgtasks.broker.types import Ack

    task = fail_always.using(queue_name=queue, max_retries=0)
    ids = [info.id for info in task.enqueue_many(([f"t{i}"], {}) for i in range(n))]
    broker = get_broker()
    while claimed := broker.claim(queue, "seeder", [], 500, 60_000, 10**9, 10**12).claimed:
        broker.claim(queue, "seeder", [Ack(c.id, c.attempt, "dead", error="ValueError: boom")
                                       for c in claimed], 0, 60_000, 10**9, 10**12)
    assert broker.counts(queue)["dead"] >= n
    return ids


def seed_waiting(queue: str = "default", token: str = "waits") -> str:
    """One task of ``queue`` waiting for a limit (the queue must hold no other pending
    task), the way a worker makes it: under a rate limit of 1/h, one run starts (and ends)
    and the next one claimed waits for a token."""
    from demo.tasks import record
    from django_bgtasks.broker import get_broker
    from django_bgtasks.broker.types import Ack

    limited = record.using(queue_name=queue, rate_limit="1/h")
    broker = get_broker()
    first = limited.enqueue(f"{token}-first").id
    claimed = broker.claim(queue, "seeder", [], 1, 60_000, 100_000, 10**12).claimed
    if not claimed:  # the hour's token was taken before: the first one waits already
        return first
    broker.claim(queue, "seeder", [Ack(first, claimed[0].attempt, "done")], 0, 60_000,
                 100_000, 10**12)
    waiting = limited.enqueue(token).id
    assert broker.claim(queue, "seeder", [], 1, 60_000, 100_000, 10**12).claimed == []
    return waiting


def seed_expired(queue: str = "default", token: str = "expired") -> str:
    """One task of ``queue`` expired (the queue must hold no other pending task), the way
    a worker makes it: enqueued with an expiry long past, then a claim ends it."""
    from datetime import UTC, datetime

    from demo.tasks import record
    from django_bgtasks.broker import get_broker

    gone = datetime(2001, 1, 1, tzinfo=UTC)
    task_id = record.using(queue_name=queue, expires=gone).enqueue(token).id
    assert get_broker().claim(queue, "seeder", [], 1, 60_000, 100_000, 10**12).expired == [
        task_id]
    return task_id


def state_of(task_id: str) -> str | None:
    """The task's state, or None once it is gone from Redis."""
    from django_bgtasks import TaskNotFound, get_task_info

    try:
        return get_task_info(task_id).state
    except TaskNotFound:
        return None


class BgtasksCommand:
    """``manage.py bgtasks [prefix...] ARGS`` in-process: its output, its JSON, or the
    message of the CommandError it raises."""

    def __init__(self, *prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, *args: str) -> str:
        import io

        from django.core.management import call_command

        out = io.StringIO()
        call_command("bgtasks", *self.prefix, *args, stdout=out, stderr=io.StringIO())
        return out.getvalue()

    def json(self, *args: str):
        import json

        return json.loads(self(*args, "--json"))

    def error(self, *args: str) -> str:
        import pytest
        from django.core.management.base import CommandError

        with pytest.raises(CommandError) as caught:
            self(*args)
        return str(caught.value)


# A password that a '/', '#' or '?' splits: finding either half anywhere is a leak.
SPLIT_PASSWORD_HALVES = ("S3crHalf", "EtpwHalf")


def settings_with_split_password(char: str) -> dict[str, dict[str, Any]]:
    """Every BGTASKS shape that carries a Redis password, written with the password's
    ``char`` (one of ``/#?``) left unencoded: what it names -> BGTASKS values."""
    pw = char.join(SPLIT_PASSWORD_HALVES)
    return {
        "one Redis": {"REDIS_URL": f"redis://:{pw}@127.0.0.1:6399/0"},
        "a user, TLS": {"REDIS_URL": f"rediss://bgapp:{pw}@redis.example:6380/0"},
        "no host": {"REDIS_URL": f"redis://:{pw}"},
        "unix socket": {"REDIS_URL": f"unix://:{pw}@/run/redis.sock"},
        "cluster URL": {"REDIS_URL": f"redis+cluster://:{pw}@h1:7000,h2:7001/0"},
        "CLUSTER_NODES": {"REDIS_URL": f"redis://:{pw}@unused/0", "CLUSTER_NODES": ["h1:7000"]},
        "a cluster node as a URL": {"CLUSTER_NODES": [f"redis://:{pw}@h1:7000"]},
        "SENTINELS": {"REDIS_URL": f"redis://:{pw}@mymaster/0", "SENTINELS": ["h1:26379"],
                      "MASTER_NAME": "mymaster"},
        "a sentinel as a URL": {"REDIS_URL": "redis://mymaster/0", "MASTER_NAME": "mymaster",
                                "SENTINELS": [f"redis://:{pw}@h1:26379"]},
    }


def assert_no_password_half(text: str) -> None:
    for half in SPLIT_PASSWORD_HALVES:
        assert half not in text, text


def request_cancel(task_id: str, by: str = "tests", queue: str = "default") -> None:
    """Ask to cancel the running task ``task_id`` (cancel_task records the request)."""
    from django_bgtasks import cancel_task

    assert cancel_task(task_id, by=by).cancel_requested, f"task {task_id} is not active"


def run_on_new_loop(coroutine_function: Callable[..., Any], *args: Any) -> Any:
    """Run ``coroutine_function(*args)`` on a new event loop, closing the loop's brokers
    before the loop ends (their connections belong to it)."""
    import asyncio

    from django_bgtasks.broker.aio import aclose_brokers

    async def main() -> Any:
        try:
            return await coroutine_function(*args)
        finally:
            await aclose_brokers()

    return asyncio.run(main())


def seed_blocked(queue: str = "default", token: str = "blocked", after: str | None = None,
                 ) -> str:
    """One task of ``queue`` blocked behind its dependency: ``after`` (a task id), else a
    new task scheduled an hour ahead."""
    from demo.tasks import record

    if after is None:
        after = record.using(queue_name=queue, run_after=3600).enqueue(f"{token}-first").id
    return record.using(queue_name=queue, depends_on=[after]).enqueue(token).id
