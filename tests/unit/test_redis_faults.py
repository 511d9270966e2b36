"""Redis that is away, silent or full: enqueue() fails promptly with a clear EnqueueError
and writes nothing; under maxmemory a worker still drains the queue."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from demo import tasks
from django_bgtasks import EnqueueError
from helpers import counts, free_port, wait_until


def point_at(settings, url: str, **values) -> None:
    settings.BGTASKS = {**settings.BGTASKS, "REDIS_URL": url, **values}


def test_enqueue_with_redis_refusing_connections_fails_at_once(settings):
    port = free_port()  # nothing listens there
    point_at(settings, f"redis://:pw@127.0.0.1:{port}/0")
    started = time.monotonic()
    with pytest.raises(EnqueueError) as caught:
        tasks.record.enqueue("never")
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in message
    assert "demo.tasks.record" in message and "pw" not in message
    assert elapsed < 1.0
    print(f"\nrefused: EnqueueError after {elapsed * 1000:.1f} ms: {message}")


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers (a hung Redis)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_enqueue_to_a_redis_that_never_answers_fails_after_the_socket_timeout(
        settings, silent_server):
    point_at(settings, f"redis://127.0.0.1:{silent_server}/0", SOCKET_TIMEOUT=1.0)
    started = time.monotonic()
    with pytest.raises(EnqueueError) as caught:
        tasks.record.enqueue("never")
    elapsed = time.monotonic() - started
    assert f"cannot reach Redis at redis://127.0.0.1:{silent_server}/0" in str(caught.value)
    assert "Timeout" in str(caught.value)
    assert 1.0 <= elapsed < 2.5, elapsed  # one timeout, not one per retry
    print(f"\nsilent Redis: EnqueueError after {elapsed:.2f}s (SOCKET_TIMEOUT 1 s)")


# --- maxmemory ---------------------------------------------------------------------------


@pytest.fixture
def full_redis(redis_server):
    """Redis capped a little above what it uses now, policy noeviction; restored after."""
    client = redis_server.client()
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", used + 400_000)
    yield client
    client.config_set("maxmemory", 0)
    client.close()


def fill_until_refused(limit: int = 50_000) -> tuple[int, EnqueueError]:
    """Enqueue `reminder` tasks until Redis refuses one; (how many were accepted, error)."""
    payload = "x" * 200
    for accepted in range(limit):
        try:
            tasks.reminder.enqueue(payload)
        except EnqueueError as exc:
            return accepted, exc
    raise AssertionError(f"Redis accepted {limit} tasks: maxmemory not in effect")


@pytest.mark.single_redis(reason="sets maxmemory from one server's used_memory")
def test_enqueue_into_a_full_redis_is_a_clear_error_and_writes_nothing(full_redis):
    accepted, error = fill_until_refused()
    message = str(error)
    assert "out of memory" in message and "maxmemory" in message and "nothing was written"
    assert "demo.tasks.reminder" in message
    # the refused call left no trace: every stored message belongs to a pending task
    assert counts()["pending"] == accepted
    assert full_redis.hlen("bgtasks:{default}:msg") == accepted
    assert full_redis.hlen("bgtasks:{default}:info") == accepted

    with pytest.raises(EnqueueError, match="out of memory"):
        tasks.reminder.enqueue_many([(["y"], {})] * 10)
    assert counts()["pending"] == accepted
    print(f"\nmaxmemory: {accepted} tasks accepted, then: {message}")


@pytest.mark.single_redis(reason="sets maxmemory from one server's used_memory")
def test_a_worker_drains_a_full_redis_and_enqueue_works_again(redis_server, start_worker):
    from django_bgtasks.broker import get_broker

    broker = get_broker()
    broker.pause("default")  # the worker connects first: its connections use memory too
    worker = start_worker("--processes", "1", "--threads", "4")
    worker.wait_for_log(" starting: Redis ")
    time.sleep(1.0)
    client = redis_server.client()
    try:
        client.config_set("maxmemory",
                          int(client.info("memory")["used_memory"]) + 400_000)
        accepted, _ = fill_until_refused()
        broker.resume("default")  # a deletion: allowed in a full Redis
        wait_until(lambda: counts()["pending"] == 0 and counts()["active"] == 0, timeout=30,
                   message=f"the worker ran the {accepted} tasks of a full Redis")
        assert counts()["dead"] == 0 and counts()["retry"] == 0
        assert tasks.reminder.enqueue("room again").state == "pending"
    finally:
        client.config_set("maxmemory", 0)
    assert worker.log_text().count(" succeeded in ") >= accepted
    assert "Traceback" not in worker.log_text()
    print(f"\nmaxmemory: a worker ran the {accepted} tasks of a full Redis; enqueue works "
          "again")
