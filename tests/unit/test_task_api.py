"""The public task API: @background_task, .using(), .enqueue(), .get_result(), settings."""

from __future__ import annotations

import json
import math
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction

from django_bgtasks import (
    BackgroundTask,
    EnqueueError,
    MessageTooLarge,
    TaskAlreadyExists,
    TaskInfo,
    TaskNotFound,
    background_task,
    get_task_info,
    registry,
    signals,
)
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.types import Ack
from helpers import free_port


@background_task
def double(x):
    return x * 2


@background_task(queue_name="mail", priority=5, max_retries=3, timeout=timedelta(minutes=1),
                 result_ttl=60)
def add(a, b=0):
    return a + b


@background_task
def explode(message):
    raise ValueError(message)


@background_task
def echo(*args, **kwargs):
    return [list(args), kwargs]


def bgtasks(settings, **values) -> None:
    settings.BGTASKS = {**settings.BGTASKS, **values}


def redis_ms(raw) -> int:
    seconds, micros = raw.time()
    return seconds * 1000 + micros // 1000


def stored_message(raw, task_id: str, queue: str = "default") -> dict:
    return json.loads(raw.hget(get_broker().queue_keys(queue).msg, task_id))


# -- the decorator ------------------------------------------------------------------------


def test_bare_decorator_uses_defaults():
    assert isinstance(double, BackgroundTask)
    assert (double.queue_name, double.priority, double.max_retries, double.timeout) == (
        "default", 0, 25, 1800)
    assert (double.unique_for, double.result_ttl, double.run_after, double.task_id) == (
        None, None, None, None)


def test_decorator_with_options():
    assert (add.queue_name, add.priority, add.max_retries) == ("mail", 5, 3)
    assert add.timeout == 60.0
    assert add.result_ttl == 60.0


def test_plain_call_runs_inline_and_writes_nothing(raw):
    assert double(21) == 42
    assert add(1, b=2) == 3
    with pytest.raises(ValueError, match="inline"):
        explode("inline")
    assert raw.dbsize() == 0


def test_name_is_module_and_qualname_and_registered():
    assert double.name == f"{double.func.__module__}.double"
    assert registry.lookup(double.name) is double
    assert registry.lookup(add.name) is add
    assert double.name in registry.registered_names()
    assert double.__wrapped__ is double.func


def test_decorator_rejects_bad_options():
    with pytest.raises(ValueError):
        background_task(priority=101)(lambda: None)
    with pytest.raises(ValueError):
        background_task(queue_name="a:b")(lambda: None)
    with pytest.raises(ValueError):
        background_task(max_retries=-1)(lambda: None)


# -- using() ------------------------------------------------------------------------------


def test_using_returns_a_changed_copy():
    urgent = double.using(queue_name="urgent", priority=10, run_after=timedelta(seconds=5))
    assert urgent is not double
    assert (urgent.queue_name, urgent.priority, urgent.run_after) == ("urgent", 10, 5.0)
    assert urgent.name == double.name and urgent.func is double.func
    assert (double.queue_name, double.priority, double.run_after) == ("default", 0, None)


@pytest.mark.parametrize("priority", [101, -101, 1.5, True, "1"])
def test_using_validates_priority(priority):
    with pytest.raises(ValueError, match="priority"):
        double.using(priority=priority)


@pytest.mark.parametrize("priority", [100, -100, 0])
def test_using_accepts_priority_bounds(priority):
    assert double.using(priority=priority).priority == priority


def test_using_rejects_unknown_option():
    with pytest.raises(TypeError, match="colour"):
        double.using(colour="blue")


def test_using_rejects_naive_datetime():
    with pytest.raises(ValueError, match="aware"):
        double.using(run_after=datetime(2030, 1, 1))


@pytest.mark.parametrize("value", [-1, timedelta(seconds=-1)])
def test_using_rejects_negative_run_after(value):
    with pytest.raises(ValueError):
        double.using(run_after=value)


# -- enqueue ------------------------------------------------------------------------------


