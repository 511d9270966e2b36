"""Server-side SVG charts for the admin dashboard: no JavaScript, nothing fetched."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from ..broker.metrics import MinuteStats
from ..ops.inspect import DayStats

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 28, 28  # margins: room for the axis labels and legend
COLORS = {"processed": "#417690", "failed": "#ba2121"}  # the admin's own blue and red


def nice_ceiling(value: int) -> int:
    """The smallest 1/2/5 x 10^n at or above ``value`` (at least 1): a readable axis top."""
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= value:
                return step * scale
        scale *= 10


def _n(value: float) -> str:
    return f"{value:.1f}"  # format_html escapes its arguments to text: format numbers first


def _open(label: str, title: str, desc: str, top: int) -> list[SafeString]:
    """The chart's <svg> with its accessible name and description, and the gridlines with
    their values (0, half, ``top``)."""
    base = HEIGHT - BOTTOM
    parts = [format_html(
        # no inline style (a strict CSP drops it): admin.css caps the width
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" '
        'role="img" aria-label="{}" class="bgtasks-chart">'
        "<title>{}</title>{}",
        WIDTH, HEIGHT, label, title,
        format_html("<desc>{}</desc>", desc) if desc else "")]
    for fraction in (0, 0.5, 1):  # gridlines with their value
        y = base - fraction * (HEIGHT - TOP - BOTTOM)
        parts.append(format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#ccc" stroke-width="1"/>'
            '<text x="{}" y="{}" font-size="11" text-anchor="end" fill="#666">{}</text>',
            LEFT, _n(y), WIDTH - RIGHT, _n(y), LEFT - 6, _n(y + 4),
            f"{top * fraction:,g}"))
    return parts


def _close(parts: list[SafeString]) -> SafeString:
    """The legend, then the end of the chart."""
    for offset, kind in enumerate(("processed", "failed")):
        x = LEFT + offset * 110
        parts.append(format_html(
            '<rect x="{}" y="8" width="10" height="10" fill="{}"/>'
            '<text x="{}" y="17" font-size="12" fill="#333">{}</text>',
            x, COLORS[kind], x + 14, kind))
    # Safe: every part above comes from format_html, which escaped its arguments.
    return mark_safe("".join(parts) + "</svg>")


def _x_label(x: float, text: str) -> SafeString:
    return format_html(
        '<text x="{}" y="{}" font-size="11" text-anchor="middle" fill="#666">{}</text>',
        _n(x), HEIGHT - 10, text)


def history_chart(days: Sequence[DayStats]) -> SafeString:
    """Grouped bars of processed and failed tasks per day, with axes and a legend.

    Every piece of text goes through format_html, so labels are escaped."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = nice_ceiling(max((max(d.processed, d.failed) for d in days), default=0))
    base = TOP + plot_h
    parts = _open("Processed and failed tasks per day",
                  "Processed and failed tasks per day (UTC)", "", top)
    slot = plot_w / max(len(days), 1)
    bar = max(slot * 0.35, 1)
    for index, day in enumerate(days):
        x = LEFT + index * slot + slot * 0.15
        for offset, kind in enumerate(("processed", "failed")):
            count = getattr(day, kind)
            height = plot_h * count / top
            parts.append(format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                "<title>{}: {} {}</title></rect>",
                _n(x + offset * bar), _n(base - height), _n(bar), _n(height), COLORS[kind],
                day.day.isoformat(), f"{count:,}", kind))
        if (len(days) - 1 - index) % 2 == 0 or len(days) <= 7:  # every other day, today too
            parts.append(_x_label(x + bar, day.day.strftime("%m-%d")))
    return _close(parts)


def minute_chart(minutes: Sequence[MinuteStats]) -> SafeString:
    """Processed and failed tasks per minute as two lines (1,440 bars would be thinner
    than a pixel), labelled every 3 hours (UTC), with a description that says the totals
    and the busiest minute."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = nice_ceiling(max((max(m.processed, m.failed) for m in minutes), default=0))
    base = TOP + plot_h
    busiest = max(minutes, key=lambda m: m.processed, default=None)
    desc = (f"{sum(m.processed for m in minutes):,} processed and "
            f"{sum(m.failed for m in minutes):,} failed in the last {len(minutes):,} minutes")
    if busiest is not None and busiest.processed:
        desc += (f"; busiest minute {busiest.at:%H:%M} UTC with {busiest.processed:,} "
                 "processed")
    parts = _open("Processed and failed tasks per minute, last 24 hours",
                  "Processed and failed tasks per minute, last 24 hours (UTC)", desc, top)
    step = plot_w / max(len(minutes) - 1, 1)
    for kind in ("processed", "failed"):
        points = " ".join(f"{_n(LEFT + index * step)},"
                          f"{_n(base - plot_h * getattr(m, kind) / top)}"
                          for index, m in enumerate(minutes))
        if points:
            parts.append(format_html(
                '<polyline points="{}" fill="none" stroke="{}" stroke-width="1.2"/>',
                points, COLORS[kind]))
    for index, m in enumerate(minutes):
        if m.at.minute == 0 and m.at.hour % 3 == 0:
            parts.append(_x_label(LEFT + index * step, f"{m.at:%H:%M}"))
    return _close(parts)
