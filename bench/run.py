"""django-bgtasks against Huey, Dramatiq, Celery and RQ on one private Redis (issue 4).

    bench/setup                                   # once: bench/.venv with the peers
    bench/.venv/bin/python bench/run.py [--tasks 20000] [--reps 3]
                                        [--only bgtasks,huey,dramatiq,celery,rq] [--quick]

One private redis-server (no persistence, free port), its ``redis-benchmark`` figures as
the ceiling, then per repetition and per configuration: FLUSHALL; enqueue N ``incr(i)``
one at a time from one producer process (tasks/s); start the workers (own process group)
and time until ``bench:counter`` reaches N (tasks/s, start-up included); with the workers
now idle, the latency phases (a task every 10 ms for 10 s: start minus enqueue time; 200
tasks due 2 s out: start minus due time); stop the workers (SIGTERM to the group, SIGKILL
after 10 s). Ours is also timed with ``enqueue_many`` (batches of 1,000) when the checkout
has it, and the admin's dead list with 100 and 100,000 dead tasks (bench/admin_pages.py).
Writes bench/RESULTS.md, bench/results.json and bench/results.png; worker logs go to
bench/out/logs/. ``--quick``: 5,000 tasks, 1 repetition, 2 s of pickup, 50 scheduled
tasks, 10,000 dead tasks (unless --tasks/--reps say otherwise).
Everything it starts is stopped when it ends, fails, or gets Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import redis
from common import HERE, ROOT, start_redis, stop_redis
from peers.work import COUNTER, STAMPS

OUT = HERE / "out"
PY = sys.executable
BIN = Path(PY).parent
T0 = time.perf_counter()


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM: stop everything, whatever a library does with KeyboardInterrupt."""


STOPPING: list[int] = []


def interrupt(signum: int, _frame) -> None:
    STOPPING.append(signum)
    raise Interrupted(signal.Signals(signum).name)


def stop_if_interrupted(exc: BaseException) -> None:
    """A failure seen after a signal came is the signal's doing: stop, do not record it."""
    if STOPPING:
        raise Interrupted("stopping") from exc


def log(message: str) -> None:
    print(f"[{time.perf_counter() - T0:6.0f}s] {message}", flush=True)


# -- configurations --------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    key: str            # unique name of the configuration
    system: str         # module peers/<system>_app.py
    dist: str           # distribution, for the version
    label: str          # how the tables name it
    api: str            # the one-at-a-time enqueue call
    workers: list[list[str]] = field(default_factory=list)  # one command per process


def configs(url: str) -> list[Config]:
    run_bg = [PY, "-m", "django", "runbackground", "--processes", "2", "--threads"]
    rq_worker = [str(BIN / "rq"), "worker", "--worker-class", "rq.worker.SimpleWorker",
                 "--with-scheduler", "--logging_level", "WARNING", "-u", url, "default"]
    return [
        Config("bgtasks", "bgtasks", "django-bgtasks", "`--processes 2 --threads 8`",
               "`incr.enqueue(i)`", [run_bg + ["8"]]),
        Config("bgtasks-t1", "bgtasks", "django-bgtasks", "`--processes 2 --threads 1`",
               "`incr.enqueue(i)`", [run_bg + ["1"]]),
        Config("huey", "huey", "huey", "`huey_consumer -w 2 -k process`", "`incr(i)`",
               [[str(BIN / "huey_consumer"), "peers.huey_app.huey", "-w", "2", "-k",
                 "process", "-q"]]),
        Config("dramatiq", "dramatiq", "dramatiq", "`--processes 2 --threads 8`",
               "`incr.send(i)`",
               [[str(BIN / "dramatiq"), "peers.dramatiq_app", "--processes", "2",
                 "--threads", "8"]]),
        Config("celery", "celery", "celery", "`worker -P prefork -c 2`", "`incr.delay(i)`",
               [[str(BIN / "celery"), "-A", "peers.celery_app", "worker", "-P", "prefork",
                 "-c", "2", "--loglevel", "WARNING"]]),
        Config("rq", "rq", "rq", "2 x `rq worker -w SimpleWorker --with-scheduler`",
               "`queue.enqueue(incr, i)`", [rq_worker, rq_worker]),
    ]


