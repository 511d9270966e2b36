"""The workflows' pages: the recent workflows, one workflow (its facts, counts by state,
final members, members a page at a time) and its Cancel action (POST, CSRF, the change
permission, a LogEntry), all read through ops.workflows.Workflows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import messages
from django.contrib.admin.models import CHANGE
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from ..broker import get_broker
from ..models import Task
from ..ops.workflows import RECENT_MOST, Workflows, cancellable
from ..workflows.info import Member, WorkflowInfo, WorkflowNotFound
from .common import (
    TEMPLATES,
    admin_page,
    log_change,
    page_context,
    page_links,
    url,
    workflow_url,
)
from .detail import result_block

if TYPE_CHECKING:
    from ..admin import TaskAdmin

MEMBERS_PER_PAGE = 100


@admin_page
def workflow_list(model_admin: TaskAdmin, request: HttpRequest) -> HttpResponse:
    """The newest workflows still kept, at most RECENT_MOST, newest first."""
    rows = [(info, workflow_url(model_admin, info.id))
            for info in Workflows(get_broker()).recent()]
    context = page_context(model_admin, request, "Workflows", crumbs=[("Workflows", None)],
                           rows=rows, most=RECENT_MOST)
    return TemplateResponse(request, f"{TEMPLATES}/workflows.html", context)


@admin_page
def workflow_detail(model_admin: TaskAdmin, request: HttpRequest,
                    workflow_id: str) -> HttpResponse:
    """One workflow: its facts and counts, its final members' outcome, its members."""
    workflows = Workflows(get_broker())
    try:
        info = workflows.get(workflow_id)
    except WorkflowNotFound:
        return _not_found(model_admin, request, workflow_id)
    page = Paginator(workflows.member_list(info), MEMBERS_PER_PAGE).get_page(
        request.GET.get("page"))
    finals = [(final, result_block(final.detail) if final.detail else None,
               _task_url(model_admin, final.member)) for final in workflows.finals(info)]
    context = page_context(
        model_admin, request, f"Workflow {info.id}",
        crumbs=[("Workflows", url(model_admin, "workflows")), (info.id, None)],
        info=info, finals=finals,
        members=[(m, _task_url(model_admin, m)) for m in page.object_list],
        page=page, page_links=page_links(
            page, lambda n: workflow_url(model_admin, info.id, page=n)),
        can_cancel=model_admin.has_change_permission(request) and cancellable(info),
        cancel_url=url(model_admin, "workflow_cancel", quote(info.id)))
    return TemplateResponse(request, f"{TEMPLATES}/workflow.html", context)


@admin_page
def workflow_cancel(model_admin: TaskAdmin, request: HttpRequest,
                    workflow_id: str) -> HttpResponse:
    """Cancel the workflow: its members not started are cancelled, running ones asked to
    stop (django_bgtasks.cancel_workflow)."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if not model_admin.has_change_permission(request):
        raise PermissionDenied
    try:
        info, cancelled = Workflows(get_broker()).cancel(workflow_id,
                                                         request.user.get_username())
    except WorkflowNotFound:
        return _not_found(model_admin, request, workflow_id)
    if not cancelled:
        why = "every member had ended" if info.finished_at else "it was cancelled already"
        messages.info(request, f"Workflow {info.id} is {info.state}: {why}, so there was "
                               f"nothing to cancel.")
        return redirect(workflow_url(model_admin, info.id))
    log_change(request, [Task(id=info.id, name="workflow")], CHANGE, "Cancelled workflow")
    messages.success(request, f"Workflow {info.id} cancelled: its members that had not "
                              f"started are cancelled, running ones are asked to stop. "
                              f"{_counts_text(info)}.")
    return redirect(workflow_url(model_admin, info.id))


def _not_found(model_admin: TaskAdmin, request: HttpRequest, workflow_id: str) -> HttpResponse:
    messages.warning(request, f"No workflow with id “{workflow_id}”: it was kept past "
                              f"BGTASKS['WORKFLOW_KEEP'], or it never existed.")
    return redirect(url(model_admin, "workflows"))


def _task_url(model_admin: TaskAdmin, member: Member) -> str:
    return url(model_admin, "change", quote(member.id), queue=member.queue)


def _counts_text(info: WorkflowInfo) -> str:
    return "Members now: " + ", ".join(f"{n:,} {state}" for state, n in info.counts.items())
