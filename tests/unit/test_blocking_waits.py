"""A worker's blocking wait for work: it ends before the socket times out, whatever
SOCKET_TIMEOUT is, and a stopping process cuts it short."""

from __future__ import annotations

import threading
import time

import pytest

from django_bgtasks.broker import get_broker


@pytest.fixture
def short_socket_timeout(settings):
    settings.BGTASKS = {**settings.BGTASKS, "SOCKET_TIMEOUT": 0.4}
    return get_broker()


def test_an_idle_wait_longer_than_the_socket_timeout_is_not_an_error(short_socket_timeout):
    started = time.monotonic()
    assert short_socket_timeout.wait_for_work(["default", "idle"], 1.0) is None
    assert time.monotonic() - started < 1.5  # at most the wait asked for, no error


def test_an_idle_wait_still_wakes_on_work(short_socket_timeout, raw):
    broker = short_socket_timeout
    # (queues no earlier test waited on: on a cluster, a closed broker's waiting thread may
    # still take one token of its queues)
    timer = threading.Timer(0.1, lambda: raw.rpush(broker.queue_keys("work").notify, "1"))
    timer.start()
    assert broker.wait_for_work(["other", "work"], 1.0) == "work"
    timer.join()


def test_wake_ends_the_wait_of_that_waker_only(broker, raw):
    timer = threading.Timer(0.2, lambda: broker.wake(["default", "mail"], "w1"))
    timer.start()
    started = time.monotonic()
    assert broker.wait_for_work(["default", "mail"], 5.0, waker="w1") is None
    timer.join()
    assert time.monotonic() - started < 1.0
    # nobody else's wait ends, and no task is announced
    assert raw.llen(broker.queue_keys("default").notify) == 0
    started = time.monotonic()
    assert broker.wait_for_work(["default", "mail"], 0.5, waker="w2") is None
    assert time.monotonic() - started >= 0.45
