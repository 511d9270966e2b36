"""Django's Tasks framework (django.tasks, Django 6.0+) on our worker: BackgroundTaskBackend.

The tasks are Django @task functions in demo.django_tasks, bound to TASKS["default"]
(testproject.settings: OPTIONS max_retries=2 with a 0.2 s backoff). End-to-end tests run
the real `manage.py runbackground`; the signal tests run the worker's TaskExecutor in this
process, so that they can listen.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import django
import pytest
from django.core.checks import run_checks

if django.VERSION < (6, 0):
    pytest.skip("django.tasks (Django's Tasks framework) needs Django 6.0 or later",
                allow_module_level=True)

from django.db import transaction  # noqa: E402
from django.tasks import TaskResultStatus, task, task_backends  # noqa: E402
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist  # noqa: E402
from django.tasks.signals import task_enqueued, task_finished, task_started  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from demo import django_tasks, recording, tasks  # noqa: E402
from django_bgtasks import MessageTooLarge, get_task_info  # noqa: E402
from django_bgtasks.backends import BackgroundTaskBackend  # noqa: E402
from django_bgtasks.broker import get_broker  # noqa: E402
from django_bgtasks.broker.types import EnqueueRequest  # noqa: E402
from django_bgtasks.conf import get_settings  # noqa: E402
from django_bgtasks.django_tasks.resolve import InvalidDjangoTask, resolve  # noqa: E402
from django_bgtasks.django_tasks.results import (  # noqa: E402
    ENDED_UNRUN,
    exception_class_path,
    task_result,
    worker_ids,
)
from django_bgtasks.info import TaskInfo  # noqa: E402
from django_bgtasks.message import TaskMessage  # noqa: E402
from django_bgtasks.worker.execution import TaskExecutor  # noqa: E402
from helpers import wait_until  # noqa: E402
from task_ends import end_unrun  # noqa: E402

needs_61 = pytest.mark.skipif(
    django.VERSION < (6, 1),
    reason="@task(max_retries=..., timeout=...) reaches the backend from Django 6.1 on")

READY, RUNNING = TaskResultStatus.READY, TaskResultStatus.RUNNING
SUCCESSFUL, FAILED = TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED


@pytest.fixture
def at_once(settings):
    """Enqueue at once, even inside a test's transaction (that never commits)."""
    settings.BGTASKS = {**settings.BGTASKS, "ENQUEUE_ON_COMMIT": False}


@pytest.fixture
def listen():
    """listen(signal) -> list of the task_results it sends, until the test ends."""
    connected = []

    def start(signal):
        received = []

        def receiver(sender, task_result, **kwargs):
            received.append((sender, task_result))

        signal.connect(receiver)
        connected.append((signal, receiver))
        return received

    yield start
    for signal, receiver in connected:
        signal.disconnect(receiver)


@pytest.fixture
def on_commit(settings):
    """TASKS["default"] with OPTIONS["enqueue_on_commit"]: enqueue() waits for the commit."""
    default = settings.TASKS["default"]
    settings.TASKS = {**settings.TASKS, "default": {
        **default, "OPTIONS": {**default["OPTIONS"], "enqueue_on_commit": True}}}


def stored_message(raw, task_id: str, queue: str = "default") -> dict:
    return json.loads(raw.hget(get_broker().queue_keys(queue).msg, task_id))


def wait_status(result, status, timeout: float = 10.0):
    """Refresh ``result`` until it has ``status``; return it."""
    def reached():
        result.refresh()
        return result.status == status
    wait_until(reached, timeout=timeout, message=f"task {result.id} {status}")
    return result


def start_one(start_worker, threads: int = 2):
    return start_worker("--processes", "1", "--threads", str(threads))


# --- the backend -------------------------------------------------------------------------


def test_the_backend_supports_defer_priority_results_and_coroutines():
    backend = task_backends["default"]
    assert isinstance(backend, BackgroundTaskBackend)
    assert backend.supports_defer and backend.supports_priority
    assert backend.supports_get_result and backend.supports_async_task
    assert backend.check() == []


