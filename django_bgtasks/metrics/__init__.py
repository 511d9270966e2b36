"""The Prometheus exporter and the autoscaling signal (docs/metrics.md).

Everything is read from Redis when asked (a scrape, a command), so any number of web
processes can serve it and Prometheus' multi-process mode is never needed. prometheus_client
is an optional extra: only building the exposition text imports it (``require_prometheus``),
so the autoscaling JSON, the settings and the checks work without it.
"""

from __future__ import annotations

from types import ModuleType

INSTALL_HINT = "pip install django-bgtasks[prometheus]"


class PrometheusMissing(ImportError):
    """prometheus_client is not installed."""


def require_prometheus() -> ModuleType:
    """The prometheus_client module, or PrometheusMissing saying how to install it."""
    try:
        import prometheus_client
        import prometheus_client.core  # the metric families, as prometheus_client.core
    except ImportError as exc:
        raise PrometheusMissing(f"the metrics exporter needs prometheus_client: "
                                f"{INSTALL_HINT}") from exc
    return prometheus_client
