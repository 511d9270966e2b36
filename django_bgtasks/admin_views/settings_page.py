"""The settings page: the effective BGTASKS values and our task backends' OPTIONS, as
``bgtasks settings`` prints them (nothing secret), for staff who may see the tasks."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from ..ops.settings import settings_report
from .common import TEMPLATES, admin_page, page_context

if TYPE_CHECKING:
    from ..admin import TaskAdmin


@admin_page
def settings_page(model_admin: TaskAdmin, request: HttpRequest) -> HttpResponse:
    """Every setting's value and where it comes from (default or settings)."""
    rows = [(row.name, row.value if isinstance(row.value, str) else json.dumps(row.value),
             row.is_default) for row in settings_report()]
    context = page_context(model_admin, request, "Settings", rows=rows,
                           crumbs=[("Settings", None)])
    return TemplateResponse(request, f"{TEMPLATES}/settings.html", context)
