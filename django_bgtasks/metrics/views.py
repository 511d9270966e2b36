"""The metrics endpoints: Prometheus' exposition text and the autoscaling JSON. GET (and
HEAD) only, nothing cached, 404 while BGTASKS["METRICS"] leaves them off (access.py)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_safe

from ..broker import get_broker
from ..exceptions import BgTasksError
from . import PrometheusMissing
from .access import allowed, current_access
from .collector import content_type, exposition
from .readings import autoscale_data

TEXT = "text/plain; charset=utf-8"


def protected(view: Callable[[HttpRequest], HttpResponse]) -> Callable[..., HttpResponse]:
    """Off: 404, as if there were no such page. Refused: 401 with a token to offer (so a
    client knows to send one), else 403. Redis away: 503, which Prometheus records as a
    failed scrape (up == 0). Never cached."""
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        access = current_access()
        if not access.enabled:
            raise Http404("metrics are off (BGTASKS['METRICS'])")
        if allowed(access, request):
            try:
                response = view(request)
            except BgTasksError as exc:
                response = HttpResponse(f"Redis unavailable: {exc}\n", status=503,
                                        content_type=TEXT)
        elif "token" in access.kinds:
            response = HttpResponse("Unauthorized\n", status=401, content_type=TEXT)
            response["WWW-Authenticate"] = 'Bearer realm="bgtasks metrics"'
        else:
            response = HttpResponse("Forbidden\n", status=403, content_type=TEXT)
        add_never_cache_headers(response)
        return response
    return require_safe(wrapper)


@protected
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Everything, in Prometheus' text format."""
    try:
        return HttpResponse(exposition(get_broker()), content_type=content_type())
    except PrometheusMissing as exc:
        return HttpResponse(f"{exc}\n", status=501, content_type=TEXT)


@protected
def autoscale_view(request: HttpRequest) -> HttpResponse:
    """{"queues": {queue: {"pending", "active", "threads", "load"}}} for KEDA's
    metrics-api scaler (docs/metrics.md)."""
    return JsonResponse(autoscale_data(get_broker()))
