"""Sentinel failover under load, on a real master + replica + 3 sentinels (down-after 1 s):
the master SIGKILLed under a real worker, a forced SENTINEL FAILOVER with and without the
+switch-master watcher, WAIT_REPLICAS, and a django-redis Sentinel cache as CACHE_ALIAS.

Tests that fail the master over start a topology of their own (pre-wired, it is ready in
well under a second): putting one back takes longer, as Sentinel turns an old master into
a replica only seconds later (about 11 s after a forced failover, measured below). The
figures are printed (pytest -s) for docs/production.md; shared/research/redis-topologies.md
has the raw redis-py figures they compare with.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from demo import tasks
from django_bgtasks import EnqueueError
from django_bgtasks.broker.types import EnqueueRequest
from failover import (
    Producer,
    expect_within,
    ledger_fixture,
    ledger_server_fixture,
    run_count,
    runs,
    verdict,
    wait_all_ran,
)
from helpers import wait_until
from topologies import SentinelTopology, needs_sentinel_tools, redis_sentinel

pytestmark = [needs_sentinel_tools, pytest.mark.failover]

sentinel_topology = pytest.fixture(scope="module", name="sentinel_topology")(redis_sentinel)
ledger_server = pytest.fixture(scope="module", name="ledger_server")(ledger_server_fixture)

# seconds; research: writes succeed again 2.2-3.3 s after the kill (down-after 1 s)
ENQUEUE_RESUME_LIMIT = 4.0
WORK_RESUME_LIMIT = 4.0
MIN_REPLICAS = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "2")


def sentinel_settings(topology: SentinelTopology) -> dict:
    """BGTASKS entries for the tasks behind `topology`'s sentinels."""
    return {"SENTINELS": [f"{host}:{port}" for host, port in topology.sentinels],
            "MASTER_NAME": topology.master_name,
            "REDIS_URL": f"redis://{topology.master_name}/0"}


def use_sentinel(settings, topology: SentinelTopology, **values) -> None:
    settings.BGTASKS = {**settings.BGTASKS, **sentinel_settings(topology), **values}


def msg_key(queue: str) -> str:
    from django_bgtasks.broker.keys import QueueKeys

    return QueueKeys("bgtasks", queue).msg


def info(address: tuple[str, int], section: str) -> dict:
    with redis.Redis(*address, socket_timeout=2, decode_responses=True) as node:
        return node.info(section)


def replica_of_master(topology: SentinelTopology) -> tuple[str, int]:
    master = topology.master_address()
    return next(node for node in topology.data_nodes if node != master)


@pytest.fixture
def fresh_sentinel(tmp_path):
    """Factory: a topology of this test's own, stopped at teardown."""
    started: list[SentinelTopology] = []

    def start(**kwargs) -> SentinelTopology:
        topology = SentinelTopology(tmp_path / f"sentinel-{len(started)}", **kwargs)
        started.append(topology)
        topology.start()
        return topology

    yield start
    for topology in started:
        topology.stop()


ledger = pytest.fixture(name="ledger")(ledger_fixture)


# --- 3. kill -9 of the master under a real worker ----------------------------------