SYSTEM_NAMES = {"bgtasks": "django-bgtasks", "huey": "Huey", "dramatiq": "Dramatiq",
                "celery": "Celery", "rq": "RQ"}


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def title(cfg: Config) -> str:
    return f"{SYSTEM_NAMES[cfg.system]} {version(cfg.dist)}, {cfg.label}"


# -- processes -------------------------------------------------------------------------

class Cleanup:
    """Every process group and process this run started, so that all of them end."""

    def __init__(self) -> None:
        self.groups: list[WorkerGroup] = []
        self.procs: list[subprocess.Popen] = []

    def kill_all(self) -> None:
        for group in list(self.groups):
            group.stop(grace=2)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


CLEANUP = Cleanup()


@contextmanager
def bench_redis(workdir: str) -> Iterator[str]:
    """A bench run's private redis-server (its URL), and the run's clean-up: SIGINT or
    SIGTERM stops everything the run started (exit 130), and whatever happens, every child
    it started and the server are stopped at the end."""
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    redis_proc, url = start_redis(workdir)
    CLEANUP.procs.append(redis_proc)
    try:
        yield url
    except Interrupted as exc:
        log(f"interrupted ({exc}): stopping everything this run started")
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        CLEANUP.procs.remove(redis_proc)
        CLEANUP.kill_all()
        stop_redis(redis_proc)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class WorkerGroup:
    """Worker processes in one process group of their own (the first one leads it)."""

    def __init__(self, commands: list[list[str]], env: dict, logfile: Path) -> None:
        self.log = open(logfile, "w")  # noqa: SIM115 - closed in stop()
        self.procs: list[subprocess.Popen] = []
        self.pgid = 0
        CLEANUP.groups.append(self)
        for command in commands:
            # A new process group (not a new session: a later process could not join it).
            group = self.procs[0].pid if self.procs else 0
            self.procs.append(subprocess.Popen(command, env=env, cwd=HERE, stdin=subprocess.DEVNULL,
                                               stdout=self.log, stderr=subprocess.STDOUT,
                                               process_group=group))
            self.pgid = self.procs[0].pid

    def dead(self) -> str | None:
        for proc in self.procs:
            if proc.poll() is not None:
                return f"worker {proc.args[0]} exited with {proc.returncode}"
        return None

    def stop(self, grace: float = 10) -> None:
        """SIGTERM to the group, SIGKILL to what is left after ``grace`` seconds."""
        if self not in CLEANUP.groups:
            return
        if not self.pgid:  # the first Popen failed
            self.log.close()
            CLEANUP.groups.remove(self)
            return
        try:
            os.killpg(self.pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (
                any(p.poll() is None for p in self.procs) or group_alive(self.pgid)):
            time.sleep(0.05)
        if group_alive(self.pgid):
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5
        while group_alive(self.pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.log.close()
        CLEANUP.groups.remove(self)


def run_child(command: list[str], env: dict, timeout: float) -> str:
    """Run a helper process (stderr shown as it goes); its stdout, or RuntimeError."""
    proc = subprocess.Popen(command, env=env, cwd=HERE, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, text=True)
    CLEANUP.procs.append(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"{Path(command[1]).name} timed out after {timeout:.0f}s") from None
    finally:
        if proc.poll() is None:  # interrupted
            proc.kill()
            proc.wait(10)
        CLEANUP.procs.remove(proc)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command[1:4])} exited with {proc.returncode}")
    return out


def record(samples: list[dict], key: str, rep: int, measure: Callable[[], dict]) -> None:
    """Append ``measure()``'s sample, or in its place the failure (the run goes on)."""
    try:
        samples.append(measure())
    except (RuntimeError, ValueError, OSError, redis.RedisError) as exc:
        stop_if_interrupted(exc)
        log(f"{key} {rep}: FAILED: {exc}")
        samples.append({"scenario": key, "rep": rep, "error": str(exc)})


