"""End-to-end: two worker hosts whose clocks differ by 30 s neither lose nor double-run
tasks, because leases, due times and retry delays are judged on Redis' clock.

One worker runs with tests/support/clock_skew.c preloaded (LD_PRELOAD), its wall clock 30 s
ahead of or behind the other's; monotonic clocks stay real.
"""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from demo import recording, tasks
from helpers import counts, wait_until

# Fault runs (a skewed clock, stalls, restarts, downtime): once per CI run (marker soak).
pytestmark = pytest.mark.soak

LEASE = 2
SHIM_SOURCE = Path(__file__).parents[1] / "support" / "clock_skew.c"


def first_log_time(worker) -> datetime:
    """When the worker's first log line says it was written (by the worker's own clock)."""
    stamp = re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", worker.log_text(), re.M)
    assert stamp, "no timestamped line in the worker's log"
    return datetime.strptime(stamp.group(0), "%Y-%m-%d %H:%M:%S,%f")


@pytest.fixture(scope="module")
def skew_shim(tmp_path_factory) -> Path:
    """tests/support/clock_skew.c built into a shared library (scripts/bootstrap installs cc)."""
    library = tmp_path_factory.mktemp("clock-skew") / "clock_skew.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(SHIM_SOURCE), "-ldl"],
                   check=True)
    return library


@pytest.mark.parametrize("offset", [30, -30])
def test_a_worker_with_a_skewed_clock_neither_loses_nor_double_runs(
        start_worker, redis_server, skew_shim, offset):
    r = redis_server.client()
    honest = start_worker("--processes", "1", "--threads", "4",
                          env={"BGTASKS_LEASE_SECONDS": str(LEASE)})
    skewed = start_worker("--processes", "1", "--threads", "4", env={
        "LD_PRELOAD": str(skew_shim), "BGTASKS_CLOCK_SKEW": str(offset),
        "BGTASKS_LEASE_SECONDS": str(LEASE)})
    honest.wait_for_log(" starting: Redis ")
    skewed.wait_for_log(" starting: Redis ")

    # Longer than the lease: each host renews leases another host's recoverer judges.
    long_ones = [f"long{i}" for i in range(4)]  # half the threads: the rest stay free
    for token in long_ones:
        tasks.mark_sleep_record.enqueue(token, 3 * LEASE)
    seconds, micros = r.time()
    enqueued_at = seconds + micros / 1e6  # Redis' clock, just before the due times are set
    scheduled = [f"due{i}" for i in range(12)]
    for token in scheduled:
        tasks.record_redis_time.using(run_after=timedelta(seconds=3)).enqueue(token)
    retried = [f"retry{i}" for i in range(4)]
    for token in retried:
        tasks.fail_then_succeed.enqueue(token, 1)  # retry 0.2 s after the first attempt

    everything = set(long_ones) | set(retried)
    wait_until(lambda: everything <= recording.ran(r) and len(recording.times(r)) >= 12,
               timeout=4 * LEASE + 15, message="every task ran")
    wait_until(lambda: counts() == dict.fromkeys(counts(), 0), timeout=LEASE + 5,
               message="nothing left in Redis")

    runs = recording.log(r)
    assert sorted(runs) == sorted(everything), "a task ran twice or not at all"
    assert all(recording.attempts(r, t) == 1 for t in long_ones)  # no lease was stolen
    assert all(recording.attempts(r, t) == 2 for t in retried)
    starts = {entry["token"]: entry["t"] for entry in recording.times(r)}
    assert sorted(starts) == sorted(scheduled)
    early = {t: round(enqueued_at + 3 - at, 3) for t, at in starts.items()
             if at < enqueued_at + 3 - 0.001}
    assert not early, f"started before due (seconds early): {early}"
    # the skewed host really ran with its clock off (its log's timestamps show it: both
    # started within a second), and both hosts did work
    gap = (first_log_time(skewed) - first_log_time(honest)).total_seconds()
    assert abs(gap - offset) < 3, f"the skewed worker's clock is off by {gap:.1f}s"
    assert " succeeded in " in honest.log_text() and " succeeded in " in skewed.log_text()
    assert "lease lost" not in honest.log_text() + skewed.log_text()
    late = max(starts.values()) - (enqueued_at + 3)
    print(f"\nclock {offset:+d} s: {len(runs)} runs, none twice; scheduled tasks started "
          f"0-{late:.2f} s after due, none early")
