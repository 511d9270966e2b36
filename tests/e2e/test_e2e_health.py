"""End-to-end: ``manage.py bgtasks health`` against a real worker (``runbackground``) and
a real Redis, and against a Redis that is not there or does not answer.

Each check is run in-process (call_command: a failure is SystemExit(1) with the reason
on stderr) and, where the exit status and the time to start matter, as ``manage.py``.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from django.core.management import call_command

from demo import recording, tasks
from helpers import MANAGE_PY, REPO_ROOT, free_port, wait_until

HOST = socket.gethostname()  # the worker announces the same: it runs on this machine


def health(*args: str) -> tuple[int, str]:
    """``bgtasks health ARGS`` in-process: (exit status, the line it printed)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("bgtasks", "health", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        assert out.getvalue() == ""
        return int(exc.code or 0), err.getvalue().strip()
    assert err.getvalue() == ""
    return 0, out.getvalue().strip()


def manage_health(*args: str, redis_url: str) -> tuple[subprocess.CompletedProcess, float]:
    """``python manage.py bgtasks health ARGS`` as a probe runs it: (result, seconds)."""
    env = {**os.environ, "BGTASKS_REDIS_URL": redis_url, "BGTASKS_DEMO_DB": os.devnull}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(MANAGE_PY), "bgtasks", "health", *args],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60)
    return proc, time.monotonic() - started


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections (the kernel completes them) and never answers: a
    hung Redis, or one behind a dead network path."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_worker_and_queue_age_against_a_real_worker(start_worker, redis_server):
    assert health("--worker")[0] == 1  # nothing runs yet
    worker = start_worker("--queues", "default", "--processes", "1", "--threads", "2")
    # the worker announces itself once it is up: the liveness probe turns healthy
    wait_until(lambda: health("--worker")[0] == 0, timeout=15, message="worker announced")
    client = redis_server.client()
    tasks.record.enqueue("served")
    wait_until(lambda: "served" in recording.ran(client), timeout=10, message="task ran")

    # the real exit status and the one line on stdout, as a probe sees them
    proc, _ = manage_health("--worker", "--queue", "default", "--max-age", "30",
                            redis_url=redis_server.url)
    assert (proc.returncode, proc.stderr) == (0, "")
    [line] = proc.stdout.splitlines()
    assert line.startswith("ok: redis reachable (")
    assert f"worker on host {HOST} heartbeating (pid {worker.pid})" in line
    assert "queue default has no pending task (max 30 s)" in line

    # 'mail' has no worker: its task ages until it passes the bound
    tasks.record.using(queue_name="mail").enqueue("unserved")
    status, line = health("--queue", "mail", "--max-age", "1")
    assert status == 0 and "queue mail's oldest pending task has waited" in line, line
    time.sleep(1.2)
    status, line = health("--queue", "default", "--queue", "mail", "--max-age", "1")
    assert status == 1
    assert line.startswith("unhealthy: queue mail's oldest pending task has waited 1")
    assert line.endswith(" s (max 1 s)")
    assert health("--queue", "default", "--max-age", "1")[0] == 0  # the worker serves it

    # a graceful stop removes the heartbeat at once (a SIGKILL leaves it for up to 15 s)
    worker.send_group()
    assert worker.wait(15) == 0
    assert health("--worker") == (
        1, f"unhealthy: no worker on host {HOST} has a live heartbeat")
    assert health()[0] == 0  # Redis itself is fine


def test_worker_check_needs_a_worker_of_this_host(redis_server):
    from django_bgtasks.broker import get_broker

    # another host's worker does not keep this host's probe alive
    get_broker().heartbeat_worker("web-2:7:x", {"host": "web-2", "pid": "7"}, ttl=30)
    assert health("--worker") == (
        1, f"unhealthy: no worker on host {HOST} has a live heartbeat (1 live on other hosts)")


def test_a_misspelt_queue_is_unhealthy_not_forever_fine():
    status, line = health("--queue", "defualt", "--max-age", "60")
    assert status == 1
    assert line.startswith("unhealthy: queue defualt is unknown")


def test_options_that_go_together():
    from django.core.management.base import CommandError

    for args in (["--max-age", "5"], ["--queue", "default"], ["--queue", "default",
                                                                "--max-age", "-1"]):
        with pytest.raises(CommandError):
            call_command("bgtasks", "health", *args, stdout=io.StringIO())


def test_redis_refusing_connections_fails_at_once(settings):
    port = free_port()
    settings.BGTASKS = {**settings.BGTASKS, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    started = time.monotonic()
    status, line = health("--worker", "--queue", "default", "--max-age", "5")
    assert time.monotonic() - started < 1
    assert status == 1
    assert line.startswith(f"unhealthy: redis unreachable: cannot reach Redis at "
                           f"redis://127.0.0.1:{port}/0: ")


def test_a_hung_redis_fails_the_probe_within_seconds(silent_port):
    # SOCKET_TIMEOUT is 10 s: the probe must not wait that long, nor retry
    proc, seconds = manage_health("--worker", redis_url=f"redis://127.0.0.1:{silent_port}/0")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (f"unhealthy: redis unreachable: cannot reach Redis at "
                           f"redis://127.0.0.1:{silent_port}/0: Timeout reading from "
                           f"127.0.0.1:{silent_port}\n")
    assert "Traceback" not in proc.stderr and "CommandError" not in proc.stderr
    assert seconds < 6, seconds  # start-up (~1 s) plus PROBE_TIMEOUT (2 s)
