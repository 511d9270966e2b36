"""The short soak of periodic tasks (bench/cron_soak.py --short): a 1-second entry fired
for 60 s by three hosts (clocks +3 s, -3 s and right) while one host is paused, one is
SIGKILLed and restarted, and redis-server restarts on its AOF; one run per tick."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO_ROOT

pytestmark = [pytest.mark.soak, pytest.mark.single_redis(
    reason="bench/cron_soak.py runs and restarts a redis-server of its own")]

FAULTS = {"pause", "host_kill", "redis"}


def test_short_soak_runs_every_tick_once(tmp_path):
    report_path = tmp_path / "cron_soak.json"
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "cron_soak.py"), "--short",
         "--out", str(report_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    print(run.stdout[-4000:], run.stderr[-3000:])
    report = json.loads(report_path.read_text())
    assert {f["kind"] for f in report["faults"]} == FAULTS, report["faults"]
    assert report["ticks_expected"] >= 55, report["ticks_expected"]
    assert report["gaps"] == [], f"ticks with no run: {report['gaps']}"
    assert report["duplicate_fires"] == [], report["duplicate_fires"]
    assert report["lost"] == [], f"fired ticks that never ran: {report['lost']}"
    assert report["unexplained_reexecutions"] == 0, report["reexecutions"]
    assert report["lateness_quiet_ms"]["p99"] < 100, report["lateness_quiet_ms"]
    assert report["skew_shown"], report["clocks"]
    assert report["hosts_that_fired"] >= 2, report["fired_by"]  # no leader
    assert report["started_lines"] == 1 and not report["drainer_fired"]
    assert report["verdict"] == "PASS" and run.returncode == 0, report["problems"]
