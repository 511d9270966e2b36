"""Flow control in Redis (claim.lua and the transitions that end a run): concurrency and
rate limits, per key and named, the waiting state, and fair turns between keys. Driven
through the broker as a worker drives it; test_e2e_limits runs real workers."""

from __future__ import annotations

import time

import pytest

from demo.tasks import record
from django_bgtasks import get_task_info
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.types import Ack

LEASE_MS = 60_000


def claim(queue: str, n: int, acks: list[Ack] = (), worker: str = "w1") -> list:
    return get_broker().claim(queue, worker, list(acks), n, LEASE_MS, 10_000, 10**12).claimed


def done(queue: str, claimed, worker: str = "w1", outcome: str = "done", **ack) -> list:
    """Acknowledge ``claimed`` with ``outcome`` and claim nothing."""
    return get_broker().claim(queue, worker, [Ack(c.id, c.attempt, outcome, **ack)
                                              for c in claimed], 0, LEASE_MS, 10_000, 10**12)


def states(ids: list[str]) -> list[str]:
    return [get_task_info(i).state for i in ids]


@pytest.fixture
def limited():
    return record.using(queue_name="lim", concurrency_limit=2)


# -- concurrency ----------------------------------------------------------------------------


def test_a_task_over_its_concurrency_limit_waits_and_is_charged_no_attempt(limited):
    ids = [limited.enqueue(f"t{i}").id for i in range(5)]

    claimed = claim("lim", 5)

    assert [c.id for c in claimed] == ids[:2]
    assert states(ids) == ["active", "active", "waiting", "waiting", "waiting"]
    info = get_task_info(ids[2])
    assert info.attempts == 0
    assert info.waiting_for == f"limit {record.name}: 2/2 running"
    assert info.limits == (record.name,)
    assert get_broker().counts("lim")["waiting"] == 3


def test_a_run_that_ends_wakes_the_first_waiter_in_the_same_call(limited):
    ids = [limited.enqueue(f"t{i}").id for i in range(4)]
    first = claim("lim", 4)

    # the ack frees a slot and wakes ids[2]; the same call claims it
    again = claim("lim", 4, [Ack(first[0].id, first[0].attempt, "done")])

    assert [c.id for c in again] == [ids[2]]
    assert again[0].attempt == 1
    assert states(ids[1:]) == ["active", "active", "waiting"]


@pytest.mark.parametrize("outcome, extra", [
    ("retry", {"delay_ms": 3_600_000, "error": "E: later"}),
    ("dead", {"error": "E: boom"}),
    ("requeue", {}),
])
def test_every_way_a_run_ends_gives_its_slot_back(limited, outcome, extra):
    ids = [limited.enqueue(f"t{i}").id for i in range(3)]
    first = claim("lim", 3)
    assert states(ids) == ["active", "active", "waiting"]

    done("lim", first[:1], outcome=outcome, **extra)

    assert get_task_info(ids[2]).state == "pending"  # woken
    assert [c.id for c in claim("lim", 3)] == ([ids[2]] if outcome != "requeue" else [ids[0]])


def test_a_dead_worker_process_gives_its_slots_back_at_once(limited):
    ids = [limited.enqueue(f"t{i}").id for i in range(3)]
    claim("lim", 3, worker="doomed")

    get_broker().release_worker("lim", "doomed", "WorkerLost: killed", 10_000, 10**12)

    # both runs went back to the head of pending and the waiter was woken behind them;
    # the next claim runs the two, and the third waits again
    assert states(ids) == ["pending", "pending", "pending"]
    assert sorted(c.id for c in claim("lim", 3)) == sorted(ids[:2])
    assert get_task_info(ids[2]).state == "waiting"


def test_an_expired_lease_gives_its_slot_back(limited):
    ids = [limited.enqueue(f"t{i}").id for i in range(3)]
    get_broker().claim("lim", "gone", [], 3, 200, 10_000, 10**12)  # a 0.2 s lease
    time.sleep(0.3)

    get_broker().recover_expired("lim", 10_000, 10**12)

    assert states(ids) == ["pending", "pending", "pending"]
    assert sorted(c.id for c in claim("lim", 3)) == sorted(ids[:2])


