"""The task of bench/workflows.py.

A separate app (bench/bench_workflows_settings.py installs it), as bench/benchlimits is.
"""

from __future__ import annotations

from typing import Any

from peers import work

from django_bgtasks import background_task


@background_task
def mark(i: Any) -> None:
    """The peers' INCR, and when it ran (work.SPAN); a chord's callback gets the results."""
    work.incr_in_span()
