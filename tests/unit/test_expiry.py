"""Expiry (the ``expires`` option, docs/tasks.md): a task not started by its expiry is not
run; the claim, or the poller for a due scheduled or retry task, ends it 'expired' on
Redis' clock, and the worker sends task_expired. Then the retention of cancelled and
expired tasks (CANCELLED_/EXPIRED_MAX_TASKS and _MAX_AGE), trimmed by the janitor.

Time is controlled through Redis: an expiry in the past is an aware datetime long gone,
a short timedelta is waited out on Redis' own clock, and an old end is a score seeded
with the raw client.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from demo import recording, tasks
from django_bgtasks import background_task, get_task_info, signals
from django_bgtasks.broker.types import Ack, Retention
from django_bgtasks.info import ms_to_datetime
from django_bgtasks.worker.config import WorkerConfig
from django_bgtasks.worker.execution import TaskExecutor
from django_bgtasks.worker.inflight import InFlight
from django_bgtasks.worker.janitor import Janitor
from django_bgtasks.worker.poller import Poller
from django_bgtasks.worker.processor import Processor
from helpers import counts, state_of, wait_until

Q = "default"
GONE = datetime(2001, 1, 1, tzinfo=UTC)  # an expiry long past on any clock
HOUR = timedelta(hours=1)
DAY_MS = 24 * 3600 * 1000
KEEP = Retention(10_000, 7 * DAY_MS)


@pytest.fixture
def expired_signals():
    """The task_expired signals this process receives, as (sender, task_info)."""
    received: list[tuple] = []

    def receiver(sender, task_info, **kwargs):
        received.append((sender, task_info))

    signals.task_expired.connect(receiver)
    yield received
    signals.task_expired.disconnect(receiver)


def stored(broker, task_id: str) -> dict:
    return json.loads(broker.client.hget(broker.queue_keys(Q).info, task_id))


def claim(broker, limit: int = 10, acks=()):
    return broker.claim(Q, "w", list(acks), limit, 60_000, 100, 10**9)


def wait_redis_past(broker, moment: datetime | None) -> None:
    """Until Redis' clock has passed ``moment``."""
    assert moment is not None
    deadline = int(moment.timestamp() * 1000)
    wait_until(lambda: broker.server_time_ms() > deadline, timeout=10, interval=0.02,
               message=f"Redis' clock past {moment}")


def _plain() -> None:
    """A function the refused definitions below would have made a task of."""


# -- the option -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "why"), [
    (datetime(2030, 1, 1), "aware"),  # naive
    (timedelta(0), "positive"),
    (timedelta(seconds=-5), "positive"),
    (600, "timedelta or an aware datetime"),
    ("10m", "timedelta or an aware datetime"),
])
def test_a_bad_expires_is_refused_by_the_decorator_and_by_using(value, why):
    with pytest.raises(ValueError, match=f"^expires must .*{why}"):
        background_task(expires=value)(_plain)
    with pytest.raises(ValueError, match=f"^expires must .*{why}"):
        tasks.record.using(expires=value)


def test_a_timedelta_counts_from_the_enqueue_on_redis_clock(broker):
    info = tasks.record.using(expires=timedelta(minutes=10)).enqueue("x")

    record = stored(broker, info.id)
    assert record["expires_at"] - record["enqueued_at"] == 600_000  # both Redis' clock
    assert info.expires_at == ms_to_datetime(record["expires_at"])
    assert get_task_info(info.id).expires_at == info.expires_at
    assert get_task_info(info.id).state == "pending"


