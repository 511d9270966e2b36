"""Worker memory over many no-op tasks: is resident memory after 200,000 within 10 % of 10,000?

    .venv/bin/python bench/memory.py [--tasks 200000] [--baseline 10000] [--every 20000]
                                     [--processes 2] [--threads 8] [--bound 10]

Starts a private redis-server and ``runbackground`` (in its own process group), feeds it
``noop`` tasks with ``enqueue_many`` up to each checkpoint, waits until Redis has counted them
processed and nothing is pending or active, then reads Rss and Pss_Anon from
/proc/PID/smaps_rollup for the supervisor, each worker process and the maintenance process.
Prints a table and the growth from ``--baseline`` tasks to the last checkpoint, writes
bench/out/memory.json, and exits 1 when a process or the total RSS grew more than ``--bound``
percent (2 when a process was replaced, which would hide growth). Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, ROOT, start_redis, stop_redis

QUEUE = "default"
CHUNK = 10_000  # tasks per enqueue_many call (it sends 1,000 per script call)
STALL = 60.0  # seconds without progress before giving up
OUT = HERE / "out" / "memory.json"


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [0] is field 3 (state), [1] the ppid."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def children(pid: int) -> list[int]:
    """Child pids of ``pid`` in the order they were started (/proc/*/task/*/children is
    not available everywhere, so scan every process's parent)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = stat_fields(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid:
                found.append((int(fields[19]), int(entry.name)))  # starttime, pid
    return [child for _, child in sorted(found)]


def rss_anon_kib(pid: int) -> tuple[int, int]:
    """Resident set size of ``pid`` and its anonymous pages' proportional share, in KiB.

    RSS counts the pages the children share with the supervisor (copy-on-write) in each of
    them; Pss_Anon counts them once, and unlike Pss it does not change with how many other
    processes on the machine map the same Python binary and libraries."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value)
    return fields["Rss"], fields["Pss_Anon"]


def wait_for_children(worker: subprocess.Popen, count: int) -> list[int]:
    """The supervisor's ``count`` children, once it has forked them all."""
    deadline = time.monotonic() + 30
    while len(found := children(worker.pid)) < count:
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the worker did not start its {count} processes")
        time.sleep(0.1)
    return found


def wait_processed(broker, inspector, worker: subprocess.Popen, target: int) -> int:
    """Wait until Redis counted ``target`` tasks processed and none is pending or active;
    returns how many failed."""
    last, progress_at = -1, time.monotonic()
    while True:
        days = inspector.history(days=2)  # two days: a run may cross midnight UTC
        processed = sum(day.processed for day in days)
        counts = broker.counts(QUEUE)
        if processed >= target and counts["pending"] + counts["active"] == 0:
            return sum(day.failed for day in days)
        if processed != last:
            last, progress_at = processed, time.monotonic()
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited (code {worker.returncode}) at {processed:,}")
        if time.monotonic() - progress_at > STALL:
            raise SystemExit(f"no progress for {STALL:.0f}s at {processed:,}/{target:,}")
        time.sleep(0.05)


def stop_worker(worker: subprocess.Popen) -> None:
    """SIGTERM the worker's process group (supervisor and children), then SIGKILL what is left."""
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the supervisor reaped every child before it exited
    worker.wait()


def growth(first: int, last: int) -> float:
    """Percent change from ``first`` to ``last``."""
    return 100.0 * (last - first) / first


def mib(kib: int) -> str:
    """KiB as MiB, one decimal."""
    return f"{kib / 1024:.1f}"


def print_table(roles: list[str], samples: list[dict]) -> None:
    """One row per checkpoint: RSS of each process, total RSS and anonymous PSS."""
    header = ["tasks", *roles, "total RSS", "anon PSS"]
    rows = [[f"{s['tasks']:,}", *(mib(s["rss_kib"][r]) for r in roles),
             mib(s["total_rss_kib"]), mib(s["total_anon_pss_kib"])] for s in samples]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print("\nRSS per process in MiB; anon PSS: the anonymous pages of all the worker's "
          "processes, shared ones counted once")
    for row in [header, *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


def main() -> int:
    """Run the measurement; 0 within the bound, 1 beyond it, 2 if a process was replaced."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200_000, help="last checkpoint")
    parser.add_argument("--baseline", type=int, default=10_000, help="growth is measured "
                        "from this checkpoint (after warm-up)")
    parser.add_argument("--every", type=int, default=20_000, help="checkpoint spacing")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--bound", type=float, default=10.0, help="percent (default: 10)")
    opts = parser.parse_args()
    checkpoints = sorted({0, opts.baseline, *range(opts.every, opts.tasks + 1, opts.every),
                          opts.tasks})
    # A SIGTERM to this script unwinds through the finally clauses, like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    workdir = tempfile.mkdtemp(prefix="bgtasks-memory-")
    redis_proc, url = start_redis(workdir)
    worker = None
    try:
        env = {**os.environ, "BGTASKS_REDIS_URL": url, "BENCH_REDIS_URL": url,
               "DJANGO_SETTINGS_MODULE": "bench_settings",
               "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT),
                                              os.environ.get("PYTHONPATH", "")])}
        os.environ.update(env)
        sys.path[:0] = [str(HERE), str(ROOT)]
        import django

        django.setup()
        from benchapp.tasks import noop

        from django_bgtasks.broker import get_broker
        from django_bgtasks.ops.inspect import Inspector

        broker = get_broker()
        inspector = Inspector(broker)
        worker = subprocess.Popen(
            [sys.executable, "-m", "django", "runbackground", "--processes",
             str(opts.processes), "--threads", str(opts.threads)],
            env=env, process_group=0)
        # The supervisor forks slots 0..P-1 (workers), then slot P (maintenance).
        pids = wait_for_children(worker, opts.processes + 1)
        roles = [f"worker {n + 1}" for n in range(opts.processes)] + ["maintenance"]
        pid_of = {"supervisor": worker.pid, **dict(zip(roles, pids, strict=True))}
        roles.insert(0, "supervisor")
        print(f"worker: --processes {opts.processes} --threads {opts.threads}; pids "
              + ", ".join(f"{role} {pid}" for role, pid in pid_of.items()), flush=True)
        time.sleep(1.0)  # let the processes finish starting their threads

        samples, enqueued, failed, started = [], 0, 0, time.monotonic()
        for target in checkpoints:
            while enqueued < target:
                size = min(CHUNK, target - enqueued)
                noop.enqueue_many([((i,), {}) for i in range(enqueued, enqueued + size)])
                enqueued += size
            failed = wait_processed(broker, inspector, worker, target)
            time.sleep(0.5)  # idle: the last acks and frees are done
            if (now := children(worker.pid)) != pids:
                print(f"worker processes were replaced: {pids} -> {now}; growth over one "
                      f"process's life cannot be measured", file=sys.stderr)
                return 2
            rss, anon = {}, {}
            for role, pid in pid_of.items():
                rss[role], anon[role] = rss_anon_kib(pid)
            samples.append({"tasks": target, "seconds": round(time.monotonic() - started, 2),
                            "rss_kib": rss, "anon_pss_kib": anon,
                            "total_rss_kib": sum(rss.values()),
                            "total_anon_pss_kib": sum(anon.values())})
            print(f"  {target:,} tasks processed ({samples[-1]['seconds']:.1f}s): total RSS "
                  f"{mib(samples[-1]['total_rss_kib'])} MiB", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip this
        if worker is not None:
            stop_worker(worker)
        stop_redis(redis_proc)
        shutil.rmtree(workdir, ignore_errors=True)

    first = next(s for s in samples if s["tasks"] == opts.baseline)
    last = samples[-1]
    percent = {role: growth(first["rss_kib"][role], last["rss_kib"][role]) for role in roles}
    percent["total RSS"] = growth(first["total_rss_kib"], last["total_rss_kib"])
    percent["anon PSS"] = growth(first["total_anon_pss_kib"], last["total_anon_pss_kib"])
    passed = all(value <= opts.bound for key, value in percent.items() if key != "anon PSS")
    print_table(roles, samples)
    print(f"\ngrowth {opts.baseline:,} -> {last['tasks']:,} tasks: "
          + ", ".join(f"{key} {value:+.1f}%" for key, value in percent.items()))
    workers_first = sum(first["rss_kib"][r] for r in roles if r.startswith("worker"))
    workers_last = sum(last["rss_kib"][r] for r in roles if r.startswith("worker"))
    print(f"workers (sum) {mib(workers_first)} -> {mib(workers_last)} MiB "
          f"({growth(workers_first, workers_last):+.1f}%); failed tasks: {failed}")
    print(f"{'PASS' if passed else 'FAIL'}: every process and the total RSS within "
          f"{opts.bound:g}% (anon PSS shown for information)")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({
        "command": sys.argv, "python": platform.python_version(),
        "processes": opts.processes, "threads": opts.threads, "pids": pid_of,
        "baseline": opts.baseline, "bound_percent": opts.bound, "samples": samples,
        "growth_percent": {key: round(value, 2) for key, value in percent.items()},
        "failed_tasks": failed, "passed": passed,
    }, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0 if passed else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)  # the finally clause in main() has stopped the worker and Redis