def test_enqueue_stores_a_django_named_task_and_returns_a_ready_result(at_once, raw, listen):
    enqueued = listen(task_enqueued)
    result = django_tasks.add.enqueue(2, b=3)

    assert result.status == READY and not result.is_finished
    assert (result.args, result.kwargs, result.backend) == ([2], {"b": 3}, "default")
    assert result.task is django_tasks.add and result.id and isinstance(result.id, str)
    assert result.enqueued_at.tzinfo is not None and result.worker_ids == []
    stored = stored_message(raw, result.id)
    assert stored["name"] == "django:demo.django_tasks.add"
    # OPTIONS (max_retries) and the default result retention (one day)
    assert (stored["max_retries"], stored["result_ttl"], stored["timeout"]) == (2, 86400, 1800)
    assert get_task_info(result.id).state == "pending"
    [(sender, announced)] = enqueued
    assert sender is BackgroundTaskBackend and announced.id == result.id

    fresh = django_tasks.add.get_result(result.id)
    assert (fresh.id, fresh.status, fresh.args, fresh.kwargs) == (result.id, READY, [2], {"b": 3})
    assert fresh.task.func is django_tasks.add.func
    with pytest.raises(ValueError, match="not finished"):
        fresh.return_value  # noqa: B018


def test_using_sets_queue_priority_and_run_after_of_the_stored_task(at_once, raw):
    due = datetime.now(UTC) + timedelta(minutes=5)
    result = django_tasks.record.using(queue_name="mail", priority=40, run_after=due).enqueue("q")

    info = get_task_info(result.id)
    assert (info.queue_name, info.priority, info.state) == ("mail", 40, "scheduled")
    assert abs((info.run_after - due).total_seconds()) < 0.01
    fresh = task_backends["default"].get_result(result.id)
    assert fresh.status == READY
    assert (fresh.task.queue_name, fresh.task.priority) == ("mail", 40)
    assert abs((fresh.task.run_after - due).total_seconds()) < 0.01


@pytest.mark.parametrize("use_tz", [True, False])
def test_get_result_is_what_enqueue_returned(settings, use_tz):
    settings.USE_TZ = use_tz
    settings.TIME_ZONE = "America/Chicago"  # so that naive local time is not UTC
    backend = task_backends["default"]
    result = django_tasks.add.enqueue(2, b=3)
    assert result.task is django_tasks.add and result.task.run_after is None
    assert timezone.is_aware(result.enqueued_at) is use_tz
    assert abs(result.enqueued_at - timezone.now()) < timedelta(seconds=1)
    assert backend.get_result(result.id) == result

    due = timezone.now() + timedelta(minutes=5)  # naive with USE_TZ = False, as Django's
    later = django_tasks.record.using(queue_name="mail", priority=7, run_after=due).enqueue("t")
    assert later.task.run_after == due
    assert backend.get_result(later.id) == later


@pytest.mark.parametrize("state", ["cancelled", "expired"])
def test_get_result_of_a_task_ended_unrun_is_failed_saying_why(at_once, state):
    result = django_tasks.add.enqueue(2, b=3)
    end_unrun(result.id, state)
    result.refresh()
    assert result.status == FAILED and result.finished_at is not None
    why = result.errors[-1]
    assert why.traceback == ENDED_UNRUN[state]
    assert why.exception_class_path.endswith(ENDED_UNRUN[state].partition(":")[0])


def test_a_queue_outside_QUEUES_is_an_invalid_task():
    with pytest.raises(InvalidTask, match="Queue 'elsewhere' is not valid"):
        django_tasks.record.using(queue_name="elsewhere")