def test_master_killed_under_load(fresh_sentinel, settings, ledger, ledger_server,
                                  start_worker):
    topology = fresh_sentinel()
    use_sentinel(settings, topology)
    start_worker("--queues", "failover", "--processes", "1", "--threads", "4",
                 env={"BGTASKS_TEST_SENTINELS": ",".join(sentinel_settings(topology)["SENTINELS"]),
                      "BGTASKS_TEST_MASTER_NAME": topology.master_name,
                      "BGTASKS_TEST_LEDGER_URL": ledger_server.url,
                      "BGTASKS_LEASE_SECONDS": "5"})
    producer = Producer("S", tasks.record_time.using(queue_name="failover").enqueue, 0.005)
    producer.start()
    try:
        wait_until(lambda: runs(ledger), timeout=20, message="the worker runs tasks")
        time.sleep(1.0)
        old = topology.kill_master()
        killed_at = time.time()
        new = topology.wait_new_master(old, timeout=15)
        promoted = time.time() - killed_at
        time.sleep(max(0.0, killed_at + 6 - time.time()))
    finally:
        producer.stop()
    drained = wait_all_ran(ledger, [producer], timeout=30)

    ledger_runs = runs(ledger)
    v = verdict(ledger_runs, producer, killed_at)
    resumed = "-" if v.resumed_after is None else f"{v.resumed_after:.2f}s"
    print(f"\nsentinel: kill -9 of master {old[1]} under load; sentinels agree on {new[1]} "
          f"{promoted:.2f}s after the kill\n"
          f"  {v.acked} acknowledged ({producer.rate():.0f}/s), {v.lost} lost, "
          f"{len(producer.errors)} enqueue errors; slowest enqueue {producer.worst_call():.2f}s "
          f"(median {producer.median_call() * 1000:.1f} ms); first run of a task acknowledged "
          f"after the kill {resumed}; worst enqueue-to-run {v.worst_wait:.2f}s; every task "
          f"ran {drained:.1f}s after the producer stopped; "
          f"{run_count(ledger) - len(ledger_runs)} ran twice")
    assert v.lost == 0
    assert producer.errors == []
    assert producer.worst_call() < ENQUEUE_RESUME_LIMIT
    assert producer.count_since(killed_at + 4.5) > 100  # served again, not just once
    expect_within("work resuming after the kill", v.resumed_after, WORK_RESUME_LIMIT)


# --- 4. forced failover: acknowledged tasks lost, with and without the watcher -------


@pytest.mark.parametrize("extra_args", [(), MIN_REPLICAS], ids=["plain", "min-replicas-1"])
def test_forced_failover_loses_far_less_with_the_watcher(fresh_sentinel, settings, extra_args):
    """Producer side only (no worker): tasks enqueue() acknowledged that are not in Redis
    once the failover has settled (the old master demoted, its data dropped)."""
    from django_bgtasks.broker import get_broker
    from django_bgtasks.broker.connection import make_client
    from django_bgtasks.broker.redis import RedisBroker
    from django_bgtasks.conf import get_settings

    topology = fresh_sentinel(extra_args=extra_args)
    use_sentinel(settings, topology)
    watched = get_broker()  # the product default: +switch-master watcher on
    assert watched._master_watch is not None
    unwatched = RedisBroker(make_client(get_settings()), get_settings().PREFIX)
    unwatched._master_watch.stop()
    unwatched._master_watch._thread.join(5)  # it checks its stop flag every second
    assert not unwatched._master_watch._thread.is_alive()

    def sender(broker, queue: str):
        return lambda token: broker.enqueue(EnqueueRequest(queue, token, "{}", 0, 0))

    producers = [Producer("watched", sender(watched, "watched"), 0.001),
                 Producer("unwatched", sender(unwatched, "unwatched"), 0.001)]
    try:
        for producer in producers:
            producer.start()
        time.sleep(1.0)
        old = topology.force_failover()
        forced_at = time.time()
        new = topology.wait_new_master(old, timeout=15)
        agreed = time.time() - forced_at

        def settled() -> bool:  # the old master demoted, synced, its own writes dropped
            replication = info(old, "replication")
            return (replication["role"] == "slave"
                    and replication.get("master_port") == new[1]
                    and replication.get("master_link_status") == "up")

        wait_until(settled, timeout=30, interval=0.1, message="the old master demoted")
        demoted = time.time() - forced_at
        time.sleep(0.5)
    finally:
        for producer in producers:
            producer.stop()
        unwatched.close()

    with redis.Redis(*new, socket_timeout=10) as master:
        present = {p.name: {k.decode() for k in master.hkeys(msg_key(p.name))}
                   for p in producers}
    lost = {p.name: len(p.tokens - present[p.name]) for p in producers}
    switches = watched._master_watch.switches
    print(f"\nsentinel ({'+'.join(extra_args) or 'no min-replicas'}): SENTINEL FAILOVER "
          f"{old[1]} -> {new[1]}; sentinels agree after {agreed:.2f}s; old master a replica "
          f"again after {demoted:.1f}s; the watcher saw {switches} switch(es)")
    for p in producers:
        rate = p.rate()
        first_error = (f"; first error at +{p.errors[0][0] - forced_at:.1f}s: "
                       f"{p.errors[0][1]}" if p.errors else "")
        print(f"  {p.name:>9}: {len(p.acked)} acknowledged ({rate:.0f}/s), "
              f"{lost[p.name]} lost (= {lost[p.name] / rate:.2f}s of enqueues), "
              f"{len(p.errors)} enqueue errors; slowest enqueue {p.worst_call():.2f}s"
              f"{first_error}")
    assert switches == 1
    if not extra_args:
        # Without the watcher the pool keeps writing to the old master until it is demoted
        # (~11 s); with it, only until Sentinel announces the switch (~1 s).
        assert lost["unwatched"] > 0, "the old master was expected to drop acknowledged writes"
        assert lost["watched"] == 0  # the product default: watcher and enqueue journal
        assert all(p.errors == [] for p in producers)  # RETRY_FOR rides out the demotion
    else:
        # The promoted replica leaves the old master without replicas: it refuses writes
        # (NOREPLICAS) at once, and so does the new one until the old one replicates it.
        assert all(lost[p.name] < 0.01 * len(p.acked) for p in producers)


