"""The system check of BGTASKS["METRICS"] (bgtasks.E025-E027, W008), apart from
django_bgtasks/checks.py because the worker imports that module and must not import the
exporter; the app's ready() registers it."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core.checks import Error, Tags, Warning, register

from ..conf import DEFAULTS
from . import PrometheusMissing, require_prometheus
from .access import problems


@register(Tags.compatibility)
def check_metrics(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    """BGTASKS['METRICS'] is valid (bgtasks.E025-E027); with the endpoints on,
    prometheus_client is installed (W008: else /metrics answers 501)."""
    user = getattr(django_settings, "BGTASKS", {})
    value = user.get("METRICS", DEFAULTS["METRICS"]) if isinstance(user, dict) else {}
    found: list[Error | Warning] = [Error(p.message, id=p.id) for p in problems(value)]
    if not found and value.get("ACCESS"):
        try:
            require_prometheus()
        except PrometheusMissing as exc:
            found.append(Warning(f"BGTASKS['METRICS'] turns the metrics endpoints on, but "
                                 f"{exc}.", hint="The autoscaling JSON works without it; "
                                 "the Prometheus text answers 501.", id="bgtasks.W008"))
    return found


