"""End-to-end: a real `manage.py runbackground` against a real redis-server.

Outcomes are checked from the tasks' own side effects (demo.recording) and from the state
Redis holds (counts, TaskInfo); the worker's log is checked for its one line per outcome.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections import Counter
from datetime import datetime

from demo import recording, tasks
from django_bgtasks import get_task_info
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.connection import describe_target
from django_bgtasks.broker.types import EnqueueRequest
from django_bgtasks.message import TaskMessage
from helpers import counts, state_of, wait_until

QUEUE = "default"
PID_RE = re.compile(r"\[pid (\d+)\]")


def wait_state(task_id: str, state: str, timeout: float):
    wait_until(lambda: state_of(task_id) == state, timeout=timeout,
               message=f"task {task_id} in state {state!r} (now {state_of(task_id)!r})")
    return get_task_info(task_id)


def warm_up(worker, r) -> None:
    """Return once the worker claims and runs tasks (its poller/fetcher are up)."""
    token = f"warm-{uuid.uuid4().hex[:6]}"
    tasks.record.enqueue(token)
    wait_until(lambda: token in recording.ran(r), timeout=10, message="warm-up task ran")


def log_time(line: str) -> float:
    """The timestamp the worker's log formatter wrote at the start of `line`."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def is_outcome(line: str) -> bool:
    """A worker log line reporting how one task attempt ended."""
    return bool(re.search(r"\] (succeeded|failed) in ", line)
                or "is corrupt and goes to the dead queue" in line)


def outcome_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if is_outcome(line)]


# --- throughput and the log -----------------------------------------------------------


def test_thousand_tasks_all_run_once_each_with_one_log_line_per_outcome(
        start_worker, redis_server):
    r = redis_server.client()
    worker = start_worker("--processes", "2", "--threads", "4")
    ids = [tasks.record.enqueue(f"t{i}").id for i in range(1000)]

    wait_until(lambda: len(recording.ran(r)) == 1000, timeout=30, message="1000 tokens ran")
    assert recording.ran(r) == {f"t{i}" for i in range(1000)}
    log = worker.wait_for_log(" succeeded in ", count=1000, timeout=10)

    # each task ran exactly once
    assert Counter(recording.log(r)) == Counter({f"t{i}": 1 for i in range(1000)})
    # one line per outcome, naming the task and its id
    succeeded = re.findall(r"task demo\.tasks\.record\[(\w+)\] succeeded in [\d.]+s "
                           r"\(attempt 1\)", log)
    assert Counter(succeeded) == Counter(ids)
    assert len(outcome_lines(log)) == 1000
    # both processes did work
    pids = {PID_RE.search(line).group(1) for line in outcome_lines(log)}
    assert len(pids) == 2, pids
    # the start line: Redis target, queues and weights, P x T
    target = describe_target(redis_server.url)
    assert re.search(rf"starting: Redis {re.escape(target)}, queues default:1, "
                     r"mail:2 \(weighted\), 2 processes x 4 threads", log), log[:600]
    assert log.count(" starting: Redis ") == 1
    wait_until(lambda: counts() == dict.fromkeys(counts(), 0), timeout=5,
               message="every finished task is gone from Redis")


# --- failures, retries, dead letters ---------------------------------------------------


def test_failing_task_retries_with_its_backoff_then_dies_with_its_traceback(
        start_worker, redis_server):
    r = redis_server.client()
    worker = start_worker("--processes", "1", "--threads", "2")
    task_id = tasks.fail_always.using(max_retries=2).enqueue("fa").id

    info = wait_state(task_id, "dead", timeout=10)
    assert info.attempts == 3  # max_retries + 1
    assert info.max_retries == 2
    assert info.last_error == "ValueError: boom fa"
    assert "Traceback (most recent call last)" in info.traceback
    assert "ValueError: boom fa" in info.traceback
    assert "in fail_always" in info.traceback
    assert recording.log(r).count("fa") == 3  # every attempt ran the function
    assert counts()["dead"] == 1 and counts()["retry"] == 0

    # retried with the task's own backoff (0.2 s), not the default curve (>= 16 s)
    assert [e["attempt"] for e in info.errors] == [1, 2, 3]
    at = [e["at"] / 1000 for e in info.errors]
    gaps = [later - earlier for earlier, later in itertools.pairwise(at)]
    assert all(0.19 <= gap < 1.5 for gap in gaps), gaps

    log = worker.wait_for_log("is dead")
    assert log.count(f"demo.tasks.fail_always[{task_id}] failed in") == 3
    assert "(attempt 1 of 3), retry in 0.2s: ValueError: boom fa" in log
    assert "(attempt 2 of 3), retry in 0.2s: ValueError: boom fa" in log
    assert re.search(r"\(attempt 3 of 3\) and is dead \(no retries left after 3 attempts\): "
                     r"ValueError: boom fa", log)


