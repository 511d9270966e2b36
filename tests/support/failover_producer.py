"""A producer process for the failover tests: `enqueue()` as fast as it can, through the
public API at default settings (behind Sentinel when BGTASKS_TEST_SENTINELS is set), until
the file STOP exists; then it writes the ids of the calls that returned to OUT, one a line.

    python tests/support/failover_producer.py QUEUE STOP OUT
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "testproject")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

import django  # noqa: E402

django.setup()

from demo import tasks  # noqa: E402
from django_bgtasks import EnqueueError  # noqa: E402


def main(queue: str, stop: Path, out: Path) -> None:
    task = tasks.record.using(queue_name=queue)
    acked: list[str] = []
    errors = 0
    while not stop.exists():
        for _ in range(50):  # the stop file is looked at every 50 calls
            try:
                acked.append(task.enqueue("x").id)
            except EnqueueError:
                errors += 1
    out.write_text("\n".join([f"errors {errors}", *acked]))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
