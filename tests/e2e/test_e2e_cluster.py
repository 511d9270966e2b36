"""End-to-end on a real Redis Cluster (BGTASKS_TEST_TOPOLOGY=cluster only): three queues on
three different masters, served by one `runbackground`, seen by the admin and the CLI.

On a cluster a worker serving several queues cannot block on one BLPOP (their keys live
in different slots): it blocks on each queue's wake-up list over a connection of its own.
These tests check that path, and that every state change lands on the queue's master.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
import redis
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from demo import recording, tasks
from django_bgtasks import BrokerUnavailable, EnqueueError, get_task_info
from django_bgtasks.broker import get_broker
from django_bgtasks.broker.keys import QueueKeys
from django_bgtasks.checks import check_redis_server
from helpers import MANAGE_PY, REPO_ROOT, TEST_TOPOLOGY, counts, free_port, wait_until
from topologies import RedisClusterTopology

pytestmark = pytest.mark.skipif(TEST_TOPOLOGY != "cluster",
                                reason="needs BGTASKS_TEST_TOPOLOGY=cluster")

# "default" (slot 5718) and "mail" (4247) are testproject's queues; "urgent" (12746) is on
# the third master of a cluster made by `redis-cli --cluster create`.
QUEUES = ("default", "mail", "urgent")
DASHBOARD = "/admin/django_bgtasks/task/"
ACTION = "/admin/django_bgtasks/task/action/"
WAKE_UP_LIMIT = 0.5  # seconds; without a wake-up, an idle worker finds a task after up to 1 s


@pytest.fixture
def topology(redis_server):
    return redis_server.topology


def masters_of(topology, queues) -> dict[str, tuple[str, int]]:
    return {q: topology.master_for_key(QueueKeys("bgtasks", q).pending) for q in queues}


def test_the_queues_cover_every_master(topology):
    where = masters_of(topology, QUEUES)
    assert sorted(set(where.values())) == sorted(topology.masters()), where
    assert len(set(where.values())) == 3


def manage(*args: str) -> subprocess.CompletedProcess:
    """`manage.py ARGS` in a subprocess (the session's env points it at the cluster)."""
    env = {**os.environ, "BGTASKS_DEMO_DB": os.devnull}
    return subprocess.run([sys.executable, str(MANAGE_PY), *args], capture_output=True,
                          text=True, env=env, cwd=REPO_ROOT, timeout=60)


def admin_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", None))
    return client


@pytest.mark.django_db
def test_one_worker_serves_three_queues_on_three_masters(start_worker, redis_server, topology,
                                                          settings):
    settings.BGTASKS = {**settings.BGTASKS, "ENQUEUE_ON_COMMIT": False}
    r = redis_server.client()
    ok, retried, dead, due = {}, {}, {}, {}
    for q in QUEUES:
        ok[q] = [f"{q}-ok{i}" for i in range(20)]
        tasks.record.using(queue_name=q).enqueue_many([([t], {}) for t in ok[q]])
        retried[q] = f"{q}-retry"
        tasks.fail_then_succeed.using(queue_name=q).enqueue(retried[q], 1)
        dead[q] = tasks.fail_always.using(queue_name=q, max_retries=1).enqueue(f"{q}-dead").id
        due[q] = f"{q}-due"
        tasks.record_redis_time.using(queue_name=q, run_after=timedelta(seconds=2)).enqueue(
            due[q])
    seconds, micros = r.time()
    enqueued_at = seconds + micros / 1e6  # Redis' clock, after the due times were set
    for q in QUEUES:  # each queue's keys hold its own tasks, on its own master
        assert r.zcard(QueueKeys("bgtasks", q).pending) == 22
        assert r.zcard(QueueKeys("bgtasks", q).scheduled) == 1

    worker = start_worker("--queues", ",".join(QUEUES), "--processes", "2", "--threads", "4")
    successes = {t for q in QUEUES for t in [*ok[q], retried[q]]}
    wait_until(lambda: successes <= recording.ran(r) and len(recording.times(r)) == 3,
               timeout=20, message="every task ran")
    wait_until(lambda: all(counts(q)["dead"] == 1 for q in QUEUES), timeout=10,
               message="a dead task in every queue")
    wait_until(lambda: all(sum(counts(q).values()) == 1 for q in QUEUES), timeout=5,
               message="nothing but the dead tasks left")

    # every task ran once; the retried one twice (attempts), the dead one twice (max_retries 1)
    runs = Counter(recording.log(r))
    assert runs == Counter({**dict.fromkeys(successes, 1),
                            **{f"{q}-dead": 2 for q in QUEUES}}), runs
    assert all(recording.attempts(r, retried[q]) == 2 for q in QUEUES)
    starts = {entry["token"]: entry["t"] for entry in recording.times(r)}
    assert sorted(starts) == sorted(due.values())
    assert all(at >= enqueued_at + 2 - 0.5 for at in starts.values()), (enqueued_at, starts)
    log = worker.log_text()
    start_line = next(ln for ln in log.splitlines() if " starting: Redis " in ln)
    assert "redis+cluster://" in start_line and all(f"{q}:1" in start_line for q in QUEUES)
    assert "Traceback" not in log and "cannot reach Redis" not in log

    # An idle worker wakes at once for a task on any of the three masters.
    woken_in = {q: [] for q in QUEUES}
    for round_ in range(3):
        for q in QUEUES:
            token = f"{q}-wake{round_}"
            sent = time.time()
            tasks.record_time.using(queue_name=q).enqueue(token)
            ran = wait_until(lambda t=token: next(
                (e["t"] for e in recording.times(r) if e["token"] == t), None), timeout=5)
            woken_in[q].append(ran - sent)
            time.sleep(0.2)  # idle again
    worst = max(max(v) for v in woken_in.values())
    assert worst < WAKE_UP_LIMIT, woken_in
    worker.send_group(signal.SIGTERM)
    assert worker.wait(15) == 0

    # The admin: the dashboard and each queue's pages, and "run now" on each dead task.
    client = admin_client()
    html = client.get(DASHBOARD).content.decode()
    assert all(f'<th scope="row">{q}</th>' in html for q in QUEUES), html
    for q in QUEUES:
        page = client.get(f"{DASHBOARD}dead/", {"queue": q})
        assert page.status_code == 200 and dead[q] in page.content.decode()
        detail = client.get(f"{DASHBOARD}{dead[q]}/change/", {"queue": q})
        assert detail.status_code == 200 and "boom" in detail.content.decode()
        done = client.post(ACTION, {"action": "requeue", "_selected_action": [f"{q}:{dead[q]}"],
                                    "post": "yes", "next": DASHBOARD})
        assert done.status_code == 302
        assert get_task_info(dead[q]).state == "pending"
        assert counts(q)["dead"] == 0

    # `manage.py bgtasks stats` shows the three queues, with what was just requeued.
    stats = manage("bgtasks", "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    rows = {row["name"]: row for row in json.loads(stats.stdout)["queues"]}
    assert set(QUEUES) <= set(rows)
    for q in QUEUES:
        assert (rows[q]["pending"], rows[q]["dead"]) == (1, 0), rows[q]
        assert rows[q]["processed_today"] >= 20
    text = manage("bgtasks", "stats")
    assert text.returncode == 0, text.stderr
    assert all(re.search(rf"^\s*{q}\s", text.stdout, re.M) for q in QUEUES), text.stdout
    print("\nwake-up on an idle 3-queue worker, per queue (ms): " + ", ".join(
        f"{q} {statistics.median(v) * 1000:.1f} median / {max(v) * 1000:.1f} max"
        for q, v in woken_in.items()))


def test_a_periodic_entry_fires_once_per_tick_from_a_three_queue_worker(start_worker,
                                                                         redis_server):
    r = redis_server.client()
    worker = start_worker("--queues", ",".join(QUEUES), "--processes", "1", "--threads", "2",
                          env={"BGTASKS_TEST_PERIODIC": "every-second"})
    worker.wait_for_log("periodic every-second: started")
    time.sleep(5)
    worker.send_group(signal.SIGTERM)
    assert worker.wait(15) == 0

    history = list(reversed(get_broker().periodic_history("default", "every-second")))
    ticks = [h["tick"] for h in history if h["outcome"] == "fired"]
    assert len(ticks) >= 3, history
    assert ticks == sorted(set(ticks)), "a tick fired twice"
    assert all(b - a == 1000 for a, b in zip(ticks, ticks[1:], strict=False)), "a gap"
    ran = [e for e in recording.times(r) if e["token"] == "tick"]
    left = counts("default")["pending"]  # a tick fired just before the stop
    assert len(ran) + left == len(ticks) and left <= 1, (len(ran), left, ticks)


def test_an_unreachable_cluster_is_a_clear_error_and_a_worker_waits_for_it(start_worker,
                                                                           settings):
    # RedisCluster connects as it is made: that must fail like any unreachable Redis
    # (enqueue() waits RETRY_FOR for it first, as it waits out a failover; checks and the
    # CLI answer at once)
    target = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    settings.BGTASKS = {**settings.BGTASKS, "REDIS_URL": f"{target}/0",
                        "ENQUEUE_ON_COMMIT": False, "RETRY_FOR": 1.0}
    started = time.monotonic()
    with pytest.raises(EnqueueError, match=f"cannot reach Redis at {re.escape(target)}"):
        tasks.record.enqueue("never")
    assert 0.8 <= time.monotonic() - started < 3.0
    [problem] = check_redis_server()
    assert problem.id == "bgtasks.E010" and target in problem.msg
    with pytest.raises(CommandError, match=f"cannot reach Redis at {re.escape(target)}"):
        call_command("bgtasks", "stats", stdout=io.StringIO())

    worker = start_worker("--processes", "1", "--threads", "1",
                          env={"BGTASKS_REDIS_URL": f"{target}/0"})
    log = worker.wait_for_log(f"cannot reach Redis at {target}", count=2, timeout=10)
    line = next(ln for ln in log.splitlines() if "cannot reach Redis" in ln)
    assert re.search(r"retrying in [\d.]+s$", line), line
    assert "Traceback" not in log and worker.is_running()
    worker.send(signal.SIGTERM)
    assert worker.wait(12) == 0


def test_enqueue_waits_for_a_cluster_that_is_still_coming_up(settings, tmp_path):
    """A web process may start with (or before) its cluster: enqueue() waits RETRY_FOR for
    the cluster to be reachable and ready, as it waits out a failover. (The cluster starts
    in this thread: its servers die with the thread that started them.)"""
    coming_up = RedisClusterTopology(tmp_path / "late-cluster")
    outcome: dict = {}

    def enqueue_early() -> None:
        try:
            wait_until(lambda: coming_up.ports, timeout=5, interval=0.001,
                       message="the new cluster's ports chosen")
            settings.BGTASKS = {**settings.BGTASKS, "REDIS_URL": coming_up.url,
                                "ENQUEUE_ON_COMMIT": False}
            started = time.monotonic()
            outcome["id"] = tasks.record.enqueue("early").id
            outcome["waited"] = time.monotonic() - started
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    early = threading.Thread(target=enqueue_early)
    early.start()
    try:
        coming_up.start()
        early.join(30)
        assert "error" not in outcome, outcome
        with coming_up.client() as cluster:
            assert cluster.hexists(QueueKeys("bgtasks", "default").msg, outcome["id"])
        print(f"\nenqueue() on a cluster still coming up returned after "
              f"{outcome['waited']:.2f}s")
        assert 0.3 < outcome["waited"] < 10.0

        # Gone again, every node: redis-py's RedisClusterException (not a RedisError)
        # reaches callers as our BrokerUnavailable, as any unreachable Redis does.
        coming_up.stop()
        with pytest.raises(BrokerUnavailable, match="cannot reach Redis at redis\\+cluster"):
            get_broker().known_queues()
    finally:
        early.join(30)
        coming_up.stop()


def test_a_wrong_password_fails_at_once_not_after_retry_for(topology, settings):
    # A refused password stays refused: retrying it for RETRY_FOR (10 s here) would only
    # make every enqueue() slow to report a configuration error.
    plain = topology.url.removeprefix("redis+cluster://")
    settings.BGTASKS = {**settings.BGTASKS, "REDIS_URL": f"redis+cluster://nobody:wrong@{plain}",
                        "ENQUEUE_ON_COMMIT": False}
    started = time.monotonic()
    refused = r"authentication to Redis at redis\+cluster://"
    with pytest.raises(EnqueueError, match=refused) as caught:
        tasks.record.enqueue("never")
    assert time.monotonic() - started < 1.0
    assert "wrong" not in str(caught.value)


def test_an_evicting_policy_on_any_master_warns_w002(topology):
    missed = []
    for master in topology.masters():
        with redis.Redis(*master) as node:
            node.config_set("maxmemory-policy", "allkeys-lru")
            try:
                if [p.id for p in check_redis_server()] != ["bgtasks.W002"]:
                    missed.append(master)
            finally:
                node.config_set("maxmemory-policy", "noeviction")
    assert missed == [], f"allkeys-lru on {missed} went unnoticed"
