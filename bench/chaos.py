"""Chaos run: is every task delivered at least once while processes and Redis get killed?

Two worker hosts (`manage.py runbackground`, each --processes 2) share one redis-server
started with appendonly yes and appendfsync always. Tasks (demo.tasks.chaos_step) are
enqueued at a steady pace while a chaos loop, every 1-3 s, does one of:
  child      SIGKILL a random child process of a random host
  host_kill  SIGKILL a whole host (supervisor and children), then start it again
  host_term  SIGTERM a host (graceful drain), then start it again once it exited
  redis      SIGKILL redis-server, then start it again (same port, same AOF)
The first four actions are one of each kind, in random order.

The verdict comes from the tasks' own ledger (demo.chaos_ledger, in a second Redis that is
never touched), not from the queue's bookkeeping:
  - every task that should complete did complete (a missing one is LOST: exit 1);
  - tasks that always fail are dead with max_retries + 1 attempts;
  - once leases expire nothing is left pending, active, scheduled or retrying;
  - every execution beyond the expected ones happened after a kill hit the process that
    was running an earlier execution of the same task (otherwise: unexplained, exit 1).

    bench/.venv/bin/python bench/chaos.py              # 50,000 tasks, ~2 minutes
    python bench/chaos.py --short --json report.json   # 2,000 tasks (the test suite's)

Any Python with this project installed works (the test suite runs it with its own).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MANAGE_PY = ROOT / "testproject" / "manage.py"
KINDS = ("child", "host_kill", "host_term", "redis")
FAIL_ALWAYS_RETRIES = 2


def clock(at: float) -> str:
    """HH:MM:SS.mmm, as in the workers' logs."""
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def log(message: str) -> None:
    print(f"[{clock(time.time())}] {message}", flush=True)


