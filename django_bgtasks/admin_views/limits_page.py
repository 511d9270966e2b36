"""The Limits page: each live limit of each queue (running / concurrency, rate and tokens
left, waiting tasks, the first waiter's age), as ``bgtasks limits`` prints it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from ..ops.limit_rows import LIMITS_SHOWN
from .common import TEMPLATES, admin_page, inspector, list_url, page_context, queue_param

if TYPE_CHECKING:
    from ..admin import TaskAdmin


@admin_page
def limits_page(model_admin: TaskAdmin, request: HttpRequest) -> HttpResponse:
    """The live limits of every queue (or of ``?queue=``), by queue then id."""
    queue = queue_param(request.GET)
    report = inspector().limits([queue] if queue else None)
    rows = [(row, list_url(model_admin, "waiting", row.queue)) for row in report.rows]
    context = page_context(model_admin, request, "Limits" + (f" of {queue}" if queue else ""),
                           crumbs=[("Limits", None)], rows=rows, queue=queue,
                           total=report.total, complete=report.complete,
                           per_queue=LIMITS_SHOWN)
    return TemplateResponse(request, f"{TEMPLATES}/limits.html", context)
