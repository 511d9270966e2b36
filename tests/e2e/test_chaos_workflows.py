"""Chaos for workflows (issue 18, "Exactly once, whatever dies"): a chord of 1,000 short
children on a real worker (2 processes) whose process group is SIGKILLed and restarted
several times, and whose redis-server is restarted once (AOF, graceful) and killed -9 once
(up to a second of writes lost), each kill timed by the children's own ledger: right after
the Nth child completed, or while the queue's outbox holds ends not yet at the barrier.

The evidence is the ledger (demo.chaos_ledger and demo.recording, on a redis-server this
test never touches): every execution of a child, every run of the callback. Whatever dies,
the workflow ends; the callback runs exactly once, with every result in group order; the
barrier counts each member once. The figures are printed (pytest -s) for the release note.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from demo import chaos_ledger, recording
from demo.tasks import wf_chaos_member, wf_collect, wf_report
from django_bgtasks import chord, get_workflow, group
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.keys import FINAL_STATES, STATES
from django_bgtasks.broker.workflows import WorkflowStore
from django_bgtasks.workflows.info import WorkflowInfo, read_workflow
from helpers import RedisServer, WorkerProcess, counts, wait_until

pytestmark = [pytest.mark.soak, pytest.mark.single_redis(
    reason="restarts and kills its redis-server under the worker")]

CHILDREN = 1000
LEASE = 3  # seconds: what a SIGKILL left active runs again this soon
WORKER = ("--processes", "2", "--threads", "4")
FAIL_FIRST_EVERY = 10  # every 10th child fails its first execution: a retry
ENDED_WITHIN = 60  # seconds after the last kill (generous: a loaded 2-core machine)
LIVE = tuple(s for s in STATES if s not in FINAL_STATES)


def header(failing: int | None = None) -> list:
    """The chord's children: child n returns n after 5-50 ms; every 10th fails its first
    execution; `failing` (if any) fails every time (dead after one retry)."""
    rng = random.Random(18)
    calls = []
    for n in range(CHILDREN):
        kind = "fail_first" if n % FAIL_FIRST_EVERY == 3 else "ok"
        call = wf_chaos_member.s(n, kind, round(rng.uniform(0.005, 0.05), 3))
        if n == failing:
            call = wf_chaos_member.using(max_retries=1).s(n, "fail_always", 0.01)
        calls.append(call)
    return calls


@dataclass
class Kill:
    what: str
    at: float  # seconds since the workflow was enqueued
    completed: int  # children the ledger shows completed at least once
    counted: int  # members the barrier had counted
    outbox: int  # ends written (acked) but not yet taken out by a forwarder

    def __str__(self) -> str:
        return (f"{self.what:<22} at {self.at:5.1f}s: ledger {self.completed:4d} completed, "
                f"barrier {self.counted:4d} counted, outbox {self.outbox:3d}")


@dataclass
class Chaos:
    """The worker and the queue's Redis, killed on cue; what each kill hit."""

    server: RedisServer
    ledger: object
    start: Callable[..., WorkerProcess]
    env: dict[str, str]
    workflow_id: str = ""
    began: float = field(default_factory=time.monotonic)
    worker: WorkerProcess | None = None
    kills: list[Kill] = field(default_factory=list)

    def run_worker(self) -> None:
        self.worker = self.start(*WORKER, env=self.env)

    def completed(self) -> int:
        return chaos_ledger.completed_count(self.ledger)

    def outbox(self) -> int:
        with self.server.client() as client:
            return int(client.hlen(get_broker().queue_keys("default").wfout))

    def counted(self) -> int:
        info = read_workflow(WorkflowStore(get_broker()), self.workflow_id, live=False)
        return info.size - info.counts.get("unfinished", 0)

    def after(self, completed: int, timeout: float = 60) -> None:
        """Return right after the ledger shows `completed` children completed."""
        wait_until(lambda: self.completed() >= completed, timeout=timeout, interval=0.005,
                   message=f"{completed} children completed")

    def when_outbox_holds_ends(self, timeout: float = 5) -> None:
        """Return while an acknowledged end waits in the outbox (forwarded to the barrier
        or not, not yet taken out), or after `timeout` (an entry lives for a millisecond or
        two: a slow machine may miss them all; the kill's figures say whether it hit one)."""
        deadline = time.monotonic() + timeout
        while self.outbox() == 0 and time.monotonic() < deadline:
            time.sleep(0.002)

    def _note(self, what: str, completed: int) -> None:
        # read once the kill is done: what the dead process left behind
        self.kills.append(Kill(what, time.monotonic() - self.began, completed,
                               self.counted(), self.outbox()))

    def kill_worker(self, what: str = "worker SIGKILL") -> None:
        assert self.worker is not None
        completed = self.completed()
        self.worker.send_group(signal.SIGKILL)
        self.worker.wait(5)
        wait_until(lambda: not self.worker.group_alive(), timeout=5,
                   message="every process of the worker gone")
        self._note(what, completed)
        self.run_worker()

    def restart_redis(self) -> None:
        completed = self.completed()
        self.server.restart()
        self._note("redis restart (AOF)", completed)

    def crash_redis(self) -> None:
        completed = self.completed()
        self.server.kill()
        self.server.start()
        self._note("redis kill -9", completed)

    def report(self, title: str, info: WorkflowInfo, callback_runs: int) -> None:
        executions = chaos_ledger.executions(self.ledger)
        histogram = Counter(executions.values())
        print(f"\n{title}: {CHILDREN} children, worker {' '.join(WORKER)}, lease {LEASE}s")
        print(f"  ended {info.state} in {time.monotonic() - self.began:.1f}s after enqueue; "
              f"{len(self.kills)} kills:")
        for kill in self.kills:
            print(f"    {kill}")
        print(f"  executions per child: "
              f"{', '.join(f'{n}x: {c}' for n, c in sorted(histogram.items()))} "
              f"({sum(executions.values())} executions of {len(executions)} children)")
        print(f"  callback executions: {callback_runs}; barrier counts "
              f"{read_workflow(WorkflowStore(get_broker()), info.id, live=False).counts}")


