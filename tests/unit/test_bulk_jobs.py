"""Bulk jobs ("run all" / "delete all"): the bulk_*.lua scripts through BulkJobStore, the
BulkJobs component in this process, and a real `runbackground` running, losing (SIGKILL)
and handing back (SIGTERM) a job.

Leases are judged on Redis' clock: a lapsed lease is a short one waited out for real.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from django_bgtasks.broker import get_broker
from django_bgtasks.broker.bulk import KEEP_FINISHED, BulkJob, BulkJobStore
from django_bgtasks.worker.bulk import BulkJobs
from django_bgtasks.worker.config import WorkerConfig
from helpers import counts, seed_dead, wait_until

LEASE_MS = 30_000


@pytest.fixture
def store() -> BulkJobStore:
    return BulkJobStore(get_broker())


def job_of(store: BulkJobStore, job_id: str, queue: str = "default") -> BulkJob:
    [job] = [j for j in store.jobs([queue]) if j.id == job_id]
    return job


def run_to_the_end(store: BulkJobStore, runner: str, batch: int) -> list[int]:
    """Claim the queue's next job and step it until it ends; the done count after each
    step."""
    job = store.claim("default", runner, LEASE_MS)
    assert job is not None and job.status == "running"
    seen = []
    while job.status == "running":
        job = store.step(job, runner, LEASE_MS, batch)
        seen.append(job.done)
    return seen


# -- the scripts ----------------------------------------------------------------------------


def test_queueing_writes_a_job_and_moves_no_task(store):
    seed_dead(30)
    queued = store.queue("default", "dead", "requeue", "ada")
    assert queued.outcome == "ok"
    job = queued.job
    assert (job.status, job.state, job.action, job.done, job.total, job.requested_by) == (
        "queued", "dead", "requeue", 0, 30, "ada")
    assert job.requested_at is not None and job.runner == "" and job.percent == 0
    assert counts()["dead"] == 30 and counts()["pending"] == 0
    assert job.describe() == "run all 30 dead tasks of queue default now"
    assert [j.id for j in store.jobs(["default"])] == [job.id]


def test_the_same_job_twice_is_refused_another_state_or_action_is_not(store):
    seed_dead(3)
    first = store.queue("default", "dead", "requeue", "ada").job
    again = store.queue("default", "dead", "requeue", "bob")
    assert again.outcome == "exists" and again.job.id == first.id
    assert store.queue("default", "scheduled", "requeue", "bob").outcome == "empty"
    with pytest.raises(ValueError):
        store.queue("default", "active", "delete", "bob")
    assert len(store.jobs(["default"])) == 1
    # once the first job is done, the same job may be asked for again
    assert run_to_the_end(store, "r1", 500) == [3]
    seed_dead(2)
    assert store.queue("default", "dead", "requeue", "bob").outcome == "ok"
    assert store.queue("default", "dead", "delete", "bob").outcome == "ok"  # another action
    assert store.queue("default", "dead", "delete", "cy").outcome == "exists"
    assert len(store.jobs(["default"])) == 3


def test_requeue_job_moves_in_batches_and_counts_exactly_what_moved(store):
    seed_dead(1200)
    job = store.queue("default", "dead", "requeue", "ada").job
    assert run_to_the_end(store, "r1", 500) == [500, 1000, 1200]
    done = job_of(store, job.id)
    assert (done.status, done.done, done.total, done.percent) == ("done", 1200, 1200, 100)
    assert done.finished_at is not None and done.lease_until_ms is None
    assert counts()["dead"] == 0 and counts()["pending"] == 1200


def test_delete_job_deletes_and_stops_at_the_total_it_was_queued_with(store):
    seed_dead(5)
    store.queue("default", "dead", "delete", "ada")
    seed_dead(4)  # died after the request: beyond the job's total
    assert run_to_the_end(store, "r1", 3) == [3, 5]
    assert counts()["dead"] == 4  # the newest ones: a job acts on the oldest first


def test_one_runner_holds_a_job_until_its_lease_lapses_then_another_takes_over(store):
    seed_dead(10)
    job = store.queue("default", "dead", "delete", "ada").job
    held = store.claim("default", "r1", 300)
    assert held.id == job.id and held.runner == "r1"
    assert store.claim("default", "r2", 300) is None  # held
    assert store.claim("default", "r1", 300).id == job.id  # its own: it goes on
    held = store.step(held, "r1", 300, 4)
    assert held.done == 4

    time.sleep(0.4)  # r1 stopped renewing
    taken = store.claim("default", "r2", LEASE_MS)
    assert (taken.id, taken.runner, taken.takeovers, taken.done) == (job.id, "r2", 1, 4)
    assert store.step(held, "r1", 300, 4) is None  # r1 lost it: nothing moved
    assert counts()["dead"] == 6
    while taken.status == "running":
        taken = store.step(taken, "r2", LEASE_MS, 4)
    assert (taken.status, taken.done) == ("done", 10)
    assert counts()["dead"] == 0


def test_release_hands_a_job_back_or_fails_it(store):
    seed_dead(10)
    job = store.queue("default", "dead", "delete", "ada").job
    held = store.step(store.claim("default", "r1", LEASE_MS), "r1", LEASE_MS, 4)
    assert not store.release(held, "r2")  # not its job
    assert store.release(held, "r1")
    back = job_of(store, job.id)
    assert (back.status, back.done, back.runner) == ("queued", 4, "r1")
    again = store.claim("default", "r2", LEASE_MS)  # at once, no lease to wait out
    assert (again.id, again.done, again.takeovers) == (job.id, 4, 0)
    assert store.release(again, "r2", error="Redis refused: boom")
    failed = job_of(store, job.id)
    assert (failed.status, failed.error) == ("failed", "Redis refused: boom")
    assert failed.finished_at is not None
    assert store.claim("default", "r3", LEASE_MS) is None


def test_finished_jobs_are_trimmed_to_the_last_twenty(store):
    for n in range(KEEP_FINISHED + 3):
        seed_dead(1)
        job = store.queue("default", "dead", "delete", f"user{n}").job
        assert run_to_the_end(store, "r1", 10) == [1]
    seed_dead(1)
    last = store.queue("default", "dead", "delete", "last").job
    jobs = store.jobs(["default"])
    assert len(jobs) == KEEP_FINISHED + 1
    assert jobs[0].id == last.id and jobs[0].status == "queued"
    assert jobs[1].id == job.id  # finished ones: newest first, the oldest three gone
    assert {j.requested_by for j in jobs[1:]} == {f"user{n}" for n in range(3, 23)}


def test_a_damaged_record_is_listed_as_such_and_never_run(store, raw):
    seed_dead(2)
    bulk = get_broker().queue_keys("default").bulk
    raw.hset(bulk, "junk", b"\xff not json")
    raw.hset(bulk, "odd", '{"status": "queued", "state": "active", "action": "delete", '
                          '"done": 0, "total": 5}')
    job = store.queue("default", "dead", "delete", "ada").job
    assert run_to_the_end(store, "r1", 500) == [2]
    assert store.claim("default", "r1", LEASE_MS) is None
    by_id = {j.id: j for j in store.jobs(["default"])}
    assert by_id["junk"].status == "damaged" and by_id[job.id].status == "done"
    assert counts()["active"] == 0 and raw.hexists(bulk, "odd")


# -- the component, in this process ---------------------------------------------------------


def test_the_component_runs_every_queued_job_of_its_queues_only(store):
    seed_dead(700)
    seed_dead(5, "mail")
    first = store.queue("default", "dead", "requeue", "ada").job
    other = store.queue("mail", "dead", "delete", "ada").job
    component = BulkJobs(get_broker(), WorkerConfig(queues={"default": 1}, bulk_batch=300),
                         "host:1/2:3")
    assert component.tick() == 0.0  # ran one job: looks again at once
    assert component.tick() > 0  # nothing more for its queues
    done = job_of(store, first.id)
    assert (done.status, done.done, done.runner) == ("done", 700, "host:1/2:3")
    assert counts()["pending"] == 700
    assert job_of(store, other.id, "mail").status == "queued"  # no host serves mail here
    assert counts("mail")["dead"] == 5


def test_the_component_hands_its_job_back_when_stopping(store):
    seed_dead(50)
    job = store.queue("default", "dead", "delete", "ada").job
    component = BulkJobs(get_broker(), WorkerConfig(queues={"default": 1}, bulk_batch=10),
                         "host:1/2:3")
    component.shutdown()  # never started: it only marks it as stopping
    component._run_job(store.claim("default", "host:1/2:3", LEASE_MS))
    back = job_of(store, job.id)
    assert (back.status, back.done) == ("queued", 0)
    assert counts()["dead"] == 50


# -- a real worker --------------------------------------------------------------------------


def runner_pid(job: BulkJob) -> int:
    """The pid in a runner id ("supervisor-id/slot:pid")."""
    return int(job.runner.rsplit(":", 1)[1])


def wait_for_progress(store: BulkJobStore, job_id: str) -> BulkJob:
    def moving() -> BulkJob | None:
        job = job_of(store, job_id)
        assert job.status != "done", "the job ended before the test could catch it running"
        return job if job.status == "running" and job.done > 0 else None
    return wait_until(moving, timeout=20, interval=0.002, message="the job running")


def test_a_worker_runs_a_job_over_3000_dead_tasks(store, start_worker):
    seed_dead(3000)
    get_broker().pause("default")  # requeued tasks stay pending, to be counted
    job = store.queue("default", "dead", "requeue", "ada").job
    worker = start_worker("--queues", "default", "--processes", "1", "--threads", "1",
                          env={"BGTASKS_BULK_BATCH": "20"})
    seen = wait_for_progress(store, job.id)
    assert 0 < seen.done < 3000 and seen.runner
    done = wait_until(lambda: (j := job_of(store, job.id)).status == "done" and j, timeout=60)
    assert (done.done, done.total, done.takeovers) == (3000, 3000, 0)
    assert counts()["dead"] == 0 and counts()["pending"] == 3000
    worker.wait_for_log(f"bulk job {job.id} done: 3000 of 3000 task(s)")


def test_a_job_whose_worker_was_killed_is_taken_over_and_finishes(store, start_worker):
    seed_dead(3000)
    job = store.queue("default", "dead", "delete", "ada").job
    worker = start_worker("--queues", "default", "--processes", "1", "--threads", "1",
                          env={"BGTASKS_BULK_BATCH": "5", "BGTASKS_LEASE_SECONDS": "2"})
    first = wait_for_progress(store, job.id)
    victim = runner_pid(first)
    os.kill(victim, signal.SIGSTOP)  # frozen mid-job
    time.sleep(0.2)  # a batch it had sent already lands: then Redis holds all it did
    frozen = job_of(store, job.id)
    assert frozen.status == "running" and 0 < frozen.done < 3000
    assert counts()["dead"] == 3000 - frozen.done
    os.kill(victim, signal.SIGKILL)

    done = wait_until(lambda: (j := job_of(store, job.id)).status == "done" and j, timeout=60)
    assert (done.done, done.takeovers) == (3000, 1)
    assert runner_pid(done) != victim  # the supervisor's new maintenance process
    assert counts()["dead"] == 0
    worker.wait_for_log("taken over from a stopped worker")


def test_a_stopping_worker_hands_its_job_back_for_the_next_one(store, start_worker,
                                                                run_worker):
    seed_dead(3000)
    job = store.queue("default", "dead", "delete", "ada").job
    first = run_worker("--queues", "default", "--processes", "1", "--threads", "1",
                       env={"BGTASKS_BULK_BATCH": "1"})  # slow: SIGTERM lands mid-job
    wait_for_progress(store, job.id)
    first.send_group(signal.SIGTERM)
    assert first.wait(20) == 0
    back = job_of(store, job.id)
    assert back.status == "queued" and 0 < back.done < 3000  # not held until its lease ends
    assert counts()["dead"] == 3000 - back.done

    start_worker("--queues", "default", "--processes", "1", "--threads", "1")
    done = wait_until(lambda: (j := job_of(store, job.id)).status == "done" and j, timeout=30)
    assert (done.done, done.takeovers) == (3000, 0) and counts()["dead"] == 0
