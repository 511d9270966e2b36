"""aenqueue(), aenqueue_many(), aget_result() and aget_task_info(): the async twins of
the enqueue API, on redis.asyncio, against a real Redis (each test runs its coroutine
with asyncio.run: no pytest plugin)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction
from test_redis_security import (  # its server fixtures, for the AUTH and TLS tests
    WRONG,
    acl_redis,  # noqa: F401
    requirepass_redis,  # noqa: F401
    secured,  # noqa: F401
    tls_redis,  # noqa: F401
    use_redis,
)

from demo import recording
from demo.tasks import record
from django_bgtasks import (
    EnqueueError,
    MessageTooLarge,
    TaskAlreadyExists,
    TaskNotFound,
    aget_task_info,
    background_task,
    get_task_info,
    signals,
)
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.aio import aclose_brokers, aget_broker
from django_bgtasks.broker.types import Ack
from helpers import free_port, wait_until


@background_task
def triple(x):
    return x * 3


@background_task(unique_for=60)
def once_a_minute(key):
    return key


@background_task(queue_name="async-mail", result_ttl=60)
def shout(text):
    return text.upper()


def bgtasks(settings, **values) -> None:
    settings.BGTASKS = {**settings.BGTASKS, **values}


def run(coroutine_function, *args, **kwargs):
    """Run ``coroutine_function(*args, **kwargs)`` on a new event loop, closing the
    loop's brokers before the loop ends (their connections belong to it)."""
    async def main():
        try:
            return await coroutine_function(*args, **kwargs)
        finally:
            await aclose_brokers()

    return asyncio.run(main())


def pending_ids(raw, queue: str = "default") -> list[str]:
    return [i.decode() for i in raw.zrange(get_broker().queue_keys(queue).pending, 0, -1)]


# -- the write ------------------------------------------------------------------------


def test_aenqueue_writes_the_task_enqueue_would_write(raw):
    info = run(triple.aenqueue, 7)

    assert (info.state, info.name, info.args, info.queue_name) == (
        "pending", triple.name, [7], "default")
    assert pending_ids(raw) == [info.id]
    stored = get_task_info(info.id)
    assert (stored.state, stored.args, stored.enqueued_at) == ("pending", [7], info.enqueued_at)
    message = json.loads(raw.hget(get_broker().queue_keys("default").msg, info.id))
    assert message["name"] == triple.name and message["args"] == [7]
    assert raw.sismember(get_broker().keys.queues, "default")  # listed for the admin


def test_aenqueue_with_options_and_run_after(raw):
    info = run(shout.using(priority=7, run_after=60).aenqueue, "hi")

    assert (info.state, info.priority, info.queue_name) == ("scheduled", 7, "async-mail")
    assert get_task_info(info.id).state == "scheduled"


def test_aenqueue_many_writes_every_item_in_order(raw):
    items = [((i,), {}) for i in range(1500)]  # two script calls

    infos = run(triple.aenqueue_many, items)

    assert [info.args for info in infos] == [[i] for i in range(1500)]
    assert pending_ids(raw) == [info.id for info in infos]


def test_a_real_worker_runs_a_task_aenqueue_wrote(start_worker):
    token = f"async-{uuid.uuid4().hex[:8]}"
    info = run(record.aenqueue, token)
    start_worker("--processes", "1", "--threads", "2")

    # the process's shared client: not closed here (a closed RedisCluster stays closed,
    # and every later test of this process that records would fail)
    client = recording.client()
    wait_until(lambda: token in recording.ran(client), timeout=20,
               message=f"the worker ran {token}")
    wait_until(lambda: _gone_or_done(info.id), timeout=10)


def _gone_or_done(task_id: str) -> bool:
    try:
        return get_task_info(task_id).state == "completed"
    except TaskNotFound:
        return True  # finished and not kept (no result_ttl)


# -- refusals -------------------------------------------------------------------------


