"""Filters for the task admin pages. None marks anything safe: autoescaping applies."""

from __future__ import annotations

from django import template

from ..ops import display

register = template.Library()


register.filter("relative", display.relative)
register.filter("size", display.size)
register.filter("first_line", display.first_line)
register.filter("milliseconds", display.milliseconds)
register.filter("percent", display.percent)


@register.filter
def age(seconds: float | None) -> str:
    """An age in seconds as display.duration() writes it; '–' for none."""
    return "–" if seconds is None else display.duration(seconds)


@register.filter
def thousands(value: int) -> str:
    """1200 -> "1,200"."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return ""
