"""End-to-end: ``async def`` tasks in a real ``manage.py runbackground``: run to completion
on one event loop per worker thread, with current_task() inside, and their timeout raised
inside the coroutine (or, for a coroutine that blocks its loop, the thread-level backstop)."""

from __future__ import annotations

import json
import re
from collections import defaultdict

from demo import recording, tasks
from django_bgtasks import get_task_info
from helpers import state_of, wait_until

PID_RE = re.compile(r"\[pid (\d+)\]")


def wait_state(task_id: str, state: str, timeout: float):
    wait_until(lambda: state_of(task_id) == state, timeout=timeout,
               message=f"task {task_id} in state {state!r} (now {state_of(task_id)!r})")
    return get_task_info(task_id)


def test_an_async_task_awaits_and_its_result_is_kept(start_worker):
    start_worker("--processes", "1", "--threads", "2")
    task_id = tasks.async_add.enqueue(2, 3, seconds=0.2).id

    info = wait_state(task_id, "completed", timeout=10)
    assert info.result == 5 and info.attempts == 1


def test_current_task_reaches_the_coroutine_and_its_child_tasks(start_worker):
    start_worker("--processes", "1", "--threads", "2")
    task_id = tasks.async_whoami.enqueue().id

    info = wait_state(task_id, "completed", timeout=10)
    assert info.result["id"] == task_id and info.result["attempt"] == 1
    assert info.result["child_id"] == task_id
    # in the worker thread itself, not in a loop thread of its own (as async_to_sync runs)
    assert info.result["thread"].startswith("bgtasks-worker-"), info.result


def test_a_timeout_raises_task_timeout_inside_the_coroutine(start_worker, redis_server):
    r = redis_server.client()
    worker = start_worker("--processes", "1", "--threads", "2")
    task_id = tasks.async_past_timeout.enqueue("at", 30.0).id  # timeout=1, max_retries=1

    info = wait_state(task_id, "dead", timeout=15)
    assert info.attempts == 2
    assert info.last_error.startswith("django_bgtasks.exceptions.TaskTimeout"), info.last_error
    assert "in async_past_timeout" in info.traceback
    # the task's own except and finally ran, in both attempts; it never got further
    assert recording.log(r).count("at:caught") == 2
    assert recording.log(r).count("at:finally") == 2
    assert "at" not in recording.ran(r)
    log = worker.log_text()
    durations = [float(d) for d in re.findall(
        rf"async_past_timeout\[{task_id}\] failed in ([\d.]+)s", log)]
    assert len(durations) == 2 and all(1.0 <= d < 2.0 for d in durations), durations
    # the coroutine stopped when told: no thread-level raise, no process replaced
    assert "blocks its event loop" not in log and "starting a new one" not in log


def test_a_coroutine_blocking_its_loop_gets_the_thread_level_timeout(start_worker,
                                                                      redis_server):
    r = redis_server.client()
    worker = start_worker("--processes", "1", "--threads", "2")
    task_id = tasks.async_block_in_steps.enqueue("bs", 30.0).id  # timeout=1, max_retries=0

    info = wait_state(task_id, "dead", timeout=15)
    assert info.last_error.startswith("django_bgtasks.exceptions.TaskTimeout"), info.last_error
    assert "bs:caught" in recording.ran(r) and "bs" not in recording.ran(r)
    log = worker.log_text()
    assert f"async_block_in_steps[{task_id}] blocks its event loop past its timeout" in log
    assert "starting a new one" not in log

    # the thread's loop still serves async tasks
    after = tasks.async_add.enqueue(1, 1, seconds=0.01).id
    assert wait_state(after, "completed", timeout=10).result == 2


def test_a_coroutine_that_never_yields_gets_its_process_replaced(start_worker, redis_server):
    r = redis_server.client()
    worker = start_worker("--processes", "1", "--threads", "2")
    task_id = tasks.async_block.enqueue("bl", 30.0).id  # one time.sleep(30) in async def

    info = wait_state(task_id, "dead", timeout=15)
    assert info.last_error.startswith("django_bgtasks.exceptions.TaskTimeout: the task "
                                      "exceeded its timeout of 1s and did not stop"), \
        info.last_error
    log = worker.wait_for_log("exited; starting a new one", timeout=10)
    assert "worker process retiring: a task thread ignored its timeout" in log

    after = tasks.async_add.enqueue(2, 2, seconds=0.01).id
    assert wait_state(after, "completed", timeout=10).result == 4
    assert "bl" not in recording.ran(r)


def test_async_tasks_run_concurrently_on_one_loop_per_thread(start_worker, redis_server):
    r = redis_server.client()
    start_worker("--processes", "1", "--threads", "3")
    ids = [tasks.async_note_loop.enqueue(f"n{i}", 0.3).id for i in range(12)]

    wait_until(lambda: r.llen(tasks.LOOPS_KEY) == 12, timeout=20, message="12 tasks ran")
    notes = [json.loads(item) for item in r.lrange(tasks.LOOPS_KEY, 0, -1)]
    assert sorted(n["token"] for n in notes) == sorted(f"n{i}" for i in range(12))
    loops = defaultdict(set)
    for note in notes:
        loops[(note["pid"], note["thread"])].add(note["loop"])
    assert len(loops) == 3, loops  # the three threads all ran some
    assert all(len(ids_) == 1 for ids_ in loops.values()), loops  # each reused its loop
    assert len({next(iter(ids_)) for ids_ in loops.values()}) == 3  # a loop per thread
    assert all(state_of(task_id) is None for task_id in ids)  # done, nothing kept


def test_an_async_periodic_task_knows_its_tick(start_worker, redis_server):
    r = redis_server.client()
    start_worker("--processes", "1", "--threads", "2",
                 env={"BGTASKS_TEST_PERIODIC": "async-every-second"})

    def async_ticks() -> list[dict]:
        return [t for t in (json.loads(x) for x in r.lrange(recording.TICKS_KEY, 0, -1))
                if t["label"] == "async"]

    runs = wait_until(lambda: len(async_ticks()) >= 2 and async_ticks(), timeout=20,
                      message="two ticks of the async entry ran")
    assert all(run["entry"] == "async-every-second" and run["tick"] for run in runs), runs
    ticks = [run["tick"] for run in runs]
    assert len(set(ticks)) == len(ticks)
