"""The pages: dashboard, one list view for every state (a task's page: detail.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from ..broker.bulk import BulkJob
from ..broker.keys import CANCELLABLE, RUNNABLE
from ..broker.metrics import MetricsStore
from ..info import STATES
from ..models import PeriodicTask
from ..ops.inspect import Inspector, WorkerInfo
from ..ops.search import TaskSearch
from .charts import history_chart, minute_chart
from .common import (
    TEMPLATES,
    admin_page,
    detail_url,
    inspector,
    list_url,
    page_context,
    page_links,
    queue_param,
    served_queues,
    sibling_admin,
    url,
)

if TYPE_CHECKING:
    from ..admin import TaskAdmin

PAGE_SIZE = 50
HISTORY_DAYS = 14
FINISHED_JOBS_SHOWN = 20  # besides every queued or running one
LIVE_PERIOD_S = 5  # live.js re-reads a live page this often
# What each state's time (TaskRow.when) means.
WHEN_LABELS = {"pending": "Enqueued", "waiting": "Waiting since", "blocked": "Enqueued",
               "active": "Lease expires",
               "scheduled": "Runs at",
               "retry": "Next attempt", "dead": "Died", "completed": "Kept until",
               "cancelled": "Cancelled", "expired": "Expired"}


@admin_page
def dashboard(model_admin: TaskAdmin, request: HttpRequest) -> HttpResponse:
    """Counts per queue and state, each queue's oldest pending age, today's figures, the
    14-day and 24-hour charts, live workers, bulk jobs."""
    insp = inspector()
    stats = insp.stats()
    workers = insp.workers()
    metrics = MetricsStore(insp.broker)
    ages = metrics.pending_ages([s.name for s in stats])
    rows = [{"stats": s, "age": ages.get(s.name),
             "cells": [(s.counts[state], list_url(model_admin, state, s.name))
                       for state in STATES]} for s in stats]
    totals = [(sum(s.counts[state] for s in stats), list_url(model_admin, state))
              for state in STATES]
    periodic_admin = sibling_admin(model_admin, request, PeriodicTask)
    context = page_context(
        model_admin, request, "Background tasks", states=STATES, rows=rows, totals=totals,
        processed_today=sum(s.processed_today for s in stats),
        failed_today=sum(s.failed_today for s in stats),
        chart=history_chart(insp.history(HISTORY_DAYS)), history_days=HISTORY_DAYS,
        minute_chart=minute_chart(metrics.per_minute([s.name for s in stats])),
        oldest_age=max((age for age in ages.values() if age is not None), default=None),
        taskstats_url=url(model_admin, "taskstats"),
        workers=workers, bulk_jobs=_job_rows(insp, workers),
        action_url=url(model_admin, "action"),
        here=request.get_full_path(),
        periodic_url=url(periodic_admin, "changelist") if periodic_admin else None,
        settings_url=url(model_admin, "settings"), limits_url=url(model_admin, "limits"),
        workflows_url=url(model_admin, "workflows"), live_period=LIVE_PERIOD_S)
    return TemplateResponse(request, f"{TEMPLATES}/dashboard.html", context)


@admin_page
def task_list(model_admin: TaskAdmin, request: HttpRequest, state: str) -> HttpResponse:
    """One state's tasks, of one queue or all: paginated, or filtered by name."""
    if state not in STATES:
        raise Http404(f"no task state {state!r}")
    queue = queue_param(request.GET)
    insp = inspector()
    task_id = request.GET.get("id", "").strip()
    if task_id:
        info = insp.find(task_id, queue or None)
        if info is not None:
            return redirect(detail_url(model_admin, info))
        where = f" in queue {queue}" if queue else ""
        messages.warning(request, f"No task with id “{task_id}”{where}.")
    queues = insp.queues()
    stats = insp.stats([queue] if queue else queues)
    total = sum(s.counts[state] for s in stats)
    search = TaskSearch.from_params(request.GET)
    page = partial_note = None
    if search:
        rows, scanned, complete = insp.search(state, search, queue or None)
        if not complete:
            matches = f"{len(rows)} match{'' if len(rows) == 1 else 'es'}"
            partial_note = (f"Partial search: {matches} among the first "
                            f"{scanned:,} of {total:,} {state} tasks. Choose a queue, or look "
                            f"a task up by its exact id.")
    else:
        page = Paginator(insp.tasks(state, queue or None), PAGE_SIZE).get_page(
            request.GET.get("page"))
        rows = list(page.object_list)
    can_change = model_admin.has_change_permission(request)
    can_delete = model_admin.has_delete_permission(request)
    actions = [(key, label) for key, label, allowed in (
        ("requeue", "Run selected tasks now", can_change and state in RUNNABLE),
        ("cancel", "Cancel selected tasks", can_change and state in CANCELLABLE),
        ("delete", "Delete selected tasks", can_delete and state != "active"),
    ) if allowed]
    context = page_context(
        model_admin, request, f"{state.capitalize()} tasks" + (f" of {queue}" if queue else ""),
        crumbs=[(f"{state.capitalize()} tasks", None)],
        state=state, queue=queue, search=search, rows=rows, page=page, total=total,
        partial_note=partial_note, when_label=WHEN_LABELS[state], actions=actions,
        # an id looked up and not found: a refresh would repeat its message
        live=not task_id, live_period=LIVE_PERIOD_S,
        # "... all N <state> tasks of <queue>": (action, verb, after), for one queue only
        bulk_actions=[(action, verb, after) for action, verb, after, allowed in (
            ("cancel_all", "Cancel", "", can_change and state in CANCELLABLE),
            ("requeue_all", "Run", " now", can_change and state in RUNNABLE),
            ("delete_all", "Delete", "", can_delete and state != "active"),
        ) if allowed and queue],
        page_links=page_links(page, lambda n: list_url(model_admin, state, queue, page=n)),
        search_url=list_url(model_admin, state, queue),
        state_tabs=[(s, sum(q.counts[s] for q in stats), list_url(model_admin, s, queue))
                    for s in STATES],
        queue_tabs=[(q, list_url(model_admin, state, q)) for q in ["", *queues]],
        action_url=url(model_admin, "action"), here=request.get_full_path())
    return TemplateResponse(request, f"{TEMPLATES}/list.html", context)


def _job_rows(insp: Inspector, workers: list[WorkerInfo]) -> list[tuple[BulkJob, str]]:
    """Each bulk job shown, with what its status means now."""
    jobs = insp.bulk_jobs()
    active = [job for job in jobs if job.active]
    shown = active + [job for job in jobs if not job.active][:FINISHED_JOBS_SHOWN]
    served = served_queues(workers)
    now_ms = insp.broker.server_time_ms() if active else 0  # the leases' clock
    return [(job, _job_status(job, served, now_ms)) for job in shown]


def _job_status(job: BulkJob, served: set[str], now_ms: int) -> str:
    if job.status == "queued":
        return ("Queued: a worker starts it within seconds" if job.queue in served else
                f"Waiting for a worker that serves queue {job.queue}")
    if job.status == "running":
        if job.lease_until_ms is not None and job.lease_until_ms < now_ms:
            return "Its worker stopped: another worker takes it over"
        return "Running" + (" (taken over)" if job.takeovers else "")
    if job.status == "failed":
        return f"Failed: {job.error}"
    if job.status == "done":
        return "Done" + (f": {job.note}" if job.note else "")
    return f"Unreadable record: {job.error}" if job.status == "damaged" else job.status