def test_fail_then_succeed_completes_after_the_planned_attempts(start_worker, redis_server):
    r = redis_server.client()
    start_worker("--processes", "1", "--threads", "2")
    kept = tasks.fail_then_succeed.using(result_ttl=60).enqueue("kept", 2).id
    dropped = tasks.fail_then_succeed.enqueue("dropped", 1).id

    info = wait_state(kept, "completed", timeout=10)
    assert info.attempts == 3
    assert info.result == "kept"
    assert info.last_error.startswith("ValueError: attempt 2 of kept fails")
    assert recording.attempts(r, "kept") == 3

    wait_until(lambda: "dropped" in recording.ran(r), timeout=10)
    assert recording.attempts(r, "dropped") == 2
    wait_until(lambda: state_of(dropped) is None, timeout=5,
               message="a completed task without result_ttl is deleted")
    assert recording.log(r).count("kept") == 1 and recording.log(r).count("dropped") == 1
    assert counts()["dead"] == 0


def test_retry_with_delay_and_skip_retry(start_worker, redis_server):
    r = redis_server.client()
    worker = start_worker("--processes", "1", "--threads", "2")
    retry_id = tasks.retry_then_record.enqueue("rt", 1.0).id
    skip_id = tasks.skip_retry.enqueue("sk").id

    # Retry(delay=1.0): waits in the retry set, then runs once more and succeeds
    info = wait_state(retry_id, "retry", timeout=5)
    assert info.attempts == 1 and info.last_error.startswith("django_bgtasks.exceptions.Retry")
    wait_until(lambda: "rt" in recording.ran(r), timeout=5)
    first, second = [e["t"] for e in recording.times(r) if e["token"] == "rt"]
    assert 1.0 <= second - first < 1.5, second - first
    assert recording.attempts(r, "rt") == 2

    # SkipRetry: dead at the first attempt although max_retries is 25
    info = wait_state(skip_id, "dead", timeout=5)
    assert info.attempts == 1 and info.max_retries == 25
    assert info.last_error == "django_bgtasks.exceptions.SkipRetry: skip sk"
    assert recording.log(r).count("sk") == 1

    log = worker.wait_for_log(f"retry_then_record[{retry_id}] succeeded")
    assert f"retry_then_record[{retry_id}] failed in" in log and "retry in 1.0s" in log
    assert re.search(rf"skip_retry\[{skip_id}\] failed in [\d.]+s \(attempt 1 of 26\) and is "
                     r"dead \(SkipRetry raised\)", log)


def test_non_json_return_value_is_a_failure_with_a_readable_error(start_worker, redis_server):
    r = redis_server.client()
    start_worker("--processes", "1", "--threads", "1")
    task_id = tasks.return_non_json.enqueue("nj").id
    info = wait_state(task_id, "dead", timeout=10)
    assert "nj" in recording.ran(r)  # the function ran; its return value is the failure
    assert info.last_error.startswith("TypeError: demo.tasks.return_non_json: the return "
                                      "value is of type object"), info.last_error
    assert "not JSON serializable" in info.last_error


# --- scheduling ------------------------------------------------------------------------


