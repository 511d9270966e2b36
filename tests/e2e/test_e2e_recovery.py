"""End-to-end: what survives crashes. Killed workers and processes (leases bring their
tasks back), a task that kills its own process, a Redis restart under a running worker,
and a worker started while Redis is down."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from demo import recording, tasks
from django_bgtasks import get_task_info
from helpers import counts, free_port, state_of, wait_until

LEASE = 2
LEASE_ENV = {"BGTASKS_LEASE_SECONDS": str(LEASE)}


def started_pid(r, token: str) -> int | None:
    """The pid of the process that last started mark_sleep_record(token)."""
    value = r.get(f"bgtasks-test:pid:{token}")
    return int(value) if value else None


def children_of(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def wait_started(r, tokens, timeout: float = 10.0) -> None:
    """Until every mark_sleep_record(token) has started (it counts attempts first)."""
    wait_until(lambda: all(recording.attempts(r, t) >= 1 for t in tokens), timeout=timeout,
               message=f"tasks {tokens} started")


# --- killed workers --------------------------------------------------------------------


def test_sigkill_of_the_whole_worker_then_restart_runs_every_task(start_worker, redis_server):
    r = redis_server.client()
    first = start_worker("--processes", "2", "--threads", "4", env=LEASE_ENV)
    orphans = [f"orphan{i}" for i in range(8)]  # fill the 2 x 4 threads
    for token in orphans:
        tasks.mark_sleep_record.enqueue(token, 2.0)
    wait_until(lambda: all(recording.attempts(r, t) == 1 for t in orphans), timeout=10,
               message="8 tasks started")
    waiting = [f"waiting{i}" for i in range(4)]  # no free thread: these stay pending
    for token in waiting:
        tasks.record.enqueue(token)

    first.send_group(signal.SIGKILL)
    assert first.wait(5) == -signal.SIGKILL
    wait_until(lambda: not first.group_alive(), timeout=5, message="every process gone")
    assert counts()["active"] == 8 and counts()["pending"] == 4
    assert not recording.ran(r)  # nothing finished: the kill came mid-task

    second = start_worker("--processes", "2", "--threads", "4", env=LEASE_ENV)
    # From when it is up: what the bound is about is recovery, not how long Python and
    # Django take to start on a loaded machine (up to 3 s seen in CI).
    second.wait_for_log(" starting: Redis ")
    restarted = time.monotonic()
    wait_until(lambda: all(recording.attempts(r, t) == 2 for t in orphans),
               timeout=LEASE + 5, message="orphans started again")
    restarted_in = time.monotonic() - restarted
    wait_until(lambda: recording.ran(r) == set(orphans) | set(waiting), timeout=LEASE + 5,
               message="every task ran")
    finished_in = time.monotonic() - restarted
    print(f"\nSIGKILL recovery (lease {LEASE}s): orphans started again {restarted_in:.2f}s "
          f"and finished {finished_in:.2f}s after the restart (they sleep 2 s)")
    assert finished_in <= LEASE + 5

    assert all(recording.log(r).count(t) == 1 for t in orphans + waiting)
    log = second.wait_for_log("whose worker stopped")
    recovered = sum(int(n) for n in re.findall(r"recovered (\d+) task\(s\) of queue default",
                                               log))
    assert recovered == 8
    wait_until(lambda: counts() == dict.fromkeys(counts(), 0), timeout=5,
               message="nothing left in Redis")


def test_sigkill_of_one_child_is_replaced_and_its_tasks_return_at_once(
        start_worker, redis_server):
    r = redis_server.client()
    # A long lease: the victim's task must come back because the supervisor saw its
    # process die, not because a lease expired.
    worker = start_worker("--processes", "2", "--threads", "1",
                          env={"BGTASKS_LEASE_SECONDS": "30"})
    # two worker processes and the maintenance process
    wait_until(lambda: len(children_of(worker.pid)) == 3, timeout=10, message="3 children")
    victim_id = tasks.mark_sleep_record.enqueue("victim", 1.5).id
    tasks.mark_sleep_record.enqueue("bystander", 3.0)
    wait_started(r, ["victim", "bystander"])
    victim_pid = started_pid(r, "victim")
    assert victim_pid in children_of(worker.pid)
    assert started_pid(r, "bystander") != victim_pid

    os.kill(victim_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    log = worker.wait_for_log(f"worker process {victim_pid} died (killed by SIGKILL)",
                              timeout=5)
    line = next(ln for ln in log.splitlines() if f"worker process {victim_pid} died" in ln)
    assert "starting a new one" in line
    wait_until(lambda: recording.attempts(r, "victim") == 2, timeout=5,
               message="the victim started again")
    back_in = time.monotonic() - killed_at
    wait_until(lambda: len(children_of(worker.pid)) == 3 and
               victim_pid not in children_of(worker.pid), timeout=5,
               message="a replacement child")

    wait_until(lambda: {"victim", "bystander"} <= recording.ran(r), timeout=6,
               message="both tasks ran")
    assert started_pid(r, "victim") != victim_pid
    assert recording.attempts(r, "bystander") == 1  # never disturbed
    assert recording.log(r).count("victim") == 1 and recording.log(r).count("bystander") == 1
    log = worker.wait_for_log(f"1 task(s) of worker process {victim_pid} returned to pending")
    assert "lease lost" not in log
    assert worker.is_running()
    assert state_of(victim_id) is None  # done and gone
    print(f"\nchild SIGKILLed: its task started again {back_in:.2f} s later (lease 30 s)")


@pytest.mark.parametrize("poison, death", [
    (tasks.exit_process, "died (exit code 1)"),  # os._exit(1): no cleanup at all
    (tasks.segfault, "died (killed by SIGSEGV)"),  # a C-level crash
])
def test_task_killing_its_process_ends_dead_and_the_worker_goes_on(
        start_worker, redis_server, poison, death):
    r = redis_server.client()
    worker = start_worker("--processes", "1", "--threads", "2", env=LEASE_ENV)
    tasks.record.enqueue("before-exit")
    wait_until(lambda: "before-exit" in recording.ran(r), timeout=10)
    poisons = [poison.enqueue(f"ex{i}").id for i in range(3)]  # max_retries=1 each

    wait_until(lambda: all(state_of(task_id) == "dead" for task_id in poisons),
               timeout=6 * (LEASE + 4), message="every poison task is dead")
    for task_id in poisons:
        info = get_task_info(task_id)
        assert info.attempts == 2
        assert info.last_error.startswith("WorkerLost: worker process "), info.last_error
        assert death in info.last_error
    # A crash also ends the tasks its process had claimed alongside (they count an
    # attempt without having run), so some poison tasks ran fewer than twice.
    runs = sum(recording.attempts(r, f"ex{i}") for i in range(3))
    log = worker.log_text()
    assert 1 <= log.count(death) <= runs <= 6
    assert "dead (it was their last attempt)" in log

    for i in range(5):
        tasks.record.enqueue(f"after-exit{i}")
    wait_until(lambda: {f"after-exit{i}" for i in range(5)} <= recording.ran(r), timeout=5)
    assert worker.is_running()
    # their outcomes go out with the worker's next claim, a moment after they ran
    wait_until(lambda: counts()["active"] == 0, timeout=5, message="nothing left active")
    assert counts()["dead"] == 3


# --- Redis outages ---------------------------------------------------------------------


@pytest.mark.single_redis(reason="restarts the redis-server under a worker")
def test_redis_restart_under_a_running_worker_loses_nothing(start_worker, redis_server):
    r = redis_server.client()
    before = [f"pre{i}" for i in range(80)]
    for token in before:
        tasks.sleep_then_record_patiently.enqueue(token, 0.05)
    worker = start_worker("--processes", "2", "--threads", "2", env=LEASE_ENV)
    wait_until(lambda: len(recording.ran(r)) >= 10, timeout=10, message="tasks flowing")

    # a quick restart (SHUTDOWN flushes the AOF; same port, same data)...
    redis_server.restart()
    # ...then an outage longer than redis-py's own (immediate) retries can bridge
    redis_server.stop()
    down_at = time.monotonic()
    time.sleep(1.0)
    assert worker.is_running()
    redis_server.start()
    print(f"\nRedis down for {time.monotonic() - down_at:.2f}s")
    r = redis_server.client()
    assert len(recording.ran(r)) < len(before)  # it happened while tasks were flowing
    after = [f"post{i}" for i in range(40)]
    for token in after:
        tasks.record.enqueue(token)

    wait_until(lambda: recording.ran(r) == set(before) | set(after), timeout=20,
               message="every task enqueued before and after the restart ran")
    assert worker.is_running()
    log = worker.log_text()
    retries = [ln for ln in log.splitlines() if "cannot reach Redis" in ln]
    assert retries and all(re.search(r"retrying in [\d.]+s", ln) for ln in retries), retries
    assert "Traceback" not in log
    assert " failed in " not in log  # the outage cost no task an attempt
    wait_until(lambda: counts() == dict.fromkeys(counts(), 0), timeout=LEASE + 5,
               message="nothing left in Redis")
    print(f"Redis restart: {len(retries)} retry line(s) logged; "
          f"{len(recording.log(r)) - 120} task(s) ran twice (at least once is the contract)")


def test_startup_with_redis_down_logs_one_clear_line_and_waits(start_worker):
    port = free_port()
    target = f"redis://127.0.0.1:{port}/0"
    worker = start_worker("--processes", "1", "--threads", "1",
                          env={"BGTASKS_REDIS_URL": target})
    log = worker.wait_for_log(f"cannot reach Redis at {target}", timeout=10)
    line = next(ln for ln in log.splitlines() if "cannot reach Redis" in ln)
    assert re.search(r"retrying in [\d.]+s$", line), line
    assert "Traceback" not in log

    time.sleep(1.0)
    assert worker.is_running()
    assert children_of(worker.pid) == set()  # no worker process before Redis answers
    assert worker.log_text().count(f"cannot reach Redis at {target}") >= 2  # still trying

    started = time.monotonic()
    worker.send(signal.SIGTERM)
    assert worker.wait(12) == 0
    print(f"\nSIGTERM while waiting for Redis: exited after {time.monotonic() - started:.2f}s")


@pytest.mark.single_redis(reason="stops the redis-server, then starts it again")
def test_worker_started_while_redis_is_down_starts_working_when_it_comes_up(
        start_worker, redis_server):
    redis_server.stop()
    worker = start_worker("--processes", "1", "--threads", "1")
    worker.wait_for_log(f"cannot reach Redis at {redis_server.url}", timeout=10)
    assert children_of(worker.pid) == set()

    redis_server.start()  # same port
    r = redis_server.client()
    tasks.record.enqueue("after-redis-came-up")
    wait_until(lambda: "after-redis-came-up" in recording.ran(r), timeout=15,
               message="the task ran once Redis answered")
    log = worker.log_text()
    assert log.count(" starting: Redis ") == 1
    assert log.index("cannot reach Redis") < log.index(" starting: Redis ")
    assert worker.is_running()