def test_enqueue_refuses_a_task_the_worker_could_not_find(at_once, raw):
    # A Task of a module-level function whose module attribute is the plain function:
    # the worker finds tasks by module path, and would find no Task there.
    undiscoverable = task(recording.record)
    with pytest.raises(InvalidTask, match="demo.recording.record is not a django.tasks.Task"):
        undiscoverable.enqueue("x")
    from outside_apps import record as outside

    with pytest.raises(InvalidTask, match="module outside_apps is not in an installed app"):
        outside.enqueue("x")
    assert get_broker().counts("default")["pending"] == 0


def test_enqueue_refuses_a_message_over_max_message_bytes(at_once, raw, settings):
    settings.BGTASKS = {**settings.BGTASKS, "MAX_MESSAGE_BYTES": 1_000}
    with pytest.raises(MessageTooLarge, match=r"django:demo.django_tasks.record: its message"
                                               r" is 2,\d{3} bytes.*MAX_MESSAGE_BYTES"):
        django_tasks.record.enqueue("x" * 2_000)
    assert raw.dbsize() == 0


def test_get_result_of_an_unknown_or_non_django_task_does_not_exist(at_once):
    backend = task_backends["default"]
    with pytest.raises(TaskResultDoesNotExist, match="no task with id 'ghost'"):
        backend.get_result("ghost")
    ours = tasks.record.enqueue("plain").id
    with pytest.raises(TaskResultDoesNotExist, match="demo.tasks.record, not a Django task"):
        backend.get_result(ours)


# --- transactions (OPTIONS["enqueue_on_commit"]) and EAGER -----------------------------------


@pytest.mark.django_db(transaction=True)
def test_enqueue_in_a_transaction_writes_at_once_as_djangos_backends_do(raw, listen):
    # Django's contract: users defer with transaction.on_commit; ENQUEUE_ON_COMMIT (True
    # here) is @background_task's setting, not the backend's.
    assert get_settings().ENQUEUE_ON_COMMIT
    enqueued = listen(task_enqueued)
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        result = django_tasks.add.enqueue(1, 2)
        assert django_tasks.add.get_result(result.id) == result
        assert [r.id for _, r in enqueued] == [result.id]
        1 / 0  # noqa: B018
    assert django_tasks.add.get_result(result.id).status == READY  # the rollback keeps it


@pytest.mark.django_db(transaction=True)
def test_enqueue_in_a_transaction_waits_for_the_commit(on_commit, raw, listen):
    enqueued = listen(task_enqueued)
    with transaction.atomic():
        result = django_tasks.add.enqueue(1, 2)
        assert result.status == READY and result.id
        assert raw.dbsize() == 0 and enqueued == []
        with pytest.raises(TaskResultDoesNotExist):
            django_tasks.add.get_result(result.id)
    assert django_tasks.add.get_result(result.id).status == READY
    assert [r.id for _, r in enqueued] == [result.id]  # Django's signal: at the commit


@pytest.mark.django_db(transaction=True)
def test_enqueue_in_a_rolled_back_transaction_never_happens(on_commit, raw, listen):
    enqueued = listen(task_enqueued)
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        result = django_tasks.add.enqueue(1, 2)
        1 / 0  # noqa: B018
    assert raw.dbsize() == 0 and enqueued == []
    with pytest.raises(TaskResultDoesNotExist):
        django_tasks.add.get_result(result.id)


def test_eager_runs_inline_with_context_coroutines_and_signals(settings, raw, listen):
    settings.BGTASKS = {**settings.BGTASKS, "EAGER": True}
    seen = [listen(task_enqueued), listen(task_started), listen(task_finished)]

    result = django_tasks.add.enqueue(2, 3)
    assert (result.status, result.return_value) == (SUCCESSFUL, 5)
    assert [[r.status for _, r in signal] for signal in seen] == [
        [READY], [RUNNING], [SUCCESSFUL]]
    assert django_tasks.record_async.enqueue("eager-async", 0.01).return_value == {
        "token": "eager-async", "slept": 0.01}
    assert django_tasks.attempt_with_context.enqueue("eager-ctx", 0).return_value == 1
    assert {"eager-async", "eager-ctx"} <= recording.ran(raw)
    assert raw.keys("bgtasks:*") == []  # nothing written


