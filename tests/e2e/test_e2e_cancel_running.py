"""End-to-end: cancelling a running task, and its progress, on a real worker.

The cancel request is recorded in the task's record as cancel.lua does it
(helpers.request_cancel); the worker learns it on its next control tick (a fraction of a
second), the run ends ``cancelled`` and is never retried, whatever its max_retries.
"""

from __future__ import annotations

import json
import re
import signal
import time

import pytest
from django.contrib.auth.models import User
from django.test import Client

from demo import recording, tasks
from django_bgtasks import get_task_info
from django_bgtasks.broker import get_broker
from helpers import BgtasksCommand, request_cancel, state_of, wait_until

PID_RE = re.compile(r"\[pid (\d+)\]")


def wait_state(task_id: str, state: str, timeout: float):
    wait_until(lambda: state_of(task_id) == state, timeout=timeout,
               message=f"task {task_id} in state {state!r} (now {state_of(task_id)!r})")
    return get_task_info(task_id)


def wait_running(r, token: str, task_id: str) -> None:
    """Until the task's function runs (its attempt counted) and Redis says it is active."""
    wait_until(lambda: recording.attempts(r, token) >= 1 and state_of(task_id) == "active",
               timeout=15, message=f"{token} running")


def run_then_cancel(start_worker, redis_server, task, token: str, seconds: float,
                    grace: str = "10", timeout: float = 10):
    """Start a worker (CANCEL_GRACE ``grace``), run ``task(token, seconds)``, ask to cancel
    it once it runs; returns the worker, the task's id, its final TaskInfo and the seconds
    from the request to the state ``cancelled``."""
    worker = start_worker("--processes", "1", "--threads", "2",
                          env={"BGTASKS_CANCEL_GRACE": grace})
    task_id = task.enqueue(token, seconds).id
    wait_running(redis_server.client(), token, task_id)
    request_cancel(task_id)
    asked = time.monotonic()
    info = wait_state(task_id, "cancelled", timeout=timeout)
    return worker, task_id, info, time.monotonic() - asked


def cancel_record(task_id: str) -> dict:
    broker = get_broker()
    return json.loads(broker.client.hget(broker.queue_keys("default").info, task_id))["cancel"]


def test_a_cooperative_task_ends_cancelled_within_a_second_and_is_not_retried(
        start_worker, redis_server):
    r = redis_server.client()
    worker = start_worker("--processes", "1", "--threads", "2")
    task_id = tasks.cooperative.enqueue("coop", 30.0).id  # max_retries=5
    wait_running(r, "coop", task_id)
    # its progress reaches Redis while it runs
    wait_until(lambda: (p := get_task_info(task_id).progress) and p.current >= 2, timeout=5,
               message="progress visible")

    request_cancel(task_id, by="alice")
    asked = time.monotonic()
    info = wait_state(task_id, "cancelled", timeout=5)
    took = time.monotonic() - asked

    assert took < 1.0, took  # one control tick (0.25 s), the task's 20 ms poll, the ack
    assert "coop:saw-cancel" in recording.ran(r) and "coop" not in recording.ran(r)
    assert info.attempts == 1 and recording.attempts(r, "coop") == 1
    assert info.last_error == "django_bgtasks.exceptions.TaskCancelled: stopping as asked"
    assert cancel_record(task_id)["by"] == "alice"
    assert info.progress.total == 1500 and info.progress.message.startswith("step ")
    log = worker.wait_for_log(f"cooperative[{task_id}] cancelled after")
    assert f"cooperative[{task_id}]: cancel requested" in log
    assert "interrupting it" not in log

    # never retried: the queue runs other work, and it stays cancelled
    tasks.record.enqueue("after")
    wait_until(lambda: "after" in recording.ran(r), timeout=10)
    assert state_of(task_id) == "cancelled" and recording.attempts(r, "coop") == 1


def test_a_task_that_ignores_the_request_gets_task_cancelled_after_the_grace(
        start_worker, redis_server):
    r = redis_server.client()
    worker, task_id, info, took = run_then_cancel(
        start_worker, redis_server, tasks.ignore_cancel, "ign", 30.0, grace="1")  # retries=5
    assert 1.0 <= took < 3.0, took  # CANCEL_GRACE, then the interruption lands at once
    assert "ign:interrupted" in recording.ran(r) and "ign" not in recording.ran(r)
    assert info.attempts == 1 and recording.attempts(r, "ign") == 1
    assert info.last_error.startswith("django_bgtasks.exceptions.TaskCancelled")
    assert "in ignore_cancel" in info.traceback
    log = worker.wait_for_log(f"ignore_cancel[{task_id}] cancelled after")
    assert f"ignore_cancel[{task_id}] did not stop within 1s of its cancel request; " \
           "interrupting it" in log
    assert "starting a new one" not in log  # it stopped: its process stays


