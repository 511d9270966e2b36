"""Group commit (broker/group_commit.py): concurrent aenqueue calls of one event loop go
to Redis together, each caller still getting its own outcome, against a real Redis (a
cluster too). Script calls are counted by the queue's Redis (INFO commandstats)."""

from __future__ import annotations

import asyncio
import time

import pytest

from django_bgtasks import EnqueueError, TaskAlreadyExists, background_task, get_task_info
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.aio import aclose_brokers
from django_bgtasks.broker.packing import ENQUEUE_BATCH


@background_task
def double(x):
    return x * 2


@background_task(unique_for=60)
def unique_double(x):
    return x * 2


def run(coroutine_function, *args):
    """Run ``coroutine_function(*args)`` on a new loop, closing its brokers before it ends."""
    async def main():
        try:
            return await coroutine_function(*args)
        finally:
            await aclose_brokers()

    return asyncio.run(main())


def on_queue_node(raw, queue: str = "default") -> dict:
    """Where a server command must go to reach ``queue``'s Redis (a cluster: its master)."""
    if hasattr(raw, "get_node_from_key"):
        return {"target_nodes": raw.get_node_from_key(get_broker().queue_keys(queue).pending)}
    return {}


def script_calls(raw, queue: str = "default") -> int:
    """Script calls (EVAL, EVALSHA) the queue's Redis has run so far."""
    stats = raw.info("commandstats", **on_queue_node(raw, queue))
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))


def pending_ids(raw, queue: str = "default") -> set[str]:
    return {i.decode() for i in raw.zrange(get_broker().queue_keys(queue).pending, 0, -1)}


async def warm_then(burst):
    """Make the loop's client (and load the script) first: ``burst`` then finds them."""
    await double.aenqueue(-1)
    return await burst()


def test_a_burst_of_concurrent_calls_shares_script_calls_each_caller_its_own_info(raw):
    async def burst():
        return await asyncio.gather(*(double.aenqueue(i) for i in range(200)))

    before = script_calls(raw)
    infos = run(warm_then, burst)
    calls = script_calls(raw) - before

    assert [info.args for info in infos] == [[i] for i in range(200)]
    assert len({info.id for info in infos}) == 200
    assert {info.id for info in infos} <= pending_ids(raw)
    assert [get_task_info(infos[i].id).args for i in (0, 99, 199)] == [[0], [99], [199]]
    assert calls <= 10, f"{calls} script calls for 201 tasks: not coalesced"


def test_a_batch_holds_at_most_enqueue_batch_tasks(raw):
    count = 2 * ENQUEUE_BATCH + 500

    async def burst():
        return await asyncio.gather(*(double.aenqueue(i) for i in range(count)))

    before = script_calls(raw)
    infos = run(warm_then, burst)
    calls = script_calls(raw) - before

    assert len(pending_ids(raw)) == count + 1
    assert [info.args for info in infos] == [[i] for i in range(count)]
    assert 3 <= calls <= 12  # at least ceil(count / ENQUEUE_BATCH), yet coalesced


def test_a_duplicate_task_id_in_a_burst_is_refused_for_exactly_one_caller(raw):
    async def burst():
        twice = {5: "first", 12: "second"}
        calls = [double.using(task_id="twice").aenqueue(twice[i]) if i in twice
                 else double.aenqueue(i) for i in range(20)]
        return await asyncio.gather(*calls, return_exceptions=True)

    before = script_calls(raw)
    results = run(warm_then, burst)

    assert script_calls(raw) - before <= 4  # both in one script call
    refused = [r for r in results if isinstance(r, BaseException)]
    assert [type(r) for r in refused] == [TaskAlreadyExists]
    assert results[12] is refused[0] and refused[0].holder_id == "twice"
    assert results[5].id == "twice" and get_task_info("twice").args == ["first"]
    assert len(pending_ids(raw)) == 20  # the warm-up's, 18 others and "twice"


def test_a_held_uniqueness_lock_in_a_burst_is_refused_for_exactly_one_caller(raw):
    async def burst():
        return await asyncio.gather(unique_double.aenqueue("k"), double.aenqueue(1),
                                    unique_double.aenqueue("k"), return_exceptions=True)

    first, other, second = run(warm_then, burst)

    assert (first.state, other.state) == ("pending", "pending")
    assert isinstance(second, TaskAlreadyExists) and second.holder_id == first.id


