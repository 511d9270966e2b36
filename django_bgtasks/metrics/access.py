"""Who may read the metrics: BGTASKS["METRICS"] (docs/metrics.md). Off by default.

    {"ACCESS": "token", "TOKEN": "..."}        Authorization: Bearer <TOKEN>
    {"ACCESS": "staff"}                        a logged-in staff user with the view (or
                                               change) permission on tasks
    {"ACCESS": "ips", "ALLOW_IPS": [...]}      the client's address in one of the networks
    {"ACCESS": ["token", "ips"], ...}          any one of them

The client's address is REMOTE_ADDR, unless CLIENT_IP_HEADER names the request.META key a
trusted proxy sets (its last address, the one that proxy added, when it holds several):
a header any client can send is never trusted by default.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

from ..conf import get_settings

KINDS = ("token", "staff", "ips")
KEYS = ("ACCESS", "TOKEN", "ALLOW_IPS", "CLIENT_IP_HEADER")
MIN_TOKEN_LENGTH = 16
VIEW_PERMISSIONS = ("django_bgtasks.view_task", "django_bgtasks.change_task")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Problem:
    """A system check's finding: its id (bgtasks.E025...) and message."""

    id: str
    message: str


@dataclass(frozen=True)
class Access:
    """The parsed METRICS setting."""

    kinds: tuple[str, ...]  # empty: off
    token: str
    networks: tuple[Network, ...]
    ip_header: str | None

    @property
    def enabled(self) -> bool:
        return bool(self.kinds)


def problems(value: Any) -> list[Problem]:
    """What is wrong with a METRICS value: E025 (its shape, ACCESS), E026 (TOKEN), E027
    (ALLOW_IPS, CLIENT_IP_HEADER)."""
    where = "BGTASKS['METRICS']"
    if not isinstance(value, dict):
        return [Problem(id="bgtasks.E025", message=f"{where} must be a dict, e.g. "
                                                   "{'ACCESS': 'token', 'TOKEN': '...'}.")]
    found = []
    unknown = sorted(str(key) for key in value if key not in KEYS)
    if unknown:
        found.append(Problem(id="bgtasks.E025", message=f"{where} has unknown keys: "
                             f"{', '.join(unknown)} (known: {', '.join(KEYS)})."))
    kinds = _kinds(value.get("ACCESS"))
    if kinds is None:
        found.append(Problem(id="bgtasks.E025", message=f"{where}['ACCESS'] must be None "
                             f"(off), one of {', '.join(map(repr, KINDS))} or a list of them."))
        kinds = ()
    token = value.get("TOKEN", "")
    if "token" in kinds and not (isinstance(token, str)
                                 and len(token.strip()) >= MIN_TOKEN_LENGTH):
        found.append(Problem(id="bgtasks.E026", message=f"{where}['TOKEN'] must be a string "
                             f"of at least {MIN_TOKEN_LENGTH} characters with ACCESS 'token'."))
    networks = value.get("ALLOW_IPS", [])
    if "ips" in kinds and (not isinstance(networks, (list, tuple)) or not networks):
        found.append(Problem(id="bgtasks.E027", message=f"{where}['ALLOW_IPS'] must be a "
                             "non-empty list of networks with ACCESS 'ips'."))
    elif isinstance(networks, (list, tuple)):
        for network in networks:
            try:
                _network(network)
            except ValueError:
                found.append(Problem(id="bgtasks.E027", message=f"{where}['ALLOW_IPS']: "
                                     f"{network!r} is not an IP network (e.g. '10.0.0.0/8')."))
    header = value.get("CLIENT_IP_HEADER")
    if header is not None and not (isinstance(header, str) and header):
        found.append(Problem(id="bgtasks.E027", message=f"{where}['CLIENT_IP_HEADER'] must be "
                             "None or a request.META key, e.g. 'HTTP_X_REAL_IP'."))
    return found


def current_access() -> Access:
    """The METRICS setting in force; off when it is invalid (the checks say why)."""
    value = get_settings().METRICS
    if problems(value):
        return Access((), "", (), None)
    return Access(_kinds(value.get("ACCESS")) or (), value.get("TOKEN", ""),
                  tuple(_network(n) for n in value.get("ALLOW_IPS", [])),
                  value.get("CLIENT_IP_HEADER"))


def allowed(access: Access, request: HttpRequest) -> bool:
    """Whether ``request`` passes any of the access kinds."""
    return any(_passes(kind, access, request) for kind in access.kinds)


def _passes(kind: str, access: Access, request: HttpRequest) -> bool:
    if kind == "token":
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # Constant time: the comparison must not tell how much of a guess was right.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), access.token.encode())
    if kind == "staff":
        user = getattr(request, "user", None)
        return bool(user is not None and user.is_active and user.is_staff
                    and any(user.has_perm(p) for p in VIEW_PERMISSIONS))
    return _client_in(access, request)


def _client_in(access: Access, request: HttpRequest) -> bool:
    raw = request.META.get(access.ip_header or "REMOTE_ADDR", "")
    try:
        address = ipaddress.ip_address(str(raw).split(",")[-1].strip())
    except ValueError:
        return False
    return any(address in network for network in access.networks)


def _kinds(value: Any) -> tuple[str, ...] | None:
    """ACCESS as a tuple of kinds (empty: off), or None if it is not valid."""
    if value is None:
        return ()
    items: Sequence[Any] = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(item in KINDS for item in items):
        return None
    return tuple(items)


def _network(value: Any) -> Network:
    if not isinstance(value, str):
        raise ValueError(value)
    return ipaddress.ip_network(value, strict=False)
