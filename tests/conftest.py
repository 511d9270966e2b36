"""Fixtures: a private redis-server per test session, flushed before every test, and a
factory for real worker processes. See helpers.py."""

from __future__ import annotations

import copy
import os
import signal
from collections.abc import Iterator, Mapping

import pytest
from django.test import override_settings

from helpers import RedisServer, WorkerProcess

SYSTEM_REDIS_PORT = 6379


def _redis_settings(url: str) -> dict:
    """Every setting of testproject that names the Redis URL, pointed at `url`."""
    from django.conf import settings

    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = url
    return {
        "REDIS_URL": url,
        "BGTASKS": {**settings.BGTASKS, "REDIS_URL": url},
        "CACHES": caches,
    }


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of our own on a free port, for the whole session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    assert server.port != SYSTEM_REDIS_PORT
    old_env = os.environ.get("BGTASKS_REDIS_URL")
    os.environ["BGTASKS_REDIS_URL"] = server.url  # for subprocesses (workers)
    # Session-wide too, so that session/module fixtures never see the settings' default URL.
    session_override = override_settings(**_redis_settings(server.url))
    session_override.enable()
    try:
        yield server
    finally:
        session_override.disable()
        if old_env is None:
            os.environ.pop("BGTASKS_REDIS_URL", None)
        else:
            os.environ["BGTASKS_REDIS_URL"] = old_env
        server.stop()
        server.kill()  # no-op unless stop() failed


@pytest.fixture(autouse=True)
def bgtasks_redis(redis_server: RedisServer, settings) -> RedisServer:
    """Before every test: the server is up (a test may have stopped it), empty, and the
    settings (BGTASKS, CACHES, REDIS_URL) point at it."""
    if not redis_server.is_running():
        redis_server.start()
    with redis_server.client() as client:
        client.flushall()
    for name, value in _redis_settings(redis_server.url).items():
        setattr(settings, name, value)
    return redis_server


@pytest.fixture
def broker():
    """The broker for the current settings."""
    from django_bgtasks.broker import get_broker

    return get_broker()


@pytest.fixture
def raw(bgtasks_redis):
    """A plain redis-py client of the test server, to seed and inspect keys directly."""
    client = bgtasks_redis.client()
    yield client
    client.close()


@pytest.fixture
def run_worker(redis_server: RedisServer, tmp_path):
    """Factory: run_worker("--processes", "1", env={"BGTASKS_LEASE_SECONDS": "2"}) starts
    `manage.py runbackground ...` and returns a started WorkerProcess. Every worker still
    running at teardown gets SIGTERM (group), 15 s, then SIGKILL (group)."""
    workers: list[WorkerProcess] = []

    def start(*args: str, env: Mapping[str, str] | None = None) -> WorkerProcess:
        worker_env = {
            "BGTASKS_REDIS_URL": redis_server.url,
            # the worker never touches the repo's own sqlite file
            "BGTASKS_DEMO_DB": str(tmp_path / "worker-db.sqlite3"),
            **(env or {}),
        }
        worker = WorkerProcess(
            args, log_path=tmp_path / f"worker-{len(workers) + 1}.log", env=worker_env
        )
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        worker.stop(timeout=15.0)


@pytest.fixture
def start_worker(run_worker):
    """run_worker, but SIGKILL the worker's group at teardown unless the test stopped it
    (graceful shutdown is test_e2e_signals' subject; here it would only add ~2 s a test)."""
    started: list[WorkerProcess] = []

    def start(*args: str, env: Mapping[str, str] | None = None) -> WorkerProcess:
        worker = run_worker(*args, env=env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.is_running():
            worker.send_group(signal.SIGKILL)
            worker.wait(5)
