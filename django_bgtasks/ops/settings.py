"""The effective settings, as the admin's settings page and ``bgtasks settings`` show them:
every BGTASKS value (defaults filled in) and each BackgroundTaskBackend's OPTIONS, with
nothing secret in them (a URL's credentials, Sentinel passwords)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings as django_settings

from ..broker.connection import check_url, describe_target
from ..conf import DEFAULTS, Settings, get_settings, raw_settings
from ..exceptions import InvalidRedisSetting

BACKEND_PATH = "django_bgtasks.backends.BackgroundTaskBackend"
HIDDEN = "(hidden)"


@dataclass(frozen=True)
class SettingRow:
    name: str  # BGTASKS key, or "TASKS['alias'].OPTIONS"
    value: Any  # JSON-friendly, safe to show
    is_default: bool


def settings_report(cfg: Settings | None = None) -> list[SettingRow]:
    """Every BGTASKS setting's effective value, then each of our task backends' OPTIONS."""
    cfg = cfg or get_settings()
    given = raw_settings()
    rows = [SettingRow(f.name, _shown(f.name, getattr(cfg, f.name)), f.name not in given)
            for f in fields(Settings) if f.name in DEFAULTS]
    for alias, backend in (getattr(django_settings, "TASKS", None) or {}).items():
        if isinstance(backend, dict) and backend.get("BACKEND") == BACKEND_PATH:
            options = backend.get("OPTIONS") or {}
            rows.append(SettingRow(f"TASKS[{alias!r}].OPTIONS", _plain(options), not options))
    return rows


def _shown(name: str, value: Any) -> Any:
    if name == "REDIS_URL":
        try:
            check_url(value)
        except InvalidRedisSetting:
            return "(malformed: see manage.py check)"
        return describe_target(value)
    if name == "SENTINEL_KWARGS" and isinstance(value, dict):
        return {key: HIDDEN if "password" in str(key).lower() else _plain(item)
                for key, item in value.items()}
    if name in ("CLUSTER_NODES", "SENTINELS") and isinstance(value, (list, tuple)):
        # "host:port" items; one written as a URL with credentials is not shown
        return [HIDDEN if "@" in str(item) else _plain(item) for item in value]
    if name == "METRICS" and isinstance(value, dict):  # its TOKEN is a password
        return {key: HIDDEN if key == "TOKEN" and item else _plain(item)
                for key, item in value.items()}
    if name == "PERIODIC":
        count = len(value) if isinstance(value, (list, tuple, dict)) else 0
        return f"{count} entries (see the periodic tasks page)"
    return _plain(value)


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it: containers kept, anything else as its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return repr(value)