# --- TaskInfo -> TaskResult ----------------------------------------------------------------


def _info(state: str, attempts: int = 0, errors=(), worker: str = "", result=None):
    now = datetime.now(UTC)
    return TaskInfo(
        id="t1", name="django:demo.django_tasks.add", queue_name="default", state=state,
        args=[1, 2], kwargs={}, priority=0, attempts=attempts, max_retries=2, enqueued_at=now,
        run_after=None, started_at=now if attempts else None,
        finished_at=now if state in ("completed", "dead", "cancelled", "expired") else None,
        last_error="",
        traceback="", result=result, errors=tuple(errors), worker=worker)


@pytest.mark.parametrize(("state", "status"), [
    ("pending", READY), ("waiting", READY), ("scheduled", READY), ("retry", READY),
    ("active", RUNNING), ("completed", SUCCESSFUL), ("dead", FAILED), ("unknown", FAILED),
    ("cancelled", FAILED), ("expired", FAILED)])
def test_our_states_map_to_django_statuses(state, status):
    result = task_result(_info(state, attempts=1, worker="w1", result=3), django_tasks.add)
    assert result.status == status
    assert (result.finished_at is not None) == (state in ("completed", "dead", "cancelled",
                                                          "expired"))
    if status == SUCCESSFUL:
        assert result.return_value == 3


@pytest.mark.parametrize(("state", "path", "why"), [
    ("cancelled", "TaskCancelled", "cancelled"),
    ("expired", "django_bgtasks.exceptions.TaskExpired", "not started by its expires time")])
def test_a_cancelled_or_expired_result_is_failed_saying_why(state, path, why):
    errors = [{"attempt": 1, "error": "ValueError: boom", "traceback": "TB1", "worker": "w1"}]
    result = task_result(_info(state, 1, errors), django_tasks.add)
    assert result.status == FAILED and result.is_finished and result.attempts == 1
    first, last = result.errors
    assert first.exception_class_path == "builtins.ValueError"
    # TaskCancelled is the cancelling side's exception: a module path once it exists
    assert last.exception_class_path.endswith(path) and why in last.traceback


def test_errors_and_worker_ids_come_from_the_error_history():
    errors = [{"attempt": 1, "error": "ValueError: boom", "traceback": "TB1", "worker": "w1"},
              {"attempt": 2, "error": "WorkerLost: the lease expired", "traceback": "",
               "worker": "w2"}]
    result = task_result(_info("completed", 3, errors, worker="w3", result=5), django_tasks.add)
    assert [(e.exception_class_path, e.traceback) for e in result.errors] == [
        ("builtins.ValueError", "TB1"), ("django_bgtasks.exceptions.WorkerLost", "")]
    assert result.errors[0].exception_class is ValueError
    assert result.worker_ids == ["w1", "w2", "w3"] and result.attempts == 3
    # the history keeps the last 10 attempts: older ones show as ""
    assert worker_ids(_info("retry", 12, errors)) == [""] * 10 + ["w1", "w2"]
    assert worker_ids(_info("pending", 0)) == []


@pytest.mark.parametrize(("error", "path"), [
    ("ValueError: x", "builtins.ValueError"),
    ("demo.errors.Custom: a: b", "demo.errors.Custom"),
    ("django_bgtasks.exceptions.TaskTimeout: late", "django_bgtasks.exceptions.TaskTimeout"),
    ("InvalidTaskRecord: the task's record", "django_bgtasks.exceptions.InvalidTaskRecord"),
    ("Mystery: ?", "Mystery"),
])
def test_exception_class_path_of_a_stored_error(error, path):
    assert exception_class_path(error) == path


# --- resolving a stored name ---------------------------------------------------------------


