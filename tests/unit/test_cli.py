"""``manage.py bgtasks``: every subcommand against the real Redis of conftest.py.

States are seeded with the public task API, then driven to active / retry / dead /
completed with the broker's claim-and-ack call, as a worker would.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from demo.tasks import fail_always, record
from django_bgtasks import cancel_task
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.bulk import BulkJobStore
from django_bgtasks.broker.types import Ack
from django_bgtasks.info import STATES
from django_bgtasks.management.commands.bgtasks import Command
from helpers import (
    MANAGE_PY,
    REPO_ROOT,
    BgtasksCommand,
    free_port,
    seed_blocked,
    seed_expired,
    seed_waiting,
)

HOUR_MS = 3600 * 1000


# -- helpers ------------------------------------------------------------------------------


run = BgtasksCommand()
run_json = run.json
fails = run.error  # the CommandError message of a command expected to fail


def claim(queue: str, ids: list[str], acks: list[Ack] = ()) -> dict[str, int]:
    """Claim exactly ``ids`` (all of the queue's pending tasks); returns id -> attempt."""
    result = get_broker().claim(queue, "w", list(acks), len(ids), 30_000, 10_000, 10**9)
    claimed = {c.id: c.attempt for c in result.claimed}
    assert sorted(claimed) == sorted(ids)
    return claimed


def finish(queue: str, ids: list[str], outcome: str, **ack: object) -> None:
    """Claim ``ids`` and end their attempt with ``outcome`` (retry / dead / done)."""
    attempts = claim(queue, ids)
    get_broker().claim(queue, "w", [Ack(i, attempts[i], outcome, **ack) for i in ids], 0,
                       30_000, 10_000, 10**9)


def seed(state: str, n: int = 1, queue: str = "default", token: str = "t") -> list[str]:
    """``n`` tasks in ``state`` (needs the queue's pending set empty for the later states)."""
    if state == "scheduled":
        return [record.using(queue_name=queue, run_after=3600).enqueue(f"{token}{i}").id
                for i in range(n)]
    if state == "waiting":
        return [seed_waiting(queue, f"{token}{i}") for i in range(n)]
    if state == "expired":
        return [seed_expired(queue, f"{token}{i}") for i in range(n)]
    if state == "blocked":  # behind an active task
        [first] = seed("active", 1, queue, f"{token}-first")
        return [seed_blocked(queue, f"{token}{i}", after=first) for i in range(n)]
    if state == "cancelled":
        return [cancel_task(record.using(queue_name=queue, run_after=3600).enqueue(
            f"{token}{i}").id, by="seeder").id for i in range(n)]
    task = fail_always.using(max_retries=0) if state == "dead" else record
    ids = [task.using(queue_name=queue).enqueue(f"{token}{i}").id for i in range(n)]
    if state == "active":
        claim(queue, ids)
    elif state == "retry":
        finish(queue, ids, "retry", delay_ms=HOUR_MS, error="ValueError: try later")
    elif state == "dead":
        finish(queue, ids, "dead", error=f"ValueError: boom {token}",
               traceback="Traceback (most recent call last):\n  File x\nValueError: boom")
    elif state == "completed":
        finish(queue, ids, "done", result='"ok"', result_ttl_ms=HOUR_MS)
    return ids


def queue_row(output: str, queue: str) -> list[str]:
    """The cells of ``queue``'s row in the stats table."""
    line = next(line for line in output.splitlines() if line.split()[:1] == [queue])
    return line.split()


def counts(queue: str) -> dict:
    return next(q for q in run_json("stats")["queues"] if q["name"] == queue)


# -- stats --------------------------------------------------------------------------------


def test_stats_table_shows_counts_per_queue_and_workers():
    seed("dead", 1)
    seed("completed", 2)
    seed("pending", 3)
    seed("scheduled", 1, queue="mail")
    call_command("bgtasks", "pause", "mail", stdout=io.StringIO())
    get_broker().heartbeat_worker("web-1:4242:abc", {
        "host": "web-1", "pid": "4242", "queues": "default,mail", "processes": "2",
        "threads": "8", "started": str(time.time() - 600), "in_flight": "3"}, ttl=30)

    out = run("stats")

    header = out.splitlines()[0].split()
    assert header[:11] == ["queue", *STATES]
    assert out.splitlines()[0].endswith("paused  oldest pending")
    # queue pending waiting blocked active scheduled retry dead completed cancelled expired
    # processed failed paused, oldest pending
    # (processed counts every finished attempt, failed ones included, as asynq does)
    default = queue_row(out, "default")
    assert default[:14] == ["default", "3", "0", "0", "0", "0", "0", "1", "2",
                            "0", "0", "3", "1", "no"]
    assert re.fullmatch(r"\d+\.\ds", default[14])  # just enqueued: seconds
    assert queue_row(out, "mail") == ["mail", "0", "0", "0", "0", "1", "0", "0", "0", "0",
                                      "0", "0", "0", "PAUSED", "-"]
    assert queue_row(out, "(all)")[1:13] == ["3", "0", "0", "0", "1", "0", "1", "2", "0", "0",
                                             "3", "1"]
    assert "Live workers: 1" in out
    worker_line = next(line for line in out.splitlines() if line.startswith("web-1"))
    assert worker_line.split()[:7] == ["web-1", "4242", "default,mail", "2", "x", "8", "3"]
    assert "10 minutes" in worker_line


def test_stats_lists_configured_queues_even_when_empty():
    out = run("stats")
    assert queue_row(out, "default")[1:] == ["0"] * 12 + ["no", "-"]
    assert queue_row(out, "mail")[1:] == ["0"] * 12 + ["no", "-"]
    assert "Live workers: none" in out


def test_stats_json_is_one_object_with_queues_and_workers():
    seed("retry", 2)
    seed("pending", 1)
    get_broker().heartbeat_worker("h:1:x", {"host": "h", "pid": "1", "queues": "default",
                                            "processes": "1", "threads": "4",
                                            "in_flight": "0"}, ttl=30)

    data = run_json("stats")

    assert set(data) == {"queues", "workers"}
    default = next(q for q in data["queues"] if q["name"] == "default")
    assert default == {"name": "default", "pending": 1, "waiting": 0, "blocked": 0, "active": 0,
                       "scheduled": 0, "retry": 2, "dead": 0, "completed": 0,
                       "cancelled": 0, "expired": 0, "processed_today": 2, "failed_today": 2,
                       "paused": False, "oldest_pending_age_seconds": default[
                           "oldest_pending_age_seconds"]}
    assert 0 <= default["oldest_pending_age_seconds"] < 5
    mail = next(q for q in data["queues"] if q["name"] == "mail")
    assert mail["oldest_pending_age_seconds"] is None
    [worker] = data["workers"]
    assert (worker["host"], worker["pid"], worker["processes"], worker["threads"]) == \
        ("h", "1", 1, 4)
    assert worker["expires"].endswith("Z")


def test_stats_shows_how_long_the_oldest_pending_task_has_waited():
    # due 2 minutes ago (a run_after in the past), and one due now behind it
    record.using(run_after=datetime.now(UTC) - timedelta(seconds=125)).enqueue("late")
    record.enqueue("fresh")
    record.using(queue_name="mail", run_after=datetime.now(UTC) - timedelta(seconds=8)).enqueue(
        "mail")

    out = run("stats")
    data = run_json("stats")

    assert queue_row(out, "default")[-2:] == ["2m", "5s"]  # "2m 5s", split on spaces
    assert queue_row(out, "mail")[-1].startswith("8.")
    assert queue_row(out, "(all)")[-2:] == ["2m", "5s"]  # the oldest of every queue
    ages = {q["name"]: q["oldest_pending_age_seconds"] for q in data["queues"]}
    assert 125 <= ages["default"] < 127
    assert 8 <= ages["mail"] < 10


def test_pause_and_resume_show_in_stats():
    assert "Paused queue 'mail'" in run("pause", "mail")
    assert counts("mail")["paused"] is True
    assert counts("default")["paused"] is False
    assert "Resumed queue 'mail'" in run("resume", "mail")
    assert counts("mail")["paused"] is False


def test_pause_refuses_unknown_or_invalid_queue():
    assert "unknown queue 'mial'" in fails("pause", "mial")
    assert "default, mail" in fails("resume", "mial")
    assert "must not contain" in fails("pause", "a:b")


# -- list ---------------------------------------------------------------------------------


@pytest.mark.parametrize("state", STATES)
def test_list_shows_only_the_tasks_in_that_state(state):
    ids = {}
    for other in ("expired", "blocked", "active", "retry", "dead", "completed", "waiting",
                  "scheduled", "cancelled",
                  "pending"):
        ids[other] = seed(other, 1, token=f"{other}-")  # pending last: claim takes it

    out = run("list", state)

    assert ids[state][0] in out
    assert all(ids[other][0] not in out for other in STATES if other != state)
    many = 2 if state == "active" else 1  # the blocked task's dependency runs
    assert f"{many} of {many} {state} task(s)." in out
    line = next(line for line in out.splitlines() if line.startswith(ids[state][0]))
    assert f'"{state}-0"' in line  # the arguments
    assert "ago" in line or "in " in line or "now" in line  # the relative time
    if state == "dead":
        assert "1/1" in line and "ValueError: boom dead-" in line


def test_list_limit_name_and_queue():
    mail = seed("dead", 2, queue="mail", token="m")
    seed("dead", 5, token="d")
    record.using(queue_name="mail").enqueue("x")

    out = run("list", "dead", "--limit", "3")
    assert "3 of 7 dead task(s)." in out
    assert len([line for line in out.splitlines() if "fail_always" in line]) == 3

    out = run("list", "dead", "--queue", "mail")
    assert "2 of 2 dead task(s) in queue 'mail'." in out
    assert all(i in out for i in mail)

    out = run("list", "pending", "--name", "RECORD")
    assert "1 pending task(s) whose name contains 'RECORD'" in out
    assert run("list", "dead", "--name", "record").startswith("0 dead task(s)")

    data = run_json("list", "dead", "--limit", "4", "--name", "fail_always")
    assert (data["total"], len(data["tasks"]), data["complete"]) == (7, 4, False)


def test_list_json_gives_every_field():
    [task_id] = seed("dead")
    data = run_json("list", "dead")
    assert (data["state"], data["total"]) == ("dead", 1)
    [task] = data["tasks"]
    assert task["id"] == task_id
    assert (task["state"], task["args"], task["attempts"]) == ("dead", ["t0"], 1)
    assert task["last_error"] == "ValueError: boom t"
    assert task["when"].endswith("Z") and task["finished_at"] == task["when"]


def test_list_shortens_long_arguments_and_errors_to_one_line():
    [task_id] = seed("dead", token="x" * 300)
    out = run("list", "dead")
    line = next(line for line in out.splitlines() if line.startswith(task_id))
    assert "x" * 60 not in line and "..." in line
    assert "Traceback" not in out


def test_list_rejects_bad_state_and_limit():
    assert "invalid choice: 'deadd'" in fails("list", "deadd")
    assert "--limit" in fails("list", "dead", "--limit", "-1")


# -- show ---------------------------------------------------------------------------------


def test_show_prints_every_field_history_and_traceback():
    [task_id] = seed("dead", token="shown")
    out = run("show", task_id)
    for text in (f"id:           {task_id}", "task:         demo.tasks.fail_always",
                 "queue:        default", "state:        dead", "attempts:     1",
                 '"shown0"', "last error:   ValueError: boom shown", "error history:",
                 "attempt 1,", "traceback:", "  File x"):
        assert text in out, text

    data = run_json("show", task_id, "--queue", "default")
    assert data["id"] == task_id and data["args"] == ["shown0"]
    assert data["errors"][0]["error"] == "ValueError: boom shown"
    assert data["errors"][0]["at"].endswith("Z")
    assert data["traceback"].endswith("ValueError: boom")


def test_show_prints_the_expiry_when_there_is_one():
    info = record.using(expires=timedelta(hours=1)).enqueue("x")
    stamp = info.expires_at.strftime("%Y-%m-%dT%H:%M:%S")
    assert f"expires at:   {stamp}" in run("show", info.id)
    assert run_json("show", info.id)["expires_at"].startswith(stamp)
    assert "expires at:" not in run("show", record.enqueue("y").id)


def test_show_prints_the_headers_apart_from_the_arguments():
    info = record.using(headers={"tenant": "<acme>", "bell": "\x1b[31m"}).enqueue("x")
    out = run("show", info.id)
    assert 'headers:      {\n                "tenant": "<acme>",' in out
    assert "\x1b" not in out  # a terminal escape in a header is shown escaped
    assert 'args:         [\n                "x"\n' in out
    assert run_json("show", info.id)["headers"] == {"tenant": "<acme>", "bell": "\x1b[31m"}
    assert "headers:" not in run("show", record.enqueue("y").id)


def test_show_missing_task_is_an_error():
    assert fails("show", "nope") == "no task with id 'nope'"
    [task_id] = seed("pending")
    assert fails("show", task_id, "--queue", "mail") == f"no task with id {task_id!r} in " \
                                                        "queue 'mail'"


def test_undecodable_message_shows_a_placeholder(bgtasks_redis):
    [task_id] = seed("dead")
    with bgtasks_redis.client() as raw:
        raw.hset("bgtasks:{default}:msg", task_id, b"\xff\xfe{not json")

    out = run("show", task_id)
    assert "task:         <undecodable message>" in out
    assert "message:      UNDECODABLE:" in out
    assert "state:        dead" in out
    assert run_json("show", task_id)["message_error"]
    assert "<undecodable>" in run("list", "dead")


# -- requeue ------------------------------------------------------------------------------


def test_requeue_by_id_runs_the_task_now():
    [dead] = seed("dead", token="d")
    [sched] = seed("scheduled", queue="mail")
    assert "Moved 1 task to pending" in run("requeue", dead)
    assert "was scheduled" in run("requeue", sched)  # its queue found by id
    assert (counts("default")["pending"], counts("default")["dead"]) == (1, 0)
    assert (counts("mail")["pending"], counts("mail")["scheduled"]) == (1, 0)
    assert "is pending: only scheduled, retry, dead" in fails("requeue", dead)
    assert fails("requeue", "ghost") == "no task with id 'ghost'"


def test_requeue_all_moves_every_dead_task_in_batches():
    seed("dead", 1200)
    seed("dead", 3, queue="mail")

    out = run("requeue", "dead", "--all", "--queue", "default")
    assert out.strip() == "Moved 1200 dead task(s) to pending."
    assert (counts("default")["pending"], counts("default")["dead"]) == (1200, 0)
    assert counts("mail")["dead"] == 3

    assert run("requeue", "dead", "--all").strip() == "Moved 3 dead task(s) to pending."
    assert counts("mail")["pending"] == 3


def test_requeue_all_without_a_queue_covers_every_queue():
    seed("retry", 2)
    seed("retry", 1, queue="mail")
    out = run("requeue", "retry", "--all")
    assert out.strip() == "Moved 3 retry task(s) to pending (default: 2, mail: 1)."


def test_requeue_a_state_needs_all_and_a_runnable_state():
    seed("dead", 2)
    assert "add --all" in fails("requeue", "dead")
    assert counts("default")["dead"] == 2
    assert "pending tasks cannot be run now: only scheduled" in fails("requeue", "pending", "--all")
    assert "unknown state 'deadd'" in fails("requeue", "deadd", "--all")


# -- bulk jobs ----------------------------------------------------------------------------


def test_jobs_shows_queued_running_and_finished_jobs_with_their_progress():
    assert run("jobs").startswith("No bulk jobs")
    store = BulkJobStore(get_broker())
    seed("dead", 5)
    finished = store.queue("default", "dead", "delete", "ada").job
    job = store.claim("default", "host:1/1:1", 30_000)
    while job.status == "running":
        job = store.step(job, "host:1/1:1", 30_000, 2)
    seed("dead", 4)
    queued = store.queue("default", "dead", "requeue", "bob").job
    seed("dead", 3, queue="mail")
    running = store.queue("mail", "dead", "delete", "cy").job
    store.step(store.claim("mail", "host:1/1:1", 30_000), "host:1/1:1", 30_000, 1)

    lines = run("jobs").splitlines()
    assert lines[0].split()[:6] == ["queue", "job", "status", "done", "total", "%"]
    rows = lines[2:]
    assert len(rows) == 3
    assert rows[0].startswith("default  run all 4 dead tasks of queue default now  queued")
    assert "bob" in rows[0] and queued.id in rows[0]
    assert rows[1].startswith("mail     delete all 3 dead tasks of queue mail")
    assert " running " in rows[1] and "cy" in rows[1]
    assert rows[2].startswith("default  delete all 5 dead tasks of queue default")
    assert " done " in rows[2] and finished.id in rows[2]

    data = run_json("jobs")["jobs"]
    assert [(j["id"], j["status"], j["done"], j["total"], j["percent"]) for j in data] == [
        (queued.id, "queued", 0, 4, 0), (running.id, "running", 1, 3, 33),
        (finished.id, "done", 5, 5, 100)]
    assert data[1]["runner"] == "host:1/1:1" and data[2]["finished_at"].endswith("Z")
    assert [j["id"] for j in run_json("jobs", "--queue", "mail")["jobs"]] == [running.id]


def test_jobs_escapes_control_characters_of_a_stored_requester():
    seed("dead", 1)
    BulkJobStore(get_broker()).queue("default", "dead", "delete", f"u{HOSTILE}")
    text, data = run("jobs"), run("jobs", "--json")
    for out in (text, data):
        assert_escaped(out)
    assert "u\\x1b]0;title\\x07" in text
    assert json.loads(data)["jobs"][0]["requested_by"] == f"u{HOSTILE}"


# -- delete -------------------------------------------------------------------------------


def test_delete_by_id():
    ids = seed("dead", 2)
    assert "Deleted 1 task" in run("delete", ids[0])
    assert run_json("list", "dead")["total"] == 1
    assert fails("show", ids[0]) == f"no task with id {ids[0]!r}"
    assert fails("delete", ids[0]) == f"no task with id {ids[0]!r}"


def test_delete_all_of_a_state():
    seed("completed", 4)
    seed("scheduled", 2)
    seed("scheduled", 1, queue="mail")
    assert run("delete", "completed", "--all").strip() == "Deleted 4 completed task(s)."
    assert run("delete", "scheduled", "--all", "-q", "mail").strip() == \
        "Deleted 1 scheduled task(s)."
    assert (counts("default")["completed"], counts("default")["scheduled"]) == (0, 2)
    assert "add --all" in fails("delete", "scheduled")


def test_delete_refuses_active_tasks():
    [task_id] = seed("active")
    assert "is running (active) and cannot be deleted" in fails("delete", task_id)
    assert "running (active) tasks cannot be deleted" in fails("delete", "active", "--all")
    assert counts("default")["active"] == 1


def test_cancel_by_id_says_what_happened():
    [pending] = seed("pending")
    assert run("cancel", pending).startswith(f"Cancelled 1 task: {pending} (demo.tasks.record, "
                                             f"queue 'default', was pending); it will not run.")
    assert run_json("show", pending)["state"] == "cancelled"
    shown = run("show", pending)
    assert re.search(r"cancelled:    \S+Z \(.*\) by \S+ \(bgtasks cancel\)", shown), shown
    assert "Nothing to cancel" in run("cancel", pending)  # a no-op, not an error
    [active] = seed("active", token="a")
    assert "Asked 1 running task to stop" in run("cancel", active)
    assert "cancel asked:" in run("show", active)
    assert run_json("show", active)["state"] == "active"
    assert fails("cancel", "ghost") == "no task with id 'ghost'"


def test_cancel_all_of_a_state_in_batches_per_queue():
    seed("scheduled", 3)
    seed("scheduled", 1, queue="mail")
    [running] = seed("active", token="a")
    assert run("cancel", "scheduled", "--all", "-q", "default").strip() == \
        "Cancelled 3 scheduled task(s)."
    assert (counts("default")["cancelled"], counts("mail")["scheduled"]) == (3, 1)
    assert run("cancel", "scheduled", "--all").strip() == "Cancelled 1 scheduled task(s)."
    assert run("cancel", "active", "--all").strip() == \
        "Asked 1 running task(s) to stop; their workers end them."
    assert run_json("show", running)["cancelled_by"].endswith("(bgtasks cancel)")
    assert "add --all" in fails("cancel", "pending")
    assert "dead tasks cannot be cancelled" in fails("cancel", "dead", "--all")


# -- errors and the real command line ------------------------------------------------------


def test_redis_unreachable_is_a_command_error_naming_the_target(settings):
    port = free_port()
    settings.BGTASKS = {**settings.BGTASKS, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    started = time.monotonic()
    for args in (["stats"], ["list", "dead"], ["show", "x"], ["requeue", "dead", "--all"],
                 ["pause", "mail"]):
        message = fails(*args)
        assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in message, args
    assert time.monotonic() - started < 10


def test_every_subcommand_has_help():
    parser = Command().create_parser("manage.py", "bgtasks")
    [sub] = [a for a in parser._actions if a.dest == "action"]
    assert set(sub.choices) == {"stats", "list", "show", "requeue", "delete", "cancel",
                                "pause", "resume", "settings", "jobs", "limits", "workflow",
                                "workflows", "cron", "health", "metrics", "taskstats"}
    for name, subparser in sub.choices.items():
        assert len(subparser.description) > 20, name
        assert all(a.help for a in subparser._actions), name


def test_manage_py_stats_json(redis_server):
    seed("pending", 2)
    env = {**os.environ, "BGTASKS_REDIS_URL": redis_server.url,
           "BGTASKS_DEMO_DB": os.devnull}
    proc = subprocess.run([sys.executable, str(MANAGE_PY), "bgtasks", "stats", "--json"],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert next(q for q in data["queues"] if q["name"] == "default")["pending"] == 2

    proc = subprocess.run([sys.executable, str(MANAGE_PY), "bgtasks", "show", "ghost"],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60)
    assert proc.returncode == 1
    assert "no task with id 'ghost'" in proc.stderr


# -- what reaches the terminal -------------------------------------------------------------

# Set the terminal's title, clear the screen, return to the line's start, a C1 CSI, DEL,
# a right-to-left override: any of them, printed raw, lets stored data rewrite the screen.
HOSTILE = "\x1b]0;title\x07\x1b[2J\r\x9b2J\x7f\u202eevil"
RAW = ("\x1b", "\x07", "\r", "\x9b", "\x7f", "\u202e")


def assert_escaped(text: str) -> None:
    for char in RAW:
        assert char not in text, (char, text)


def hostile_dead_task() -> str:
    task_id = fail_always.using(max_retries=0, task_id=f"id{HOSTILE}").enqueue(f"a{HOSTILE}").id
    finish("default", [task_id], "dead", error=f"ValueError: {HOSTILE}",
           traceback=f"Traceback (most recent call last):\n  File x\nValueError: {HOSTILE}")
    return task_id


def test_control_characters_from_redis_are_escaped_in_every_output():
    task_id = hostile_dead_task()
    get_broker().heartbeat_worker("w-hostile", {
        "host": f"h{HOSTILE}", "pid": "1", "queues": "default", "processes": "1",
        "threads": "1", "started": str(time.time()), "in_flight": "0"}, ttl=30)
    outputs = {
        "stats": run("stats"),
        "list": run("list", "dead"),
        "list --name": run("list", "dead", "--name", "fail"),
        "show": run("show", task_id),
        "requeue": run("requeue", task_id),
    }
    for what, out in outputs.items():
        assert_escaped(out)
        assert "\\x1b]0;title\\x07\\x1b[2J\\r\\x9b2J\\x7f\\u202eevil" in out, what
    assert "Traceback (most recent call last):\n  File x\n" in outputs["show"]  # lines kept

    texts = {args: run(*args, "--json") for args in (
        ("stats",), ("list", "pending"), ("show", task_id))}
    for text in texts.values():
        assert_escaped(text)
    # still JSON, and the data read back as stored
    [worker] = json.loads(texts["stats",])["workers"]
    assert worker["host"] == f"h{HOSTILE}"
    [task] = json.loads(texts["list", "pending"])["tasks"]
    assert (task["id"], task["args"]) == (task_id, [f"a{HOSTILE}"])
    shown = json.loads(texts["show", task_id])
    assert shown["last_error"] == f"ValueError: {HOSTILE}"
    assert shown["traceback"].endswith(f"ValueError: {HOSTILE}")


def test_command_errors_naming_stored_data_are_escaped(redis_server):
    task_id = hostile_dead_task()
    env = {**os.environ, "BGTASKS_REDIS_URL": redis_server.url, "BGTASKS_DEMO_DB": os.devnull}
    run("requeue", task_id)
    claim("default", [task_id])  # active: it cannot be deleted, and the error names it
    proc = subprocess.run([sys.executable, str(MANAGE_PY), "bgtasks", "delete", task_id],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60)
    assert proc.returncode == 1
    assert "is running (active) and cannot be deleted" in proc.stderr
    assert_escaped(proc.stdout + proc.stderr)
    assert "\\x1b]0;title" in proc.stderr