# --- processes -------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Redis:
    """A private redis-server; `durable` ones fsync every write to their AOF."""

    def __init__(self, workdir: Path, durable: bool) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if durable
                       else ["--appendonly", "no"])
        self.argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                     "--save", "", "--dir", str(self.dir), *persistence]
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        with open(self.dir / "redis.log", "ab") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                            process_group=0)
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                time.sleep(0.02)
        raise SystemExit(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Host:
    """One `runbackground` instance: a supervisor and its children."""

    def __init__(self, name: str, args: argparse.Namespace, env: dict[str, str],
                 workdir: Path) -> None:
        self.name = name
        self.argv = [sys.executable, str(MANAGE_PY), "runbackground",
                     "--processes", str(args.processes), "--threads", str(args.threads),
                     "--shutdown-timeout", "5"]
        self.env = env
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.lock = threading.Lock()  # a restart in progress holds it

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env=self.env,
                                            stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def pids(self) -> list[int]:
        """The supervisor and its children."""
        if not self.process or self.process.poll() is not None:
            return []
        return [self.process.pid, *self.children()]

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True,
                             text=True).stdout
        return [int(p) for p in out.split()]

    def kill_group(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None


# --- the plan and the producer ---------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    token: str
    kind: str  # instant, sleep, fail_always, fail_first, scheduled
    seconds: float
    delay: float  # scheduled: run_after, seconds from enqueue


def plan_tasks(count: int, rng: random.Random) -> list[Planned]:
    """The issue's mix: instant, 50 ms sleeps, 1 % always failing, 5 % failing their first
    attempt, some scheduled 1-10 s out."""
    plan = []
    for i in range(count):
        roll = rng.random()
        token = f"c{i}"
        if roll < 0.01:
            plan.append(Planned(token, "fail_always", 0.0, 0.0))
        elif roll < 0.06:
            plan.append(Planned(token, "fail_first", 0.0, 0.0))
        elif roll < 0.16:
            plan.append(Planned(token, "scheduled", 0.0, rng.uniform(1, 10)))
        elif roll < 0.46:
            plan.append(Planned(token, "sleep", 0.05, 0.0))
        else:
            plan.append(Planned(token, "instant", 0.0, 0.0))
    return plan


def expected_executions(item: Planned) -> int:
    return {"fail_always": FAIL_ALWAYS_RETRIES + 1, "fail_first": 2}.get(item.kind, 1)


@dataclass
class ProducerStats:
    enqueued: int = 0
    retried_calls: int = 0
    already_written: int = 0  # a retry found the first call had been written
    # Tasks whose enqueue() raised and was called again: when Redis died after writing
    # but before replying, and the task ran to completion before the second call, that
    # call enqueues it anew (an id is known only while its task is in Redis).
    retried_tokens: set[str] = field(default_factory=set)
    finished_at: float | None = None


def produce(plan: list[Planned], seconds: float, stats: ProducerStats) -> None:
    """Enqueue every planned task, paced over `seconds`; a failed call is retried with the
    same task id (so a call that was written before its reply got lost is not doubled)."""
    from demo.tasks import chaos_step
    from django_bgtasks import EnqueueError, TaskAlreadyExists

    started = time.monotonic()
    for index, item in enumerate(plan):
        pause = started + seconds * index / len(plan) - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        options: dict = {"task_id": item.token}
        if item.kind == "fail_always":
            options["max_retries"] = FAIL_ALWAYS_RETRIES
        if item.delay:
            options["run_after"] = timedelta(seconds=item.delay)
        task = chaos_step.using(**options)
        deadline = time.monotonic() + 120
        while True:
            try:
                task.enqueue(item.token, item.kind, item.seconds)
                break
            except TaskAlreadyExists:
                stats.already_written += 1
                break
            except EnqueueError as exc:
                if time.monotonic() > deadline:
                    raise
                stats.retried_calls += 1
                stats.retried_tokens.add(item.token)
                if stats.retried_calls % 50 == 1:
                    log(f"producer: {exc}; retrying")
                time.sleep(0.1)
        stats.enqueued += 1
    stats.finished_at = time.time()


# --- chaos -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    kind: str
    at: float  # time.time()
    pids: tuple[int, ...]  # processes killed (redis: none of the workers')
    host: str


@dataclass
class Chaos:
    hosts: list[Host]
    redis: Redis
    rng: random.Random
    kills: list[Kill] = field(default_factory=list)
    restarts: list[threading.Thread] = field(default_factory=list)

    def act(self, kind: str) -> bool:
        """Do one chaos action; False when it could not be done now (no target)."""
        done = self._act(kind)
        if done:
            log(f"chaos: {kind} {self.kills[-1].host} pids {list(self.kills[-1].pids)}")
        return done

    def _act(self, kind: str) -> bool:
        host = self.rng.choice(self.hosts)
        if kind == "redis":
            self.redis.kill()
            self.kills.append(Kill(kind, time.time(), (), "redis"))
            time.sleep(self.rng.uniform(0.1, 1.0))  # down for a moment
            self.redis.start()
            return True
        if not host.lock.acquire(blocking=False):
            host = next((h for h in self.hosts if h.lock.acquire(blocking=False)), None)
            if host is None:
                return False  # both hosts are restarting
        try:
            if kind == "child":
                children = host.children() if host.is_running() else []
                if not children:
                    return False
                pid = self.rng.choice(children)
                os.kill(pid, signal.SIGKILL)
                self.kills.append(Kill(kind, time.time(), (pid,), host.name))
            elif kind == "host_kill":
                pids = tuple(host.pids())
                host.kill_group()
                self.kills.append(Kill(kind, time.time(), pids, host.name))
                host.start()
            else:  # host_term: drain in the background, then start again
                pids = tuple(host.pids())
                host.process.send_signal(signal.SIGTERM)
                self.kills.append(Kill(kind, time.time(), pids, host.name))
                thread = threading.Thread(target=self._restart_after_exit, args=(host,))
                self.restarts.append(thread)
                thread.start()
                return True  # the thread releases the lock
        except BaseException:
            host.lock.release()
            raise
        host.lock.release()
        return True

    def _restart_after_exit(self, host: Host) -> None:
        try:
            try:
                host.process.wait(30)
            except subprocess.TimeoutExpired:
                log(f"{host.name} did not exit 30 s after SIGTERM; killing it")
                host.kill_group()
            host.start()
        finally:
            host.lock.release()

    def settle(self) -> None:
        for thread in self.restarts:
            thread.join()
        for host in self.hosts:
            if not host.is_running():
                host.start()


# --- verdict ---------------------------------------------------------------------------


def judge(plan: list[Planned], ledger, kills: list[Kill], retried: set[str]) -> dict:
    from demo import chaos_ledger

    starts, ends = chaos_ledger.read(ledger)
    by_token: dict[str, list] = defaultdict(list)
    for entry in starts:
        by_token[entry.token].append(entry)
    completed = {entry.token for entry in ends}
    kills_by_pid: dict[int, list[Kill]] = defaultdict(list)
    for kill in kills:
        for pid in kill.pids:
            kills_by_pid[pid].append(kill)

    must_complete = [p for p in plan if p.kind != "fail_always"]
    lost = [p.token for p in must_complete if p.token not in completed]
    never_started = [p.token for p in plan if p.token not in by_token]
    duplicates = unexplained = from_retried_enqueue = 0
    unexplained_tokens = []
    for item in plan:
        runs = by_token[item.token]
        extra = len(runs) - expected_executions(item)
        if extra <= 0:
            continue
        duplicates += extra
        # An execution cut short by a kill (or whose outcome had not reached Redis when its
        # process was killed) explains one more execution.
        hit = sum(1 for run in runs[:-1]
                  if any(k.at >= run.at for k in kills_by_pid.get(run.pid, ())))
        if hit < extra and item.token in retried:
            hit += 1
            from_retried_enqueue += 1
        if hit < extra:
            unexplained += extra - hit
            unexplained_tokens.append(
                f"{item.token} ({item.kind}): executions "
                + ", ".join(f"pid {r.pid} at {clock(r.at)}" for r in runs))

    recoveries: dict[str, list[float]] = defaultdict(list)
    for kill in kills:
        if not kill.pids or kill.kind == "host_term":
            continue
        killed = set(kill.pids)
        for runs in by_token.values():
            for i, run in enumerate(runs):
                if run.pid in killed and run.at <= kill.at and i + 1 < len(runs) and (
                        runs[i + 1].at > kill.at):
                    recoveries[kill.kind].append(runs[i + 1].at - kill.at)
    return {
        "lost": lost, "never_started": never_started, "duplicates": duplicates,
        "duplicates_from_retried_enqueue": from_retried_enqueue,
        "unexplained_duplicates": unexplained, "unexplained_tokens": unexplained_tokens[:20],
        "executions": len(starts), "completed": len(completed),
        # from a kill to the next start of each task it interrupted, per kind of kill
        "max_recovery_s": {kind: round(max(times), 3) for kind, times in recoveries.items()},
        "recoveries_measured": {kind: len(times) for kind, times in recoveries.items()},
    }


def check_queue(plan: list[Planned]) -> dict:
    from django_bgtasks import TaskNotFound, get_task_info
    from django_bgtasks.broker import get_broker

    counts = get_broker().counts("default")
    wrong_dead = []
    for item in plan:
        if item.kind != "fail_always":
            continue
        try:
            info = get_task_info(item.token)
            ok = info.state == "dead" and info.attempts == FAIL_ALWAYS_RETRIES + 1
            if not ok:
                wrong_dead.append(f"{item.token}: {info.state}, {info.attempts} attempts")
        except TaskNotFound:
            wrong_dead.append(f"{item.token}: not found")
    return {"counts": counts, "fail_always_not_dead_after_3": wrong_dead}


def drained(ledger, plan_tokens: set[str]) -> bool:
    from demo import chaos_ledger
    from django_bgtasks.broker import get_broker
    from django_bgtasks.exceptions import BgTasksError

    try:
        counts = get_broker().counts("default")
    except BgTasksError:
        return False
    busy = sum(counts[s] for s in ("pending", "active", "scheduled", "retry"))
    if busy:
        return False
    done = {e.token for e in chaos_ledger.read(ledger)[1]}
    return plan_tokens <= done


# --- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true",
                        help="the test suite's version: 2,000 tasks over 12 s, chaos every "
                             "0.5-1.5 s")
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--enqueue-seconds", type=float, default=60.0,
                        help="spread the enqueueing over this long (chaos runs meanwhile)")
    parser.add_argument("--interval", type=float, nargs=2, default=(1.0, 3.0),
                        metavar=("MIN", "MAX"), help="seconds between chaos actions")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--lease", type=float, default=3.0, help="BGTASKS LEASE_SECONDS")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args(argv)
    if args.short:
        args.tasks, args.enqueue_seconds, args.interval = 2_000, 12.0, (0.5, 1.5)
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="bgtasks-chaos-"))
    queue_redis = Redis(workdir / "queue-redis", durable=True)
    ledger_redis = Redis(workdir / "ledger-redis", durable=False)
    queue_redis.start()
    ledger_redis.start()
    env = {**os.environ, "BGTASKS_REDIS_URL": queue_redis.url,
           "BGTASKS_TEST_LEDGER_URL": ledger_redis.url,
           "BGTASKS_LEASE_SECONDS": str(args.lease),
           "BGTASKS_DEMO_DB": str(workdir / "demo.sqlite3"), "PYTHONUNBUFFERED": "1"}
    os.environ.update({k: env[k] for k in ("BGTASKS_REDIS_URL", "BGTASKS_TEST_LEDGER_URL",
                                           "BGTASKS_LEASE_SECONDS", "BGTASKS_DEMO_DB")})
    sys.path.insert(0, str(ROOT / "testproject"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import django
    import redis as redis_py

    django.setup()
    hosts = [Host(f"host{i + 1}", args, env, workdir) for i in range(2)]
    chaos = Chaos(hosts, queue_redis, rng)
    plan = plan_tasks(args.tasks, rng)
    stats = ProducerStats()
    log(f"seed {args.seed}; {args.tasks} tasks over {args.enqueue_seconds:g}s; 2 hosts x "
        f"{args.processes} processes x {args.threads} threads; lease {args.lease:g}s; "
        f"logs in {workdir}")
    started = time.time()
    try:
        for host in hosts:
            host.start()
        producer = threading.Thread(target=produce, args=(plan, args.enqueue_seconds, stats),
                                    daemon=True)
        producer.start()
        missing = list(KINDS)  # one of each kind first
        rng.shuffle(missing)
        while producer.is_alive() or missing:
            time.sleep(rng.uniform(*args.interval))
            kind = missing[-1] if missing else rng.choice(KINDS)
            if chaos.act(kind) and kind in missing:
                missing.remove(kind)
            log(f"{stats.enqueued}/{len(plan)} enqueued")
        producer.join()
        chaos_ended = time.time()
        chaos.settle()
        log("chaos over; waiting for the queue to drain")
        ledger = redis_py.Redis.from_url(ledger_redis.url)
        tokens = {p.token for p in plan if p.kind != "fail_always"}
        deadline = time.monotonic() + args.drain_timeout
        while not drained(ledger, tokens) and time.monotonic() < deadline:
            time.sleep(0.2)
        drained_at = time.time()
        # Anything a kill left active comes back once its lease expires: wait that out too.
        time.sleep(args.lease + 1)
        verdict = judge(plan, ledger, chaos.kills, stats.retried_tokens)
        queue = check_queue(plan)
    finally:
        for host in hosts:
            host.kill_group()
        queue_redis.kill()
        ledger_redis.kill()
    left_busy = {s: n for s, n in queue["counts"].items()
                 if s in ("pending", "active", "scheduled", "retry") and n}
    report = {
        "seed": args.seed, "tasks": len(plan),
        "mix": dict(Counter(p.kind for p in plan)),
        "kills": dict(Counter(k.kind for k in chaos.kills)),
        "processes_killed": sum(len(k.pids) for k in chaos.kills),
        "producer_retried_calls": stats.retried_calls,
        "producer_found_already_written": stats.already_written,
        "run_s": round(drained_at - started, 1),
        "drain_after_chaos_s": round(drained_at - chaos_ended, 1),
        **verdict, **queue, "left_busy": left_busy, "workdir": str(workdir),
    }
    failed = (report["lost"] or report["unexplained_duplicates"] or left_busy
              or report["fail_always_not_dead_after_3"]
              or any(report["kills"].get(kind, 0) == 0 for kind in KINDS))
    report["verdict"] = "FAIL" if failed else "PASS"
    print(json.dumps({k: v for k, v in report.items()
                      if k not in ("lost", "never_started")} | {
        "lost": len(report["lost"]), "never_started": len(report["never_started"])},
        indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