def test_resolve_finds_a_task_bound_to_our_backend():
    assert resolve("demo.django_tasks.add") is django_tasks.add


@pytest.mark.parametrize(("path", "message"), [
    ("demo.recording.record", "demo.recording.record is not a django.tasks.Task bound to a "
                              "BackgroundTaskBackend (it is a function)"),
    ("demo.django_tasks.missing", "(it is not there: the module has no 'missing')"),
    ("outside_apps.record", "module outside_apps is not in an installed app"),
    ("os.system", "module os is not in an installed app"),
    ("demo.django_tasks.immediate_record", "its backend 'immediate' is "
                                           "django.tasks.backends.immediate.ImmediateBackend"),
    ("demo.no_such_module.f", "module demo.no_such_module is not imported in this process"),
    ("demo.tasks.no_such_module.f", "module demo.tasks.no_such_module could not be imported"),
    ("demo.django_tasks.add;rm", "is not the dotted path of a module-level task"),
    ("add", "is not the dotted path of a module-level task"),
])
def test_resolve_refuses_anything_else_with_a_clear_error(path, message):
    with pytest.raises(InvalidDjangoTask) as caught:
        resolve(path)
    assert message in str(caught.value)


def test_resolve_never_imports_a_module_the_process_has_not_imported():
    # Importing runs a module's top-level code: a name read from Redis must not pick one.
    with pytest.raises(InvalidDjangoTask, match="module demo.never_imported is not imported "
                                                "in this process"):
        resolve("demo.never_imported.record")
    assert "demo.never_imported" not in sys.modules


TASK_MODULE = """
from django.tasks import task


@task
def send(token: str) -> str:
    return token
"""


def test_resolve_imports_an_apps_tasks_module_and_its_submodules_only(tmp_path, monkeypatch,
                                                                     settings):
    app = tmp_path / "parcels"
    (app / "tasks").mkdir(parents=True)
    for path, text in (("__init__.py", ""), ("tasks/__init__.py", ""),
                       ("tasks/mail.py", TASK_MODULE), ("reports.py", TASK_MODULE)):
        (app / path).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, "parcels"]):
            assert "parcels.tasks.mail" not in sys.modules
            assert resolve("parcels.tasks.mail.send").module_path == "parcels.tasks.mail.send"
            with pytest.raises(InvalidDjangoTask, match="module parcels.reports is not "
                                                        "imported in this process"):
                resolve("parcels.reports.send")
            assert "parcels.reports" not in sys.modules
            import parcels.reports  # noqa: F401  (as the producer would have)

            assert resolve("parcels.reports.send").module_path == "parcels.reports.send"
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == "parcels"]:
            del sys.modules[name]


# --- system checks -------------------------------------------------------------------------


def test_checks_report_bad_options_and_queues(settings):
    backend_path = "django_bgtasks.backends.BackgroundTaskBackend"
    with override_settings(TASKS={"default": {
            "BACKEND": backend_path, "QUEUES": ["default", "not{ok}", "elsewhere"],
            "OPTIONS": {"max_retries": -1, "colour": "blue"}}}):
        found = {(m.id, m.msg) for m in task_backends["default"].check()}
    assert ("bgtasks.E011", "TASKS['default']['OPTIONS'] has unknown keys: colour.") in found
    assert any(i == "bgtasks.E011" and "max_retries must be an integer >= 0" in m
               for i, m in found)
    assert any(i == "bgtasks.E012" and "not{ok}" in m for i, m in found)
    assert any(i == "bgtasks.W004" and "'elsewhere'" in m for i, m in found)
    assert len(found) == 4


