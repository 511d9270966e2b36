"""A task's page, and the download of its stored JSON. The page reads each stored value
whole only up to summary.WHOLE_BYTES and shows at most display.SHOW_BYTES of each block
(arguments, result, each traceback), saying how big the whole is: a task holding
megabytes costs a page no more than a small one. The download serves the value whole."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.contrib.admin.utils import quote, unquote
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.http import content_disposition_header

from ..broker import get_broker
from ..broker.keys import CANCELLABLE, RUNNABLE
from ..info import STATES, TaskInfo, ms_to_datetime
from ..ops.display import Shown, pretty_json, shown
from ..ops.inspect import PARTS
from ..ops.summary import StoredPart, TaskDetail
from ..ops.workflows import Workflows
from .common import (
    TEMPLATES,
    admin_page,
    inspector,
    list_url,
    page_context,
    queue_param,
    url,
    workflow_url,
)

if TYPE_CHECKING:
    from ..admin import TaskAdmin


@admin_page
def task_detail(model_admin: TaskAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """Every field of one task, its attempts and the actions its state allows."""
    task_id = unquote(object_id)
    detail = inspector().detail(task_id, queue_param(request.GET) or None)
    if detail is None:
        if Workflows(get_broker()).exists(task_id):  # a workflow's LogEntry links here
            return redirect(workflow_url(model_admin, task_id))
        messages.warning(request, f"No task with id “{task_id}”: it finished without keeping "
                                  f"a result, or it was deleted.")
        return redirect(url(model_admin, "changelist"))
    info = detail.info
    downloads = {part: url(model_admin, "download", quote(info.id), part,
                           queue=info.queue_name) for part in PARTS}
    context = page_context(
        model_admin, request, f"Task {info.id}",
        crumbs=[(f"{info.state.capitalize()} tasks",
                 list_url(model_admin, info.state, info.queue_name)
                 if info.state in STATES else None), (info.id, None)],
        info=info, **_blocks(detail), downloads=downloads,
        times=[("Enqueued", info.enqueued_at), ("Run after", info.run_after),
               *([("Expires at", info.expires_at)] if info.expires_at else []),
               ("Started", info.started_at), ("Finished", info.finished_at)],
        can_run_now=model_admin.has_change_permission(request) and info.state in RUNNABLE,
        can_delete_task=model_admin.has_delete_permission(request) and info.state != "active",
        can_cancel=(model_admin.has_change_permission(request) and info.state in CANCELLABLE
                    and not info.cancel_requested),
        limits_url=url(model_admin, "limits", queue=info.queue_name),
        stats_url=url(model_admin, "taskstats", task=info.name, queue=info.queue_name),
        workflows=[(w, workflow_url(model_admin, w)) for w in info.workflows],
        selection=f"{info.queue_name}:{info.id}", action_url=url(model_admin, "action"),
        here=request.get_full_path(),
        after_delete=(list_url(model_admin, info.state, info.queue_name)
                      if info.state in STATES else url(model_admin, "changelist")))
    return TemplateResponse(request, f"{TEMPLATES}/detail.html", context)


def _blocks(detail: TaskDetail) -> dict[str, Any]:
    """The page's blocks, each at most SHOW_BYTES: a value read only in part is shown as
    stored (its JSON text), since its end is not there to decode."""
    info = detail.info
    blocks: dict[str, Any] = {
        "args_json": None, "kwargs_json": None, "message_json": None, "result_json": None,
        "history_json": None, "traceback": shown(info.traceback), "attempts": [],
    }
    if detail.message.whole:
        blocks.update(args_json=shown(pretty_json(info.args)),
                      kwargs_json=shown(pretty_json(info.kwargs)))
    else:
        blocks["message_json"] = _as_stored(detail.message)
    blocks["result_json"] = result_block(detail)
    if detail.errors.whole:
        blocks["attempts"] = _attempts(info)
    else:
        blocks["history_json"] = _as_stored(detail.errors)
    return blocks


def result_block(detail: TaskDetail) -> Shown | None:
    """The task's result as its page shows it (None: it has none), the workflow page too."""
    if not detail.result.whole:
        return _as_stored(detail.result)
    if detail.info.result is not None or detail.info.state == "completed":
        return shown(pretty_json(detail.info.result))
    return None


def _as_stored(part: StoredPart) -> Shown:
    return shown((part.raw or b"").decode("utf-8", "replace"), part.size)


def _attempts(info: TaskInfo) -> list[dict[str, Any]]:
    """The stored failed attempts, oldest first, with their time as a datetime."""
    return [{**e, "at": ms_to_datetime(e.get("at")),
             "traceback": shown(str(e.get("traceback") or ""))} for e in info.errors]


@admin_page
def task_download(model_admin: TaskAdmin, request: HttpRequest, object_id: str,
                  part: str) -> HttpResponse:
    """The task's message, result or error history as stored: its JSON, whole."""
    task_id = unquote(object_id)
    raw = inspector().stored_json(task_id, part, queue_param(request.GET) or None)
    if raw is None:
        raise Http404(f"task {task_id!r} has no {part} stored")
    response = HttpResponse(raw, content_type="application/json")
    response["Content-Disposition"] = content_disposition_header(
        True, f"{task_id}-{part}.json")
    return response
