"""django_bgtasks.testing, capture side: what enqueue records instead of writing to Redis,
and the assertions on it (run_captured() is test_testing_runner's subject)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from unittest import mock

import django
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction

from django_bgtasks import MessageTooLarge, background_task, signals
from django_bgtasks.checks import check_capture, check_settings
from django_bgtasks.ops.settings import settings_report
from django_bgtasks.testing import (
    assert_enqueued,
    assert_not_enqueued,
    capture_tasks,
    captured,
    clear_captured,
    enqueued_count,
)


@background_task
def notify(user_id: int, text: str = "") -> str:
    return f"{user_id}:{text}"


RAN: list[int] = []


@background_task
def remember(value: int) -> None:
    RAN.append(value)


@background_task(queue_name="mail", priority=5)
def mail(address: str) -> None: ...


def bgtasks(settings, **values) -> None:
    settings.BGTASKS = {**settings.BGTASKS, **values}


def test_enqueue_is_recorded_not_written(raw):
    with capture_tasks() as capture:
        info = notify.enqueue(1, text="hi")
    assert info.state == "pending" and info.name == notify.name
    [record] = capture.tasks
    assert (record.name, record.args, record.kwargs, record.id) == (notify.name, [1],
                                                                     {"text": "hi"}, info.id)
    assert record.task is notify and record.info == info
    assert raw.dbsize() == 0


def test_aenqueue_is_recorded_not_written(raw):
    async def enqueue_both():
        one = await notify.aenqueue(1, text="async")
        [two] = await notify.aenqueue_many([((2,), {})])
        return one, two

    with capture_tasks() as capture:
        one, two = asyncio.run(enqueue_both())
    assert [(r.args, r.kwargs, r.id) for r in capture.tasks] == [
        ([1], {"text": "async"}, one.id), ([2], {}, two.id)]
    assert raw.dbsize() == 0


def test_options_of_using_copies_are_recorded(raw):
    due = datetime(2030, 1, 1, tzinfo=UTC)
    with capture_tasks() as capture:
        mail.using(queue_name="urgent", priority=-3, task_id="m-1").enqueue("a@x")
        mail.using(run_after=due).enqueue("b@x")
        later = mail.using(run_after=timedelta(hours=1)).enqueue("c@x")
    first, second, third = capture.tasks
    assert (first.queue_name, first.priority, first.task_id, first.id) == ("urgent", -3, "m-1",
                                                                           "m-1")
    assert (second.queue_name, second.priority, second.run_after) == ("mail", 5, due)
    assert second.info.state == "scheduled" and later.state == "scheduled"
    assert timedelta(minutes=59) < third.run_after - datetime.now(UTC) <= timedelta(hours=1)
    assert raw.dbsize() == 0


def test_enqueue_many_is_recorded_in_order():
    with capture_tasks() as capture:
        infos = notify.enqueue_many([([1], {}), ([2], {"text": "b"})])
    assert [r.args for r in capture] == [[1], [2]]
    assert [r.id for r in capture] == [i.id for i in infos]


def test_arguments_go_through_json_and_are_still_validated():
    with capture_tasks() as capture:
        notify.enqueue((1, 2), text=("a",))
        with pytest.raises(TypeError, match="argument 0"):
            notify.enqueue({1, 2})
    assert [(r.args, r.kwargs) for r in capture] == [([[1, 2]], {"text": ["a"]})]


def test_message_size_limit_applies(settings):
    bgtasks(settings, MAX_MESSAGE_BYTES=500)
    with capture_tasks() as capture:
        with pytest.raises(MessageTooLarge):
            notify.enqueue(1, text="x" * 600)
        with pytest.raises(MessageTooLarge):
            notify.enqueue_many([([1], {}), ([2], {"text": "x" * 600})])
    assert capture.tasks == []


def test_capture_wins_over_eager(settings, raw):
    bgtasks(settings, EAGER=True)
    RAN.clear()
    with capture_tasks() as capture:
        info = remember.enqueue(7)
    assert info.state == "pending" and RAN == [] and len(capture) == 1
    assert raw.dbsize() == 0


def test_the_setting_captures_outside_any_block(settings, raw):
    bgtasks(settings, CAPTURE=True)
    clear_captured()
    notify.enqueue(3)
    assert enqueued_count(notify) == 1
    assert raw.dbsize() == 0
    clear_captured()
    assert captured() == []


def test_no_capture_active_is_an_error():
    with pytest.raises(RuntimeError, match="no task capture is active"):
        captured()


def test_nested_blocks_record_in_the_innermost():
    with capture_tasks() as outer:
        notify.enqueue(1)
        with capture_tasks() as inner:
            notify.enqueue(2)
        notify.enqueue(3)
    assert [r.args for r in outer] == [[1], [3]]
    assert [r.args for r in inner] == [[2]]


def test_other_threads_enqueue_into_the_capture():
    with capture_tasks() as capture:
        thread = threading.Thread(target=notify.enqueue, args=(9,))
        thread.start()
        thread.join(10)
    assert [r.args for r in capture] == [[9]]


def test_task_enqueued_is_sent():
    seen = []

    def receiver(sender, task_info, **kwargs):
        seen.append(task_info.id)

    signals.task_enqueued.connect(receiver)
    try:
        with capture_tasks():
            info = notify.enqueue(1)
    finally:
        signals.task_enqueued.disconnect(receiver)
    assert seen == [info.id]


# -- transactions: as the real enqueue ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_in_a_transaction_it_is_recorded_at_commit_and_dropped_on_rollback():
    with capture_tasks() as capture:
        with transaction.atomic():
            notify.enqueue(1)
            assert capture.tasks == []
        assert [r.args for r in capture] == [[1]]
        with pytest.raises(RuntimeError), transaction.atomic():
            notify.enqueue(2)
            raise RuntimeError("rolled back")
    assert [r.args for r in capture] == [[1]]


@pytest.mark.django_db
def test_a_test_cases_own_transaction_does_not_defer_it(django_capture_on_commit_callbacks):
    with capture_tasks() as capture:
        notify.enqueue(1)  # only the test's wrapping transaction is open: at once
        assert [r.args for r in capture] == [[1]]
        with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
            notify.enqueue(2)
            assert len(capture) == 1
    assert [r.args for r in capture] == [[1], [2]]


@pytest.mark.django_db(transaction=True)
def test_without_enqueue_on_commit_it_is_recorded_at_once(settings):
    bgtasks(settings, ENQUEUE_ON_COMMIT=False)
    with capture_tasks() as capture, transaction.atomic():
        notify.enqueue(1)
        assert len(capture) == 1


# -- assertions -----------------------------------------------------------------------------


def test_assert_enqueued_finds_and_returns_the_record():
    with capture_tasks() as capture:
        notify.enqueue(1, text="a")
        notify.enqueue(2, text="b")
        assert assert_enqueued(notify, 2, text="b").args == [2]  # the active capture
        assert enqueued_count(notify) == 2 and enqueued_count() == 2
    record = capture.assert_enqueued(notify.name, mock.ANY, text="a")  # that capture
    assert record.args == [1]
    assert capture.count(notify) == 2 and capture.count() == 2
    assert capture.captured(mail) == []


def test_a_task_argument_may_be_called_task():
    with capture_tasks() as capture:
        notify.enqueue(1, text="t")
        with pytest.raises(AssertionError, match="keyword 'task': expected 2, not passed"):
            assert_enqueued(notify, 1, text="t", task=2)
    capture.assert_not_enqueued(mail)


def test_assert_enqueued_compares_tuples_as_lists():
    with capture_tasks():
        notify.enqueue((1, 2))
        assert_enqueued(notify, (1, 2))


def test_assert_enqueued_explains_the_closest_mismatch():
    with capture_tasks():
        notify.enqueue(1, text="hello")
        notify.enqueue(2, text="hi", )
        mail.enqueue("a@x")
        with pytest.raises(AssertionError) as failure:
            assert_enqueued(notify, 2, text="hey")
    message = str(failure.value)
    assert f"{notify.name}(2, text='hey') was not enqueued. Captured for {notify.name} (2)" \
        in message
    assert f"#1 {notify.name}(1, text='hello')  [queue 'default', priority 0]" in message
    assert "Closest: #2:\n  - keyword 'text': expected 'hey', got 'hi'" in message
    assert "mail" not in message.split("Closest")[1]


def test_assert_enqueued_when_the_task_never_was():
    with capture_tasks():
        mail.enqueue("a@x")
        with pytest.raises(AssertionError, match=rf"no run of {notify.name} was captured "
                                                 rf"\(captured: {mail.name} x1\)"):
            assert_enqueued(notify, 1)


def test_assert_not_enqueued():
    with capture_tasks():
        assert_not_enqueued(notify)
        notify.enqueue(5)
        with pytest.raises(AssertionError, match=r"enqueued 1 time\(s\), expected none:\n"
                                                 r"  #1 .*notify\(5\)"):
            assert_not_enqueued(notify)


# -- the setting: checks, report, runbackground --------------------------------------------


def test_capture_must_be_a_bool_and_is_flagged_for_deploy(settings):
    bgtasks(settings, CAPTURE="yes")
    assert [e.id for e in check_settings()] == ["bgtasks.E009"]
    bgtasks(settings, CAPTURE=True)
    assert check_settings() == []
    assert [w.id for w in check_capture()] == ["bgtasks.W005"]
    bgtasks(settings, CAPTURE=False)
    assert check_capture() == []


def test_capture_is_in_the_settings_report(settings):
    bgtasks(settings, CAPTURE=True)
    rows = {row.name: row for row in settings_report()}
    assert (rows["CAPTURE"].value, rows["CAPTURE"].is_default) == (True, False)


def test_runbackground_refuses_to_run_with_capture_on(settings):
    bgtasks(settings, CAPTURE=True)
    with pytest.raises(CommandError, match="CAPTURE"):
        call_command("runbackground", "--processes", "1")


# -- Django's Tasks framework ----------------------------------------------------------------


@pytest.mark.skipif(django.VERSION < (6, 0), reason="django.tasks is Django 6.0+")
def test_django_tasks_are_captured(raw):
    from demo.django_tasks import add

    with capture_tasks() as capture:
        result = add.enqueue(2, 3)
    record = capture.assert_enqueued(add, 2, 3)
    assert record.id == result.id and record.name == "django:demo.django_tasks.add"
    assert len(capture) == 1 and raw.dbsize() == 0
