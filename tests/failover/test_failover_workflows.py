"""Workflows across a Redis Cluster failover (issue 18, "Cluster"), on a real 3+3 cluster
(node-timeout 1 s) with a real worker.

A chord of a few hundred members on two queues of two masters, its barrier on the third
master's slot, with an on_complete; a master is SIGKILLed while the group runs (the master
of half the members, or the barrier's), its replica takes over. Whatever the failover lost
(an ack, an outbox entry, a count: replication is asynchronous), the workflow ends, the
callback and on_complete run once, and the barrier counts each member once. The evidence is
the ledger (demo.chaos_ledger, demo.recording) on a plain redis-server of its own.

The last test makes such a loss certain rather than likely (a replica cut off, then its
master killed): a forward's release of the next step is lost on one master. With
WAIT_REPLICAS the release is not confirmed, so the forward fails before it takes the outbox
entry out on the other master: the end is forwarded again after the failover.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from redis.crc import key_slot

from demo import chaos_ledger, recording
from demo.tasks import wf_chaos_member, wf_collect, wf_report
from django_bgtasks import chord, get_task_info, get_workflow, group
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.keys import WorkflowKeys
from django_bgtasks.broker.types import Ack
from django_bgtasks.broker.workflows import WorkflowStore
from django_bgtasks.exceptions import BrokerUnavailable
from django_bgtasks.workflows.canvas import Plan, enqueue_plan
from django_bgtasks.workflows.info import read_workflow
from failover import ledger_fixture, ledger_server_fixture, pending_key, whole_cluster_fixture
from helpers import wait_until
from topologies import needs_cluster_tools, redis_cluster
from topologies.base import _ask

pytestmark = [needs_cluster_tools, pytest.mark.failover]

cluster_topology = pytest.fixture(scope="module", name="cluster_topology")(redis_cluster)
ledger_server = pytest.fixture(scope="module", name="ledger_server")(ledger_server_fixture)
cluster = pytest.fixture(name="cluster")(whole_cluster_fixture)
ledger = pytest.fixture(name="ledger")(ledger_fixture)

MEMBERS = 400
MEMBER_SECONDS = 0.04  # 400 x 40 ms on 8 threads: about 2 s of work, the failover inside it
KILL_AFTER = 100  # members completed (ledger) when the master is killed
LEASE = 5  # seconds: a claim whose reply or ack died with the master runs again this soon
ENDED_WITHIN = 60  # seconds after the kill (an election takes 2-4 s; generous)


def barrier_on(cluster, master) -> str:
    """A workflow id whose barrier's slot is served by `master`."""
    node = next(n for n in cluster.nodes() if n.address == master)
    while True:
        workflow_id = uuid.uuid4().hex
        if node.serves(key_slot(WorkflowKeys("bgtasks", workflow_id).barrier.encode())):
            return workflow_id


def barrier_counts(workflow_id: str) -> dict[str, int]:
    return read_workflow(WorkflowStore(get_broker()), workflow_id, live=False).counts


def runs_of(ledger, token: str) -> list[str]:
    return [entry for entry in recording.log(ledger) if entry.startswith(f"{token}=")]


@pytest.mark.parametrize("victim", ["members", "barrier"])
def test_a_chord_across_masters_ends_once_through_a_master_failover(
        cluster, ledger, ledger_server, start_worker, victim):
    queue_a, queue_b, queue_c = cluster.queue_names_spread(3)
    masters = {q: cluster.master_for_key(pending_key(q)) for q in (queue_a, queue_b, queue_c)}
    assert len(set(masters.values())) == 3
    workflow_id = barrier_on(cluster, masters[queue_c])
    members = [wf_chaos_member.using(queue_name=(queue_a, queue_b)[n % 2]).s(
        n, "ok", MEMBER_SECONDS) for n in range(MEMBERS)]
    workflow = chord(group(members), wf_collect.using(queue_name=queue_a).s("callback")
                     ).on_complete(wf_report.using(queue_name=queue_b).s("report"))
    info = enqueue_plan(Plan.of(workflow.steps, workflow.finally_call), workflow_id)
    assert info.shape == f"chord(group({MEMBERS} x wf_chaos_member), wf_collect)" \
                         ".on_complete(wf_report)"
    start_worker("--queues", f"{queue_a},{queue_b}", "--processes", "2", "--threads", "4",
                 env={"BGTASKS_REDIS_URL": cluster.url,
                      "BGTASKS_TEST_LEDGER_URL": ledger_server.url,
                      "BGTASKS_LEASE_SECONDS": str(LEASE)})

    wait_until(lambda: chaos_ledger.completed_count(ledger) >= KILL_AFTER, timeout=30,
               interval=0.01, message=f"{KILL_AFTER} members completed")
    at_kill = chaos_ledger.completed_count(ledger)
    key, whose = ((pending_key(queue_a), f"queue {queue_a}'s: half the members, the callback")
                  if victim == "members" else
                  (WorkflowKeys("bgtasks", workflow_id).barrier, "the barrier's"))
    old = cluster.kill_master_of(key)
    killed_at = time.monotonic()
    healthy_in = cluster.wait_healthy(timeout=15)

    done = wait_until(lambda: get_workflow(workflow_id).finished_at is not None and
                      get_workflow(workflow_id), timeout=ENDED_WITHIN,
                      message=f"workflow {workflow_id} ended")
    ended_in = time.monotonic() - killed_at
    callbacks, reports = runs_of(ledger, "callback"), runs_of(ledger, "report")
    histogram = Counter(chaos_ledger.executions(ledger).values())
    print(f"\ncluster failover during a workflow: kill -9 of {old[1]} ({whose} master) "
          f"at {at_kill} of {MEMBERS} members completed; cluster healthy again in "
          f"{healthy_in:.2f}s; the workflow ended {done.state} {ended_in:.1f}s after the kill")
    print(f"  executions per member: "
          f"{', '.join(f'{n}x: {c}' for n, c in sorted(histogram.items()))}; callback "
          f"executions {len(callbacks)}, on_complete executions {len(reports)}; barrier "
          f"counts {barrier_counts(workflow_id)}")
    assert done.state == "succeeded", done.reason
    assert callbacks == [f"callback={json.dumps(list(range(MEMBERS)))}"]
    assert reports == [f'report={{"succeeded": {MEMBERS + 1}, "failed": 0}}']
    assert done.counts == {"completed": MEMBERS + 2}
    assert barrier_counts(workflow_id) == {"completed": MEMBERS + 2}


