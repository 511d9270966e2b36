"""The task admin: a dashboard, lists per state, task detail and actions, all read from
Redis. The Task model has no table; it carries the permissions and the LogEntry type."""

from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path

from . import admin_views as views
from .models import Task


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    """Replaces the ModelAdmin pages (there are no rows to edit) with the task pages,
    under the model's own URL prefix so that the admin index links to the dashboard."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        def wrap(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
            def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
                return view(self, request, *args, **kwargs)
            return self.admin_site.admin_view(update_wrapper(wrapper, view))

        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("", wrap(views.dashboard), name=f"{prefix}_changelist"),
            path("action/", wrap(views.task_action), name=f"{prefix}_action"),
            # "change" keeps the admin's URL name, so LogEntry links open the task.
            path("<path:object_id>/change/", wrap(views.task_detail), name=f"{prefix}_change"),
            path("<str:state>/", wrap(views.task_list), name=f"{prefix}_list"),
        ]

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        return views.dashboard(self, request)
