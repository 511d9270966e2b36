"""The periodic task pages: every declared entry, one entry with its history, and the
actions (switch off and on, run now). They read and act only through
periodic_status.PeriodicEntries, which judges every entry on Redis' clock."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.contrib import messages
from django.contrib.admin.models import CHANGE
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import BadRequest, PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from ..models import PeriodicTask, Task
from ..ops.display import pretty_json
from ..periodic import PeriodicEntry
from ..periodic.status import EntryStatus, HistoryItem, PeriodicEntries
from .common import (
    TEMPLATES,
    admin_page,
    back_url,
    detail_url,
    log_change,
    page_context,
    sibling_admin,
    url,
)

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

    from ..admin import PeriodicTaskAdmin

ACTIONS = ("enable", "disable", "run_now")
# "Run now" forms carry a fresh one of these; it ends the task id (cron:<name>:now:<nonce>).
NONCE = re.compile(r"[A-Za-z0-9_-]{8,64}")
# History lines whose tick is the entry's mark, not a due tick: their lateness means nothing.
NOT_TICKS = ("started", "enabled", "disabled")


@dataclass(frozen=True)
class EntryRow:
    """One entry as the pages show it: its status and what the templates cannot compute."""

    status: EntryStatus
    url: str
    nonce: str  # for this render's "Run now" form: a resent form enqueues nothing more
    enqueue_lateness: str
    start_lateness: str
    last_task_url: str | None  # None once the record is gone, or without the Task admin


@dataclass(frozen=True)
class HistoryRow:
    item: HistoryItem
    lateness: str
    task_url: str | None


def seconds(value: float | None) -> str:
    """A lateness as people read it: '4 ms', '2.5 s', '1,250.0 s', or '—' when unknown."""
    if value is None:
        return "—"
    if abs(value) < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:,.1f} s"


def _row(model_admin: PeriodicTaskAdmin, task_admin: ModelAdmin | None,
         status: EntryStatus) -> EntryRow:
    last = status.last_run
    return EntryRow(
        status=status, url=url(model_admin, "change", quote(status.name)),
        nonce=uuid.uuid4().hex,
        enqueue_lateness=seconds(last.item.lateness) if last else "",
        start_lateness=seconds(last.start_lateness) if last else "",
        last_task_url=(detail_url(task_admin, last.task)
                       if last and last.task and task_admin else None))


def _history_row(task_admin: ModelAdmin | None, status: EntryStatus,
                 item: HistoryItem) -> HistoryRow:
    # The record may be gone by now: the task's page then says so.
    task_url = (url(task_admin, "change", quote(item.task_id), queue=status.queue)
                if item.task_id and task_admin else None)
    lateness = "—" if item.outcome in NOT_TICKS else seconds(item.lateness)
    return HistoryRow(item, lateness, task_url)


@admin_page
def periodic_list(model_admin: PeriodicTaskAdmin, request: HttpRequest) -> HttpResponse:
    """Every declared entry: schedule, next runs, last run, health, switch and run now;
    the declaration's problems on top."""
    entries = PeriodicEntries()
    task_admin = sibling_admin(model_admin, request, Task)
    context = page_context(
        model_admin, request, "Periodic tasks",
        rows=[_row(model_admin, task_admin, s) for s in entries.statuses()],
        problems=entries.problems, action_url=url(model_admin, "action"),
        here=request.get_full_path(),
        tasks_url=url(task_admin, "changelist") if task_admin else None)
    return TemplateResponse(request, f"{TEMPLATES}/periodic_list.html", context)


@admin_page
def periodic_detail(model_admin: PeriodicTaskAdmin, request: HttpRequest,
                    object_id: str) -> HttpResponse:
    """One entry: every option, its arguments and the history of its last 100 ticks."""
    name = unquote(object_id)
    try:
        status = PeriodicEntries().status(name)
    except LookupError:
        messages.warning(request, f"No periodic task named “{name}” is declared (any more).")
        return redirect(url(model_admin, "changelist"))
    task_admin = sibling_admin(model_admin, request, Task)
    entry = status.entry
    context = page_context(
        model_admin, request, f"Periodic task {name}", crumbs=[(name, None)],
        row=_row(model_admin, task_admin, status),
        history=[_history_row(task_admin, status, item) for item in status.history],
        args_json=pretty_json(entry.args), kwargs_json=pretty_json(entry.kwargs),
        max_lateness="none" if entry.max_lateness is None else seconds(entry.max_lateness),
        action_url=url(model_admin, "action"), here=request.get_full_path())
    return TemplateResponse(request, f"{TEMPLATES}/periodic_detail.html", context)


@admin_page
def periodic_action(model_admin: PeriodicTaskAdmin, request: HttpRequest) -> HttpResponse:
    """Switch an entry off or on, or run it now; posted by the list or an entry's page."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if not model_admin.has_change_permission(request):
        raise PermissionDenied
    action = request.POST.get("action", "")
    if action not in ACTIONS:
        raise BadRequest(f"unknown action {action!r}")
    back = back_url(model_admin, request)
    entries = PeriodicEntries()
    name = request.POST.get("name", "")
    try:
        entry = entries.get(name)
    except LookupError:
        messages.warning(request, f"No periodic task named “{name}” is declared (any more): "
                                  f"nothing was done.")
        return redirect(back)
    if action == "run_now":
        _run_now(request, entries, entry)
    else:
        _switch(request, entries, entry, action == "enable")
    return redirect(back)


def _switch(request: HttpRequest, entries: PeriodicEntries, entry: PeriodicEntry,
            on: bool) -> None:
    word = "enabled" if on else "disabled"
    if not entries.set_enabled(entry.name, on):
        messages.info(request, f"Periodic task {entry.name} was already {word}.")
        return
    log_change(request, [_object(entry)], CHANGE, word.capitalize())
    if on:
        messages.success(request, f"Periodic task {entry.name} enabled: it fires again from "
                                  f"its next tick (the ticks missed while off do not run).")
    else:
        messages.success(request, f"Periodic task {entry.name} disabled: no host fires it "
                                  f"until it is enabled again.")


def _run_now(request: HttpRequest, entries: PeriodicEntries, entry: PeriodicEntry) -> None:
    nonce = request.POST.get("request_id", "")
    if not NONCE.fullmatch(nonce):
        raise BadRequest("run now needs the request id of the form that posts it")
    task_id, status = entries.run_now(entry.name, nonce)
    if status != "ok":
        messages.warning(request, f"Periodic task {entry.name} was already run from this form "
                                  f"(task {task_id}): no other task was enqueued.")
        return
    log_change(request, [_object(entry)], CHANGE, f"Ran now: task {task_id}")
    messages.success(request, f"Periodic task {entry.name}: task {task_id} enqueued, to run "
                              f"now. Its schedule goes on as before.")


def _object(entry: PeriodicEntry) -> PeriodicTask:
    return PeriodicTask(name=entry.name, task_name=entry.task_name)