# --- a write the failover loses on one master while another keeps what followed it ----


@contextmanager
def replica_cut_off(cluster, key: str) -> Iterator[Callable[[], None]]:
    """Until the block ends, what `key`'s master writes does not reach its replica: the
    replica is stopped (SIGSTOP) and the link's socket buffers filled first, so that the
    writes made in the block wait in the master's memory. Kill the master in the block
    (with the function it gives: a stopped node cannot say who the master is): its
    replica, continued, takes over without them (asynchronous replication's loss, made
    certain instead of left to a millisecond's luck)."""
    master = cluster.master_for_key(key)
    replica_address = cluster.replica_of(master)

    def in_sync() -> bool:
        sent = _ask(master[1], "INFO", "replication")["master_repl_offset"]
        return _ask(replica_address[1], "INFO", "replication").get("slave_repl_offset") == sent

    wait_until(in_sync, timeout=10, message="the replica has every write so far")
    replica = cluster._servers[replica_address[1]].process
    tag = re.search(r"\{[^}]*\}", key).group(0)
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        with cluster.client() as raw:
            for i in range(40):
                raw.set(f"{tag}filler{i}", b"x" * 1_000_000)
        yield cluster._servers[master[1]].kill
    finally:
        os.kill(replica.pid, signal.SIGCONT)


def test_a_release_lost_by_a_failover_is_made_again(cluster, ledger, ledger_server,
                                                    start_worker, settings):
    """The member is on queue B, the callback on queue A, the barrier on C. The member's end
    is forwarded (counted on C, the callback released on A, the entry taken out on B) while
    A's replica is cut off; then A's master is killed. With WAIT_REPLICAS = 1, as the docs
    advise against a failover's losses (docs/workflows.md)."""
    settings.BGTASKS = {**settings.BGTASKS, "WAIT_REPLICAS": 1, "WAIT_TIMEOUT": 2}
    queue_a, queue_b, queue_c = cluster.queue_names_spread(3)
    workflow_id = barrier_on(cluster, cluster.master_for_key(pending_key(queue_c)))
    workflow = chord(group([wf_chaos_member.using(queue_name=queue_b).s(0, "ok", 0)]),
                     wf_collect.using(queue_name=queue_a).s("callback"))
    enqueue_plan(Plan.of(workflow.steps, workflow.finally_call), workflow_id)
    member, callback = f"{workflow_id}.0", f"{workflow_id}.1"
    broker = get_broker()
    claimed = broker.claim(queue_b, "tests", [], 1, 60_000, 10**6, 10**12).claimed
    assert [c.id for c in claimed] == [member]
    done = Ack(member, claimed[0].attempt, "done", result="0", result_ttl_ms=3_600_000)
    assert len(broker.claim(queue_b, "tests", [done], 0, 60_000, 10**6, 10**12).forward) == 1
    with replica_cut_off(cluster, pending_key(queue_a)) as kill_master:
        # the release is written but no replica confirms it: the end stays in the outbox
        with pytest.raises(BrokerUnavailable, match="replicas confirmed"):
            WorkflowStore(broker).forward(queue_b, [member], keep_ms=60_000)
        assert get_task_info(callback).state == "pending"
        assert WorkflowStore(broker).outbox(queue_b, [member])
        kill_master()
    cluster.wait_healthy(timeout=30)
    print(f"\nafter the failover: callback {get_task_info(callback).state}, barrier "
          f"{barrier_counts(workflow_id)}, outbox of B "
          f"{WorkflowStore(broker).outbox_scan(queue_b, 10)}")
    start_worker("--queues", f"{queue_a},{queue_b}", "--processes", "1",
                 env={"BGTASKS_REDIS_URL": cluster.url,
                      "BGTASKS_TEST_LEDGER_URL": ledger_server.url})
    ended = wait_until(lambda: get_workflow(workflow_id).finished_at is not None and
                       get_workflow(workflow_id), timeout=20,
                       message=f"workflow {workflow_id} ended")
    assert ended.state == "succeeded" and ended.counts == {"completed": 2}
    assert runs_of(ledger, "callback") == ["callback=[0]"]