def test_a_failing_write_fails_every_caller_of_the_batch_and_reports_nothing(raw):
    async def burst():
        await double.aenqueue(-1)  # the client and the script, while Redis still writes
        raw.config_set("maxmemory", 1)  # every write refused (OOM): not a "not now"
        return await asyncio.gather(*(double.aenqueue(i) for i in range(50)),
                                    return_exceptions=True)

    try:
        results = run(burst)
    finally:
        raw.config_set("maxmemory", 0)

    assert all(isinstance(r, EnqueueError) for r in results), results
    assert all("out of memory" in str(r) and double.name in str(r) for r in results)
    assert len({id(r) for r in results}) == 50  # each caller its own error
    assert len(pending_ids(raw)) == 1  # the warm-up's only


def test_a_cancelled_caller_does_not_lose_the_others_tasks(raw):
    async def burst():
        # Redis holds script calls for a while: each call below is sent, and waits there.
        raw.client_pause(700, all=False, **on_queue_node(raw))
        lone = asyncio.create_task(double.using(task_id="c-0").aenqueue(0))
        await asyncio.sleep(0.1)  # the lone call is at Redis
        callers = [asyncio.create_task(double.using(task_id=f"c-{i}").aenqueue(i))
                   for i in range(1, 30)]
        await asyncio.sleep(0)  # all 29 wait for the next batch
        lone.cancel()  # the call in flight, alone: the waiting batch still goes
        await asyncio.sleep(0.15)  # the batch is at Redis
        callers[6].cancel()  # c-7, inside the batch in flight
        return await asyncio.gather(lone, *callers, return_exceptions=True)

    results = run(warm_then, burst)

    assert [type(results[i]) for i in (0, 7)] == [asyncio.CancelledError] * 2
    others = [r for i, r in enumerate(results) if i not in (0, 7)]
    assert [info.id for info in others] == [f"c-{i}" for i in range(30) if i not in (0, 7)]
    # The batch's write went on: the cancelled c-7's task was written with the others.
    assert {f"c-{i}" for i in range(1, 30)} <= pending_ids(raw)


def test_a_caller_cancelled_before_its_batch_is_sent_writes_nothing(raw):
    async def burst():
        raw.client_pause(400, all=False, **on_queue_node(raw))
        first = asyncio.create_task(double.using(task_id="in-flight").aenqueue(1))
        await asyncio.sleep(0.15)  # its call is at Redis, paused: the next ones wait
        later = [asyncio.create_task(double.using(task_id=f"w-{i}").aenqueue(i))
                 for i in range(3)]
        await asyncio.sleep(0)
        later[1].cancel()
        return await asyncio.gather(first, *later, return_exceptions=True)

    results = run(warm_then, burst)

    assert isinstance(results[2], asyncio.CancelledError)
    assert [r.id for i, r in enumerate(results) if i != 2] == ["in-flight", "w-0", "w-2"]
    assert pending_ids(raw) >= {"in-flight", "w-0", "w-2"}
    assert "w-1" not in pending_ids(raw)


def test_a_lone_call_is_not_delayed(raw):
    async def one_at_a_time():
        took = []
        for i in range(20):
            started = time.perf_counter()
            await double.aenqueue(i)
            took.append(time.perf_counter() - started)
        return sorted(took)[len(took) // 2]

    median = run(warm_then, one_at_a_time)

    assert median < 0.02  # a round trip, not a timer (generous: a shared machine)


def test_queues_are_written_independently(raw):
    other = double.using(queue_name="coalesce-other")

    async def burst():
        return await asyncio.gather(*(double.aenqueue(i) for i in range(50)),
                                    *(other.aenqueue(i) for i in range(50)))

    infos = run(warm_then, burst)

    assert {info.queue_name for info in infos[:50]} == {"default"}
    assert {info.queue_name for info in infos[50:]} == {"coalesce-other"}
    assert {info.id for info in infos[50:]} == pending_ids(raw, "coalesce-other")
    assert {info.id for info in infos[:50]} <= pending_ids(raw)


@pytest.mark.parametrize("size", [1, 7])
def test_aenqueue_many_joins_a_burst_and_keeps_its_order(raw, size):
    async def burst():
        many = double.aenqueue_many([((f"m{j}",), {}) for j in range(size)])
        return await asyncio.gather(*(double.aenqueue(i) for i in range(10)), many)

    results = run(warm_then, burst)

    assert [info.args for info in results[-1]] == [[f"m{j}"] for j in range(size)]
    assert len(pending_ids(raw)) == 11 + size