def test_checks_report_a_bad_enqueue_on_commit_option():
    backend_path = "django_bgtasks.backends.BackgroundTaskBackend"
    with override_settings(TASKS={"default": {
            "BACKEND": backend_path, "OPTIONS": {"enqueue_on_commit": "yes"}}}):
        found = [(m.id, m.msg) for m in task_backends["default"].check()]
        with pytest.raises(InvalidTask, match="enqueue_on_commit must be True or False"):
            django_tasks.add.enqueue(1, 2)
    assert found == [("bgtasks.E011", "TASKS['default']['OPTIONS']: enqueue_on_commit must "
                                      "be True or False, not 'yes'.")]
    with override_settings(TASKS={"default": {
            "BACKEND": backend_path, "OPTIONS": {"enqueue_on_commit": True}}}):
        assert task_backends["default"].check() == []


def test_the_backend_without_django_bgtasks_in_installed_apps_is_an_error(settings):
    # Tasks would be accepted, and no worker of this project would ever run them.
    without = [app for app in settings.INSTALLED_APPS if app != "django_bgtasks"]
    with override_settings(INSTALLED_APPS=without):
        found = [m for m in run_checks() if m.id and m.id.startswith("bgtasks.")]
    assert [(m.id, m.msg) for m in found] == [(
        "bgtasks.E015", "TASKS['default'] uses BackgroundTaskBackend, but 'django_bgtasks' "
                        "is not in INSTALLED_APPS: its tasks would be enqueued and never run.")]
    assert "INSTALLED_APPS" in found[0].hint


# --- the worker's signals, in this process -------------------------------------------------


def run_one(queue: str = "default"):
    """Claim one task and run it with the worker's TaskExecutor; write its outcome."""
    broker = get_broker()
    [claimed] = broker.claim(queue, "w-test", [], 1, 60_000, 100, 10**12).claimed
    executor = TaskExecutor("w-test")
    ack = executor.run(claimed, executor.decode(claimed))
    broker.claim(queue, "w-test", [ack], 0, 60_000, 100, 10**12)
    return ack


@pytest.mark.django_db  # the executor closes stale connections
def test_the_worker_sends_djangos_started_and_finished_signals(at_once, listen):
    started, finished = listen(task_started), listen(task_finished)
    result = django_tasks.add.enqueue(4, 5)
    run_one()

    [(sender, running)] = started
    assert sender is BackgroundTaskBackend
    assert (running.id, running.status, running.worker_ids) == (result.id, RUNNING, ["w-test"])
    [(_, done)] = finished
    assert (done.status, done.return_value, done.errors) == (SUCCESSFUL, 9, [])
    assert django_tasks.add.get_result(result.id).return_value == 9


@pytest.mark.django_db  # the executor closes stale connections
def test_task_finished_is_sent_once_the_last_attempt_failed(at_once, listen):
    finished = listen(task_finished)
    result = django_tasks.record.using(priority=5).enqueue("sig", fail=True)
    for _ in range(2):  # max_retries=2: two retries, then the last attempt
        assert run_one().outcome == "retry" and finished == []
        assert django_tasks.record.get_result(result.id).status == READY
        get_broker().requeue("default", [result.id])  # due at once
    assert run_one().outcome == "dead"

    [(_, failed)] = finished
    assert failed.status == FAILED and failed.task.priority == 5
    [error] = failed.errors  # this attempt's (refresh() reads them all)
    assert error.exception_class_path == "builtins.ValueError"
    assert "ValueError: boom sig" in error.traceback
    failed.refresh()
    assert len(failed.errors) == 3 and failed.worker_ids == ["w-test"] * 3


# --- end to end: the real worker -------------------------------------------------------------


def test_worker_runs_a_django_task_through_its_lifecycle(start_worker, raw):
    result = django_tasks.record.enqueue("life", 1.0)
    assert result.status == READY
    assert django_tasks.record.get_result(result.id).status == READY
    start_one(start_worker)

    wait_status(result, RUNNING)
    assert len(result.worker_ids) == 1 and result.started_at is not None
    assert result.finished_at is None
    wait_status(result, SUCCESSFUL)
    assert result.return_value == "life" and result.errors == []
    assert result.finished_at >= result.started_at >= result.enqueued_at
    assert result.last_attempted_at == result.started_at
    assert "life" in recording.ran(raw)