def test_non_json_arguments_name_the_argument_and_write_nothing(raw):
    with pytest.raises(TypeError, match="argument 0"):
        run(triple.aenqueue, {1, 2})
    with pytest.raises(TypeError, match="'when'"):
        run(triple.aenqueue, 1, when=object())
    with pytest.raises(TypeError, match=r"item 1"):
        run(triple.aenqueue_many, [((1,), {}), ((object(),), {})])
    assert raw.dbsize() == 0


def test_a_message_over_max_message_bytes_is_refused_and_nothing_written(settings, raw):
    bgtasks(settings, MAX_MESSAGE_BYTES=1000)
    with pytest.raises(MessageTooLarge, match=triple.name):
        run(triple.aenqueue, "x" * 2000)
    with pytest.raises(MessageTooLarge, match="nothing of the batch"):
        run(triple.aenqueue_many, [(("small",), {}), (("x" * 2000,), {})])
    assert raw.dbsize() == 0


def test_a_taken_task_id_raises_task_already_exists(raw):
    first = run(triple.using(task_id="only-one").aenqueue, 1)
    received = []

    def receiver(**kwargs):
        received.append(kwargs)

    signals.task_enqueued.connect(receiver)
    try:
        with pytest.raises(TaskAlreadyExists) as caught:
            run(triple.using(task_id="only-one").aenqueue, 2)
    finally:
        signals.task_enqueued.disconnect(receiver)
    assert caught.value.holder_id == first.id == "only-one"
    assert received == []  # no signal for a refused task
    assert pending_ids(raw) == ["only-one"]


def test_a_held_uniqueness_lock_raises_task_already_exists():
    first = run(once_a_minute.aenqueue, "k")

    with pytest.raises(TaskAlreadyExists, match="unique for 60s") as caught:
        run(once_a_minute.aenqueue, "k")
    assert caught.value.holder_id == first.id


def test_a_redis_that_is_down_gives_enqueue_error_after_the_ride_out(settings):
    port = free_port()
    bgtasks(settings, REDIS_URL=f"redis://127.0.0.1:{port}/0", RETRY_FOR=1.0)

    started = time.monotonic()
    with pytest.raises(EnqueueError) as caught:
        run(triple.aenqueue, 1)
    elapsed = time.monotonic() - started

    assert 0.6 < elapsed < 8  # rode out RETRY_FOR (less its last pause), then gave up
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in str(caught.value)
    assert triple.name in str(caught.value)


# -- reads ------------------------------------------------------------------------------


def test_aget_result_returns_fresh_state(raw):
    info = run(shout.aenqueue, "hello")
    assert run(shout.aget_result, info.id).state == "pending"

    broker = get_broker()
    claimed = broker.claim("async-mail", "w1", [], 1, 30_000, 100, 10**9)
    assert [task.id for task in claimed.claimed] == [info.id]
    broker.claim("async-mail", "w1", [Ack(info.id, 1, "done", '"HELLO"', 60_000)], 0,
                 30_000, 100, 10**9)

    done = run(shout.aget_result, info.id)
    assert (done.state, done.result, done.queue_name) == ("completed", "HELLO", "async-mail")
    assert run(aget_task_info, info.id) == get_task_info(info.id)


def test_aget_task_info_of_an_unknown_task_raises_task_not_found():
    with pytest.raises(TaskNotFound, match="no task with id 'nope'"):
        run(aget_task_info, "nope")
    run(triple.aenqueue, 1)  # a queue exists now: still not found
    with pytest.raises(TaskNotFound):
        run(triple.aget_result, "nope")


# -- event loops ----------------------------------------------------------------------


def test_each_event_loop_gets_its_own_client_and_both_work(raw):
    async def enqueue_and_read(x):
        info = await triple.aenqueue(x)
        assert (await triple.aget_result(info.id)).args == [x]
        return info, await aget_broker()

    # Not closed between loops: the second must not reuse the first loop's client.
    first, first_broker = asyncio.run(enqueue_and_read(1))
    second, second_broker = run(enqueue_and_read, 2)

    assert first_broker is not second_broker
    assert pending_ids(raw) == [first.id, second.id]