def test_scheduled_tasks_run_when_due_and_not_before(start_worker, redis_server):
    r = redis_server.client()
    worker = start_worker("--processes", "1", "--threads", "2")
    warm_up(worker, r)
    late_id = tasks.record_time.using(run_after=1.5).enqueue("due-1.5").id
    # enqueued later but due earlier: the poller must wake for it
    early_id = tasks.record_time.using(run_after=0.7).enqueue("due-0.7").id
    due = {}
    for token, task_id in (("due-1.5", late_id), ("due-0.7", early_id)):
        info = get_task_info(task_id)
        assert info.state == "scheduled"
        due[token] = info.run_after.timestamp()  # Redis' clock: the same host's clock
    assert counts()["scheduled"] == 2

    wait_until(lambda: len(recording.times(r)) == 2, timeout=5, message="both ran")
    ran_at = {e["token"]: e["t"] for e in recording.times(r)}
    assert list(ran_at) == ["due-0.7", "due-1.5"]
    for token in ran_at:
        lateness = ran_at[token] - due[token]
        print(f"\nscheduled {token}: ran {lateness * 1000:+.1f} ms after its due time")
        assert 0 <= lateness < 0.1, (token, lateness)


# --- process recycling -----------------------------------------------------------------


def test_max_tasks_per_child_replaces_processes_and_loses_nothing(start_worker, redis_server):
    r = redis_server.client()
    worker = start_worker("--processes", "1", "--threads", "1", "--max-tasks-per-child", "5")
    for i in range(20):
        tasks.record.enqueue(f"m{i}")
    wait_until(lambda: len(recording.ran(r)) == 20, timeout=15, message="20 tokens ran")
    assert Counter(recording.log(r)) == Counter({f"m{i}": 1 for i in range(20)})

    log = worker.wait_for_log("exited; starting a new one", timeout=5, count=3)
    assert log.count("worker process retiring: ran 5 tasks") >= 3
    per_pid = Counter(PID_RE.search(line).group(1) for line in outcome_lines(log))
    assert sorted(per_pid.values()) == [5, 5, 5, 5], per_pid
    # a planned retirement is no crash: the replacement starts at once, without the
    # crash-loop backoff (0.5 s, 1 s, 2 s...) that protects against processes dying young
    lines = log.splitlines()
    gaps = []
    for index, line in enumerate(lines):
        if "exited; starting a new one" in line:
            first = next(ln for ln in lines[index + 1:] if is_outcome(ln))
            gaps.append(log_time(first) - log_time(line))
    print(f"\nretired process -> first task of its replacement: "
          f"{', '.join(f'{g * 1000:.0f} ms' for g in gaps)}")
    assert len(gaps) == 3 and max(gaps) < 0.4, gaps
    assert worker.is_running()


# --- timeouts --------------------------------------------------------------------------


def test_task_timeout_interrupts_a_python_loop_and_counts_as_a_failure(
        start_worker, redis_server):
    r = redis_server.client()
    worker = start_worker("--processes", "1", "--threads", "2")
    task_id = tasks.sleep_in_steps.enqueue("to", 5.0).id  # timeout=1, max_retries=1

    info = wait_state(task_id, "dead", timeout=10)
    assert info.attempts == 2
    assert info.last_error.startswith("django_bgtasks.exceptions.TaskTimeout"), info.last_error
    assert "TaskTimeout" in info.traceback and "in sleep_in_steps" in info.traceback
    assert recording.attempts(r, "to") == 2 and "to" not in recording.ran(r)

    log = worker.log_text()
    assert log.count(f"sleep_in_steps[{task_id}] exceeded its timeout of 1s; "
                     "interrupting it") == 2
    durations = [float(d) for d in re.findall(
        rf"sleep_in_steps\[{task_id}\] failed in ([\d.]+)s", log)]
    assert len(durations) == 2 and all(1.0 <= d < 1.6 for d in durations), durations
    # it stopped when interrupted: its process was not replaced
    assert "ignored its timeout" not in log and "starting a new one" not in log


def test_task_that_swallows_its_timeout_gets_its_process_replaced(start_worker, redis_server):
    r = redis_server.client()
    worker = start_worker("--processes", "1", "--threads", "2")
    task_id = tasks.ignore_timeout.enqueue("it", 30.0).id  # timeout=1, max_retries=0

    info = wait_state(task_id, "dead", timeout=10)
    assert "it:swallowed" in recording.ran(r)  # TaskTimeout was raised in it, and ignored
    assert info.attempts == 1
    assert info.last_error.startswith("django_bgtasks.exceptions.TaskTimeout: the task "
                                      "exceeded its timeout of 1s and did not stop"), \
        info.last_error
    log = worker.wait_for_log("exited; starting a new one", timeout=10)
    line = next(ln for ln in log.splitlines() if "ignored its timeout" in ln)
    assert task_id in line
    old_pid = int(PID_RE.search(line).group(1))
    assert "worker process retiring: a task thread ignored its timeout" in log
    assert f"worker process {old_pid} exited; starting a new one" in log

    # the stuck thread died with its process; a new process serves the queue
    tasks.record.enqueue("after-timeout")
    wait_until(lambda: "after-timeout" in recording.ran(r), timeout=10)
    log = worker.wait_for_log("record[")
    new_pids = {PID_RE.search(ln).group(1) for ln in log.splitlines() if "record[" in ln}
    assert str(old_pid) not in new_pids
    assert "it" not in recording.ran(r)
    assert worker.is_running()