def save(path: Path, results: dict, table: str) -> None:
    """Write a run's results as JSON to ``path`` and print its table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(table)
    log(f"wrote {path}")


# -- measurements ----------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def ceiling(port: int) -> dict:
    """redis-benchmark's requests/s: the default 50 clients, and one client."""
    figures = {}
    for name, extra in (("50 clients", ["-n", "100000"]), ("1 client", ["-c", "1", "-n", "20000"])):
        try:
            out = subprocess.run(["redis-benchmark", "-q", "-t", "set,lpush,rpop", "-p",
                                  str(port), *extra], capture_output=True, text=True,
                                 timeout=120).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            log(f"ceiling: redis-benchmark failed: {exc}")
            continue
        figures[name] = {m[1]: float(m[2]) for m in re.finditer(
            r"^([A-Z]+): ([\d.]+) requests per second", out.replace("\r", "\n"), re.M)}
        log(f"ceiling, redis-benchmark {name}: " + ", ".join(
            f"{k} {v:,.0f}/s" for k, v in figures[name].items()))
    return figures


class Bench:
    def __init__(self, opts: argparse.Namespace, url: str, env: dict) -> None:
        self.opts, self.url, self.env = opts, url, env
        self.r = redis.Redis.from_url(url)

    def producer(self, system: str, *args: str, timeout: float, label: str) -> dict:
        out = run_child([PY, str(HERE / "producer.py"), system, *args, "--timeout",
                         str(timeout), "--label", label], self.env, timeout + 30)
        return json.loads(out.strip().splitlines()[-1])

    def enqueue(self, cfg: Config, label: str, many: bool = False) -> dict:
        n = self.opts.tasks
        args = ["enqueue", "--tasks", str(n)] + (["--many"] if many else [])
        figures = self.producer(cfg.system, *args, timeout=60 + n / 200, label=label)
        if "rate" in figures:
            log(f"{label}: enqueued {n:,} in {figures['seconds']:.2f}s: "
                f"{figures['rate']:,.0f} tasks/s")
        return figures

    def process(self, workers: WorkerGroup, started: float, label: str) -> dict:
        """Poll the counter every 10 ms until it reaches N; tasks/s."""
        n = self.opts.tasks
        deadline = started + 60 + n / 50
        first = None
        last_change, last_count = started, 0
        next_report = started + 1
        while True:
            count = int(self.r.get(COUNTER) or 0)
            now = time.perf_counter()
            if count >= n:
                break
            if count and first is None:
                first = (now, count)
            if count != last_count:
                last_change, last_count = now, count
            problem = workers.dead()
            if problem is None and now > deadline:
                problem = f"not done after {now - started:.0f}s"
            if problem is None and now - last_change > 30:
                problem = f"stuck at {count:,} for 30s"
            if problem:
                raise RuntimeError(f"process: {problem} ({count:,}/{n:,} ran)")
            if now >= next_report:
                next_report = now + 1
                print(f"  {label}: ran {count:,}/{n:,}", flush=True)
            time.sleep(0.01)
        elapsed = now - started
        figures = {"seconds": elapsed, "rate": n / elapsed}
        if first is not None and now > first[0]:
            figures["rate_after_first"] = (n - first[1]) / (now - first[0])
        log(f"{label}: processed {n:,} in {elapsed:.2f}s: {figures['rate']:,.0f} tasks/s "
            f"({figures.get('rate_after_first', 0):,.0f}/s after the first task ran)")
        return figures

    def latency(self, cfg: Config, workers: WorkerGroup, label: str) -> dict:
        pickup_s, scheduled, delay = self.opts.pickup_seconds, self.opts.scheduled, 2.0
        self.r.delete(STAMPS)
        time.sleep(1)  # idle workers
        log(f"{label}: latency: a task every 10 ms for {pickup_s:g}s, then {scheduled} "
            f"due {delay:g}s out")
        sent = self.producer(cfg.system, "latency", "--pickup-seconds", str(pickup_s),
                             "--scheduled", str(scheduled), "--delay", str(delay),
                             timeout=pickup_s + 60, label=label)
        expected = sent["pickup"] + sent["scheduled"]
        deadline = time.perf_counter() + delay + 30
        while (got := self.r.llen(STAMPS)) < expected:
            problem = workers.dead()
            if problem or time.perf_counter() > deadline:
                raise RuntimeError(f"latency: {problem or 'timed out'}: {got}/{expected} ran")
            time.sleep(0.05)
        stamps = [json.loads(raw) for raw in self.r.lrange(STAMPS, 0, -1)]
        pickup = [(start - ref) * 1000 for kind, ref, start in stamps if kind == "pickup"]
        due = [(start - ref) * 1000 for kind, ref, start in stamps if kind == "due"]
        figures = {
            "pickup_p50": statistics.median(pickup), "pickup_p99": percentile(pickup, 99),
            "due_p50": statistics.median(due), "due_p99": percentile(due, 99),
            "due_early": sum(1 for ms in due if ms < 0), "due_n": len(due),
            "pickup_n": len(pickup), "pickup_send_overrun_s": sent["pickup_send_overrun_s"],
        }
        log(f"{label}: pickup p50 {figures['pickup_p50']:.2f} ms, p99 "
            f"{figures['pickup_p99']:.2f} ms; scheduled late p50 {figures['due_p50']:.1f} ms, "
            f"p99 {figures['due_p99']:.1f} ms, {figures['due_early']} of {len(due)} early")
        return figures

    def run_config(self, cfg: Config, rep: int) -> dict:
        label = f"{cfg.key} {rep}/{self.opts.reps}"
        sample: dict = {"config": cfg.key, "rep": rep}
        self.r.flushall()
        try:
            sample["enqueue"] = self.enqueue(cfg, f"{label} enqueue")["rate"]
            logfile = OUT / "logs" / f"{cfg.key}-{rep}.log"
            log(f"{label}: starting workers (log: {logfile.relative_to(ROOT)})")
            started = time.perf_counter()
            workers = WorkerGroup(cfg.workers, self.env, logfile)
            try:
                figures = self.process(workers, started, f"{label} process")
                sample["process"] = figures["rate"]
                sample["process_after_first"] = figures.get("rate_after_first")
                sample.update(self.latency(cfg, workers, f"{label} latency"))
            finally:
                workers.stop()
        except (RuntimeError, ValueError, OSError, redis.RedisError) as exc:
            stop_if_interrupted(exc)
            sample["error"] = str(exc)
            log(f"{label}: FAILED: {exc}")
            tail = (OUT / "logs" / f"{cfg.key}-{rep}.log")
            if tail.exists():
                print("".join(tail.read_text(errors="replace").splitlines(True)[-15:]))
        return sample

    def enqueue_many(self, rep: int) -> dict:
        self.r.flushall()
        label = f"bgtasks enqueue_many {rep}/{self.opts.reps}"
        try:
            figures = self.enqueue(next(c for c in configs(self.url) if c.key == "bgtasks"),
                                   label, many=True)
        except (RuntimeError, ValueError, OSError) as exc:
            stop_if_interrupted(exc)
            log(f"{label}: FAILED: {exc}")
            return {"rep": rep, "error": str(exc)}
        if "unavailable" in figures:
            log(f"{label}: {figures['unavailable']}")
        return {"rep": rep, **figures}

    def admin(self) -> dict:
        self.r.flushall()
        small, big = 100, (10_000 if self.opts.quick else 100_000)
        log(f"admin: dead list with {small:,} and {big:,} dead tasks (bench/admin_pages.py)")
        path = OUT / "admin.json"
        path.unlink(missing_ok=True)
        try:
            run_child([PY, str(HERE / "admin_pages.py"), "--redis-url", self.url, "--json",
                       str(path), "--small", str(small), "--big", str(big)], self.env, 900)
            figures = json.loads(path.read_text())
        except (RuntimeError, ValueError, OSError) as exc:
            stop_if_interrupted(exc)
            log(f"admin: FAILED: {exc}")
            return {"error": str(exc)}
        finally:
            self.r.flushall()
        for row in figures["rows"]:
            log(f"admin: {row['label']}: median {row['median_ms']:.1f} ms")
        return figures


