"""End-to-end: `manage.py runbackground --reload` restarts the worker when a task module
changes, draining it first, and stops cleanly on SIGTERM (docs/worker.md, "Reloading").

The task lives in a small app written to a temporary directory (on the worker's
PYTHONPATH, installed by a settings module there), so the test can rewrite it.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

from demo import recording
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.types import EnqueueRequest
from django_bgtasks.message import TaskMessage
from helpers import wait_until

TASK = "reloadapp.tasks.which_version"

TASKS_MODULE = '''
import time

from demo import recording
from django_bgtasks import background_task


@background_task
def which_version(token: str, seconds: float = 0.0) -> None:
    recording.count_attempt(token)
    time.sleep(seconds)
    recording.record(f"{{token}}:v{version}")
'''


def write_app(root: Path, version: int) -> Path:
    app = root / "reloadapp"
    if not app.exists():
        app.mkdir()
        (app / "__init__.py").write_text("")
    module = app / "tasks.py"
    old = module.stat().st_mtime if module.exists() else None
    module.write_text(TASKS_MODULE.format(version=version))
    if old is not None:
        # Later than before for sure, and not within the second a stale .pyc would match.
        os.utime(module, (old + 5, old + 5))
    settings = root / "reload_settings.py"
    if not settings.exists():  # written once: a change would restart the worker too
        settings.write_text(
            "from testproject.settings import *  # noqa: F403\n"
            "INSTALLED_APPS = [*INSTALLED_APPS, 'reloadapp']  # noqa: F405\n")
    return module


def enqueue(token: str, seconds: float = 0.0) -> str:
    """Enqueue the app's task by name (this process does not import the app)."""
    task_id = uuid.uuid4().hex
    message = TaskMessage(id=task_id, name=TASK, queue="default", args=[token, seconds],
                          kwargs={}, priority=0, max_retries=0, timeout=60.0,
                          result_ttl=None, unique_key=None, enqueued_at=time.time()).encode()
    outcome = get_broker().enqueue(EnqueueRequest(queue="default", id=task_id,
                                                  message=message, priority=0, max_retries=0))
    assert outcome.status == "ok"
    return task_id


def session_processes(sid: int) -> list[int]:
    """pids of the live (not zombie) processes of session `sid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[3]) == sid and fields[0] != "Z":  # state, ppid, pgrp, session
            found.append(int(entry.name))
    return found


def app_env(root: Path) -> dict[str, str]:
    """The worker's environment: the app's directory on its path, its settings."""
    return {"PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
            "DJANGO_SETTINGS_MODULE": "reload_settings"}


def test_reload_runs_the_new_code_after_draining_and_stops_cleanly(run_worker, redis_server,
                                                                   tmp_path):
    r = redis_server.client()
    module = write_app(tmp_path, 1)
    env = app_env(tmp_path)
    worker = run_worker("--reload", "--processes", "1", "--threads", "2",
                        "--shutdown-timeout", "20", env=env)
    enqueue("first")
    wait_until(lambda: "first:v1" in recording.ran(r), timeout=30,
               message="version 1 ran")

    # A task still running when the file changes finishes (the drain), on version 1.
    enqueue("draining", 2.0)
    wait_until(lambda: recording.attempts(r, "draining") == 1, timeout=10)
    write_app(tmp_path, 2)
    worker.wait_for_log(f"{module} changed: restarting the worker", timeout=15)
    enqueue("second")
    wait_until(lambda: "second:v2" in recording.ran(r), timeout=30,
               message="version 2 ran after the restart")
    assert "draining:v1" in recording.ran(r)
    assert recording.ran(r) == {"first:v1", "draining:v1", "second:v2"}

    worker.send(signal.SIGTERM)  # the process we started: it passes it on to the worker
    assert worker.wait(30) == 0, worker.log_text()
    wait_until(lambda: not session_processes(worker.pid), timeout=10,
               message="no process of the worker left (no orphans)")
    assert "stopped" in worker.log_text()


def test_sigterm_to_the_whole_group_stops_it_once_gracefully(run_worker, redis_server,
                                                            tmp_path):
    """The worker runs in a process group of its own: a group signal (a terminal's Ctrl-C,
    `kill -TERM -PGID`) reaches it once, through its parent, not twice (at once)."""
    r = redis_server.client()
    write_app(tmp_path, 1)
    env = app_env(tmp_path)
    worker = run_worker("--reload", "--processes", "1", "--shutdown-timeout", "20", env=env)
    enqueue("slow", 2.0)
    wait_until(lambda: recording.attempts(r, "slow") == 1, timeout=30)
    worker.send_group(signal.SIGINT)
    assert worker.wait(30) == 0, worker.log_text()
    assert recording.ran(r) == {"slow:v1"}  # finished, not put back
    assert "second signal" not in worker.log_text()
    wait_until(lambda: not session_processes(worker.pid), timeout=10,
               message="no process of the worker left (no orphans)")


def test_the_worker_stops_when_its_reloading_parent_dies(run_worker, redis_server, tmp_path):
    write_app(tmp_path, 1)
    env = app_env(tmp_path)
    worker = run_worker("--reload", "--processes", "1", env=env)
    worker.wait_for_log("starting: Redis", timeout=30)
    worker.send(signal.SIGKILL)  # the parent only: it cannot pass anything on
    worker.wait(10)
    wait_until(lambda: not session_processes(worker.pid), timeout=30,
               message="the worker noticed its parent died and stopped")
    assert "the reloading process" in worker.log_text()