def test_enqueue_returns_task_info_and_stores_the_task(raw):
    info = double.enqueue(21)

    assert isinstance(info, TaskInfo)
    assert isinstance(info.id, str) and info.id
    assert (info.state, info.name, info.queue_name, info.args) == (
        "pending", double.name, "default", [21])
    keys = get_broker().queue_keys("default")
    assert raw.zscore(keys.pending, info.id) is not None
    msg = stored_message(raw, info.id)
    assert (msg["name"], msg["args"], msg["kwargs"]) == (double.name, [21], {})


def test_enqueue_ids_are_unique():
    assert double.enqueue(1).id != double.enqueue(1).id


def test_enqueue_uses_the_tasks_options(raw):
    info = add.enqueue(1, b=2)
    keys = get_broker().queue_keys("mail")
    assert raw.zscore(keys.pending, info.id) is not None
    msg = stored_message(raw, info.id, "mail")
    assert (msg["priority"], msg["max_retries"], msg["timeout"], msg["kwargs"]) == (
        5, 3, 60.0, {"b": 2})
    assert get_broker().counts("default")["pending"] == 0


def test_enqueue_with_priority_and_task_id():
    low = double.using(priority=-1).enqueue(1)
    high = double.using(priority=9, task_id="welcome-42").enqueue(2)
    assert high.id == "welcome-42"
    claimed = get_broker().claim("default", "w", [], 10, 30_000, 100, 10**9).claimed
    assert [c.id for c in claimed] == ["welcome-42", low.id]


@pytest.mark.parametrize("run_after", [30, 30.0, timedelta(seconds=30)])
def test_run_after_relative_is_scheduled_at_now_plus_delay(raw, run_after):
    before = redis_ms(raw)
    info = double.using(run_after=run_after).enqueue(1)
    after = redis_ms(raw)

    assert info.state == "scheduled"
    due = raw.zscore(get_broker().queue_keys("default").scheduled, info.id)
    assert before + 30_000 <= due <= after + 30_000
    assert abs(info.run_after.timestamp() - time.time() - 30) < 2
    assert get_task_info(info.id).state == "scheduled"


def test_run_after_aware_datetime_is_scheduled_at_that_time(raw):
    when = datetime.now(UTC).replace(microsecond=250_000) + timedelta(hours=2)
    info = double.using(run_after=when).enqueue(1)

    assert info.state == "scheduled"
    assert info.run_after == when
    due = raw.zscore(get_broker().queue_keys("default").scheduled, info.id)
    assert due == int(when.timestamp() * 1000)


def test_run_after_in_the_past_is_pending(raw):
    info = double.using(run_after=datetime.now(UTC) - timedelta(minutes=5)).enqueue(1)
    assert info.state == "pending"
    assert raw.zscore(get_broker().queue_keys("default").pending, info.id) is not None


def test_run_after_zero_is_pending():
    assert double.using(run_after=0).enqueue(1).state == "pending"


# -- get_result ---------------------------------------------------------------------------


def test_get_result_of_pending_task():
    info = add.enqueue(2, b=3)
    fresh = add.get_result(info.id)
    assert (fresh.id, fresh.state, fresh.name, fresh.queue_name) == (
        info.id, "pending", add.name, "mail")
    assert (fresh.args, fresh.kwargs, fresh.priority, fresh.max_retries, fresh.attempts) == (
        [2], {"b": 3}, 5, 3, 0)
    assert fresh.result is None
    assert fresh.enqueued_at is not None
    # any task's get_result finds it, whatever its queue
    assert double.get_result(info.id).queue_name == "mail"


def test_get_result_of_completed_task():
    info = add.enqueue(2, b=3)
    broker = get_broker()
    [claimed] = broker.claim("mail", "w", [], 1, 30_000, 100, 10**9).claimed
    broker.claim("mail", "w", [Ack(claimed.id, 1, "done", result="5", result_ttl_ms=60_000)],
                 0, 30_000, 100, 10**9)

    done = add.get_result(info.id)
    assert (done.state, done.result, done.attempts) == ("completed", 5, 1)
    assert done.started_at is not None and done.finished_at is not None


