"""Include in a project's URLconf: ``path("bgtasks/", include("django_bgtasks.metrics.urls"))``
serves /bgtasks/metrics and /bgtasks/autoscale (docs/metrics.md)."""

from __future__ import annotations

from django.urls import path

from .views import autoscale_view, metrics_view

app_name = "bgtasks_metrics"
urlpatterns = [
    path("metrics", metrics_view, name="metrics"),
    path("autoscale", autoscale_view, name="autoscale"),
]
