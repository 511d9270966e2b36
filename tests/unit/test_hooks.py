"""Task headers and the hook API (BGTASKS['HOOKS'], docs/tracing.md): the producer's side
against a real Redis, the worker's side in its own TaskExecutor here."""

from __future__ import annotations

import asyncio
import json

import pytest

from demo import hooks, recording, tasks
from django_bgtasks import chain, get_task_info, group
from django_bgtasks.checks import check_settings
from django_bgtasks.message import MAX_HEADERS_BYTES, TaskMessage
from django_bgtasks.worker.execution import TaskExecutor
from helpers import counts

NOTHING = {"pending": 0, "waiting": 0, "active": 0, "scheduled": 0, "retry": 0, "dead": 0,
           "completed": 0, "cancelled": 0, "expired": 0, "blocked": 0}
# A plain message's keys, in order, as before headers existed: a message without headers
# must stay byte for byte what it was.
PLAIN_KEYS = ["id", "name", "queue", "args", "kwargs", "priority", "max_retries", "timeout",
              "result_ttl", "unique_key", "enqueued_at", "run_after", "v"]


@pytest.fixture
def use_hooks(settings):
    """use_hooks("demo.hooks.Outer", ...): BGTASKS['HOOKS'] for this test; EVENTS emptied."""
    hooks.EVENTS.clear()

    def configure(*paths: str) -> None:
        settings.BGTASKS = {**settings.BGTASKS, "HOOKS": list(paths)}

    return configure


def stored_message(raw, task_id: str, queue: str = "default") -> dict:
    return json.loads(raw.hget(f"bgtasks:{{{queue}}}:msg", task_id))


def claim_one(broker, queue: str = "default"):
    [claimed] = broker.claim(queue, "test-worker", [], 1, 30_000, 100, 3_600_000).claimed
    return claimed


# -- headers --------------------------------------------------------------------------


def test_headers_are_stored_apart_from_the_arguments_and_read_back(raw):
    info = tasks.record.using(headers={"tenant": "acme", "x-ünï": "çà"}).enqueue("h1")
    assert info.headers == {"tenant": "acme", "x-ünï": "çà"} and info.args == ["h1"]
    stored = stored_message(raw, info.id)
    # after id and name (the scripts read those at the message's start), not in args
    assert list(stored)[:2] == ["id", "name"] and list(stored)[-1] == "headers"
    assert stored["args"] == ["h1"] and stored["kwargs"] == {}
    again = get_task_info(info.id)
    assert again.headers == {"tenant": "acme", "x-ünï": "çà"} and again.args == ["h1"]


def test_a_workflow_member_takes_its_calls_headers():
    flow = chain(tasks.add.s(1, 2).using(headers={"step": "first"}), tasks.add.s(3)).enqueue()
    assert get_task_info(f"{flow.id}.0").headers == {"step": "first"}
    assert get_task_info(f"{flow.id}.1").headers == {}


def test_a_message_without_headers_is_unchanged_byte_for_byte(raw, use_hooks):
    use_hooks()  # none configured
    info = tasks.record.enqueue("plain")
    text = raw.hget("bgtasks:{default}:msg", info.id).decode()
    assert list(json.loads(text)) == PLAIN_KEYS
    assert TaskMessage.decode(text).encode() == text
    assert get_task_info(info.id).headers == {}


@pytest.mark.parametrize("headers, error, words", [
    ({"tenant": 7}, TypeError, "'tenant' has a value of type int"),
    ({3: "x"}, TypeError, "header name 3"),
    ({"": "x"}, TypeError, "header name ''"),
    ({"bad": "\ud800"}, ValueError, "'bad' holds a lone surrogate"),
    ({"small": "x", "big": "y" * MAX_HEADERS_BYTES}, ValueError, "the largest is 'big'"),
    (["tenant"], TypeError, "headers must be a mapping"),
])
def test_bad_headers_are_refused_naming_the_header(headers, error, words):
    with pytest.raises(error, match=words):
        tasks.record.using(headers=headers)


def test_a_hook_adding_a_bad_header_fails_the_enqueue_and_writes_nothing(use_hooks):
    use_hooks("demo.hooks.BadHeader")
    with pytest.raises(TypeError, match="'retries' has a value of type int"):
        tasks.record.enqueue("never")
    with pytest.raises(TypeError, match="'retries'"):
        tasks.record.enqueue_many([(["a"], {}), (["b"], {})])
    assert counts() == NOTHING


# -- the producer's hooks ----------------------------------------------------------------


def test_hooks_nest_in_order_and_add_headers_around_the_write(raw, use_hooks):
    use_hooks("demo.hooks.Outer", "demo.hooks.Inner")
    info = tasks.record.using(headers={"user": "u1"}).enqueue("nested")
    assert hooks.EVENTS == [
        ("outer", "enqueue", {"user": "u1"}),
        ("inner", "enqueue", {"user": "u1", "tenant": "acme"}),  # sees what outer added
        ("inner", "enqueued", info.id), ("outer", "enqueued", info.id),
    ]
    assert stored_message(raw, info.id)["headers"] == {"user": "u1", "tenant": "acme"}
    assert info.headers == {"user": "u1", "tenant": "acme"}


