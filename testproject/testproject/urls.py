"""URLs of the test and demo project: the admin, and the metrics endpoints (off unless
BGTASKS["METRICS"] turns them on)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("bgtasks/", include("django_bgtasks.metrics.urls")),
]