def test_a_call_in_flight_when_the_master_switches_is_not_cut_off(fresh_sentinel, settings):
    """The watcher must not close a connection another thread is using (that failed an
    enqueue with "ValueError: I/O operation on closed file" in CI): the call finishes on
    the old master, and its connection is dropped when handed back."""
    import threading

    from django_bgtasks.broker import get_broker

    topology = fresh_sentinel()
    use_sentinel(settings, topology)
    broker = get_broker()
    client = broker.client
    client.ping()
    outcome: dict = {}

    def block() -> None:
        started = time.monotonic()
        try:
            outcome["reply"] = client.blpop(["nothing-comes"], timeout=4)
        except Exception as exc:  # noqa: BLE001 - the failure under test
            outcome["error"] = exc
        outcome["took"] = time.monotonic() - started
        outcome["ended"] = time.monotonic()

    blocked = threading.Thread(target=block)
    blocked.start()
    time.sleep(0.3)
    old = topology.force_failover()
    new = topology.wait_new_master(old, timeout=15)
    wait_until(lambda: broker._master_watch.switches == 1, timeout=10,
               message="the watcher saw +switch-master")
    switched_at = time.monotonic()
    blocked.join(10)
    # Cut off, redis-py would re-issue BLPOP on a new connection (4 s more) or raise.
    assert "error" not in outcome, outcome
    assert outcome["reply"] is None and outcome["took"] < 4.8, outcome
    assert outcome["ended"] > switched_at, "the switch came after the blocking call ended"
    assert int(client.info("server")["tcp_port"]) == new[1]
    assert {conn.port for conn in client.connection_pool._available_connections} == {new[1]}


# --- 5. WAIT_REPLICAS ---------------------------------------------------------------


@pytest.fixture
def sentinel(sentinel_topology, settings) -> SentinelTopology:
    """The module's topology (never failed over: only its replica is paused), empty, its
    replica linked, and BGTASKS pointed at it."""
    with sentinel_topology.client_for_master() as master:
        master.flushall()
        assert master.execute_command("WAIT", 1, 5000) == 1
    use_sentinel(settings, sentinel_topology)
    return sentinel_topology


def timed_enqueues(queue: str, n: int) -> list[float]:
    """The seconds each of `n` enqueue() calls on `queue` took."""
    task = tasks.record.using(queue_name=queue)
    took = []
    for i in range(n):
        started = time.perf_counter()
        task.enqueue(f"w{i}")
        took.append(time.perf_counter() - started)
    return took


def on_replica_at_once(queue: str, replica: tuple[str, int], n: int) -> int:
    """Enqueue `n` tasks, reading each from the replica right after enqueue() returns;
    returns how many the replica did not have yet."""
    missing = 0
    with redis.Redis(*replica, socket_timeout=5) as node:
        for i in range(n):
            task_id = tasks.record.using(queue_name=queue).enqueue(f"r{i}").id
            missing += not node.hexists(msg_key(queue), task_id)
    return missing


