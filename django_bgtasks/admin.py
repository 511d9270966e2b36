"""The task admin (a dashboard, lists per state, task detail and actions) and the periodic
task admin (the declared entries, one entry's page, switch and run-now), all read from
Redis. Their models have no table; they carry the permissions and the LogEntry type."""

from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path

from . import admin_views as views
from .models import PeriodicTask, Task


class RedisPagesAdmin(admin.ModelAdmin):
    """Replaces the ModelAdmin pages (there are no rows to add) with pages of our own,
    under the model's own URL prefix so that the admin index links to them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def page_view(self, view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        """``view(model_admin, request, ...)`` as an admin view (login, staff, CSRF)."""
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            return view(self, request, *args, **kwargs)
        return self.admin_site.admin_view(update_wrapper(wrapper, view))

    @property
    def url_prefix(self) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}"


@admin.register(Task)
class TaskAdmin(RedisPagesAdmin):
    """The dashboard, the lists per state, a task's page and the actions on tasks, and
    the workflows' pages."""

    def get_urls(self) -> list[URLPattern]:
        prefix = self.url_prefix
        return [
            path("", self.page_view(views.dashboard), name=f"{prefix}_changelist"),
            path("action/", self.page_view(views.task_action), name=f"{prefix}_action"),
            path("settings/", self.page_view(views.settings_page), name=f"{prefix}_settings"),
            path("limits/", self.page_view(views.limits_page), name=f"{prefix}_limits"),
            path("taskstats/", self.page_view(views.taskstats_page),
                 name=f"{prefix}_taskstats"),
            path("workflows/", self.page_view(views.workflow_list), name=f"{prefix}_workflows"),
            path("workflows/<str:workflow_id>/", self.page_view(views.workflow_detail),
                 name=f"{prefix}_workflow"),
            path("workflows/<str:workflow_id>/cancel/", self.page_view(views.workflow_cancel),
                 name=f"{prefix}_workflow_cancel"),
            # "change" keeps the admin's URL name, so LogEntry links open the task.
            path("<path:object_id>/change/", self.page_view(views.task_detail),
                 name=f"{prefix}_change"),
            path("<path:object_id>/download/<str:part>/", self.page_view(views.task_download),
                 name=f"{prefix}_download"),
            path("<str:state>/", self.page_view(views.task_list), name=f"{prefix}_list"),
        ]

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        return views.dashboard(self, request)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(RedisPagesAdmin):
    """The declared periodic entries, one entry's page, and switching and running them."""

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # entries are declared in code: removed there, not here

    def get_urls(self) -> list[URLPattern]:
        prefix = self.url_prefix
        return [
            path("", self.page_view(views.periodic_list), name=f"{prefix}_changelist"),
            path("action/", self.page_view(views.periodic_action), name=f"{prefix}_action"),
            # "change" keeps the admin's URL name, so LogEntry links open the entry.
            path("<path:object_id>/change/", self.page_view(views.periodic_detail),
                 name=f"{prefix}_change"),
        ]

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        return views.periodic_list(self, request)
