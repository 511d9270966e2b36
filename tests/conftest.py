"""Fixtures: a private redis-server per test session, flushed before every test, and a
factory for real worker processes. See helpers.py.

BGTASKS_TEST_TOPOLOGY=cluster runs the suite on a real 3+3 Redis Cluster instead
(topologies.SessionCluster; the cache on a plain redis-server of its own); tests marked
single_redis, which need one plain redis-server, are then skipped.
"""

from __future__ import annotations

import copy
import os
import re
import signal
from collections.abc import Iterator, Mapping

import pytest
import redis
from django.test import Client, override_settings

from failover import ledger_server_fixture
from helpers import TEST_TOPOLOGY, RedisServer, WorkerProcess
from topologies import SessionCluster

SYSTEM_REDIS_PORT = 6379


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if TEST_TOPOLOGY != "cluster":
        return
    for item in items:
        marker = item.get_closest_marker("single_redis")
        if marker:
            why = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            item.add_marker(pytest.mark.skip(
                reason=f"single_redis under BGTASKS_TEST_TOPOLOGY=cluster: {why}"))


def _redis_settings(url: str, cache_url: str | None = None) -> dict:
    """Every setting of testproject that names the Redis URL, pointed at `url` (the
    cache at `cache_url`, if given)."""
    from django.conf import settings

    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = cache_url or url
    return {
        "REDIS_URL": url,
        "BGTASKS": {**settings.BGTASKS, "REDIS_URL": url},
        "CACHES": caches,
    }


def _cache_url(server: RedisServer | SessionCluster) -> str | None:
    """Where the cache lives, if not on `server` itself (a cluster cannot hold it)."""
    return server.cache_url if isinstance(server, SessionCluster) else None


@pytest.fixture(scope="session")
def redis_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisServer | SessionCluster]:
    """A redis-server of our own on a free port, for the whole session; under
    BGTASKS_TEST_TOPOLOGY=cluster, a SessionCluster."""
    kind = SessionCluster if TEST_TOPOLOGY == "cluster" else RedisServer
    server = kind(tmp_path_factory.mktemp("redis"))
    server.start()
    assert str(SYSTEM_REDIS_PORT) not in re.findall(r":(\d+)", server.url)
    # "" leaves the workers' cache on BGTASKS_REDIS_URL, even where a test changes that
    env = {"BGTASKS_REDIS_URL": server.url, "BGTASKS_TEST_CACHE_URL": _cache_url(server) or ""}
    old_env = {name: os.environ.get(name) for name in env}
    os.environ.update(env)  # for subprocesses (workers)
    # Session-wide too, so that session/module fixtures never see the settings' default URL.
    session_override = override_settings(**_redis_settings(server.url, _cache_url(server)))
    session_override.enable()
    try:
        yield server
    finally:
        session_override.disable()
        for name, value in old_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()
        server.kill()  # no-op unless stop() failed


@pytest.fixture(autouse=True)
def bgtasks_redis(redis_server: RedisServer | SessionCluster, settings):
    """Before every test: the server is up (a test may have stopped it), empty, and the
    settings (BGTASKS, CACHES, REDIS_URL) point at it."""
    if not redis_server.is_running():
        redis_server.start()
    with redis_server.client() as client:
        client.flushall()
    if isinstance(redis_server, SessionCluster):
        with redis_server.cache_server.client() as client:
            client.flushall()
    for name, value in _redis_settings(redis_server.url, _cache_url(redis_server)).items():
        setattr(settings, name, value)
    return redis_server


@pytest.fixture
def cache_redis(bgtasks_redis) -> RedisServer:
    """The redis-server of the django-redis cache: the session's server, or under the
    cluster topology the plain one beside the cluster."""
    if isinstance(bgtasks_redis, SessionCluster):
        return bgtasks_redis.cache_server
    return bgtasks_redis


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
def run_worker(redis_server: RedisServer | SessionCluster, tmp_path):
    """Factory: run_worker("--processes", "1", env={"BGTASKS_LEASE_SECONDS": "2"}) starts
    `manage.py runbackground ...` and returns a started WorkerProcess. Every worker still
    running at teardown gets SIGTERM (group), 15 s, then SIGKILL (group)."""
    workers: list[WorkerProcess] = []

    def start(*args: str, env: Mapping[str, str] | None = None) -> WorkerProcess:
        worker_env = {
            "BGTASKS_REDIS_URL": redis_server.url,
            "BGTASKS_TEST_CACHE_URL": _cache_url(redis_server) or "",
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


# The ledger: a second Redis the tasks record what ran in, for the tests that stop or stall
# the queue's Redis under a worker (the failover tests bring their own).
ledger_server = pytest.fixture(scope="module", name="ledger_server")(ledger_server_fixture)


@pytest.fixture
def ledger(ledger_server: RedisServer) -> Iterator[redis.Redis]:
    """The ledger's client, emptied for each test."""
    with ledger_server.client() as client:
        client.flushall()
        yield client


# The admin operability tests (search, task statistics).
@pytest.fixture
def enqueue_now(bgtasks_redis, settings):
    """Enqueue at once: each test runs inside a transaction that never commits."""
    settings.BGTASKS = {**settings.BGTASKS, "ENQUEUE_ON_COMMIT": False}


@pytest.fixture
def superuser_client(db) -> Client:
    from django.contrib.auth.models import User  # the app registry is ready by now

    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", None))
    return client