@pytest.fixture
def chaos(redis_server, ledger, ledger_server, start_worker) -> Chaos:
    env = {"BGTASKS_TEST_LEDGER_URL": ledger_server.url, "BGTASKS_LEASE_SECONDS": str(LEASE)}
    return Chaos(redis_server, ledger, start_worker, env)


def quiet(chaos: Chaos, workflow_id: str) -> WorkflowInfo:
    """Wait until the workflow ended and nothing of it can run again: no member live, the
    outbox empty. Then a second run of the callback would be in the ledger already."""
    info = wait_until(lambda: get_workflow(workflow_id).finished_at is not None and
                      get_workflow(workflow_id), timeout=ENDED_WITHIN,
                      message=f"workflow {workflow_id} ended")
    wait_until(lambda: not any(counts().get(s) for s in LIVE) and chaos.outbox() == 0,
               timeout=ENDED_WITHIN, message="no member live, the outbox empty")
    return info


def runs_of(ledger, token: str) -> list[str]:
    return [entry for entry in recording.log(ledger) if entry.startswith(f"{token}=")]


def test_a_1000_child_chord_fires_once_whatever_dies(chaos, ledger):
    info = chord(group(header()), wf_collect.s("callback")).enqueue()
    chaos.workflow_id, chaos.began = info.id, time.monotonic()
    chaos.run_worker()

    chaos.after(100)
    chaos.kill_worker()
    chaos.after(250)
    chaos.restart_redis()
    chaos.after(400)
    chaos.when_outbox_holds_ends()
    chaos.kill_worker("worker SIGKILL (outbox)")
    chaos.after(550)
    chaos.crash_redis()
    chaos.after(700)
    chaos.when_outbox_holds_ends()
    chaos.kill_worker("worker SIGKILL (outbox)")
    chaos.after(CHILDREN)  # the last child's body just ended: its ack, the release to come
    chaos.kill_worker("worker SIGKILL (last)")

    done = quiet(chaos, info.id)
    runs = runs_of(ledger, "callback")
    chaos.report("workflow chaos: chord", done, len(runs))
    assert done.state == "succeeded", done.reason
    assert len(runs) == 1, f"the callback ran {len(runs)} times"
    assert runs[0] == f"callback={json.dumps(list(range(CHILDREN)))}"
    assert done.counts == {"completed": CHILDREN + 1}
    barrier = read_workflow(WorkflowStore(get_broker()), info.id, live=False)
    assert barrier.counts == {"completed": CHILDREN + 1}
    assert chaos_ledger.completed_count(ledger) == CHILDREN
    assert len(chaos.kills) == 6


def test_a_child_that_always_fails_fails_the_chord_and_on_complete_runs_once(chaos, ledger):
    failing = 617
    info = chord(group(header(failing)), wf_collect.s("callback")).on_complete(
        wf_report.s("report")).enqueue()
    chaos.workflow_id, chaos.began = info.id, time.monotonic()
    chaos.run_worker()

    chaos.after(300)
    chaos.when_outbox_holds_ends()
    chaos.kill_worker("worker SIGKILL (outbox)")
    chaos.after(600)
    chaos.restart_redis()
    chaos.after(CHILDREN - 1)  # every child but the failing one
    chaos.kill_worker("worker SIGKILL (last)")

    done = quiet(chaos, info.id)
    reports = runs_of(ledger, "report")
    chaos.report("workflow chaos: chord with a child that always fails, on_complete", done,
                 len(runs_of(ledger, "callback")))
    print(f"  on_complete executions: {len(reports)}; reason: {done.reason}")
    assert done.state == "failed"
    assert done.reason.startswith(f"{info.id}.{failing} ended dead")
    assert "fails on purpose" in done.reason
    assert runs_of(ledger, "callback") == []
    assert reports == ['report={"succeeded": 999, "failed": 2}']
    expected = {"completed": CHILDREN, "dead": 1, "cancelled": 1}
    assert done.counts == expected
    assert read_workflow(WorkflowStore(get_broker()), info.id, live=False).counts == expected
