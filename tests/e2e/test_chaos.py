"""The short chaos run (bench/chaos.py --short): 2,000 tasks on two worker hosts while
child processes, whole hosts and redis-server are killed; fails on any lost task."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO_ROOT

pytestmark = [pytest.mark.soak, pytest.mark.single_redis(
    reason="bench/chaos.py runs and kills a redis-server of its own")]

KINDS = ("child", "host_kill", "host_term", "redis")


def test_short_chaos_run_loses_nothing(tmp_path):
    report_path = tmp_path / "chaos.json"
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "chaos.py"), "--short",
         "--json", str(report_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    print(run.stdout[-3000:], run.stderr[-3000:])
    report = json.loads(report_path.read_text())
    assert report["lost"] == [], f"{len(report['lost'])} tasks lost: {report['lost'][:20]}"
    assert all(report["kills"].get(kind, 0) >= 1 for kind in KINDS), report["kills"]
    assert report["unexplained_duplicates"] == 0, report["unexplained_tokens"]
    assert report["fail_always_not_dead_after_3"] == []
    assert report["left_busy"] == {}
    assert report["counts"]["dead"] == report["mix"]["fail_always"]
    assert report["verdict"] == "PASS" and run.returncode == 0