def test_a_failing_task_ends_failed_in_the_dead_queue(start_worker, raw):
    result = django_tasks.record.enqueue("fa", fail=True)
    worker = start_one(start_worker)

    wait_status(result, FAILED)
    assert get_task_info(result.id).state == "dead"
    assert get_broker().counts("default")["dead"] == 1
    assert recording.log(raw).count("fa") == 3  # OPTIONS max_retries=2
    assert len(result.errors) == 3 and len(result.worker_ids) == 3
    assert all(w for w in result.worker_ids)
    for error in result.errors:
        assert error.exception_class_path == "builtins.ValueError"
        assert error.exception_class is ValueError
        assert "Traceback (most recent call last)" in error.traceback
        assert "in record" in error.traceback and "ValueError: boom fa" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018
    log = worker.wait_for_log("is dead")
    assert f"django:demo.django_tasks.record[{result.id}] failed in" in log


def test_run_after_is_honoured(start_worker, raw):
    start_one(start_worker)
    due = datetime.now(UTC) + timedelta(seconds=1.5)
    result = django_tasks.record.using(run_after=due).enqueue("later")
    assert result.status == READY and get_task_info(result.id).state == "scheduled"
    time.sleep(1.0)
    assert django_tasks.record.get_result(result.id).status == READY

    wait_status(result, SUCCESSFUL, timeout=10)
    # started_at is Redis' clock at the claim (same machine), in ms; due is kept in ms
    assert result.started_at >= due - timedelta(milliseconds=1)
    stored_due = django_tasks.record.get_result(result.id).task.run_after
    assert abs(stored_due - due) < timedelta(milliseconds=1)
    assert "later" in recording.ran(raw)


def test_priority_orders_the_pending_tasks(start_worker, raw):
    for priority in (-20, 50, 0, 100, 10):
        django_tasks.record.using(priority=priority).enqueue(f"p{priority}")
    start_one(start_worker, threads=1)

    wait_until(lambda: len(recording.log(raw)) == 5, timeout=10, message="5 tasks ran")
    assert recording.log(raw) == ["p100", "p50", "p10", "p0", "p-20"]


def test_an_async_task_runs_to_completion_in_the_worker(start_worker, raw):
    result = django_tasks.record_async.enqueue("async", 0.3)
    start_one(start_worker)

    wait_status(result, SUCCESSFUL)
    assert result.return_value == {"token": "async", "slept": 0.3}
    assert "async" in recording.ran(raw)


def test_an_async_task_runs_on_the_worker_threads_loop_with_current_task(start_worker):
    result = django_tasks.whoami_async.enqueue()
    start_one(start_worker)

    wait_status(result, SUCCESSFUL)
    # our loop in the worker thread (its timeout cancels it), not async_to_sync's thread
    assert result.return_value["id"] == result.id
    assert result.return_value["thread"].startswith("bgtasks-worker-"), result.return_value


def test_takes_context_gets_the_attempt_number(start_worker, raw):
    result = django_tasks.attempt_with_context.enqueue("ctx", 1)
    start_one(start_worker)

    wait_status(result, SUCCESSFUL)
    assert result.return_value == 2
    assert raw.lrange("bgtasks-test:context:ctx", 0, -1) == [b"1", b"2"]
    assert len(result.errors) == 1 and len(result.worker_ids) == 2


