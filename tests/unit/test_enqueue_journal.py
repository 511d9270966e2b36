"""The enqueue journal on its own (no Redis): what it keeps, and what it gives back to be
written again when the master changes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from django_bgtasks.broker.journal import EnqueueJournal, Replayer

OLD, NEW = ("10.0.0.1", 6379), ("10.0.0.2", 6379)


def call(i: int) -> list[str]:
    return ["channel", f"id{i}", "{}", "0", "", "", "", "0", "0"]


def test_a_new_master_gets_every_recent_call_once():
    journal = EnqueueJournal(window=10)
    for i in range(3):
        assert journal.record("q", call(i), OLD, journal.switches) == []
    again = journal.switched(NEW)
    assert [args[1] for _, args in again] == ["id0", "id1", "id2"]
    assert journal.switched(NEW) == []  # the same switch, told twice
    # an acknowledgement from the new master, seen after the announcement: nothing more
    assert journal.record("q", call(3), NEW, journal.switches) == []


def test_an_acknowledgement_from_a_new_master_gives_the_calls_back_first():
    journal = EnqueueJournal(window=10)
    journal.record("q", call(0), OLD, 0)
    again = journal.record("q", call(1), NEW, journal.switches)
    assert [args[1] for _, args in again] == ["id0"]
    assert journal.switched(NEW) == []  # Sentinel's announcement comes later: done already


def test_a_call_that_straddled_a_switch_is_written_again():
    journal = EnqueueJournal(window=10)
    journal.record("q", call(0), OLD, 0)
    started = journal.switches
    journal.switched(NEW)  # while the call was on its way
    assert [args[1] for _, args in journal.record("q", call(1), NEW, started)] == ["id1"]


def test_the_window_counts_back_from_the_newest_acknowledgement(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    journal = EnqueueJournal(window=5)
    journal.record("q", call(0), OLD, 0)
    now[0] += 4
    journal.record("q", call(1), OLD, 0)
    now[0] += 2  # call 0 is now 6 s older than the newest: dropped at the next record
    journal.record("q", call(2), OLD, 0)
    now[0] += 600  # Redis away for ten minutes: no acknowledgement, nothing dropped
    assert [args[1] for _, args in journal.switched(NEW)] == ["id1", "id2"]


def test_memory_is_bounded():
    journal = EnqueueJournal(window=3600, max_bytes=1000)
    for i in range(100):
        journal.record("q", ["c", f"id{i}", "x" * 90], OLD, 0)
    kept = journal.switched(NEW)
    assert 5 <= len(kept) <= 11 and kept[-1][1][1] == "id99"


# --- the replay thread ------------------------------------------------------------------


def test_a_replay_does_not_hold_up_the_call_that_asked_for_it():
    """The enqueue() that first reaches a new master hands the journal over and returns:
    the replay (hundreds of tasks) is written behind it, in the order it was asked for."""
    written: list[str] = []
    release = threading.Event()

    def slow_write(calls, why):
        release.wait(10)
        written.extend(args[1] for _, args in calls)

    replayer = Replayer(slow_write)
    started = time.monotonic()
    replayer.submit([("q", call(0)), ("q", call(1))], "first switch")
    replayer.submit([("q", call(2))], "second switch")
    assert time.monotonic() - started < 1.0 and written == []
    release.set()
    assert replayer.wait(10)
    assert written == ["id0", "id1", "id2"]


def test_a_failed_replay_does_not_stop_the_next_one():
    written: list[str] = []

    def write(calls, why):
        if why == "broken":
            raise RuntimeError("Redis went away again")
        written.extend(args[1] for _, args in calls)

    replayer = Replayer(write)
    replayer.submit([("q", call(0))], "broken")
    replayer.submit([("q", call(1))], "fine")
    assert replayer.wait(10)
    assert written == ["id1"]
    replayer.submit([("q", call(2))], "later")  # a new thread once the last one ended
    assert replayer.wait(10) and written == ["id1", "id2"]


def test_a_process_that_exits_at_once_still_writes_its_replay(tmp_path):
    """A script that enqueues and exits right after a failover: its journal still reaches
    the new master before the interpreter ends (the thread is not a daemon)."""
    out = tmp_path / "written"
    script = f"""
import time
from django_bgtasks.broker.journal import Replayer

def write(calls, why):
    time.sleep(0.5)
    open({str(out)!r}, "w").write(",".join(args[1] for _, args in calls))

Replayer(write).submit([("q", ["c", "id7"]), ("q", ["c", "id8"])], "switch")
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    assert out.read_text() == "id7,id8"