def test_a_wrong_password_fails_at_once_not_after_retry_for(sentinel, settings):
    use_sentinel(settings, sentinel, REDIS_URL=f"redis://nobody:wrong@{sentinel.master_name}/0")
    started = time.monotonic()
    with pytest.raises(EnqueueError, match="authentication to Redis at") as caught:
        tasks.record.using(queue_name="auth").enqueue("never")
    assert time.monotonic() - started < 1.0  # not RETRY_FOR (10 s behind Sentinel)
    assert "wrong" not in str(caught.value)


def test_wait_replicas(sentinel, settings):
    replica = replica_of_master(sentinel)
    use_sentinel(settings, sentinel, WAIT_REPLICAS=1, RETRY_FOR=2.0)
    took_wait = timed_enqueues("wait", 500)
    missing_wait = on_replica_at_once("wait", replica, 500)
    use_sentinel(settings, sentinel, WAIT_REPLICAS=0)
    took_plain = timed_enqueues("plain", 500)
    missing_plain = on_replica_at_once("plain", replica, 500)

    def p99(values: list[float]) -> float:
        return statistics.quantiles(values, n=100)[98] * 1000

    median_wait, median_plain = (statistics.median(took_wait) * 1000,
                                 statistics.median(took_plain) * 1000)
    print(f"\nsentinel, WAIT_REPLICAS=1: enqueue median {median_wait:.3f} ms "
          f"(p99 {p99(took_wait):.3f} ms) vs {median_plain:.3f} ms (p99 "
          f"{p99(took_plain):.3f} ms) without: +{median_wait - median_plain:.3f} ms a "
          f"call; read from the replica right after enqueue() returned, {missing_wait}/500 "
          f"missing with WAIT, {missing_plain}/500 without")
    assert missing_wait == 0

    # The replica stopped: without WAIT enqueue() succeeds at once; with it, enqueue()
    # rides it out for RETRY_FOR, then refuses.
    pid = int(info(replica, "server")["process_id"])
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        tasks.record.using(queue_name="plain").enqueue("unreplicated")
        unconfirmed_took = time.monotonic() - started
        use_sentinel(settings, sentinel, WAIT_REPLICAS=1, WAIT_TIMEOUT=0.5, RETRY_FOR=2.0)
        started = time.monotonic()
        with pytest.raises(EnqueueError, match="0 of 1 replicas confirmed"):
            tasks.record.using(queue_name="wait").enqueue("unconfirmed")
        refused_after = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    print(f"  replica stopped (SIGSTOP): without WAIT enqueue() returned in "
          f"{unconfirmed_took * 1000:.1f} ms; with WAIT_REPLICAS=1 EnqueueError after "
          f"{refused_after:.2f}s (RETRY_FOR 2 s, WAIT_TIMEOUT 0.5 s)")
    assert unconfirmed_took < 0.5
    assert 2.0 - 0.3 <= refused_after <= 2.0 + 0.5 + 1.0


# --- 6. a django-redis Sentinel cache as CACHE_ALIAS ---------------------------------


def test_cache_alias_on_a_sentinel_cache(fresh_sentinel, settings, request):
    from django_bgtasks.broker import get_broker

    topology = fresh_sentinel()
    settings.CACHES = {**settings.CACHES, "bgtasks": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://{topology.master_name}/0",
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.SentinelClient",
                    "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                    "SENTINELS": topology.sentinels,
                    "SENTINEL_KWARGS": {"socket_timeout": 0.5},
                    "SOCKET_TIMEOUT": 10, "SOCKET_CONNECT_TIMEOUT": 5}}}
    settings.BGTASKS = {**settings.BGTASKS, "CACHE_ALIAS": "bgtasks"}

    first = tasks.record.using(queue_name="cached").enqueue("first").id
    broker = get_broker()
    # reset_brokers() leaves a cache alias' broker open, its watcher too: stop it here
    request.addfinalizer(lambda: broker._master_watch and broker._master_watch.stop())
    assert broker.kind == "cache"
    assert broker.retry_for == 10.0  # behind Sentinel: the failover default
    assert broker._master_watch is not None
    with topology.client_for_master() as master:
        assert master.hexists(msg_key("cached"), first)

    # The watcher follows a switch on django-redis' pool too: the next enqueue goes to the
    # new master, although the old one still accepts writes for ~11 s.
    old = topology.force_failover()
    new = topology.wait_new_master(old, timeout=15)
    wait_until(lambda: broker._master_watch.switches == 1, timeout=10,
               message="the watcher saw +switch-master")
    second = tasks.record.using(queue_name="cached").enqueue("second").id
    with redis.Redis(*new) as master:
        assert master.hexists(msg_key("cached"), second)
    with redis.Redis(*old) as stale:
        assert not stale.hexists(msg_key("cached"), second)