def test_the_limit_is_per_key_value():
    task = record.using(queue_name="lim", concurrency_limit=1,
                        limit_key=lambda token: token.split("-")[0])
    ids = [task.enqueue(t).id for t in ("a-1", "a-2", "b-1", "b-2")]

    claimed = claim("lim", 4)

    assert sorted(c.id for c in claimed) == sorted([ids[0], ids[2]])
    assert get_task_info(ids[1]).waiting_for == f"limit {record.name}[a]: 1/1 running"


def test_a_named_limit_is_shared_by_the_tasks_that_use_it(settings):
    from demo.tasks import record_time

    settings.BGTASKS = {**settings.BGTASKS, "LIMITS": {"stripe": {"concurrency": 2}}}
    one = record.using(queue_name="lim", limits=["stripe"])
    other = record_time.using(queue_name="lim", limits=["stripe"])
    ids = [one.enqueue("a").id, other.enqueue("b").id, one.enqueue("c").id]

    claimed = claim("lim", 3)

    assert [c.id for c in claimed] == ids[:2]
    assert get_task_info(ids[2]).waiting_for == "limit stripe: 2/2 running"


def test_an_unknown_named_limit_is_refused_at_enqueue():
    task = record.using(queue_name="lim", limits=["nope"])
    with pytest.raises(ValueError, match="'nope' is not in BGTASKS\\['LIMITS'\\]"):
        task.enqueue("x")


def test_waiters_keep_their_priority_order(limited):
    low = [limited.using(priority=-5).enqueue(f"low{i}").id for i in range(2)]
    blockers = claim("lim", 2)  # both low ones run
    assert sorted(c.id for c in blockers) == sorted(low)
    later = limited.using(priority=0).enqueue("mid").id
    urgent = limited.using(priority=9).enqueue("urgent").id
    assert claim("lim", 2) == []  # both wait

    again = claim("lim", 2, [Ack(blockers[0].id, blockers[0].attempt, "done")])

    assert [c.id for c in again] == [urgent]
    assert get_task_info(later).state == "waiting"


def test_deleting_a_waiting_task_leaves_the_other_waiters_intact(limited):
    ids = [limited.enqueue(f"t{i}").id for i in range(4)]
    first = claim("lim", 4)

    deleted, _ = get_broker().delete("lim", [ids[2]])

    assert deleted == [ids[2]]
    assert [c.id for c in claim("lim", 4, [Ack(first[0].id, first[0].attempt, "done")])] == [
        ids[3]]


def test_a_woken_task_deleted_before_its_claim_passes_the_wake_up_on(limited):
    ids = [limited.enqueue(f"t{i}").id for i in range(4)]
    first = claim("lim", 4)
    done("lim", first[:1])  # wakes ids[2]
    assert get_task_info(ids[2]).state == "pending"

    get_broker().delete("lim", [ids[2]])

    assert get_task_info(ids[3]).state == "pending"
    assert [c.id for c in claim("lim", 4)] == [ids[3]]


def test_a_queue_without_limits_claims_as_before():
    ids = [record.using(queue_name="plain").enqueue(f"t{i}").id for i in range(3)]
    assert [c.id for c in claim("plain", 3)] == ids
    assert get_broker().counts("plain")["waiting"] == 0


# -- rate -------------------------------------------------------------------------------------