def test_an_aware_datetime_is_an_absolute_expiry(broker):
    at = datetime(2031, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    info = tasks.record.using(expires=at).enqueue("x")
    assert stored(broker, info.id)["expires_at"] == int(at.timestamp() * 1000)
    assert info.expires_at == get_task_info(info.id).expires_at == at


def test_without_expires_the_record_holds_no_expiry(broker):
    info = tasks.record.enqueue("x")
    assert "expires_at" not in stored(broker, info.id)
    assert info.expires_at is None and get_task_info(info.id).expires_at is None


def test_enqueue_many_gives_every_task_the_expiry(broker):
    infos = tasks.record.using(expires=HOUR).enqueue_many([(["a"], {}), (["b"], {})])
    for info in infos:
        assert info.expires_at is not None
        assert get_task_info(info.id).expires_at == info.expires_at


# -- the claim ------------------------------------------------------------------------


def test_the_claim_ends_a_task_past_its_expiry_and_claims_the_next_in_its_place(broker):
    gone = tasks.record.using(expires=GONE).enqueue("gone")
    fresh = tasks.record.using(expires=HOUR).enqueue("fresh")

    result = claim(broker, limit=1)

    assert [c.id for c in result.claimed] == [fresh.id]
    assert result.expired == [gone.id]
    info = get_task_info(gone.id)
    assert (info.state, info.attempts, info.worker) == ("expired", 0, "")
    assert info.finished_at is not None
    assert counts()["expired"] == 1 and counts()["pending"] == 0


def test_a_short_expiry_passes_on_redis_clock_then_the_claim_expires_it(broker):
    info = tasks.record.using(expires=timedelta(milliseconds=50)).enqueue("soon")
    wait_redis_past(broker, info.expires_at)
    assert claim(broker).expired == [info.id]
    assert state_of(info.id) == "expired"


def test_expiry_releases_the_uniqueness_lock(broker):
    first = tasks.record.using(unique_for=3600, expires=GONE).enqueue("once")
    assert claim(broker).expired == [first.id]
    again = tasks.record.using(unique_for=3600).enqueue("once")  # the same lock: free
    assert again.id != first.id and state_of(again.id) == "pending"


def test_an_expired_task_takes_no_limit_slot(broker):
    limited = tasks.record.using(concurrency_limit=1)
    gone = limited.using(expires=GONE).enqueue("gone")
    runs = limited.enqueue("runs")
    result = claim(broker, limit=2)
    assert result.expired == [gone.id]
    assert [c.id for c in result.claimed] == [runs.id]  # the one slot was free for it


def test_a_waiting_task_expires_when_woken_and_passes_the_wake_up_on(broker):
    limited = tasks.record.using(concurrency_limit=1)
    blocker = limited.enqueue("blocker")
    [running] = claim(broker, limit=1).claimed
    soon = limited.using(expires=timedelta(milliseconds=100)).enqueue("soon")
    later = limited.enqueue("later")
    assert claim(broker, limit=2).claimed == []  # both wait for the limit
    assert (state_of(soon.id), state_of(later.id)) == ("waiting", "waiting")
    wait_redis_past(broker, soon.expires_at)

    # the blocker's run ends: the limit wakes `soon`, which the claim finds expired; its
    # wake-up goes on to `later`, claimed in the same call
    result = claim(broker, limit=1, acks=[Ack(blocker.id, running.attempt, "done")])

    assert result.expired == [soon.id]
    assert [c.id for c in result.claimed] == [later.id]
    assert get_task_info(soon.id).attempts == 0


def test_a_worker_sends_task_expired_and_never_runs_the_task(broker, raw, expired_signals):
    gone = tasks.record.using(expires=GONE).enqueue("gone")
    kept = tasks.record.enqueue("kept")
    config = WorkerConfig(queues={Q: 1}, processes=1, threads=1, burst=True)
    processor = Processor(broker, config, "w-expiry", TaskExecutor("w-expiry"), InFlight())
    processor.start()
    assert processor.exited.wait(30), "the burst processor did not exit"

    assert recording.ran(raw) == {"kept"}
    assert state_of(kept.id) is None and state_of(gone.id) == "expired"
    [(sender, info)] = expired_signals
    assert sender is tasks.record
    assert (info.id, info.state, info.expires_at) == (gone.id, "expired", GONE)


# -- the poller: scheduled and retry tasks ---------------------------------------------


def test_a_scheduled_task_whose_expiry_passes_before_it_is_due_ends_expired(
        broker, expired_signals):
    info = tasks.record.using(run_after=timedelta(milliseconds=300),
                              expires=timedelta(milliseconds=100)).enqueue("late")
    assert info.state == "scheduled"
    wait_redis_past(broker, info.run_after)

    Poller(broker, [Q]).tick()

    assert state_of(info.id) == "expired"
    assert counts()["pending"] == counts()["scheduled"] == 0
    [(sender, signalled)] = expired_signals
    assert (sender, signalled.id, signalled.state) == (tasks.record, info.id, "expired")


def test_a_due_scheduled_task_before_its_expiry_goes_to_pending(broker, expired_signals):
    info = tasks.record.using(run_after=timedelta(milliseconds=50), expires=HOUR).enqueue("x")
    wait_redis_past(broker, info.run_after)
    Poller(broker, [Q]).tick()
    assert state_of(info.id) == "pending" and expired_signals == []


def test_a_retry_due_after_the_expiry_ends_expired(broker, expired_signals):
    info = tasks.record.using(expires=timedelta(seconds=1)).enqueue("retried")
    [claimed] = claim(broker, limit=1).claimed  # within its second: it starts
    ack = Ack(info.id, claimed.attempt, "retry", delay_ms=1, error="RuntimeError: again")
    assert claim(broker, limit=0, acks=[ack]).ignored == []
    assert state_of(info.id) == "retry"
    wait_redis_past(broker, info.expires_at)

    Poller(broker, [Q]).tick()

    after = get_task_info(info.id)
    assert (after.state, after.attempts) == ("expired", 1)
    assert [s.id for _, s in expired_signals] == [info.id]


# -- retention: cancelled and expired tasks ---------------------------------------------


def seed_ended(broker, state: str, n: int) -> list[str]:
    """``n`` tasks ended ``state``, ended at distinct times (oldest first). Expired ones
    through the claim; cancelled ones, whose transition is another part's, as expired
    ones moved to the cancelled set (the janitor reads only the set)."""
    ids = [i.id for i in tasks.record.using(expires=GONE).enqueue_many(
        ([f"t{i}"], {}) for i in range(n))]
    assert sorted(claim(broker, limit=1).expired) == sorted(ids)
    keys = broker.queue_keys(Q)
    now = broker.server_time_ms()
    for age, task_id in enumerate(reversed(ids)):
        broker.client.zrem(keys.expired, task_id)
        broker.client.zadd(getattr(keys, state), {task_id: now - 1000 * (age + 1)})
    return ids


def kept_ids(broker, state: str) -> list[str]:
    return [m.decode() for m in broker.client.zrange(getattr(broker.queue_keys(Q), state),
                                                     0, -1)]


@pytest.mark.parametrize("state", ["cancelled", "expired"])
def test_the_janitor_trims_to_max_tasks_keeping_the_newest(broker, state):
    ids = seed_ended(broker, state, 5)
    limits = {state: Retention(2, 7 * DAY_MS)}
    cleaned = broker.clean(Q, 10_000, 180 * DAY_MS, **limits)
    assert getattr(cleaned, state) == 3 and not cleaned.more
    assert kept_ids(broker, state) == ids[3:]
    assert [state_of(i) is not None for i in ids] == [False] * 3 + [True] * 2  # data gone


@pytest.mark.parametrize("state", ["cancelled", "expired"])
def test_the_janitor_trims_by_age(broker, state):
    ids = seed_ended(broker, state, 4)  # ended 4, 3, 2 and 1 s ago
    cleaned = broker.clean(Q, 10_000, 180 * DAY_MS, **{state: Retention(100, 2500)})
    assert getattr(cleaned, state) == 2
    assert kept_ids(broker, state) == ids[2:]


@pytest.mark.parametrize("state", ["cancelled", "expired"])
def test_the_janitor_trims_in_bounded_batches(broker, state):
    seed_ended(broker, state, 5)
    first = broker.clean(Q, 10_000, 180 * DAY_MS, limit=2, **{state: Retention(0, DAY_MS)})
    assert (getattr(first, state), first.more) == (2, True)
    janitor = Janitor(broker, WorkerConfig(queues={Q: 1}, **{state: Retention(0, DAY_MS)}))
    janitor.tick()  # batch after batch until nothing is left to trim
    assert kept_ids(broker, state) == []


def test_one_set_retention_leaves_the_other_alone(broker):
    seed_ended(broker, "expired", 3)
    cleaned = broker.clean(Q, 10_000, 180 * DAY_MS, cancelled=Retention(0, 1),
                           expired=KEEP)
    assert (cleaned.cancelled, cleaned.expired) == (0, 0)
    assert len(kept_ids(broker, "expired")) == 3