# -- report ----------------------------------------------------------------------------

def machine(r: redis.Redis) -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    try:
        git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        git = "?"
    return {
        "nproc": os.cpu_count(), "cpu": model[1] if model else platform.processor(),
        "ram_gib": round(int(mem[1]) / 2**20, 1) if mem else None,
        "os": platform.platform(), "redis": r.info("server")["redis_version"],
        "python": platform.python_version(), "git": git,
        "packages": {d: version(d) for d in (
            "django-bgtasks", "Django", "redis", "hiredis", "huey", "dramatiq", "celery",
            "kombu", "rq", "matplotlib")},
    }


def summary(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def fmt_rate(s: dict | None) -> tuple[str, str]:
    if s is None:
        return "failed", ""
    return f"{s['median']:,.0f}", f"{s['min']:,.0f}-{s['max']:,.0f}"


def fmt_ms(s: dict | None, digits: int = 1) -> str:
    if s is None:
        return "failed"
    if s["n"] == 1:
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f} to {s['max']:.{digits}f})"


def ratio(s: dict | None, best: float | None) -> str:
    if s is None or not best:
        return ""
    return f"{s['median'] / best:.2f}x"


def tables(results: dict, cfgs: list[Config]) -> dict:
    """The summaries the report and the chart draw from: rows of (label, summary)."""
    samples = results["samples"]
    by_cfg = {c.key: [s for s in samples if s["config"] == c.key] for c in cfgs}
    enqueue_rows: list[tuple[str, str, dict | None]] = []
    seen_systems = set()
    for c in cfgs:
        if c.system in seen_systems:
            continue
        seen_systems.add(c.system)
        values = [s.get("enqueue") for k in by_cfg for s in by_cfg[k]
                  if next(x for x in cfgs if x.key == k).system == c.system]
        name = f"{SYSTEM_NAMES[c.system]} {version(c.dist)}"
        enqueue_rows.append((c.system, f"{name}, {c.api}", summary(values)))
        if c.system == "bgtasks" and results["enqueue_many"]:
            many = [m.get("rate") for m in results["enqueue_many"]]
            enqueue_rows.append(("bgtasks-many", f"{name}, `incr.enqueue_many(batch of 1,000)`",
                                 summary(many)))
    process_rows = [(c.key, title(c), summary([s.get("process") for s in by_cfg[c.key]]),
                     summary([s.get("process_after_first") for s in by_cfg[c.key]]))
                    for c in cfgs]
    latency_rows = [(c.key, title(c), {k: summary([s.get(k) for s in by_cfg[c.key]]) for k in (
        "pickup_p50", "pickup_p99", "due_p50", "due_p99")},
        sum(s.get("due_early", 0) for s in by_cfg[c.key]),
        sum(s.get("due_n", 0) for s in by_cfg[c.key])) for c in cfgs]
    return {"enqueue": enqueue_rows, "process": process_rows, "latency": latency_rows}