# --- 7. the supervisor forks with no thread running ----------------------------------------


def test_the_supervisor_runs_no_thread_under_sentinel(sentinel, start_worker):
    """It forks its worker processes (and replaces dead ones): a thread alive at fork()
    may hold a lock the child then waits on forever. The Sentinel watcher thread belongs
    in the children only."""
    worker = start_worker("--processes", "1", "--threads", "2", env={
        "BGTASKS_TEST_SENTINELS": ",".join(sentinel_settings(sentinel)["SENTINELS"]),
        "BGTASKS_TEST_MASTER_NAME": sentinel.master_name})
    worker.wait_for_log("starting", timeout=15)
    time.sleep(1.0)  # its first announcements and the children's start-up are done
    supervisor_threads = os.listdir(f"/proc/{worker.pid}/task")
    children_file = Path(f"/proc/{worker.pid}/task/{worker.pid}/children")
    children = [int(pid) for pid in children_file.read_text().split()]
    assert supervisor_threads == [str(worker.pid)]
    # ...while a task process has its watcher (and its other threads)
    assert len(children) == 2 and max(len(os.listdir(f"/proc/{pid}/task"))
                                      for pid in children) > 1


# --- 8. no acknowledged enqueue lost: the journal ---------------------------------------


def _settled(topology: SentinelTopology, old: tuple[str, int], new: tuple[str, int],
             event: str) -> bool:
    """Every data node still alive replicates the new master (the old one too, when it was
    only demoted): whatever it dropped is gone by now."""
    for node in topology.data_nodes:
        if node == new or (event == "kill" and node == old):
            continue
        replication = info(node, "replication")
        if (replication["role"] != "slave" or replication.get("master_port") != new[1]
                or replication.get("master_link_status") != "up"):
            return False
    return True


@pytest.mark.parametrize("producers", [1, 3])
@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("event", ["planned", "kill"])
def test_no_acknowledged_enqueue_is_lost(fresh_sentinel, tmp_path, event, replicas,
                                         producers):
    """Producer processes at full speed, default settings behind Sentinel, then SENTINEL
    FAILOVER or SIGKILL of the master: every enqueue() that returned is on the new master
    once the failover has settled (before the journal: 7,790-21,835 lost per planned
    failover)."""
    topology = fresh_sentinel(replicas=replicas)
    env = {**os.environ, "BGTASKS_TEST_SENTINELS": ",".join(
        f"{host}:{port}" for host, port in topology.sentinels),
        "BGTASKS_TEST_MASTER_NAME": topology.master_name}
    stop = tmp_path / "stop"
    outs = [tmp_path / f"acked-{i}" for i in range(producers)]
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).parents[1] / "support" /
        "failover_producer.py"), "journal", str(stop), str(out)], env=env) for out in outs]
    try:
        time.sleep(2.0)  # every producer enqueues by now
        old = topology.force_failover() if event == "planned" else topology.kill_master()
        new = topology.wait_new_master(old, timeout=30)
        # generous: three producers at full speed share two cores with six servers
        wait_until(lambda: _settled(topology, old, new, event), timeout=90, interval=0.2,
                   message="the failover settled")
        time.sleep(1.0)
    finally:
        stop.touch()
        for proc in procs:
            proc.wait(60)
    acked: list[str] = []
    errors = 0
    for out in outs:
        first, *ids = out.read_text().splitlines()
        errors += int(first.split()[1])
        acked += ids
    with redis.Redis(*new, socket_timeout=10) as master:
        present = {k.decode() for k in master.hkeys(msg_key("journal"))}
    lost = len(set(acked) - present)
    print(f"\nsentinel {event}, {replicas} replica(s), {producers} producer(s): "
          f"{len(acked)} acknowledged, {lost} lost, {errors} enqueue errors")
    assert lost == 0
