"""The counters and histograms the transitions write (_common.lua: tally, observe), read
back through broker/metrics.py, against real transitions on the real redis-server."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path

import pytest

from django_bgtasks import background_task, cancel_task
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.metrics import BUCKETS_MS, Histogram, MetricsStore, parse_fields
from django_bgtasks.broker.types import Ack
from helpers import drive

LEASE_MS = 60_000


@background_task
def measured(n: int) -> int:
    return n


@background_task(queue_name="other")
def elsewhere() -> None:
    pass


def metrics(queue: str = "default"):
    return MetricsStore(get_broker()).read([queue])[queue]


def name(task) -> str:
    return task.name


def test_buckets_match_the_lua_bounds() -> None:
    lua = (Path(__file__).parents[2] / "django_bgtasks/broker/lua/claim.lua").read_text()
    found = re.search(r"METRIC_BUCKETS = \{([^}]*)\}", lua)
    assert found
    assert tuple(int(v) for v in re.split(r"[,\s]+", found.group(1).strip())) == BUCKETS_MS


def test_enqueue_start_and_each_run_outcome_are_counted_per_task() -> None:
    ids = [measured.enqueue(i).id for i in range(5)]
    elsewhere.enqueue()
    m = metrics()[name(measured)]
    assert m.enqueued == 5 and m.started == 0 and m.ends == {}
    broker = get_broker()
    claimed = broker.claim("default", "w", [], 5, LEASE_MS, 1000, 10**12).claimed
    assert sorted(c.id for c in claimed) == sorted(ids)
    time.sleep(0.03)
    outcomes = ["done", "done", "retry", "dead", "cancelled"]
    acks = [Ack(c.id, c.attempt, outcome, error="E")
            for c, outcome in zip(claimed, outcomes, strict=True)]
    assert broker.claim("default", "w", acks, 0, LEASE_MS, 1000, 10**12).ignored == []
    m = metrics()[name(measured)]
    assert m.started == 5
    assert m.ends == {"succeeded": 2, "retried": 1, "dead": 1, "cancelled": 1}
    assert m.duration["succeeded"].count == 2
    # Each run took at least the 30 ms slept (Redis' clock), so none is in the <= 25 ms
    # buckets, and the sum says so too.
    assert sum(m.all_durations().counts[:3]) == 0
    assert m.all_durations().sum_ms >= 5 * 30
    assert metrics("other")[name(elsewhere)].enqueued == 1
    assert name(elsewhere) not in metrics()


def test_queue_latency_is_due_to_start() -> None:
    queued = measured.enqueue(1)
    time.sleep(0.06)
    drive([queued.id], "done")
    latency = metrics()[name(measured)].latency
    assert latency.count == 1
    assert latency.sum_ms >= 60
    assert latency.quantile(0.5) is not None and latency.quantile(0.5) > 50


def test_ends_without_a_run_are_counted() -> None:
    queued = measured.enqueue(1)
    cancel_task(queued.id)
    expiring = measured.using(expires=timedelta(milliseconds=10)).enqueue(2)
    time.sleep(0.05)
    get_broker().claim("default", "w", [], 5, LEASE_MS, 1000, 10**12)
    m = metrics()[name(measured)]
    assert m.ends == {"cancelled": 1, "expired": 1}
    assert m.started == 0
    assert expiring.id


def test_a_batch_counts_every_task(broker) -> None:
    from django_bgtasks.broker.types import EnqueueRequest
    from django_bgtasks.message import TaskMessage

    def request(i: int) -> EnqueueRequest:
        msg = TaskMessage(id=f"b{i}", name="tests.batch", queue="default", args=[i],
                          kwargs={}, priority=0, max_retries=0, timeout=60.0,
                          result_ttl=None, unique_key=None, enqueued_at=1.0).encode()
        return EnqueueRequest(queue="default", id=f"b{i}", message=msg, priority=0,
                              max_retries=0)

    broker.enqueue_many([request(i) for i in range(300)])
    assert metrics()["tests.batch"].enqueued == 300


@pytest.mark.parametrize("q, expected", [(0.5, 7.5), (1.0, 10.0), (0.25, 5.0)])
def test_quantile_interpolates_inside_a_bucket(q: float, expected: float) -> None:
    h = Histogram()
    h.counts[1] = 4  # four observations in (5, 10] ms
    h.counts[0] = 0
    assert h.quantile(q) == pytest.approx(expected if q != 0.25 else 6.25)


def test_damaged_fields_are_skipped() -> None:
    parsed = parse_fields({"e|a": 2, "l|a|99": 5, "d|nooutcome": 1, "zz|a": 3, "l|a|1": 1})
    assert parsed["a"].enqueued == 2 and parsed["a"].started == 1


def test_pending_age_looks_at_each_priority_band() -> None:
    store = MetricsStore(get_broker())
    assert store.pending_ages(["default"]) == {"default": None}
    measured.using(priority=-50).enqueue(1)  # oldest, but last in line
    time.sleep(0.1)
    for i in range(3):
        measured.using(priority=10 * i).enqueue(i)
    age = store.pending_ages(["default"])["default"]
    assert age is not None and age >= 0.1


# -- windows (metrics_roll.lua) --------------------------------------------------------


def run_some(n: int, outcome: str = "done") -> None:
    ids = [measured.enqueue(i).id for i in range(n)]
    drive(ids, outcome, error="E")


def test_windows_hold_what_was_counted_after_the_first_roll() -> None:
    store = MetricsStore(get_broker())
    run_some(3)  # before any roll: counted, but in no window
    assert store.roll("default") == "init"
    assert store.window(["default"], 60)["default"] == {}
    run_some(2)
    run_some(1, "dead")
    # Not rolled yet: a window still sees it (the part counted since the last roll).
    hour = store.window(["default"], 60)["default"][name(measured)]
    assert hour.ends == {"succeeded": 2, "dead": 1}
    assert store.roll("default") == "ok"
    assert store.roll("default") == "ok"  # a repeated roll adds nothing
    for minutes in (60, 1440):
        m = store.window(["default"], minutes)["default"][name(measured)]
        assert m.ends == {"succeeded": 2, "dead": 1} and m.started == 3 and m.enqueued == 3
    assert store.read(["default"])["default"][name(measured)].ends["succeeded"] == 5
    series = store.per_minute(["default"])
    assert len(series) == 1440
    assert sum(s.processed for s in series) == 3 and sum(s.failed for s in series) == 1
    assert series[-1].processed + series[-2].processed == 3  # this minute (or the last)


def test_a_slot_left_from_yesterday_is_not_counted(raw) -> None:
    store = MetricsStore(get_broker())
    store.roll("default")
    run_some(1)
    store.roll("default")
    keys = get_broker().queue_keys("default")
    now_slot = int(raw.time()[0]) * 1000 // 300_000
    # Make the current slot look a day old: it is no longer in any window.
    raw.hset(keys.metrics_slot(now_slot % 288), "@", now_slot - 288)
    assert store.window(["default"], 1440)["default"] == {}


def test_a_run_end_is_counted_under_the_name_its_worker_sends() -> None:
    # The worker knows the name it ran: Redis then need not read the message again.
    queued = measured.enqueue(1)
    broker = get_broker()
    (claimed,) = broker.claim("default", "w", [], 1, LEASE_MS, 1000, 10**12).claimed
    broker.claim("default", "w", [Ack(claimed.id, claimed.attempt, "done", task="as.sent")],
                 0, LEASE_MS, 1000, 10**12)
    found = metrics()
    assert found["as.sent"].ends == {"succeeded": 1}
    assert found[name(measured)].started == 1 and queued.id