def best_peer(rows: list, index: int = 2) -> float | None:
    medians = [row[index]["median"] for row in rows
               if not row[0].startswith("bgtasks") and row[index] is not None]
    return max(medians) if medians else None


def write_markdown(results: dict, cfgs: list[Config], path: Path) -> None:
    m, o, t = results["machine"], results["options"], tables(results, cfgs)
    lines = [
        "# Benchmark: django-bgtasks and its Python peers",
        "",
        f"Written by `bench/run.py` on {results['date']} in {results['seconds'] / 60:.1f} "
        f"minutes: {o['tasks']:,} tasks, {o['reps']} repetition(s)"
        + (" (`--quick`)" if o["quick"] else "") + "; medians of the repetitions with min-max.",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, {m['os']}; "
        f"Redis {m['redis']} on the same machine (private server, no persistence, "
        f"FLUSHALL before each configuration); Python {m['python']}; checkout {m['git']}.",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
        "",
        "Every task does the same work: one `INCR bench:counter` with a module-level redis-py "
        "client (hiredis installed). Every system logs at WARNING (per-task log lines would "
        "measure the terminal, not the queue). Each system's producer runs in a fresh "
        "process; workers run in their own process group and are stopped between runs.",
        "",
        "## Redis ceiling (`redis-benchmark -q -t set,lpush,rpop`)",
        "",
        "| clients | " + " | ".join(results["ceiling"].get("50 clients", {})) + " |",
        "|---|" + "---|" * len(results["ceiling"].get("50 clients", {})),
    ]
    for name, figures in results["ceiling"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:,.0f}/s" for v in figures.values()) + " |")

    best = best_peer(t["enqueue"])
    lines += ["", f"## Enqueue: {o['tasks']:,} tasks from one producer",
              "", "| system, API | tasks/s | min-max | vs fastest peer |", "|---|---|---|---|"]
    for key, label, s in t["enqueue"]:
        rate, span = fmt_rate(s)
        if key == "bgtasks-many" and s is None:
            rate = "n/a" if any("unavailable" in x for x in results["enqueue_many"]) else rate
        lines.append(f"| {label} | {rate} | {span} | {ratio(s, best)} |")

    best = best_peer(t["process"])
    lines += ["", f"## Process: {o['tasks']:,} queued tasks, 2 worker processes",
              "", "Timed from starting the workers (start-up included) until the counter "
              "reads N, polled every 10 ms; the last column starts the clock at the first "
              "task seen run instead.", "",
              "| system, config | tasks/s | min-max | vs fastest peer | tasks/s after first |",
              "|---|---|---|---|---|"]
    for _key, label, s, after in t["process"]:
        rate, span = fmt_rate(s)
        lines.append(f"| {label} | {rate} | {span} | {ratio(s, best)} | {fmt_rate(after)[0]} |")

    lines += ["", "## Latency, idle workers",
              "", f"Pickup: a task every 10 ms for {o['pickup_seconds']:g} s "
              f"({round(o['pickup_seconds'] / 0.01):,} tasks), task start minus enqueue time. "
              f"Scheduled: {o['scheduled']} tasks due 2 s out, task start minus due time; "
              "early: started before due (all repetitions). ms, median of the repetitions "
              "(min to max).", "",
              "| system, config | pickup p50 | pickup p99 | scheduled late p50 | "
              "scheduled late p99 | early |", "|---|---|---|---|---|---|"]
    for _key, label, s, early, n in t["latency"]:
        lines.append(f"| {label} | {fmt_ms(s['pickup_p50'], 2)} | {fmt_ms(s['pickup_p99'], 2)} | "
                     f"{fmt_ms(s['due_p50'])} | {fmt_ms(s['due_p99'])} | {early} of {n} |")

    admin = results.get("admin")
    if admin:
        lines += ["", "## Admin: dead-task list page (bench/admin_pages.py)", ""]
        if "error" in admin:
            lines.append(f"Failed: {admin['error']}")
        else:
            lines += [f"Server time with Django's test client, median of {admin['repeat']}.", "",
                      "| dead list | median ms | min-max ms |", "|---|---|---|"]
            lines += [f"| {row['label']} | {row['median_ms']:.1f} | {row['min_ms']:.1f}-"
                      f"{row['max_ms']:.1f} |" for row in admin["rows"]]
            lines += ["", f"Ratio big/small (first page): {admin['ratio_first_page']:.2f}."]

    errors = [s for s in results["samples"] if s.get("error")]
    errors += [dict(m, config="bgtasks enqueue_many") for m in results["enqueue_many"]
               if m.get("error")]
    if errors:
        lines += ["", "## Failures", ""]
        lines += [f"- {s['config']}, repetition {s['rep']}: {s['error']}" for s in errors]
    lines += ["", "## Notes", "",
              "- Ours: `runbackground` with `DJANGO_SETTINGS_MODULE=bench_settings` "
              "(bench/bench_settings.py); scheduled tasks via "
              "`.using(run_after=timedelta(seconds=2))`.",
              "- Huey: `RedisHuey` (blocking dequeue), `-q` sets WARNING; `.schedule(delay=2)`.",
              "- Dramatiq: `RedisBroker`; `send_with_options(delay=2000)`.",
              "- Celery: Redis broker, no result backend, `--loglevel WARNING`; "
              "`apply_async(countdown=2)` (the worker holds ETA tasks in memory).",
              "- RQ: 2 x `rq worker --worker-class rq.worker.SimpleWorker --with-scheduler "
              "--logging_level WARNING`; `enqueue_in(timedelta(seconds=2))`.",
              "- Raw figures: bench/results.json; chart: bench/results.png.", ""]
    path.write_text("\n".join(lines))


