"""End-to-end: a task past its ``expires`` time never runs on a real worker, and expiry is
judged on Redis' clock, not on the worker's (tests/support/clock_skew.c puts a worker's
clock hours ahead)."""

from __future__ import annotations

from datetime import datetime, timedelta

from demo import recording, tasks
from django_bgtasks import get_task_info
from django_bgtasks.info import ms_to_datetime
from helpers import counts, state_of, wait_until
from test_e2e_clock_skew import first_log_time, skew_shim  # noqa: F401  (a fixture)


def redis_now_ms(r) -> int:
    seconds, micros = r.time()
    return seconds * 1000 + micros // 1000


def test_a_pending_task_past_its_expiry_never_runs(start_worker, redis_server):
    r = redis_server.client()
    gone = tasks.record.using(expires=timedelta(milliseconds=50)).enqueue("gone")
    kept = tasks.record.using(expires=timedelta(hours=1)).enqueue("kept")
    deadline = int(gone.expires_at.timestamp() * 1000)
    wait_until(lambda: redis_now_ms(r) > deadline, timeout=10, interval=0.02,
               message="Redis' clock past the expiry")

    start_worker("--processes", "1", "--threads", "2")

    wait_until(lambda: "kept" in recording.ran(r), timeout=20, message="the other task ran")
    wait_until(lambda: state_of(gone.id) == "expired", timeout=10, message="gone expired")
    assert recording.ran(r) == {"kept"}
    assert get_task_info(gone.id).attempts == 0
    assert state_of(kept.id) is None  # ran and was dropped (no result_ttl)
    assert counts()["expired"] == 1


def test_expiry_is_judged_on_redis_clock_not_the_workers(start_worker, redis_server,
                                                           skew_shim):  # noqa: F811
    r = redis_server.client()
    hour_ahead = tasks.record.using(expires=timedelta(hours=1)).enqueue("in-an-hour")
    absolute = tasks.record.using(
        expires=ms_to_datetime(redis_now_ms(r) + 3_600_000)).enqueue("absolute")
    worker = start_worker("--processes", "1", "--threads", "2", env={
        "LD_PRELOAD": str(skew_shim), "BGTASKS_CLOCK_SKEW": str(2 * 3600)})

    # The worker's clock is two hours ahead: on it, both expiries have passed.
    wait_until(lambda: {"in-an-hour", "absolute"} <= recording.ran(r), timeout=20,
               message="both tasks ran")
    # A task records its run before its worker acknowledges it: wait for the ack.
    wait_until(lambda: state_of(hour_ahead.id) is None and state_of(absolute.id) is None,
               timeout=10, message="both acknowledged (and dropped: no result_ttl)")
    assert counts()["expired"] == 0
    worker.wait_for_log(" starting: Redis ")  # the worker's clock was really ahead:
    assert abs((first_log_time(worker) - datetime.now()).total_seconds() - 7200) < 60