# --- bad messages ----------------------------------------------------------------------


def _raw_message(task_id: str, name: str, max_retries: int) -> str:
    return TaskMessage(id=task_id, name=name, queue=QUEUE, args=["x"], kwargs={}, priority=0,
                       max_retries=max_retries, timeout=60.0, result_ttl=None,
                       unique_key=None, enqueued_at=time.time()).encode()


def test_unknown_task_name_goes_dead_with_an_error_naming_it(start_worker, redis_server):
    r = redis_server.client()
    task_id = uuid.uuid4().hex
    outcome = get_broker().enqueue(EnqueueRequest(
        queue=QUEUE, id=task_id, message=_raw_message(task_id, "nonexistent.task", 0),
        priority=0, max_retries=0))
    assert outcome.status == "ok" and outcome.state == "pending"
    tasks.record.enqueue("next-to-unknown")
    worker = start_worker("--processes", "1", "--threads", "2")

    info = wait_state(task_id, "dead", timeout=10)
    assert info.attempts == 1 and info.name == "nonexistent.task"
    assert "UnknownTask" in info.last_error
    assert "no task named 'nonexistent.task' is registered" in info.last_error
    wait_until(lambda: "next-to-unknown" in recording.ran(r), timeout=5)
    log = worker.wait_for_log(f"nonexistent.task[{task_id}] failed in")
    assert "is dead" in log and worker.is_running()


def test_corrupt_message_goes_dead_readably_and_the_worker_goes_on(start_worker, redis_server):
    r = redis_server.client()
    corrupt_id = tasks.record.enqueue("never").id
    # overwrite the stored message of a pending task with bytes that are not JSON
    msg_hash = get_broker().queue_keys(QUEUE).msg
    assert r.hget(msg_hash, corrupt_id) is not None
    r.hset(msg_hash, corrupt_id, b"\xff\x00garbage{")
    for i in range(5):
        tasks.record.enqueue(f"ok{i}")
    worker = start_worker("--processes", "1", "--threads", "2")

    info = wait_state(corrupt_id, "dead", timeout=10)
    assert info.last_error.startswith("InvalidTaskMessage: the task's message is not JSON"), \
        info.last_error
    assert "garbage" in info.last_error
    assert info.name == "<undecodable message>" and info.message_error
    wait_until(lambda: {f"ok{i}" for i in range(5)} <= recording.ran(r), timeout=5)
    assert "never" not in recording.ran(r)
    log = worker.wait_for_log(f"task [{corrupt_id}] is corrupt and goes to the dead queue")
    assert "Traceback" not in log

    # and it keeps serving new work afterwards
    tasks.record.enqueue("after-corrupt")
    wait_until(lambda: "after-corrupt" in recording.ran(r), timeout=5)
    assert worker.is_running()
    assert counts()["dead"] == 1 and counts()["pending"] == 0


def test_an_idle_worker_sends_a_finished_tasks_outcome_at_once(start_worker, redis_server):
    """The outcome of a quick task on an otherwise idle worker reaches Redis right away,
    not at the end of the worker's idle wait for more work (1 s): until then the task
    holds its lease, and a crash would run it again."""
    worker = start_worker("--processes", "1", "--threads", "4")
    warm_up(worker, redis_server.client())
    held = []
    for i in range(6):
        info = tasks.add.enqueue(i, 1)  # result_ttl: the record keeps both times
        done = wait_state(info.id, "completed", timeout=10)
        held.append((done.finished_at - done.started_at).total_seconds())
        time.sleep(0.3)
    # Redis' own times; before the fix most were ~1.0 s (the idle wait), now ~1 ms.
    assert max(held) < 0.5, held