def test_the_worker_dead_letters_what_it_must_not_run_and_goes_on(start_worker, raw):
    refused = {
        "django:demo.recording.record": "is not a django.tasks.Task bound to a "
                                        "BackgroundTaskBackend (it is a function)",
        "django:outside_apps.record": "module outside_apps is not in an installed app",
        "django:demo.django_tasks.immediate_record": "its backend 'immediate' is "
                                                     "django.tasks.backends.immediate",
        # a task bound to this backend, in an installed app, that nothing imported
        "django:demo.never_imported.record": "module demo.never_imported is not imported",
        "django:django.contrib.auth.management.commands.changepassword.Command":
            "module django.contrib.auth.management.commands.changepassword is not imported",
    }
    ids = {}
    for name in refused:
        task_id = uuid.uuid4().hex
        message = TaskMessage(id=task_id, name=name, queue="default", args=["refused"],
                              kwargs={}, priority=0, max_retries=5, timeout=60.0,
                              result_ttl=None, unique_key=None, enqueued_at=time.time())
        get_broker().enqueue(EnqueueRequest(queue="default", id=task_id,
                                            message=message.encode(), priority=0,
                                            max_retries=5))
        ids[name] = task_id
    worker = start_one(start_worker)

    for name, reason in refused.items():
        info = wait_until(lambda i=ids[name]: (get_task_info(i).state == "dead"
                                               and get_task_info(i)), timeout=10)
        assert info.attempts == 1, name  # never retried: another attempt finds the same
        assert info.last_error.startswith(
            "django_bgtasks.django_tasks.resolve.InvalidDjangoTask: "), info.last_error
        assert reason in info.last_error, info.last_error
    after = django_tasks.record.enqueue("after")
    wait_status(after, SUCCESSFUL)
    # nothing refused ran, and neither outside_apps nor demo.never_imported was imported
    assert recording.ran(raw) == {"after"}
    assert worker.is_running()


@needs_61
def test_task_keyword_arguments_reach_our_options(start_worker, raw):
    once = django_tasks.fail_once.enqueue("once")
    overrun = django_tasks.overrun.enqueue("over", 5.0)
    assert stored_message(raw, once.id)["max_retries"] == 0
    assert stored_message(raw, overrun.id)["timeout"] == 1
    start_one(start_worker)

    wait_status(once, FAILED)
    assert recording.log(raw).count("once") == 1 and len(once.errors) == 1
    wait_status(overrun, FAILED, timeout=10)
    [error] = overrun.errors
    assert error.exception_class_path == "django_bgtasks.exceptions.TaskTimeout"
    assert "over" not in recording.ran(raw)


def test_flow_control_options_limit_the_backends_tasks(settings, raw):
    """OPTIONS may carry flow control, as @background_task takes it (docs/limits.md)."""
    default = settings.TASKS["default"]
    settings.TASKS = {**settings.TASKS, "default": {
        **default, "OPTIONS": {**default["OPTIONS"], "concurrency_limit": 1}}}
    first, second = django_tasks.add.enqueue(1, b=2), django_tasks.add.enqueue(3, b=4)

    claimed = get_broker().claim("default", "w", [], 2, 60_000, 100, 10**12).claimed

    assert [c.id for c in claimed] == [first.id]
    info = get_task_info(second.id)
    assert info.state == "waiting" and info.limits == ("django:demo.django_tasks.add",)
    assert django_tasks.add.get_result(second.id).status == READY


def test_checks_report_a_bad_flow_control_option(settings):
    default = settings.TASKS["default"]
    settings.TASKS = {**settings.TASKS, "default": {
        **default, "OPTIONS": {**default["OPTIONS"], "rate_limit": "fast"}}}
    found = [(e.id, e.msg) for e in task_backends["default"].check()]
    assert found and found[0][0] == "bgtasks.E011" and "rate_limit must be" in found[0][1]


@needs_61
def test_invalid_task_keyword_arguments_are_an_invalid_task():
    with pytest.raises(InvalidTask, match="max_retries must be an integer >= 0"):
        task(max_retries=-1)(recording.record)


# --- the admin ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_shows_a_django_task(at_once, admin_client):
    result = django_tasks.record.using(queue_name="mail").enqueue("shown")
    response = admin_client.get(f"/admin/django_bgtasks/task/{result.id}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "django:demo.django_tasks.record" in html and "shown" in html
    assert response.context["info"].queue_name == "mail"
