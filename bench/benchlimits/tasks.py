"""Tasks for bench/limits.py: the peers' ``INCR`` under flow control, and 1-ms tasks.

A separate app (bench/bench_limits_settings.py installs it), so that bench/benchapp still
imports on checkouts from before flow control, which bench/limits.py also measures.
"""

import time

from peers import work

from django_bgtasks import background_task


def _fair(i: int) -> int:
    return i % 1_000


@background_task(concurrency_limit=1_000)
def incr_wide(i: int) -> None:
    """One INCR under a concurrency limit that 2 x 8 threads never reach."""
    work.incr()


@background_task(fair_key=_fair)
def incr_fair(i: int) -> None:
    """One INCR, in turn between 1,000 fair_key values."""
    work.incr()


@background_task
def sleep_1ms(i: int) -> None:
    """1 ms of waiting, then one INCR: the reference for the saturated limit."""
    time.sleep(0.001)
    work.incr()


@background_task(concurrency_limit=4)
def sleep_1ms_limit4(i: int) -> None:
    """1 ms of waiting, then one INCR, at most 4 at once across every worker."""
    time.sleep(0.001)
    work.incr()