def test_get_result_of_unknown_task():
    with pytest.raises(TaskNotFound, match="nope"):
        double.get_result("nope")
    with pytest.raises(LookupError):
        get_task_info("nope")


# -- argument validation ------------------------------------------------------------------


class Thing:
    pass


@pytest.mark.parametrize("args,kwargs,expected", [
    ((datetime(2024, 1, 1),), {}, "argument 0 is of type datetime"),
    ((1, {1, 2}), {}, "argument 1 is of type set"),
    ((), {"obj": Thing()}, "keyword argument 'obj' is of type Thing"),
    ((b"raw",), {}, "argument 0 is of type bytes"),
    ((Decimal("1.5"),), {}, "argument 0 is of type Decimal"),
    ((float("nan"),), {}, "argument 0 is nan"),
    ((), {"limit": math.inf}, "keyword argument 'limit' is inf"),
    (({1: "a"},), {}, "argument 0 has the key 1 of type int"),
    ((1, [2, {"a": [3, b"x"]}]), {}, "argument 1[1]['a'][1] is of type bytes"),
    ((), {"opts": {"when": {"at": datetime(2024, 1, 1)}}},
     "keyword argument 'opts'['when']['at'] is of type datetime"),
    (("ok", ["\ud800"]), {}, "argument 1[0] holds a lone surrogate"),
    (({"\udfff": 1},), {}, "argument 0 has the key '\\udfff', a lone surrogate"),
], ids=["datetime", "set", "object", "bytes", "decimal", "nan", "inf", "int-key", "nested",
        "nested-kwarg", "surrogate", "surrogate-key"])
def test_non_json_arguments_raise_type_error_and_write_nothing(raw, args, kwargs, expected):
    with pytest.raises(TypeError) as caught:
        echo.enqueue(*args, **kwargs)
    assert expected in str(caught.value)
    assert echo.name in str(caught.value)
    assert raw.dbsize() == 0


def test_tuples_are_accepted_as_lists(raw):
    info = echo.enqueue((1, 2), pair=(3, (4, 5)))
    msg = stored_message(raw, info.id)
    assert (msg["args"], msg["kwargs"]) == ([[1, 2]], {"pair": [3, [4, 5]]})


def test_json_arguments_round_trip(raw):
    args = [None, True, 1, -2.5, "é", [1, "a"], {"k": {"n": [None]}}]
    info = echo.enqueue(*args, key={"x": 1})
    assert get_task_info(info.id).args == args
    assert get_task_info(info.id).kwargs == {"key": {"x": 1}}


# -- EAGER --------------------------------------------------------------------------------


def test_eager_runs_inline_and_writes_nothing(settings, raw):
    bgtasks(settings, EAGER=True)
    info = add.enqueue(2, b=3)
    assert (info.state, info.result, info.attempts, info.name) == ("completed", 5, 1, add.name)
    assert isinstance(info.id, str) and info.id
    assert raw.dbsize() == 0


def test_eager_passes_arguments_through_json(settings):
    bgtasks(settings, EAGER=True)
    assert echo.enqueue((1, 2), k=(3,)).result == [[[1, 2]], {"k": [3]}]


def test_eager_propagates_exceptions(settings, raw):
    bgtasks(settings, EAGER=True)
    with pytest.raises(ValueError, match="eager boom"):
        explode.enqueue("eager boom")
    assert raw.dbsize() == 0


def test_eager_still_validates_arguments(settings, raw):
    bgtasks(settings, EAGER=True)
    with pytest.raises(TypeError, match="argument 0"):
        double.enqueue({1, 2})
    assert raw.dbsize() == 0


# -- ENQUEUE_ON_COMMIT --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_enqueue_in_atomic_waits_for_commit(raw):
    with transaction.atomic():
        info = double.enqueue(1)
        assert info.id
        assert raw.dbsize() == 0
        with pytest.raises(TaskNotFound):
            get_task_info(info.id)
    assert get_task_info(info.id).state == "pending"


