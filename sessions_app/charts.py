"""Geometry of the dashboard's small server-rendered SVG bar charts (no script: the CSP allows none).

A chart must read the same with one session as with thousands: a y axis from 0 to a round top
with labelled ticks, one slot per hour or day whether empty or not (so a lone bar sits at its
time, not stretched across the width), the value written over each bar while there are few, the
x labels thinned to what fits, and a sentence instead of an empty frame when there is nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

WIDTH, HEIGHT = 560, 210
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 14, 34  # margins: y labels on the left, x labels and axis title below
MAX_X_LABELS = 8
MAX_VALUE_LABELS = 14  # more bars with a value than this and the numbers would collide


@dataclass(frozen=True)
class Point:
    label: str  # the x label ("14:00", "06 Dec")
    value: float | None  # None: no data for this slot (unlike 0)
    tooltip: str


def nice_top(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times 10^k at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def bar_chart(
    points: list[Point],
    *,
    title: str,
    y_label: str,
    x_label: str,
    empty_text: str,
    value_text: Callable[[float], str] = lambda v: f"{v:g}",
    integer: bool = True,
) -> dict:
    """What the template draws: ``{"empty", "bars", "y_ticks", "x_labels", ...}`` in SVG units.

    ``value_text`` formats a value for the ticks and the bars (a count, a duration);
    ``integer``: the ticks of a count are whole numbers (a top of 1 gets ticks 0 and 1 only).
    """
    chart = {
        "title": title,
        "width": WIDTH,
        "height": HEIGHT,
        "y_label": y_label,
        "x_label": x_label,
        "empty_text": empty_text,
        "left": LEFT,
        "right_x": WIDTH - RIGHT,
        "baseline": HEIGHT - BOTTOM,
        "x_title_y": HEIGHT - 4,
        "y_title_x": 12,
        "y_title_y": TOP + (HEIGHT - BOTTOM - TOP) / 2,
    }
    values = [p.value for p in points if p.value]
    if not values:
        return {**chart, "empty": True, "bars": [], "y_ticks": [], "x_labels": []}
    top = nice_top(max(values))
    plot_h, plot_w = HEIGHT - BOTTOM - TOP, WIDTH - LEFT - RIGHT
    tick_count = int(top) if integer and top < 4 else 4
    ticks = [top * i / tick_count for i in range(tick_count + 1)]
    y_ticks = [
        {
            "y": round(TOP + plot_h - t / top * plot_h, 1),
            "label": value_text(t),
            "text_y": round(TOP + plot_h - t / top * plot_h + 3, 1),
        }
        for t in ticks
    ]
    step = plot_w / len(points)
    bar_w = max(2.0, round(step * 0.7, 1))
    labelled = sum(1 for v in values if v) <= MAX_VALUE_LABELS
    every = max(1, math.ceil(len(points) / MAX_X_LABELS))
    bars, x_labels = [], []
    for i, point in enumerate(points):
        centre = LEFT + step * i + step / 2
        if i % every == 0:
            x_labels.append({"x": round(centre, 1), "label": point.label})
        if not point.value:
            continue
        h = max(1.0, round(point.value / top * plot_h, 1))
        y = round(TOP + plot_h - h, 1)
        bars.append(
            {
                "x": round(centre - bar_w / 2, 1),
                "w": bar_w,
                "y": y,
                "h": h,
                "centre": round(centre, 1),
                "tooltip": point.tooltip,
                "value": value_text(point.value) if labelled else "",
                "value_y": round(y - 3, 1),
            }
        )
    return {
        **chart,
        "empty": False,
        "bars": bars,
        "y_ticks": y_ticks,
        "x_labels": x_labels,
        "x_labels_y": HEIGHT - BOTTOM + 13,
    }