def test_an_async_task_gets_task_cancelled_through_its_event_loop(start_worker, redis_server):
    r = redis_server.client()
    _, _, info, _ = run_then_cancel(start_worker, redis_server, tasks.async_ignore_cancel,
                                    "aign", 30.0, grace="0.5")
    assert "aign:interrupted" in recording.ran(r)
    assert info.attempts == 1 and recording.attempts(r, "aign") == 1


def test_a_task_that_swallows_task_cancelled_has_its_process_replaced(
        start_worker, redis_server):
    r = redis_server.client()
    worker, task_id, info, _ = run_then_cancel(
        start_worker, redis_server, tasks.swallow_cancel, "sw", 60.0, grace="0.5",
        timeout=15)  # max_retries=5
    assert "sw:swallowed" in recording.ran(r) and "sw" not in recording.ran(r)
    assert info.attempts == 1
    assert info.last_error.startswith("django_bgtasks.exceptions.TaskCancelled: the task did "
                                      "not stop"), info.last_error
    log = worker.wait_for_log("exited; starting a new one", timeout=10)
    line = next(ln for ln in log.splitlines() if "ignored its cancellation" in ln)
    old_pid = PID_RE.search(line).group(1)
    assert "worker process retiring: a task thread ignored its cancellation" in log

    tasks.record.enqueue("after-cancel")  # a new process serves the queue
    wait_until(lambda: "after-cancel" in recording.ran(r), timeout=10)
    log = worker.wait_for_log("record[")
    assert old_pid not in {PID_RE.search(ln).group(1) for ln in log.splitlines()
                           if "record[" in ln}
    assert state_of(task_id) == "cancelled" and recording.attempts(r, "sw") == 1


def test_a_worker_killed_while_a_cancel_is_pending_never_revives_the_task(
        start_worker, redis_server):
    r = redis_server.client()
    env = {"BGTASKS_LEASE_SECONDS": "2", "BGTASKS_CANCEL_GRACE": "60"}
    worker = start_worker("--processes", "1", "--threads", "2", env=env)
    task_id = tasks.ignore_cancel.enqueue("kill", 60.0).id  # max_retries=5
    wait_running(r, "kill", task_id)
    request_cancel(task_id, by="alice")
    worker.wait_for_log(f"ignore_cancel[{task_id}]: cancel requested")

    worker.send_group(signal.SIGKILL)  # supervisor too: only the lease tells
    worker.wait(5)
    assert state_of(task_id) == "active"
    start_worker("--processes", "1", "--threads", "2", env=env)

    info = wait_state(task_id, "cancelled", timeout=20)
    assert info.last_error.startswith("WorkerLost"), info.last_error
    assert cancel_record(task_id)["by"] == "alice"
    assert info.attempts == 1 and recording.attempts(r, "kill") == 1
    tasks.record.enqueue("after-kill")
    wait_until(lambda: "after-kill" in recording.ran(r), timeout=10)
    assert recording.attempts(r, "kill") == 1


@pytest.mark.django_db
def test_progress_is_visible_during_the_run_and_kept_after(start_worker, redis_server,
                                                           settings):
    # inside a transaction that never commits: enqueue must not wait for it
    settings.BGTASKS = {**settings.BGTASKS, "ENQUEUE_ON_COMMIT": False}
    start_worker("--processes", "1", "--threads", "2")
    task_id = tasks.report_progress.enqueue("prog", 20, 0.25).id  # result_ttl=3600

    seen = wait_until(lambda: (info := get_task_info(task_id)).state == "active"
                      and info.progress and info.progress.current >= 2 and info.progress,
                      timeout=10, message="progress of the running task")
    assert seen.total == 20 and seen.message == "rendering <prog>"
    assert seen.updated_at is not None

    # the admin's active list and the task's page: a <progress> bar, the message escaped
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", "root@example.com", None))
    for url in ("/admin/django_bgtasks/task/active/",
                f"/admin/django_bgtasks/task/{task_id}/change/?queue=default"):
        html = admin.get(url).content.decode()
        bar = re.search(r'<progress max="1" value="([\d.]+)">', html)
        assert bar and 0 < float(bar.group(1)) < 1, url
        assert "rendering &lt;prog&gt;" in html and "<prog>" not in html
    # the command line: the list's column, the task's line, its JSON
    listed = BgtasksCommand()("list", "active")
    assert "progress" in listed.splitlines()[0] and " / 20 (" in listed
    assert re.search(r"progress:\s+\d+ / 20 \(\d+%\) rendering <prog>, at ",
                     BgtasksCommand()("show", task_id))
    shown = BgtasksCommand().json("show", task_id)["progress"]
    assert shown["total"] == 20 and shown["message"] == "rendering <prog>"

    info = wait_state(task_id, "completed", timeout=15)
    assert (info.progress.current, info.progress.total, info.progress.message) == (
        20, 20, "done")
    assert info.progress.fraction == 1.0
    assert "progress:     20 / 20 (100%) done" in BgtasksCommand()("show", task_id)