def test_a_rate_limit_admits_a_burst_then_one_start_per_token():
    task = record.using(queue_name="rate", rate_limit="2/s")
    ids = [task.enqueue(f"t{i}").id for i in range(4)]

    first = claim("rate", 4)

    assert [c.id for c in first] == ids[:2]  # the bucket's burst: the rate's count
    assert get_task_info(ids[2]).waiting_for.startswith(
        f"limit {record.name}: rate 2/s, next start in ")
    # a run that ends frees no token: still waiting
    done("rate", first)
    assert states(ids[2:]) == ["waiting", "waiting"]
    # one token every 0.5 s: the poller's forward wakes the first waiter when it is due
    due = get_broker().forward_due("rate")
    assert due.next_ms is not None
    time.sleep(max(0.0, (due.next_ms - due.now_ms) / 1000) + 0.05)
    get_broker().forward_due("rate")
    assert states(ids[2:]) == ["pending", "waiting"]
    assert [c.id for c in claim("rate", 4)] == [ids[2]]


# -- fairness ---------------------------------------------------------------------------------


def test_tasks_of_different_fair_keys_are_taken_in_turn():
    task = record.using(queue_name="fair", fair_key=lambda token: token[0])
    a = [task.enqueue(f"a{i}").id for i in range(30)]
    b = [task.enqueue(f"b{i}").id for i in range(5)]

    order = [c.id for c in claim("fair", 35)]

    # one turn each while both have tasks: b's 5 all start within the first 11 (a key that
    # comes late starts right after the next in line, and a tie of places is broken by id)
    assert set(b) <= set(order[:11])
    assert [i for i in order if i in a] == a  # each key keeps its own order
    assert get_task_info(b[0]).fair_key == "b"


def test_a_key_that_comes_late_is_served_at_once():
    task = record.using(queue_name="fair", fair_key=lambda token: token[0])
    a = [task.enqueue(f"a{i}").id for i in range(20)]
    first = claim("fair", 5)  # a0..a4 start
    assert [c.id for c in first] == a[:5]
    late = [task.enqueue(f"c{i}").id for i in range(3)]

    order = [c.id for c in claim("fair", 10)]

    assert set(late) <= set(order[:7])  # a5, then c and a in turn (ties broken by id)


def test_tasks_without_a_fair_key_keep_their_fifo_place():
    """Fair keys order only the tasks that have one (a queue without fair keys pays
    nothing for the feature): a plain task runs after what was enqueued before it."""
    keyed = record.using(queue_name="fair", fair_key=lambda token: "tenant")
    plain = record.using(queue_name="fair")
    first = plain.enqueue("p-first").id
    k = [keyed.enqueue(f"k{i}").id for i in range(10)]
    p = [plain.enqueue(f"p{i}").id for i in range(3)]

    order = [c.id for c in claim("fair", 14)]

    assert order[0] == first and order[-3:] == p
    assert [i for i in order if i in k] == k


def test_priorities_come_before_fair_turns():
    task = record.using(queue_name="fair", fair_key=lambda token: token[0])
    [task.enqueue(f"a{i}").id for i in range(5)]
    urgent = task.using(priority=5).enqueue("b-urgent").id

    assert claim("fair", 1)[0].id == urgent


# -- what the admin and the command line read -------------------------------------------------


def test_the_limits_of_a_queue_read_back_with_their_waiters(limited, settings):
    settings.BGTASKS = {**settings.BGTASKS, "LIMITS": {"api": {"rate": "3/m"}}}
    ids = [limited.enqueue(f"t{i}").id for i in range(5)]
    api = record.using(queue_name="lim", limits=["api"])
    [api.enqueue(f"a{i}") for i in range(4)]
    claim("lim", 9)

    found, total = get_broker().limits("lim")

    assert total == 2
    own, named = found if found[0].id == record.name else found[::-1]
    assert (own.running, own.concurrency, own.waiting, own.rate_count) == (2, 2, 3, 0)
    assert own.next_waiter_since_ms is not None and own.tokens is None
    assert (named.id, named.running, named.rate_count, named.rate_period_ms) == (
        "api", 3, 3, 60_000)
    assert named.waiting == 1 and 0 <= named.tokens < 1
    assert get_task_info(ids[2]).state == "waiting"


def test_an_idle_limit_is_forgotten(limited):
    [limited.enqueue(f"t{i}") for i in range(2)]
    claimed = claim("lim", 2)
    done("lim", claimed)

    assert get_broker().limits("lim") == ([], 0)
