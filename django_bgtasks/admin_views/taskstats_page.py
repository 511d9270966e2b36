"""The task statistics page: per task name and queue, runs, failure rate and the duration
and queue latency quantiles over the last hour, the last day or since the counters began
(ops/taskstats.py; ``bgtasks taskstats`` prints the same)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from ..broker import get_broker
from ..ops.taskstats import QUANTILES, SORTS, WINDOW_LABELS, WINDOWS, task_stats
from .common import TEMPLATES, admin_page, inspector, page_context, queue_param, url

if TYPE_CHECKING:
    from ..admin import TaskAdmin


@admin_page
def taskstats_page(model_admin: TaskAdmin, request: HttpRequest) -> HttpResponse:
    """One row per task name and queue; ``?window=hour|day|total``, ``?sort=``, and
    ``?queue=`` / ``?task=`` (exact name) to narrow it."""
    window = request.GET.get("window", "hour")
    window = window if window in WINDOWS else "hour"
    sort = request.GET.get("sort", "runs")
    sort = sort if sort in SORTS else "runs"
    queue = queue_param(request.GET)
    task = request.GET.get("task", "").strip()
    rows = task_stats(get_broker(), [queue] if queue else inspector().queues(), window, sort)
    if task:
        rows = [row for row in rows if row.task == task]

    def link(**change: str) -> str:
        params = {"window": window, "sort": sort, "queue": queue, "task": task, **change}
        return url(model_admin, "taskstats", **params)

    context = page_context(
        model_admin, request, "Task statistics" + (f": {task}" if task else ""),
        crumbs=[("Task statistics", None)], rows=rows, window=window, sort=sort,
        queue=queue, task=task, window_label=WINDOW_LABELS[window],
        window_tabs=[(key, label, link(window=key)) for key, label in WINDOW_LABELS.items()],
        sort_links={key: link(sort=key) for key in SORTS},
        quantiles=[f"p{round(q * 100)}" for q in QUANTILES], columns=7 + 2 * len(QUANTILES),
        all_url=link(task="", queue=""))
    return TemplateResponse(request, f"{TEMPLATES}/taskstats.html", context)