def test_one_loop_shares_one_client_across_100_concurrent_calls(raw):
    async def burst():
        infos = await asyncio.gather(*(triple.aenqueue(i) for i in range(100)))
        return infos, {id(await aget_broker()) for _ in range(3)}

    infos, brokers = run(burst)

    assert len(brokers) == 1
    assert sorted(pending_ids(raw)) == sorted(info.id for info in infos)


# -- EAGER, signals, on_commit ----------------------------------------------------------


def test_eager_runs_the_task_inline_and_writes_nothing(settings, raw):
    bgtasks(settings, EAGER=True)

    info = run(triple.aenqueue, (2,))  # through JSON, as through Redis: a list

    assert (info.state, info.result, info.args) == ("completed", [2, 2, 2], [[2]])
    with pytest.raises(MessageTooLarge):
        bgtasks(settings, EAGER=True, MAX_MESSAGE_BYTES=100)
        run(triple.aenqueue, "x" * 200)
    assert raw.dbsize() == 0


def test_task_enqueued_is_sent_after_the_write(raw):
    received = []

    def receiver(sender, task_info, **kwargs):
        received.append((sender.name, task_info.id, task_info.state,
                         raw.zscore(get_broker().queue_keys("default").pending, task_info.id)))

    signals.task_enqueued.connect(receiver)
    try:
        info = run(triple.aenqueue, 5)
    finally:
        signals.task_enqueued.disconnect(receiver)
    [(name, task_id, state, score)] = received
    assert (name, task_id, state) == (triple.name, info.id, "pending")
    assert score is not None


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_of_the_waiting_sync_thread_the_write_waits_for_commit(raw):
    # Async code runs inside a transaction only through async_to_sync from sync code
    # that holds it: aenqueue waits for its commit, as enqueue() would there.
    with transaction.atomic():
        info = async_to_sync(triple.aenqueue)(1)
        assert info.state == "pending"
        assert raw.dbsize() == 0
    assert get_task_info(info.id).state == "pending"


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_drops_the_async_enqueue(raw):
    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        async_to_sync(triple.aenqueue)(1)
        raise Abort
    assert raw.dbsize() == 0


@pytest.mark.django_db(transaction=True)
def test_enqueue_on_commit_off_writes_at_once_inside_a_transaction(settings, raw):
    bgtasks(settings, ENQUEUE_ON_COMMIT=False)
    with transaction.atomic():
        info = async_to_sync(triple.aenqueue)(1)
        assert get_task_info(info.id).state == "pending"


def test_outside_any_transaction_the_write_is_immediate(raw):
    async def enqueue_then_look():
        info = await triple.aenqueue(1)
        return info, pending_ids(raw)

    info, seen = run(enqueue_then_look)
    assert seen == [info.id]


# -- AUTH and TLS -----------------------------------------------------------------------
# The password and TLS servers of test_redis_security, through the async client.

@pytest.mark.single_redis(reason="its subject is a plain redis-server of its own")
def test_aenqueue_and_aget_result_through_auth_and_tls_urls(secured, settings):  # noqa: F811
    use_redis(settings, secured.url)

    info = run(triple.aenqueue, 4)

    assert run(triple.aget_result, info.id).state == "pending"
    with secured.server.client() as client:
        assert client.zscore(get_broker().queue_keys("default").pending, info.id) is not None


@pytest.mark.single_redis(reason="its subject is a plain redis-server of its own")
def test_a_wrong_password_fails_quickly_and_never_shows_it(secured, settings):  # noqa: F811
    use_redis(settings, next(iter(secured.wrong_urls.values())))

    started = time.monotonic()
    with pytest.raises(EnqueueError) as caught:
        run(triple.aenqueue, 1)

    assert time.monotonic() - started < 5
    assert f"authentication to Redis at {secured.target} failed" in str(caught.value)
    secured.assert_no_secret(str(caught.value))
    assert WRONG not in repr(caught.value.__cause__)