@pytest.mark.django_db(transaction=True)
def test_enqueue_in_rolled_back_atomic_never_happens(raw):
    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        info = double.enqueue(1)
        raise Abort
    assert raw.dbsize() == 0
    with pytest.raises(TaskNotFound):
        get_task_info(info.id)


@pytest.mark.django_db(transaction=True)
def test_enqueue_on_commit_disabled_is_immediate(settings):
    bgtasks(settings, ENQUEUE_ON_COMMIT=False)
    with transaction.atomic():
        info = double.enqueue(1)
        assert get_task_info(info.id).state == "pending"


def test_enqueue_outside_a_transaction_is_immediate():
    info = double.enqueue(1)
    assert get_task_info(info.id).state == "pending"


# -- signals ------------------------------------------------------------------------------


def test_task_enqueued_signal(raw):
    received = []

    def receiver(sender, task_info, **kwargs):
        # sent after the task is in Redis
        received.append((sender, task_info, get_task_info(task_info.id).state))

    signals.task_enqueued.connect(receiver)
    try:
        info = double.using(run_after=60).enqueue(3)
    finally:
        signals.task_enqueued.disconnect(receiver)
    [(sender, task_info, stored_state)] = received
    assert sender.name == double.name
    assert (task_info.id, task_info.state, task_info.args) == (info.id, "scheduled", [3])
    assert stored_state == "scheduled"


def test_no_signal_when_enqueue_is_refused():
    received = []

    def receiver(**kwargs):
        received.append(kwargs)

    double.using(task_id="once").enqueue(1)
    signals.task_enqueued.connect(receiver)
    try:
        with pytest.raises(TaskAlreadyExists):
            double.using(task_id="once").enqueue(1)
    finally:
        signals.task_enqueued.disconnect(receiver)
    assert received == []


# -- Redis down, PREFIX -------------------------------------------------------------------


def test_enqueue_with_redis_down_raises_enqueue_error_quickly(settings):
    port = free_port()
    bgtasks(settings, REDIS_URL=f"redis://127.0.0.1:{port}/0")
    started = time.monotonic()
    with pytest.raises(EnqueueError) as caught:
        double.enqueue(1)
    assert time.monotonic() - started < 7
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert double.name in str(caught.value)


def test_prefix_setting_is_respected(settings, raw):
    bgtasks(settings, PREFIX="myapp")
    info = double.enqueue(1)
    keys = [k.decode() for k in raw.keys("*")]
    assert keys
    assert all(k.startswith("myapp:") for k in keys), keys
    assert get_task_info(info.id).state == "pending"

    bgtasks(settings, PREFIX="bgtasks")
    with pytest.raises(TaskNotFound):
        get_task_info(info.id)


# -- enqueue_many -------------------------------------------------------------------------


def test_enqueue_many_writes_every_item_in_order_across_batches(raw):
    items = [((i,), {"b": i}) for i in range(2_500)]  # more than one 1,000-task call
    infos = add.enqueue_many(items)
    assert [info.args for info in infos] == [[i] for i in range(2_500)]
    assert all(info.state == "pending" for info in infos)
    assert raw.zcard("bgtasks:{mail}:pending") == 2_500
    claimed = get_broker().claim("mail", "w", [], 3, 30_000, 10_000, 10**9).claimed
    assert [c.id for c in claimed] == [info.id for info in infos[:3]]  # FIFO kept


def test_enqueue_many_checks_every_item_before_writing(raw):
    with pytest.raises(TypeError, match=r"item 2\).*keyword argument 'b'"):
        add.enqueue_many([((1,), {}), ((2,), {}), ((3,), {"b": object()})])
    assert raw.dbsize() == 0
    with pytest.raises(TypeError, match="item 0 must be an"):
        add.enqueue_many([5])
    assert raw.dbsize() == 0


def test_enqueue_many_refuses_ids_and_uniqueness(raw):
    with pytest.raises(ValueError, match="task_id"):
        add.using(task_id="x").enqueue_many([((1,), {})])
    with pytest.raises(ValueError, match="unique_for"):
        add.using(unique_for=60).enqueue_many([((1,), {})])
    assert raw.dbsize() == 0


