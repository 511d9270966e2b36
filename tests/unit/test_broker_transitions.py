"""Every Lua transition, through the broker's methods, against the real redis-server.

Time is only ever controlled through Redis itself: a "past" lease or due time is a score
seeded with the raw client, since the scripts read Redis' TIME.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import pytest

from django_bgtasks import TaskAlreadyExists, background_task, get_task_info
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.types import Ack, EnqueueRequest
from django_bgtasks.message import TaskMessage
from django_bgtasks.worker.execution import TaskExecutor

Q = "default"
LEASE_MS = 30_000
DAY_MS = 24 * 3600 * 1000
DEAD_MAX = 10_000
DEAD_AGE_MS = 180 * DAY_MS
PAST = 1_000_000  # a score (ms since the epoch) long gone


@background_task(unique_for=60)
def unique_job(key: str) -> str:
    return key


@background_task(unique_for=0.3)
def short_unique_job(key: str) -> str:
    return key


# -- helpers ------------------------------------------------------------------------------


def message(task_id: str, queue: str = Q, args: list | None = None, priority: int = 0,
            max_retries: int = 3) -> str:
    return TaskMessage(
        id=task_id, name="tests.job", queue=queue, args=args or [], kwargs={},
        priority=priority, max_retries=max_retries, timeout=60.0, result_ttl=None,
        unique_key=None, enqueued_at=1.0,
    ).encode()


def put(broker, task_id: str, queue: str = Q, priority: int = 0, max_retries: int = 3,
        msg: str | None = None, **extra):
    return broker.enqueue(EnqueueRequest(
        queue=queue, id=task_id, message=msg or message(task_id, queue, priority=priority,
                                                        max_retries=max_retries),
        priority=priority, max_retries=max_retries, **extra))


def claim(broker, acks=(), limit: int = 10, queue: str = Q, lease_ms: int = LEASE_MS,
          dead_max: int = DEAD_MAX, dead_age_ms: int = DEAD_AGE_MS, worker: str = "w1"):
    return broker.claim(queue, worker, list(acks), limit, lease_ms, dead_max, dead_age_ms)


def claimed_ids(result) -> list[str]:
    return [c.id for c in result.claimed]


def redis_ms(raw) -> int:
    seconds, micros = raw.time()
    return seconds * 1000 + micros // 1000


def info_of(raw, broker, task_id: str, queue: str = Q) -> dict | None:
    value = raw.hget(broker.queue_keys(queue).info, task_id)
    return None if value is None else json.loads(value)


def errors_of(raw, broker, task_id: str, queue: str = Q) -> list:
    value = raw.hget(broker.queue_keys(queue).errors, task_id)
    return [] if value is None else json.loads(value)


def members(raw, key: str) -> list[str]:
    return [m.decode() for m in raw.zrange(key, 0, -1)]


def score(raw, key: str, task_id: str) -> float | None:
    return raw.zscore(key, task_id)


def state_sets(raw, broker, task_id: str, queue: str = Q) -> list[str]:
    keys = broker.queue_keys(queue)
    names = ("pending", "waiting", "active", "scheduled", "retry", "dead", "completed")
    return [n for n in names if raw.zscore(getattr(keys, n), task_id) is not None]


def traces(raw, broker, task_id: str, queue: str = Q) -> dict:
    """Every place a task id could be stored in its queue."""
    keys = broker.queue_keys(queue)
    found = {h: raw.hexists(getattr(keys, h), task_id)
             for h in ("msg", "info", "errors", "result")}
    found["sets"] = state_sets(raw, broker, task_id, queue)
    return found


NO_TRACE = {"msg": False, "info": False, "errors": False, "result": False, "sets": []}


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def stat(raw, broker, kind: str, queue: str = Q) -> int:
    value = raw.get(broker.queue_keys(queue).stats(kind, today()))
    return int(value or 0)


def expire_lease(raw, broker, task_id: str, queue: str = Q) -> None:
    assert raw.zadd(broker.queue_keys(queue).active, {task_id: PAST}, xx=True, ch=True) == 1


def make_due(raw, broker, zset: str, task_id: str, when: int = PAST, queue: str = Q) -> None:
    key = getattr(broker.queue_keys(queue), zset)
    assert raw.zadd(key, {task_id: when}, xx=True, ch=True) == 1


# -- enqueue ------------------------------------------------------------------------------


def test_enqueue_writes_message_and_info_and_pending(broker, raw):
    before = redis_ms(raw)
    out = put(broker, "t1", priority=7, max_retries=4)
    after = redis_ms(raw)
    keys = broker.queue_keys(Q)

    assert (out.status, out.state) == ("ok", "pending")
    assert before <= out.due_ms <= after
    assert raw.hget(keys.msg, "t1").decode() == message("t1", priority=7, max_retries=4)
    info = info_of(raw, broker, "t1")
    assert info["state"] == "pending"
    assert (info["attempts"], info["max_retries"], info["priority"]) == (0, 4, 7)
    assert before <= info["enqueued_at"] <= after
    assert state_sets(raw, broker, "t1") == ["pending"]
    assert raw.smembers(broker.keys.queues) == {b"default"}
    assert broker.counts(Q) == {"pending": 1, "waiting": 0, "active": 0, "scheduled": 0,
                                "retry": 0, "dead": 0, "completed": 0, "cancelled": 0, "expired": 0,
                                "blocked": 0}


def test_enqueue_with_delay_is_scheduled_at_redis_time_plus_delay(broker, raw):
    before = redis_ms(raw)
    out = put(broker, "t1", delay_ms=60_000)
    after = redis_ms(raw)
    due = score(raw, broker.queue_keys(Q).scheduled, "t1")

    assert (out.status, out.state) == ("ok", "scheduled")
    assert before + 60_000 <= due <= after + 60_000
    assert out.due_ms == due
    # the enqueue time as stored (not the due time): what TaskInfo.enqueued_at reads later
    assert out.enqueued_ms == info_of(raw, broker, "t1")["enqueued_at"]
    assert state_sets(raw, broker, "t1") == ["scheduled"]
    assert info_of(raw, broker, "t1")["state"] == "scheduled"
    assert claim(broker).claimed == []


def test_enqueue_run_at_future_is_scheduled_exactly_and_past_is_pending(broker, raw):
    future = redis_ms(raw) + 3_600_000
    assert put(broker, "later", run_at_ms=future).state == "scheduled"
    assert score(raw, broker.queue_keys(Q).scheduled, "later") == future
    assert put(broker, "overdue", run_at_ms=redis_ms(raw) - 5_000).state == "pending"
    assert state_sets(raw, broker, "overdue") == ["pending"]


@pytest.mark.parametrize("extra,state", [({}, "pending"), ({"delay_ms": 60_000}, "scheduled")])
def test_enqueue_resend_of_same_message_is_ok_and_writes_once(broker, raw, extra, state):
    first = put(broker, "t1", **extra)
    info_before = raw.hget(broker.queue_keys(Q).info, "t1")
    second = put(broker, "t1", **extra)

    assert (first.status, first.state) == ("ok", state)
    assert (second.status, second.state) == ("ok", state)
    assert second.due_ms == first.due_ms
    assert second.enqueued_ms == first.enqueued_ms == info_of(raw, broker, "t1")["enqueued_at"]
    assert raw.hget(broker.queue_keys(Q).info, "t1") == info_before
    assert sum(broker.counts(Q).values()) == 1
    assert len(claim(broker).claimed) == (1 if state == "pending" else 0)


def test_enqueue_same_id_with_other_message_is_refused(broker, raw):
    put(broker, "t1")
    out = put(broker, "t1", msg=message("t1", args=[1]))
    assert (out.status, out.holder_id) == ("exists", "t1")
    assert raw.hget(broker.queue_keys(Q).msg, "t1").decode() == message("t1")
    assert broker.counts(Q)["pending"] == 1


# -- claim --------------------------------------------------------------------------------


def test_claim_leases_and_counts_the_attempt(broker, raw):
    put(broker, "t1")
    before = redis_ms(raw)
    result = claim(broker, lease_ms=5_000, worker="host-1")
    after = redis_ms(raw)

    assert result.ignored == []
    [task] = result.claimed
    assert (task.id, task.attempt) == ("t1", 1)
    assert task.raw_message == message("t1").encode()
    lease = score(raw, broker.queue_keys(Q).active, "t1")
    assert before + 5_000 <= lease <= after + 5_000
    info = info_of(raw, broker, "t1")
    assert (info["state"], info["attempts"], info["worker"]) == ("active", 1, "host-1")
    assert before <= info["started_at"] <= after
    assert state_sets(raw, broker, "t1") == ["active"]
    assert claim(broker).claimed == []  # nothing else to claim


def test_claim_is_priority_first_then_fifo(broker):
    for task_id, priority in [("a", 0), ("b", 0), ("hi1", 5), ("low", -5), ("hi2", 5),
                              ("c", 0), ("top", 100), ("bottom", -100)]:
        put(broker, task_id, priority=priority)
    assert claimed_ids(claim(broker, limit=20)) == [
        "top", "hi1", "hi2", "a", "b", "c", "low", "bottom"]


def test_claim_respects_the_limit(broker):
    for i in range(5):
        put(broker, f"t{i}")
    assert claim(broker, limit=0).claimed == []
    assert claimed_ids(claim(broker, limit=2)) == ["t0", "t1"]
    assert broker.counts(Q)["pending"] == 3
    assert claimed_ids(claim(broker, limit=2)) == ["t2", "t3"]
    assert broker.counts(Q) == {"pending": 1, "waiting": 0, "active": 4, "scheduled": 0,
                                "retry": 0, "dead": 0, "completed": 0, "cancelled": 0, "expired": 0,
                                "blocked": 0}


def test_requeue_ack_puts_task_back_at_head_without_counting_the_attempt(broker, raw):
    put(broker, "hi", priority=1)
    for task_id in ("a", "b", "c"):
        put(broker, task_id)
    assert claimed_ids(claim(broker, limit=2)) == ["hi", "a"]

    result = claim(broker, [Ack("a", 1, "requeue")], limit=10)

    assert result.ignored == []
    # before b and c (same priority) but not before a higher priority
    assert [(c.id, c.attempt) for c in result.claimed] == [("a", 1), ("b", 1), ("c", 1)]
    assert stat(raw, broker, "processed") == 0


def test_requeued_task_goes_behind_higher_priority(broker):
    put(broker, "low")
    claim(broker, limit=1)
    put(broker, "hi", priority=3)
    assert claimed_ids(claim(broker, [Ack("low", 1, "requeue")])) == ["hi", "low"]


def test_paused_queue_claims_nothing_until_resumed(broker, raw):
    put(broker, "t1")
    broker.pause(Q)
    assert claim(broker).claimed == []
    assert info_of(raw, broker, "t1")["state"] == "pending"
    broker.resume(Q)
    assert claimed_ids(claim(broker)) == ["t1"]


def test_pause_affects_only_its_queue(broker):
    put(broker, "t1", queue="mail")
    broker.pause(Q)
    assert claimed_ids(claim(broker, queue="mail")) == ["t1"]


# -- acks ---------------------------------------------------------------------------------


def test_done_without_ttl_deletes_every_trace(broker, raw):
    put(broker, "t1", unique_key="k", unique_ttl_ms=60_000)
    claim(broker, limit=1)
    claim(broker, [Ack("t1", 1, "retry", delay_ms=0, error="E: first")], limit=0)
    broker.forward_due(Q)
    assert claim(broker).claimed[0].attempt == 2
    assert traces(raw, broker, "t1")["errors"]  # there was something to delete

    result = claim(broker, [Ack("t1", 2, "done", result='"ignored"')], limit=0)

    assert result.ignored == []
    assert traces(raw, broker, "t1") == NO_TRACE
    keys = broker.queue_keys(Q)
    assert raw.hlen(keys.unique) == 0 and raw.zcard(keys.unique_exp) == 0
    assert broker.read_task("t1") is None
    assert sum(broker.counts(Q).values()) == 0


def test_done_with_ttl_keeps_result_readable(broker, raw):
    put(broker, "t1")
    claim(broker)
    before = redis_ms(raw)
    claim(broker, [Ack("t1", 1, "done", result='{"sum": 3}', result_ttl_ms=60_000)], limit=0)
    after = redis_ms(raw)

    expiry = score(raw, broker.queue_keys(Q).completed, "t1")
    assert before + 60_000 <= expiry <= after + 60_000
    assert state_sets(raw, broker, "t1") == ["completed"]
    record = broker.read_task("t1")
    assert record.raw_result == b'{"sum": 3}'
    info = get_task_info("t1")
    assert (info.state, info.result, info.attempts) == ("completed", {"sum": 3}, 1)
    assert info.finished_at is not None


def test_retry_ack_schedules_retry_and_records_the_error(broker, raw):
    put(broker, "t1")
    claim(broker)
    before = redis_ms(raw)
    result = claim(broker, [Ack("t1", 1, "retry", delay_ms=45_000, error="ValueError: boom",
                                traceback="Traceback: line 1")], limit=0)
    after = redis_ms(raw)

    assert result.ignored == []
    due = score(raw, broker.queue_keys(Q).retry, "t1")
    assert before + 45_000 <= due <= after + 45_000
    assert state_sets(raw, broker, "t1") == ["retry"]
    info = info_of(raw, broker, "t1")
    assert (info["state"], info["last_error"], info["run_after"]) == (
        "retry", "ValueError: boom", due)
    [entry] = errors_of(raw, broker, "t1")
    assert (entry["attempt"], entry["error"], entry["traceback"]) == (
        1, "ValueError: boom", "Traceback: line 1")

    # a second failure appends to the history
    make_due(raw, broker, "retry", "t1")
    broker.forward_due(Q)
    claim(broker)
    claim(broker, [Ack("t1", 2, "retry", delay_ms=1_000, error="ValueError: again")], limit=0)
    assert [e["error"] for e in errors_of(raw, broker, "t1")] == [
        "ValueError: boom", "ValueError: again"]
    assert get_task_info("t1").last_error == "ValueError: again"


def test_dead_ack_stores_error_and_traceback(broker, raw):
    put(broker, "t1")
    claim(broker)
    claim(broker, [Ack("t1", 1, "dead", error="SkipRetry: no", traceback="TB text")], limit=0)

    assert state_sets(raw, broker, "t1") == ["dead"]
    info = get_task_info("t1")
    assert (info.state, info.last_error, info.traceback) == ("dead", "SkipRetry: no", "TB text")
    assert info.finished_at is not None
    assert [e["error"] for e in info.errors] == ["SkipRetry: no"]


def snapshot(raw) -> dict:
    """Every key and its value (sorted sets with scores), to compare before/after."""
    out = {}
    for key in raw.keys("*"):
        kind = raw.type(key)
        if kind == b"zset":
            out[key] = raw.zrange(key, 0, -1, withscores=True)
        elif kind == b"hash":
            out[key] = raw.hgetall(key)
        elif kind == b"string":
            out[key] = raw.get(key)
        elif kind == b"set":
            out[key] = raw.smembers(key)
        elif kind == b"list":
            out[key] = raw.lrange(key, 0, -1)
    return out


@pytest.mark.parametrize("ack", [
    Ack("t1", 1, "done"),
    Ack("t1", 1, "done", result="1", result_ttl_ms=60_000),
    Ack("t1", 1, "retry", delay_ms=60_000, error="E"),
    Ack("t1", 1, "dead", error="E"),
    Ack("t1", 1, "requeue"),
], ids=lambda a: f"{a.outcome}{'-ttl' if a.result_ttl_ms else ''}")
def test_a_resent_ack_is_ignored_and_changes_nothing(broker, raw, ack):
    put(broker, "t1")
    claim(broker)
    assert claim(broker, [ack], limit=0).ignored == []
    before = snapshot(raw)

    assert claim(broker, [ack], limit=0).ignored == ["t1"]
    assert snapshot(raw) == before


def test_a_stale_attempt_ack_is_ignored_after_recovery(broker, raw):
    put(broker, "t1")
    claim(broker)  # attempt 1, its worker then "dies"
    expire_lease(raw, broker, "t1")
    assert broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS).moved == ["t1"]
    assert [(c.id, c.attempt) for c in claim(broker, worker="w2").claimed] == [("t1", 2)]

    late = claim(broker, [Ack("t1", 1, "done")], limit=0)

    assert late.ignored == ["t1"]
    info = info_of(raw, broker, "t1")
    assert (info["state"], info["attempts"], info["worker"]) == ("active", 2, "w2")
    assert claim(broker, [Ack("t1", 2, "done")], limit=0).ignored == []
    assert traces(raw, broker, "t1") == NO_TRACE


def test_ack_for_a_task_no_longer_leased_is_ignored(broker, raw):
    put(broker, "t1")
    claim(broker)
    raw.zrem(broker.queue_keys(Q).active, "t1")  # the lease is gone, the record lags
    assert claim(broker, [Ack("t1", 1, "done")], limit=0).ignored == ["t1"]
    assert raw.hexists(broker.queue_keys(Q).msg, "t1")


def test_ack_for_unknown_task_is_ignored(broker):
    assert claim(broker, [Ack("ghost", 1, "done")], limit=0).ignored == ["ghost"]


def test_daily_counters(broker, raw):
    for task_id in ("ok", "retry", "dead", "requeue"):
        put(broker, task_id)
    claim(broker)
    claim(broker, [Ack("ok", 1, "done"), Ack("retry", 1, "retry", delay_ms=60_000),
                   Ack("dead", 1, "dead"), Ack("requeue", 1, "requeue")], limit=0)

    assert stat(raw, broker, "processed") == 3
    assert stat(raw, broker, "failed") == 2
    key = broker.queue_keys(Q).stats("processed", today())
    assert 89 * 24 * 3600 < raw.ttl(key) <= 90 * 24 * 3600

    claim(broker, [Ack("ok", 1, "done")], limit=0)  # a resend counts nothing
    assert stat(raw, broker, "processed") == 3


# -- dead trimming ------------------------------------------------------------------------


@pytest.mark.parametrize("max_tasks", [0, 1, 3])
def test_dead_max_tasks_keeps_exactly_the_newest(broker, raw, max_tasks):
    ids = [f"t{i}" for i in range(max_tasks + 3)]
    for task_id in ids:
        put(broker, task_id)
    claim(broker, limit=len(ids))
    for task_id in ids:
        time.sleep(0.002)  # distinct "died at" milliseconds
        claim(broker, [Ack(task_id, 1, "dead", error="E")], limit=0, dead_max=max_tasks)

    kept = ids[len(ids) - max_tasks:]
    assert members(raw, broker.queue_keys(Q).dead) == kept
    for task_id in ids:
        if task_id not in kept:
            assert traces(raw, broker, task_id) == NO_TRACE, task_id


def test_dead_trim_keeps_the_last_killed_of_one_batch(broker, raw):
    for task_id in ("b", "a"):
        put(broker, task_id)
    claim(broker)
    claim(broker, [Ack("b", 1, "dead"), Ack("a", 1, "dead")], limit=0, dead_max=1)
    assert members(raw, broker.queue_keys(Q).dead) == ["a"]


def test_clean_removes_dead_older_than_max_age(broker, raw):
    ids = ["old1", "old2", "young1", "young2"]
    for task_id in ids:
        put(broker, task_id)
    claim(broker)
    claim(broker, [Ack(t, 1, "dead", error="E") for t in ids], limit=0)
    now = redis_ms(raw)
    make_due(raw, broker, "dead", "old1", now - 7_200_000)
    make_due(raw, broker, "dead", "old2", now - 3_700_000)
    make_due(raw, broker, "dead", "young1", now - 3_500_000)

    assert broker.clean(Q, DEAD_MAX, 3_600_000)[:4] == (2, 0, 0, False)
    assert members(raw, broker.queue_keys(Q).dead) == ["young1", "young2"]
    assert traces(raw, broker, "old1") == NO_TRACE
    assert traces(raw, broker, "old2") == NO_TRACE
    assert get_task_info("young1").state == "dead"


def test_clean_trims_dead_to_max_tasks_keeping_newest(broker, raw):
    ids = [f"t{i}" for i in range(5)]
    for task_id in ids:
        put(broker, task_id)
    claim(broker)
    claim(broker, [Ack(t, 1, "dead") for t in ids], limit=0)
    now = redis_ms(raw)
    for age, task_id in enumerate(reversed(ids)):  # t4 newest ... t0 oldest
        make_due(raw, broker, "dead", task_id, now - 1000 * (age + 1))

    assert broker.clean(Q, 2, DEAD_AGE_MS)[0] == 3
    assert members(raw, broker.queue_keys(Q).dead) == ["t3", "t4"]


def test_clean_works_in_bounded_batches(broker, raw):
    ids = [f"t{i}" for i in range(5)]
    for task_id in ids:
        put(broker, task_id)
    claim(broker)
    claim(broker, [Ack(t, 1, "dead") for t in ids], limit=0)
    for task_id in ids:
        make_due(raw, broker, "dead", task_id, PAST)

    first = broker.clean(Q, DEAD_MAX, DAY_MS, limit=2)
    assert first[0] == 2 and first[3] is True
    assert raw.zcard(broker.queue_keys(Q).dead) == 3
    removed, rounds = 2, 1
    while True:
        dead, _, _, more, *_ = broker.clean(Q, DEAD_MAX, DAY_MS, limit=2)
        removed, rounds = removed + dead, rounds + 1
        assert dead <= 2
        if not more:
            break
        assert rounds < 10
    assert removed == 5
    assert raw.zcard(broker.queue_keys(Q).dead) == 0


def test_clean_drops_expired_results_and_keeps_live_ones(broker, raw):
    put(broker, "short")
    put(broker, "long")
    claim(broker)
    claim(broker, [Ack("short", 1, "done", result="1", result_ttl_ms=1),
                   Ack("long", 1, "done", result="2", result_ttl_ms=60_000)], limit=0)
    time.sleep(0.01)

    assert broker.clean(Q, DEAD_MAX, DEAD_AGE_MS)[:4] == (0, 1, 0, False)
    assert traces(raw, broker, "short") == NO_TRACE
    assert get_task_info("long").result == 2


# -- forward_due --------------------------------------------------------------------------


def test_forward_due_moves_due_scheduled_and_retry_tasks(broker, raw):
    put(broker, "s-due", delay_ms=60_000)
    put(broker, "s-later", delay_ms=60_000)
    put(broker, "s-latest", delay_ms=120_000)
    put(broker, "r-due")
    put(broker, "r-later")
    claim(broker)
    claim(broker, [Ack("r-due", 1, "retry", delay_ms=90_000),
                   Ack("r-later", 1, "retry", delay_ms=90_000)], limit=0)
    make_due(raw, broker, "scheduled", "s-due")
    make_due(raw, broker, "retry", "r-due")
    earliest = score(raw, broker.queue_keys(Q).scheduled, "s-later")

    result = broker.forward_due(Q)

    assert (result.moved, result.more) == (2, False)
    assert result.next_ms == earliest
    assert abs(result.now_ms - redis_ms(raw)) < 1000
    for task_id in ("s-due", "r-due"):
        assert state_sets(raw, broker, task_id) == ["pending"]
        assert info_of(raw, broker, task_id)["state"] == "pending"
    for task_id, where in (("s-later", "scheduled"), ("s-latest", "scheduled"),
                           ("r-later", "retry")):
        assert state_sets(raw, broker, task_id) == [where]
    assert sorted(claimed_ids(claim(broker))) == ["r-due", "s-due"]


def test_forward_due_next_ms_is_earliest_of_both_sets(broker, raw):
    put(broker, "s", delay_ms=120_000)
    put(broker, "r")
    claim(broker)
    claim(broker, [Ack("r", 1, "retry", delay_ms=30_000)], limit=0)
    result = broker.forward_due(Q)
    assert result.moved == 0
    assert result.next_ms == score(raw, broker.queue_keys(Q).retry, "r")


def test_forward_due_reports_more_when_the_limit_is_hit(broker, raw):
    for i in range(3):
        put(broker, f"s{i}", delay_ms=60_000)
        make_due(raw, broker, "scheduled", f"s{i}")
    first = broker.forward_due(Q, limit=2)
    assert (first.moved, first.more) == (2, True)
    assert first.seconds_until_next(5.0) == 0.0
    second = broker.forward_due(Q, limit=2)
    assert (second.moved, second.more, second.next_ms) == (1, False, None)
    assert broker.counts(Q)["pending"] == 3


def test_forward_due_with_nothing_to_do(broker):
    result = broker.forward_due(Q)
    assert (result.moved, result.more, result.next_ms) == (0, False, None)


# -- recover_expired / extend_leases ------------------------------------------------------


def test_recover_returns_expired_task_to_pending_head(broker, raw):
    put(broker, "lost")
    put(broker, "waiting")
    claim(broker, limit=1, worker="dead-host")
    expire_lease(raw, broker, "lost")

    result = broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS)

    assert (result.moved, result.killed) == (["lost"], [])
    info = info_of(raw, broker, "lost")
    assert (info["state"], info["attempts"]) == ("pending", 1)
    assert info["last_error"].startswith("WorkerLost")
    [entry] = errors_of(raw, broker, "lost")
    assert entry["error"].startswith("WorkerLost") and "dead-host" in entry["error"]
    assert [(c.id, c.attempt) for c in claim(broker, limit=1).claimed] == [("lost", 2)]


def test_recover_kills_a_task_with_no_attempts_left(broker, raw):
    put(broker, "t1", max_retries=1)
    for attempt in (1, 2):
        assert claim(broker).claimed[0].attempt == attempt
        expire_lease(raw, broker, "t1")
        result = broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS)
    assert (result.moved, result.killed) == ([], ["t1"])
    assert state_sets(raw, broker, "t1") == ["dead"]
    info = get_task_info("t1")
    assert (info.state, info.attempts) == ("dead", 2)
    assert info.last_error.startswith("WorkerLost")


def test_recover_leaves_live_leases_alone(broker, raw):
    put(broker, "live")
    put(broker, "lost")
    claim(broker)
    expire_lease(raw, broker, "lost")
    live_lease = score(raw, broker.queue_keys(Q).active, "live")

    result = broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS)

    assert result.moved == ["lost"]
    assert result.next_ms == live_lease
    assert score(raw, broker.queue_keys(Q).active, "live") == live_lease
    assert info_of(raw, broker, "live")["state"] == "active"
    again = broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS)
    assert (again.moved, again.killed) == ([], [])


def test_release_returns_only_the_dead_workers_tasks_at_once(broker, raw):
    put(broker, "mine1")
    put(broker, "mine2", max_retries=0)  # its one attempt was this one
    put(broker, "theirs")
    claim(broker, limit=2, worker="host/0:111")
    claim(broker, limit=1, worker="host/1:222")
    error = "WorkerLost: worker process 111 died (killed by SIGSEGV)"

    back, dead, cancelled = broker.release_worker(Q, "host/0:111", error, DEAD_MAX,
                                                  DEAD_AGE_MS)

    assert (back, dead, cancelled) == (["mine1"], ["mine2"], [])  # leases not expired: no waiting
    assert state_sets(raw, broker, "mine1") == ["pending"]
    assert state_sets(raw, broker, "mine2") == ["dead"]
    assert state_sets(raw, broker, "theirs") == ["active"]
    assert info_of(raw, broker, "mine1")["last_error"] == error
    assert get_task_info("mine2").last_error == error
    assert [(c.id, c.attempt) for c in claim(broker, limit=1).claimed] == [("mine1", 2)]
    assert broker.release_worker(Q, "host/0:111", error, DEAD_MAX, DEAD_AGE_MS) == (
        [], [], [])


def test_recover_batches_are_bounded(broker, raw):
    for i in range(3):
        put(broker, f"t{i}")
    claim(broker)
    for i in range(3):
        expire_lease(raw, broker, f"t{i}")
    first = broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS, limit=2)
    assert len(first.moved) == 2 and first.more
    second = broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS, limit=2)
    assert len(second.moved) == 1 and not second.more


def test_extend_leases_moves_leases_forward_and_reports_lost_ones(broker, raw):
    for task_id in ("mine", "stale", "rerun"):
        put(broker, task_id)
    claim(broker, lease_ms=1_000)
    expire_lease(raw, broker, "rerun")
    broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS)
    assert claimed_ids(claim(broker, worker="w2")) == ["rerun"]  # attempt 2 has begun
    active = broker.queue_keys(Q).active
    stale_lease = score(raw, active, "stale")
    rerun_lease = score(raw, active, "rerun")

    before = redis_ms(raw)
    lost = broker.renew(Q, [("mine", 1, ""), ("stale", 7, ""), ("rerun", 1, ""),
                            ("ghost", 1, "")], 60_000).lost
    after = redis_ms(raw)

    assert sorted(lost) == ["ghost", "rerun", "stale"]
    assert before + 60_000 <= score(raw, active, "mine") <= after + 60_000
    assert score(raw, active, "stale") == stale_lease
    assert score(raw, active, "rerun") == rerun_lease
    assert score(raw, active, "ghost") is None


# -- a worker cut off from Redis (a stall, a lost reply) keeps what it runs -----------------


@pytest.mark.parametrize("max_retries, recovered_to", [(3, "pending"), (0, "dead")])
def test_a_renewal_after_recovery_takes_the_task_back_if_nobody_started_it(
        broker, raw, max_retries, recovered_to):
    put(broker, "t1", max_retries=max_retries)
    claim(broker)
    expire_lease(raw, broker, "t1")
    broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS)
    assert in_state(raw, broker, recovered_to) == ["t1"]
    assert info_of(raw, broker, "t1")["last_error"].startswith("WorkerLost")

    assert broker.renew(Q, [("t1", 1, "")], 60_000).lost == []

    info = info_of(raw, broker, "t1")
    assert in_state(raw, broker, "active") == ["t1"]
    assert (info["state"], info["attempts"], info.get("last_error")) == ("active", 1, None)
    assert "lost" not in info
    assert errors_of(raw, broker, "t1") == []
    assert claim(broker, [Ack("t1", 1, "done", result="1", result_ttl_ms=60_000)],
                 limit=0).ignored == []
    assert in_state(raw, broker, "completed") == ["t1"]


@pytest.mark.parametrize("max_retries, recovered_to", [(3, "pending"), (0, "dead")])
def test_a_late_outcome_counts_if_no_later_attempt_started(broker, raw, max_retries,
                                                           recovered_to):
    put(broker, "t1", max_retries=max_retries)
    claim(broker)
    expire_lease(raw, broker, "t1")
    broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS)
    assert in_state(raw, broker, recovered_to) == ["t1"]

    result = claim(broker, [Ack("t1", 1, "done", result="7", result_ttl_ms=60_000)], limit=0)

    assert result.ignored == []
    assert in_state(raw, broker, "completed") == ["t1"]
    info = info_of(raw, broker, "t1")
    assert (info["state"], info["attempts"], info.get("last_error")) == ("completed", 1, None)
    assert errors_of(raw, broker, "t1") == []
    assert nonzero_counts(broker) == {"completed": 1}


def test_a_late_outcome_is_ignored_once_another_attempt_started(broker, raw):
    put(broker, "t1")
    claim(broker)
    expire_lease(raw, broker, "t1")
    broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS)
    claim(broker, worker="w2")

    result = claim(broker, [Ack("t1", 1, "done", result="7", result_ttl_ms=60_000)], limit=0)

    assert result.ignored == ["t1"]
    info = info_of(raw, broker, "t1")
    assert (info["state"], info["attempts"], info["worker"]) == ("active", 2, "w2")


def in_state(raw, broker, state: str) -> list[str]:
    return members(raw, getattr(broker.queue_keys(Q), state))


def nonzero_counts(broker) -> dict[str, int]:
    return {state: n for state, n in broker.counts(Q).items() if n}


def _tracked_claim(broker, seq, known, acks=(), limit=10, worker="w1"):
    return broker.claim(Q, worker, list(acks), limit, LEASE_MS, DEAD_MAX, DEAD_AGE_MS,
                        claim_seq=seq, known_seq=known)


def test_a_claim_whose_reply_was_lost_is_undone_by_the_next_call(broker, raw):
    for task_id in ("a", "b", "c"):
        put(broker, task_id, max_retries=0)
    _tracked_claim(broker, 1, 0, limit=2)  # Redis ran it; the reply never arrived

    again = _tracked_claim(broker, 2, 0, limit=3)  # the worker knows only of call 0

    assert [(c.id, c.attempt) for c in again.claimed] == [("a", 1), ("b", 1), ("c", 1)]
    assert all(info_of(raw, broker, i)["attempts"] == 1 for i in "abc")
    assert errors_of(raw, broker, "a") == []


def test_a_lost_claim_goes_back_to_the_head_uncounted(broker, raw):
    for task_id in ("a", "b", "c"):
        put(broker, task_id, max_retries=0)
    _tracked_claim(broker, 1, 0, limit=2)

    assert _tracked_claim(broker, 2, 0, limit=0).claimed == []  # e.g. no free thread now

    assert in_state(raw, broker, "pending") == ["a", "b", "c"]
    put_back = info_of(raw, broker, "a")
    assert (put_back["state"], put_back["attempts"]) == ("pending", 0)
    assert "worker" not in put_back and "started_at" not in put_back
    assert claimed_ids(claim(broker, worker="w2", limit=1)) == ["a"]  # order kept


def test_a_received_claim_is_not_undone(broker, raw):
    for task_id in ("a", "b"):
        put(broker, task_id)
    _tracked_claim(broker, 1, 0, limit=1)

    assert claimed_ids(_tracked_claim(broker, 2, 1, limit=1)) == ["b"]

    assert in_state(raw, broker, "active") == ["a", "b"]
    # a resent call (same numbers, its reply lost too) undoes only its own first run
    assert claimed_ids(_tracked_claim(broker, 2, 1, limit=1)) == ["b"]
    assert info_of(raw, broker, "b")["attempts"] == 1
    assert raw.hexists(broker.queue_keys(Q).claims, "w1")
    _tracked_claim(broker, 3, 2, limit=0)
    assert not raw.hexists(broker.queue_keys(Q).claims, "w1")  # nothing left to undo


def test_a_lost_claim_whose_tasks_were_acked_meanwhile_is_left_alone(broker, raw):
    put(broker, "a")
    _tracked_claim(broker, 1, 0, limit=1)
    # another party finished it meanwhile (e.g. an operator deleted it)
    claim(broker, [Ack("a", 1, "done", result="", result_ttl_ms=None)], limit=0)
    assert _tracked_claim(broker, 2, 0, limit=1).claimed == []
    assert nonzero_counts(broker) == {}


def test_recovery_waits_a_lease_after_nobody_swept(broker, raw):
    put(broker, "t1")
    claim(broker)
    expire_lease(raw, broker, "t1")

    first = broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS, lease_ms=60_000)
    assert first.moved == [] and first.killed == []
    assert first.next_ms >= first.now_ms + 59_000  # it says when to look again
    assert in_state(raw, broker, "active") == ["t1"]

    raw.set(broker.queue_keys(Q).swept, redis_ms(raw) - 1, px=30_000)  # grace is over
    assert broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS, lease_ms=60_000).moved == ["t1"]


def test_a_released_worker_forgets_its_claims(broker, raw):
    put(broker, "a")
    _tracked_claim(broker, 1, 0, limit=1)
    back, dead, _ = broker.release_worker(Q, "w1", "WorkerLost: gone", DEAD_MAX,
                                          DEAD_AGE_MS)
    assert back == ["a"] and dead == []
    assert not raw.hexists(broker.queue_keys(Q).claims, "w1")


# -- requeue (run now) and delete ---------------------------------------------------------


def make_states(broker, raw) -> None:
    """One task in each state: pending, waiting, active, scheduled, retry, dead, completed.
    The waiting one waits for the token of a rate limit of 1/h that "first" took."""
    hourly = json.dumps([["hourly", 0, 1, 3_600_000]])
    for task_id in ("active", "retry", "dead", "completed"):
        put(broker, task_id)
    put(broker, "first", limits=hourly)
    claim(broker)
    claim(broker, [Ack("retry", 1, "retry", delay_ms=60_000, error="E"),
                   Ack("dead", 1, "dead", error="E"),
                   Ack("completed", 1, "done", result="1", result_ttl_ms=60_000),
                   Ack("first", 1, "done")], limit=0)
    put(broker, "waiting", limits=hourly)
    assert claim(broker).claimed == []
    put(broker, "pending")
    put(broker, "scheduled", delay_ms=60_000)
    for state in ("pending", "waiting", "active", "scheduled", "retry", "dead", "completed"):
        assert state_sets(raw, broker, state) == [state]


def test_requeue_runs_scheduled_retry_and_dead_now(broker, raw):
    make_states(broker, raw)
    moved = broker.requeue(Q, ["scheduled", "retry", "dead"])
    assert sorted(moved) == ["dead", "retry", "scheduled"]
    for task_id in moved:
        assert state_sets(raw, broker, task_id) == ["pending"]
        assert info_of(raw, broker, task_id)["state"] == "pending"
    # the dead task kept its attempt count: its next claim is attempt 2
    attempts = {c.id: c.attempt for c in claim(broker).claimed}
    assert attempts == {"pending": 1, "scheduled": 1, "retry": 2, "dead": 2}


def test_requeue_refuses_pending_waiting_active_completed_and_unknown(broker, raw):
    make_states(broker, raw)
    before = snapshot(raw)
    assert broker.requeue(Q, ["pending", "waiting", "active", "completed", "ghost"]) == []
    assert snapshot(raw) == before
    assert broker.requeue(Q, []) == []


def test_delete_removes_any_state_but_active(broker, raw):
    make_states(broker, raw)
    targets = ["pending", "waiting", "scheduled", "retry", "dead", "completed"]
    deleted, refused = broker.delete(Q, [*targets, "active", "ghost"])

    assert sorted(deleted) == sorted(targets)
    assert refused == ["active"]
    for task_id in targets:
        assert traces(raw, broker, task_id) == NO_TRACE
    assert raw.zcard(broker.queue_keys(Q).lwait) == 0  # nor among its limit's waiters
    assert state_sets(raw, broker, "active") == ["active"]
    assert info_of(raw, broker, "active")["state"] == "active"
    assert broker.counts(Q)["active"] == 1


# -- uniqueness ---------------------------------------------------------------------------


def ack_first(broker, outcome: str) -> None:
    [task] = claim(broker).claimed
    claim(broker, [Ack(task.id, task.attempt, outcome, error="E")], limit=0)


def test_unique_lock_refuses_duplicate_naming_holder():
    first = unique_job.enqueue("k")
    with pytest.raises(TaskAlreadyExists) as caught:
        unique_job.enqueue("k")
    assert caught.value.holder_id == first.id
    assert first.id in str(caught.value)
    unique_job.enqueue("other-key")  # other arguments, other lock


@pytest.mark.parametrize("outcome", ["done", "dead"])
def test_unique_lock_released_when_task_finishes(broker, outcome):
    unique_job.enqueue("k")
    ack_first(broker, outcome)
    assert unique_job.enqueue("k").state == "pending"


def test_unique_lock_held_during_retry(broker):
    first = unique_job.enqueue("k")
    ack_first(broker, "retry")
    with pytest.raises(TaskAlreadyExists) as caught:
        unique_job.enqueue("k")
    assert caught.value.holder_id == first.id


def test_unique_lock_expires_after_its_ttl(broker, raw):
    short_unique_job.enqueue("k")
    with pytest.raises(TaskAlreadyExists):
        short_unique_job.enqueue("k")
    time.sleep(0.35)
    second = short_unique_job.enqueue("k")
    assert second.state == "pending"
    assert raw.hget(broker.queue_keys(Q).unique, second_lock(raw, broker)) == second.id.encode()


def second_lock(raw, broker) -> bytes:
    [lock] = raw.hkeys(broker.queue_keys(Q).unique)
    return lock


def test_clean_removes_expired_locks(broker, raw):
    short_unique_job.enqueue("k")
    unique_job.enqueue("k")
    keys = broker.queue_keys(Q)
    assert raw.hlen(keys.unique) == 2
    time.sleep(0.35)
    assert broker.clean(Q, DEAD_MAX, DEAD_AGE_MS)[:4] == (0, 0, 1, False)
    assert raw.hlen(keys.unique) == 1
    assert raw.zcard(keys.unique_exp) == 1


def test_task_id_duplicate_refused(raw, broker):
    first = unique_job.using(task_id="welcome-42", unique_for=None).enqueue("a")
    assert first.id == "welcome-42"
    with pytest.raises(TaskAlreadyExists) as caught:
        unique_job.using(task_id="welcome-42", unique_for=None).enqueue("b")
    assert caught.value.holder_id == "welcome-42"
    assert json.loads(raw.hget(broker.queue_keys(Q).msg, "welcome-42"))["args"] == ["a"]


# -- corrupt data -------------------------------------------------------------------------


def test_claim_returns_garbage_message_bytes_and_worker_dead_letters_it(broker, raw):
    garbage = b"\xff\x00not json at all\x80"
    put(broker, "t1")
    raw.hset(broker.queue_keys(Q).msg, "t1", garbage)

    [task] = claim(broker).claimed
    assert (task.id, task.raw_message, task.attempt) == ("t1", garbage, 1)

    ack = TaskExecutor("w1").decode(task)
    assert isinstance(ack, Ack) and ack.outcome == "dead"
    claim(broker, [ack], limit=0)
    info = get_task_info("t1")
    assert info.state == "dead"
    assert "InvalidTaskMessage" in info.last_error
    assert info.message_error


def test_claim_sends_a_task_with_no_message_dead_at_once(broker, raw):
    put(broker, "t1")
    raw.hdel(broker.queue_keys(Q).msg, "t1")
    result = claim(broker)
    error = "InvalidTaskMessage: the task's message is missing from Redis"
    assert (result.claimed, result.killed) == ([], [("t1", error)])
    assert state_sets(raw, broker, "t1") == ["dead"]
    assert get_task_info("t1").last_error == error


@pytest.mark.parametrize("garbage", [b"not json {", b"\xff\xfe", b"[1, 2]", b"null", b"42",
                                     b'"text"', b'{"attempts": "many", "priority": "x"}'])
def test_garbage_info_does_not_break_the_scripts(broker, raw, garbage):
    keys = broker.queue_keys(Q)
    for task_id in ("a", "b", "c", "d"):
        put(broker, task_id)
    raw.hset(keys.info, "a", garbage)

    result = claim(broker, limit=1)
    assert result.claimed == [] and [i for i, _ in result.killed] == ["a"]
    assert result.killed[0][1].startswith("InvalidTaskRecord: the task's record in Redis ")
    assert info_of(raw, broker, "a")["state"] == "dead"  # rewritten as JSON, saying why

    # every other script survives a garbage record too
    for task_id in ("c", "d"):
        raw.hset(keys.info, task_id, garbage)
    assert claimed_ids(claim(broker, limit=1)) == ["b"]
    raw.hset(keys.info, "b", garbage)
    expire_lease(raw, broker, "b")
    recovered = broker.recover_expired(Q, DEAD_MAX, DEAD_AGE_MS)
    assert recovered.moved + recovered.killed == ["b"]
    assert broker.renew(Q, [("c", 1, "")], 1_000).lost == ["c"]
    assert broker.requeue(Q, ["c"]) == []
    assert broker.delete(Q, ["c"]) == (["c"], [])
    assert broker.forward_due(Q).moved == 0
    broker.clean(Q, DEAD_MAX, DEAD_AGE_MS)
    assert [i for i, _ in claim(broker, limit=10).killed] == ["d"]  # not run on guesses
    assert info_of(raw, broker, "d")["state"] == "dead"


def test_task_info_survives_wrongly_typed_info_fields(broker, raw):
    put(broker, "t1")
    raw.hset(broker.queue_keys(Q).info, "t1", b'{"state": "pending", "priority": "x", '
                                               b'"attempts": "many"}')
    info = get_task_info("t1")
    assert (info.id, info.state) == ("t1", "pending")


# -- waiting and reading ------------------------------------------------------------------


def test_wait_for_work_wakes_when_a_task_is_enqueued(broker):
    def enqueue_later() -> None:
        time.sleep(0.2)
        put(get_broker(), "t1", queue="mail")

    thread = threading.Thread(target=enqueue_later)
    started = time.monotonic()
    thread.start()
    try:
        woke = broker.wait_for_work(["default", "mail"], timeout=5)
    finally:
        thread.join()
    elapsed = time.monotonic() - started
    assert woke == "mail"
    assert 0.15 <= elapsed < 4


def test_wait_for_work_times_out(broker):
    started = time.monotonic()
    assert broker.wait_for_work(["default", "mail"], timeout=0.3) is None
    assert 0.25 <= time.monotonic() - started < 2


def test_read_task_finds_the_queue_and_counts(broker):
    put(broker, "m1", queue="mail")
    put(broker, "d1")
    put(broker, "d2", delay_ms=60_000)

    record = broker.read_task("m1")
    assert (record.queue, record.id) == ("mail", "m1")
    assert record.raw_message == message("m1", "mail").encode()
    assert broker.read_task("m1", queues=["default"]) is None
    assert broker.read_task("ghost") is None
    assert broker.known_queues() == ["default", "mail"]
    assert broker.counts("default") == {"pending": 1, "waiting": 0, "active": 0,
                                        "scheduled": 1, "retry": 0, "dead": 0,
                                        "completed": 0, "cancelled": 0, "expired": 0,
                                        "blocked": 0}
    info = get_task_info("d2")
    assert info.state == "scheduled"
    assert info.run_after > datetime.now(UTC)