def test_every_way_to_enqueue_calls_the_hooks(raw, use_hooks):
    use_hooks("demo.hooks.Outer")
    many = tasks.record.enqueue_many([(["m1"], {}), (["m2"], {})])
    one = asyncio.run(tasks.record.aenqueue("async"))
    flow = chain(tasks.add.s(1, 2), group(tasks.add.s(3), tasks.add.s(4))).enqueue()
    members = [f"{flow.id}.{index}" for index in range(3)]
    for task_id in [*(i.id for i in many), one.id, *members]:
        info = get_task_info(task_id)
        assert info.headers == {"tenant": "acme"}, task_id
    # a batch's blocks all end after its write, the last entered first
    assert [e[2] for e in hooks.EVENTS if e[1] == "enqueued"] == [
        many[1].id, many[0].id, one.id, *members[::-1]]


def test_a_hook_raising_at_enqueue_propagates_and_nothing_is_written(use_hooks):
    use_hooks("demo.hooks.Outer", "demo.hooks.RaisesAtStart")
    with pytest.raises(RuntimeError, match="enqueue hook broken"):
        tasks.record.enqueue("never")
    assert counts() == NOTHING
    assert hooks.EVENTS[-1][:2] == ("outer", "enqueued")  # the outer block was left


def test_a_hook_raising_as_the_write_ends_is_logged_and_the_task_written(use_hooks, caplog):
    use_hooks("demo.hooks.RaisesAtEnd")
    info = tasks.record.enqueue("kept")
    assert get_task_info(info.id).state == "pending"
    assert "hook demo.hooks.RaisesAtEnd raised as its block ended; ignored" in caplog.text


def test_a_hook_cannot_swallow_the_error_of_an_enqueue(use_hooks):
    use_hooks("demo.hooks.Swallows", "demo.hooks.BadHeader")
    with pytest.raises(TypeError, match="'retries'"):
        tasks.record.enqueue("never")
    assert counts() == NOTHING


# -- the worker's hooks ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the executor closes stale db connections
def test_attempt_hooks_see_headers_outcome_and_exception(broker, use_hooks):
    use_hooks("demo.hooks.Outer", "demo.hooks.Inner")
    tasks.headers_then_succeed.using(max_retries=1).enqueue("w1", 1)
    hooks.EVENTS.clear()
    executor = TaskExecutor("test-worker")
    first = claim_one(broker)
    ack = executor.run(first, executor.decode(first))
    assert ack.outcome == "retry"
    assert recording.headers_seen(recording.client(), "w1") == {"tenant": "acme"}
    assert hooks.EVENTS == [
        ("outer", "attempt", {"tenant": "acme"}), ("inner", "attempt", {"tenant": "acme"}),
        ("inner", "attempted", (1, "retried", "ValueError")),
        ("outer", "attempted", (1, "retried", "ValueError")),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_hook_raising_before_the_attempt_fails_it_unrun(broker, use_hooks, caplog):
    tasks.fail_then_succeed.enqueue("unrun", 0)
    use_hooks("demo.hooks.Outer", "demo.hooks.RaisesAtStart")  # the worker's settings
    executor = TaskExecutor("test-worker")
    claimed = claim_one(broker)
    ack = executor.run(claimed, executor.decode(claimed))
    assert ack.outcome == "retry"  # as a task's error: its retry policy applies
    assert ack.error.startswith("django_bgtasks.exceptions.HookError: hook "
                                "demo.hooks.RaisesAtStart raised before the attempt: "
                                "RuntimeError: attempt hook broken")
    assert recording.attempts(recording.client(), "unrun") == 0  # the task never ran
    assert hooks.EVENTS[-1] == ("outer", "attempted", (1, "retried", "HookError"))


@pytest.mark.django_db(transaction=True)
def test_a_hook_raising_after_the_attempt_is_logged_and_the_outcome_kept(broker, use_hooks,
                                                                         caplog):
    use_hooks("demo.hooks.RaisesAtEnd", "demo.hooks.Outer")
    tasks.fail_then_succeed.enqueue("done", 0)
    executor = TaskExecutor("test-worker")
    claimed = claim_one(broker)
    ack = executor.run(claimed, executor.decode(claimed))
    assert ack.outcome == "done" and "done" in recording.ran(recording.client())
    assert "hook demo.hooks.RaisesAtEnd raised as its block ended; ignored" in caplog.text
    assert hooks.EVENTS[-1] == ("outer", "attempted", (1, "succeeded", "NoneType"))


# -- the system check ----------------------------------------------------------------------


@pytest.mark.parametrize("value, words", [
    ("demo.hooks.Outer", "must be a list of dotted paths"),
    ([3], "3 is not a dotted path"),
    (["demo.hooks.Missing"], "'demo.hooks.Missing' cannot be imported"),
    (["demo.hooks.EVENTS"], "'demo.hooks.EVENTS' is not a class"),
    (["demo.hooks.NotAHook"], "has no enqueue() and attempt() methods"),
])
def test_check_e024_names_a_bad_hook(settings, value, words):
    settings.BGTASKS = {**settings.BGTASKS, "HOOKS": value}
    [error] = check_settings()
    assert error.id == "bgtasks.E024" and words in error.msg


def test_check_e024_accepts_hooks(settings):
    settings.BGTASKS = {**settings.BGTASKS, "HOOKS": [
        "demo.hooks.Outer", "django_bgtasks.contrib.opentelemetry.OpenTelemetryHook"]}
    assert check_settings() == []