def test_enqueue_many_schedules_with_run_after(raw):
    infos = add.using(run_after=timedelta(seconds=30)).enqueue_many([((1,), {}), ((2,), {})])
    assert [info.state for info in infos] == ["scheduled", "scheduled"]
    assert raw.zcard("bgtasks:{mail}:scheduled") == 2


@pytest.mark.django_db(transaction=True)
def test_enqueue_many_in_atomic_waits_for_commit(raw):
    with transaction.atomic():
        infos = add.enqueue_many([((1,), {}), ((2,), {})])
        assert raw.zcard("bgtasks:{mail}:pending") == 0
    assert raw.zcard("bgtasks:{mail}:pending") == 2
    assert get_task_info(infos[1].id).args == [2]


def test_enqueue_many_eager_runs_each_inline(settings, raw):
    settings.BGTASKS = {**settings.BGTASKS, "EAGER": True}
    infos = add.enqueue_many([((1,), {"b": 2}), ((3,), {})])
    assert [info.result for info in infos] == [3, 3]
    assert raw.dbsize() == 0


# -- MAX_MESSAGE_BYTES --------------------------------------------------------------------


def message_bytes(task: BackgroundTask, *args, **kwargs) -> int:
    """The size the stored message of this call would have."""
    return len(task._message(list(args), kwargs).encode().encode())


def test_a_message_over_max_message_bytes_is_refused_before_anything_is_written(settings, raw):
    bgtasks(settings, MAX_MESSAGE_BYTES=1_000)
    with pytest.raises(MessageTooLarge) as caught:
        double.enqueue("x" * 2_000)
    text = str(caught.value)
    for part in (double.name, "MAX_MESSAGE_BYTES", "1,000 bytes"):
        assert part in text, text
    assert re.search(r"2,\d{3} bytes", text)  # the message's own size
    assert isinstance(caught.value, EnqueueError)
    assert raw.dbsize() == 0  # not even the queue's name


def test_max_message_bytes_counts_utf8_bytes_not_characters(settings, raw):
    bgtasks(settings, MAX_MESSAGE_BYTES=1_000)
    with pytest.raises(MessageTooLarge):
        double.enqueue("é" * 450)  # 450 characters, 900 bytes, plus the rest
    assert raw.dbsize() == 0


def test_a_message_at_the_limit_is_enqueued(settings):
    size = message_bytes(double, "x" * 500)
    bgtasks(settings, MAX_MESSAGE_BYTES=size + 30)  # its id and time may differ a little
    assert get_task_info(double.enqueue("x" * 500).id).args == ["x" * 500]


def test_max_message_bytes_defaults_to_one_mib(raw):
    with pytest.raises(MessageTooLarge, match="1,048,576 bytes"):
        double.enqueue("x" * 2**20)
    assert raw.dbsize() == 0
    double.enqueue("x" * (2**20 - 1_000))


def test_enqueue_many_refuses_the_whole_batch_for_one_message_too_large(settings, raw):
    bgtasks(settings, MAX_MESSAGE_BYTES=1_000)
    with pytest.raises(MessageTooLarge, match=r"item 2.*nothing of the batch"):
        add.enqueue_many([((1,), {}), ((2,), {}), (("x" * 2_000,), {}), ((4,), {})])
    assert raw.dbsize() == 0


@pytest.mark.django_db(transaction=True)
def test_max_message_bytes_is_checked_at_the_call_not_at_commit(settings, raw):
    bgtasks(settings, MAX_MESSAGE_BYTES=1_000)
    with transaction.atomic():
        with pytest.raises(MessageTooLarge):
            double.enqueue("x" * 2_000)
        double.enqueue("small")
    assert raw.zcard("bgtasks:{default}:pending") == 1


def test_eager_refuses_a_message_too_large_too(settings, raw):
    bgtasks(settings, MAX_MESSAGE_BYTES=1_000, EAGER=True)
    with pytest.raises(MessageTooLarge):
        double.enqueue("x" * 2_000)
    assert double.enqueue("x").result == "xx"
