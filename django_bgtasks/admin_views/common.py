"""What every page of the app's admins (tasks, periodic tasks) shares: context, URLs,
parameters, permission and error handling, the way back after an action, the action log.
Views read and act on tasks only through broker.inspect.Inspector, and on periodic
entries only through periodic_status.PeriodicEntries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import django
from django.contrib.admin.models import LogEntry
from django.contrib.admin.utils import quote
from django.core.exceptions import BadRequest, PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from ..broker import get_broker
from ..broker.keys import validate_queue_name
from ..exceptions import BgTasksError
from ..info import TaskInfo
from ..ops.inspect import Inspector, WorkerInfo

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin
    from django.db.models import Model

    from ..admin import TaskAdmin

TEMPLATES = "admin/django_bgtasks"


def inspector() -> Inspector:
    return Inspector(get_broker())


def url(model_admin: ModelAdmin, name: str, *args: Any, **params: Any) -> str:
    """The URL of one of this admin's pages, with query parameters (empty ones dropped)."""
    opts = model_admin.opts
    path = reverse(f"admin:{opts.app_label}_{opts.model_name}_{name}", args=args,
                   current_app=model_admin.admin_site.name)
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{path}?{query}" if query else path


def list_url(model_admin: TaskAdmin, state: str, queue: str | None = None, **params: Any) -> str:
    return url(model_admin, "list", state, queue=queue, **params)


def detail_url(model_admin: TaskAdmin, info: TaskInfo) -> str:
    return url(model_admin, "change", quote(info.id), queue=info.queue_name)


def workflow_url(model_admin: TaskAdmin, workflow_id: str, **params: Any) -> str:
    return url(model_admin, "workflow", quote(workflow_id), **params)


def queue_param(data: Any, required: bool = False) -> str:
    """The ``queue`` parameter: a valid queue name, or '' for all queues."""
    queue = (data.get("queue") or "").strip()
    if not queue and required:
        raise BadRequest("a queue is required")
    if queue:
        try:
            validate_queue_name(queue)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    return queue


def page_context(model_admin: ModelAdmin, request: HttpRequest, title: str,
                 crumbs: Sequence[tuple[str, str | None]] = (), **extra: Any) -> dict[str, Any]:
    """The admin's own context plus what every page of the app uses."""
    return {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": title,
        "dashboard_url": url(model_admin, "changelist"),
        # Home > Background tasks > ...: (label, url) pairs, the last one the current page
        "crumbs": [(model_admin.opts.verbose_name_plural.capitalize(),
                    url(model_admin, "changelist")), *crumbs],
        "ol_breadcrumbs": django.VERSION >= (6, 1),  # the admin's breadcrumb markup changed
        "can_change": model_admin.has_change_permission(request),
        "can_delete": model_admin.has_delete_permission(request),
        **extra,
    }


def admin_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Require the view (or change) permission; show Redis errors as a page, not a 500."""
    @wraps(view)
    def wrapper(model_admin: ModelAdmin, request: HttpRequest, *args: Any,
                **kwargs: Any) -> HttpResponse:
        if not model_admin.has_view_permission(request):
            raise PermissionDenied
        try:
            return view(model_admin, request, *args, **kwargs)
        except BgTasksError as exc:
            context = page_context(model_admin, request, "Background tasks unavailable",
                                   error=str(exc))
            return TemplateResponse(request, f"{TEMPLATES}/error.html", context, status=503)
    return wrapper


def sibling_admin(model_admin: ModelAdmin, request: HttpRequest,
                  model: type[Model]) -> ModelAdmin | None:
    """The same site's admin of ``model``, if it is registered there and the user may see
    its pages (a link to it would otherwise end in a 404 or a 403)."""
    site = model_admin.admin_site
    if not site.is_registered(model):
        return None
    other = site.get_model_admin(model)
    return other if other.has_view_permission(request) else None


def served_queues(workers: Sequence[WorkerInfo]) -> set[str]:
    """The queues some live worker host serves."""
    return {queue for worker in workers for queue in worker.queue_names}


def page_links(page: Any, link: Callable[[int], str]) -> list[tuple[Any, str | None]]:
    """(label, url) for a paginator's links; url is None for the current page and for
    '…'; none for a single page."""
    if page is None or page.paginator.num_pages < 2:
        return []
    return [(n, None if n in (page.number, page.paginator.ELLIPSIS) else link(n))
            for n in page.paginator.get_elided_page_range(page.number)]


def back_url(model_admin: ModelAdmin, request: HttpRequest) -> str:
    """Where to go after an action: the posted ``next`` if it is ours, else the admin's
    first page."""
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return url(model_admin, "changelist")


def log_change(request: HttpRequest, objects: Sequence[Model], flag: int, message: str) -> None:
    """One LogEntry per object: who (the user), what (message), which (id), when."""
    if objects:
        LogEntry.objects.log_actions(request.user.pk, objects, flag, message)