def write_chart(results: dict, cfgs: list[Config], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = tables(results, cfgs)
    panels = [("enqueue, one producer (tasks/s)", [(label, s) for _k, label, s in t["enqueue"]]),
              ("process, 2 worker processes (tasks/s)",
               [(label, s) for _k, label, s, _a in t["process"]])]
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5))
    for ax, (name, rows) in zip(axes, panels, strict=True):
        rows = [(label.replace("`", ""), s) for label, s in rows if s is not None]
        labels = [label for label, _ in rows]
        medians = [s["median"] for _, s in rows]
        err = [[s["median"] - s["min"] for _, s in rows], [s["max"] - s["median"] for _, s in rows]]
        colors = ["tab:green" if label.startswith("django-bgtasks") else "tab:gray"
                  for label in labels]
        ax.barh(range(len(rows)), medians, xerr=err, color=colors, capsize=3)
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(name)
        ax.set_xlabel("tasks/s (median, min-max)")
        for y, (_, s) in enumerate(rows):
            ax.text(s["max"], y, f"  {s['median']:,.0f}", va="center", fontsize=8)
        ax.margins(x=0.2)
    m = results["machine"]
    fig.suptitle(f"{results['date']}: {m['nproc']} cores, Redis {m['redis']}, Python "
                 f"{m['python']}, {results['options']['tasks']:,} tasks, medians of "
                 f"{results['options']['reps']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, help="tasks per run (default 20,000; quick 5,000)")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; quick 1)")
    parser.add_argument("--only", help="comma-separated: bgtasks,huey,dramatiq,celery,rq")
    parser.add_argument("--quick", action="store_true",
                        help="shorter latency phases and admin seeding")
    opts = parser.parse_args()
    opts.tasks = opts.tasks or (5_000 if opts.quick else 20_000)
    opts.reps = opts.reps or (1 if opts.quick else 3)
    opts.pickup_seconds = 2.0 if opts.quick else 10.0
    opts.scheduled = 50 if opts.quick else 200
    only = set(opts.only.split(",")) if opts.only else set(SYSTEM_NAMES)
    unknown = only - set(SYSTEM_NAMES)
    if unknown:
        parser.error(f"unknown system(s): {', '.join(sorted(unknown))}")

    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    with bench_redis(tempfile.mkdtemp(prefix="bgtasks-peers-bench-")) as url:
        env = {**os.environ, "BENCH_REDIS_URL": url, "BGTASKS_REDIS_URL": url,
               "DJANGO_SETTINGS_MODULE": "bench_settings", "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
        bench = Bench(opts, url, env)
        cfgs = [c for c in configs(url) if c.system in only]
        log(f"redis-server at {url}; {len(cfgs)} configurations x {opts.reps} repetitions, "
            f"{opts.tasks:,} tasks")
        results: dict = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "options": {k: getattr(opts, k) for k in (
                "tasks", "reps", "quick", "pickup_seconds", "scheduled")} | {
                "only": sorted(only)},
            "machine": machine(bench.r), "ceiling": ceiling(urlparse(url).port),
            "samples": [], "enqueue_many": [], "configs": {c.key: title(c) for c in cfgs},
        }
        for rep in range(1, opts.reps + 1):
            for cfg in cfgs:
                log(f"== {title(cfg).replace('`', '')}: repetition {rep}/{opts.reps}")
                results["samples"].append(bench.run_config(cfg, rep))
                if cfg.key == "bgtasks":
                    results["enqueue_many"].append(bench.enqueue_many(rep))
        if "bgtasks" in only:
            results["admin"] = bench.admin()
        results["seconds"] = time.perf_counter() - T0
        (HERE / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        write_markdown(results, cfgs, HERE / "RESULTS.md")
        write_chart(results, cfgs, HERE / "results.png")
        log("wrote bench/RESULTS.md, bench/results.json, bench/results.png")
        print((HERE / "RESULTS.md").read_text())


if __name__ == "__main__":
    main()
