"""The dashboard drawn as one self-contained HTML page (inline SVG, no script, no network).

It follows Grafana's dark theme and its panel defaults where the JSON says nothing: time series
as lines in the classic palette (stacked and filled where ``custom.stacking``/``fillOpacity``
say so), the legend as a list under the graph, stat panels as each series' last non-null value
coloured by the thresholds (Grafana's default: green, red from 80) over a sparkline.
Units follow Grafana's names: ``s`` (ms, s, min, hour), ``ops`` (ops/s), ``reqps`` (req/s),
``short`` (K, Mil).
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dashboard_shot.panels import Rect

# Grafana's classic palette (the default "palette-classic" colour scheme), in series order.
PALETTE = ("#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0", "#508642")
# Grafana's named colours used by thresholds.
NAMED = {"green": "#73BF69", "red": "#F2495C", "orange": "#FF9830", "yellow": "#FADE2A", "blue": "#5794F2"}
DEFAULT_THRESHOLDS = [{"color": "green", "value": None}, {"color": "red", "value": 80}]
TITLE_HEIGHT = 32
PADDING = 8
CHAR_WIDTH = 7.0  # px per character at 12 px (DejaVu Sans, rough): for legend and axis sizing
LEGEND_LINE = 20


@dataclass(frozen=True)
class Line:
    """One drawn series: its legend name and ``(unix time, value)`` points (NaN for no value)."""

    name: str
    points: Sequence[tuple[float, float]]


@dataclass(frozen=True)
class PanelView:
    """One panel to draw: its JSON, its box, and its series (all targets, in target order)."""

    panel: Mapping
    rect: Rect
    lines: Sequence[Line]


# --- Numbers --------------------------------------------------------------------------------
def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step))) if step > 0 else 0


def _fixed(value: float, decimals: int | None) -> str:
    if decimals is None:
        decimals = 0 if abs(value) >= 100 or value == int(value) else 1 if abs(value) >= 10 else 2
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def value_format(value: float, unit: str, decimals: int | None = None) -> str:
    """``value`` as Grafana prints it in ``unit``; ``decimals``: fixed (axis ticks) or automatic."""
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else "∞"
    if unit == "s":
        size = abs(value)
        if size and size < 1:
            return f"{_fixed(value * 1000, None if decimals is None else max(0, decimals - 3))} ms"
        for limit, divisor, name in ((60, 1, "s"), (3600, 60, "min"), (86400, 3600, "hour")):
            if size < limit:
                scaled_decimals = decimals if divisor == 1 else None
                return f"{_fixed(value / divisor, scaled_decimals)} {name}"
        return f"{_fixed(value / 86400, None)} day"
    if unit in ("short", "none", ""):
        for divisor, suffix in ((1e9, " Bil"), (1e6, " Mil"), (1e3, " K")):
            if abs(value) >= divisor:
                return f"{_fixed(value / divisor, None)}{suffix}"
        return _fixed(value, decimals)
    suffix = {"ops": " ops/s", "reqps": " req/s", "percent": "%"}.get(unit, f" {unit}")
    return f"{_fixed(value, decimals)}{suffix}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values from ``low`` up to at least ``high`` (1, 2, 5 times a power of ten)."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = [first]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def time_ticks(start: float, end: float, width: float) -> tuple[list[float], str]:
    """Round instants across [start, end] at most one per 90 px, and their label format."""
    span = end - start
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400):
        if span / step <= max(1.0, width / 90):
            break
    first = math.ceil(start / step) * step
    ticks = [first + i * step for i in range(int((end - first) // step) + 1)]
    return ticks, "%H:%M:%S" if step < 60 else "%H:%M"


def threshold_color(value: float, field_defaults: Mapping) -> str:
    """The colour of the highest threshold step ``value`` reaches (the base step's value is null)."""
    steps = (field_defaults.get("thresholds") or {}).get("steps") or DEFAULT_THRESHOLDS
    color = steps[0]["color"]
    for step in steps[1:]:
        if step.get("value") is not None and value >= step["value"]:
            color = step["color"]
    return NAMED.get(color, color)


# --- Panels ---------------------------------------------------------------------------------
def _legend_lines(names: Sequence[str], width: float) -> int:
    lines, used = 1, 0.0
    for name in names:
        item = 24 + CHAR_WIDTH * len(name)
        if used and used + item > width:
            lines, used = lines + 1, 0.0
        used += item
    return lines


def _runs(points: Sequence[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """The series split where it has no value (Grafana leaves a gap)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for t, v in points:
        if math.isfinite(v):
            runs[-1].append((t, v))
        elif runs[-1]:
            runs.append([])
    return [run for run in runs if run]


def _stacked(lines: Sequence[Line]) -> list[tuple[list[tuple[float, float]], list[tuple[float, float]]]]:
    """Per line, (its base, its top) with every earlier line added below it; no value counts as 0."""
    times = sorted({t for line in lines for t, _ in line.points})
    below = dict.fromkeys(times, 0.0)
    layers = []
    for line in lines:
        values = {t: v for t, v in line.points if math.isfinite(v)}
        base = [(t, below[t]) for t in times]
        top = [(t, below[t] + values.get(t, 0.0)) for t in times]
        below = dict(top)
        layers.append((base, top))
    return layers


def timeseries_svg(view: PanelView, *, start: float, end: float, width: float, height: float) -> str:
    """The graph of a time series panel (axes, grid, lines or stacked areas), ``width`` x ``height`` px."""
    defaults = (view.panel.get("fieldConfig") or {}).get("defaults") or {}
    unit, custom = defaults.get("unit", "short"), defaults.get("custom") or {}
    stacked = (custom.get("stacking") or {}).get("mode", "none") in ("normal", "percent")
    opacity = float(custom.get("fillOpacity", 0)) / 100
    layers = _stacked(view.lines) if stacked else [([], list(line.points)) for line in view.lines]
    values = [v for _, top in layers for _, v in top if math.isfinite(v)]
    low = min([0.0, *values])
    ticks = nice_ticks(low, max([*values, low + 1e-9]) if values and max(values) > low else low + 1)
    step = ticks[1] - ticks[0]
    labels = [value_format(tick, unit, _decimals(step)) for tick in ticks]
    left = 10 + CHAR_WIDTH * max(len(label) for label in labels)
    top_y, bottom_y, right = 6.0, height - 22.0, width - 10.0

    def x_of(t: float) -> float:
        return left + (t - start) / (end - start) * (right - left)

    def y_of(v: float) -> float:
        return bottom_y - (v - ticks[0]) / (ticks[-1] - ticks[0]) * (bottom_y - top_y)

    parts = [f'<svg width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.1f} {height:.1f}">']
    for tick, label in zip(ticks, labels, strict=True):
        y = y_of(tick)
        parts.append(f'<line class="grid" x1="{left:.1f}" x2="{right:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="axis" x="{left - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">{html.escape(label)}</text>'
        )
    instants, pattern = time_ticks(start, end, right - left)
    for instant in instants:
        x = x_of(instant)
        parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top_y:.1f}" y2="{bottom_y:.1f}"/>')
        label = time.strftime(pattern, time.localtime(instant))
        parts.append(f'<text class="axis" x="{x:.1f}" y="{height - 6:.1f}" text-anchor="middle">{label}</text>')
    for index, (base, top) in enumerate(layers):
        color = PALETTE[index % len(PALETTE)]
        for run in _runs(top):
            path = " ".join(f"{x_of(t):.1f},{y_of(v):.1f}" for t, v in run)
            if opacity and stacked:
                floor = dict(base)
                back = " ".join(f"{x_of(t):.1f},{y_of(floor[t]):.1f}" for t, _ in reversed(run))
                parts.append(f'<polygon points="{path} {back}" fill="{color}" fill-opacity="{opacity}"/>')
            elif opacity:
                zero = f"{x_of(run[-1][0]):.1f},{y_of(ticks[0]):.1f} {x_of(run[0][0]):.1f},{y_of(ticks[0]):.1f}"
                parts.append(f'<polygon points="{path} {zero}" fill="{color}" fill-opacity="{opacity}"/>')
            if len(run) == 1:
                parts.append(f'<circle cx="{x_of(run[0][0]):.1f}" cy="{y_of(run[0][1]):.1f}" r="2.5" fill="{color}"/>')
            else:
                parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    parts.append("</svg>")
    return "".join(parts)


def _legend_html(lines: Sequence[Line]) -> str:
    items = "".join(
        f'<span class="item"><i style="background:{PALETTE[i % len(PALETTE)]}"></i>{html.escape(line.name)}</span>'
        for i, line in enumerate(lines)
    )
    return f'<div class="legend">{items}</div>'


def _sparkline(line: Line, *, start: float, end: float, width: float, height: float, color: str) -> str:
    """The series over the whole range as a faint area in the lower part of its cell, gaps left open."""
    top = max((v for _, v in line.points if math.isfinite(v)), default=0.0) or 1.0
    shapes = []
    for run in _runs(line.points):
        xs = [(t - start) / (end - start) * width for t, _ in run]
        points = " ".join(f"{x:.1f},{height - v / top * height * 0.45:.1f}" for x, (_, v) in zip(xs, run, strict=True))
        shapes.append(
            f'<polygon points="{xs[0]:.1f},{height:.1f} {points} {xs[-1]:.1f},{height:.1f}" '
            f'fill="{color}" fill-opacity="0.18"/>'
            f'<polyline points="{points}" fill="none" stroke="{color}" stroke-opacity="0.6"/>'
        )
    return f'<svg class="spark" width="{width:.0f}" height="{height:.0f}">{"".join(shapes)}</svg>'


def stat_html(view: PanelView, *, start: float, end: float, width: float, height: float) -> str:
    """One cell per series, side by side: its name, its last non-null value in the threshold's colour,
    and a sparkline of the range behind it (Grafana's stat defaults: lastNotNull, colour by value, area)."""
    defaults = (view.panel.get("fieldConfig") or {}).get("defaults") or {}
    unit = defaults.get("unit", "short")
    if not view.lines:
        return '<div class="nodata">No data</div>'
    cell_width = width / len(view.lines)
    cells = []
    for line in view.lines:
        finite = [v for _, v in line.points if math.isfinite(v)]
        color = threshold_color(finite[-1], defaults) if finite else "#ccccdc"
        text = value_format(finite[-1], unit, defaults.get("decimals")) if finite else "No data"
        size = min(height * 0.42, cell_width / max(3, len(text)) * 1.6, 48)
        spark = _sparkline(line, start=start, end=end, width=cell_width, height=height, color=color)
        cells.append(
            f'<div class="cell" style="width:{cell_width:.1f}px;height:{height:.0f}px">{spark}'
            f'<div class="name">{html.escape(line.name)}</div>'
            f'<div class="value" style="color:{color};font-size:{size:.0f}px">{html.escape(text)}</div></div>'
        )
    return f'<div class="cells">{"".join(cells)}</div>'


def panel_html(view: PanelView, *, start: float, end: float) -> str:
    rect = view.rect
    inner_width, inner_height = rect.width - 2 * PADDING, rect.height - TITLE_HEIGHT - PADDING
    if view.panel.get("type") == "stat":
        body = stat_html(view, start=start, end=end, width=inner_width, height=inner_height)
    elif view.panel.get("type") == "row":
        body = ""
    else:
        legend_height = _legend_lines([line.name for line in view.lines], inner_width) * LEGEND_LINE
        graph = timeseries_svg(view, start=start, end=end, width=inner_width, height=inner_height - legend_height)
        body = graph + _legend_html(view.lines)
    style = f"left:{rect.x:.1f}px;top:{rect.y:.1f}px;width:{rect.width:.1f}px;height:{rect.height:.1f}px"
    title = html.escape(view.panel.get("title", ""))
    return f'<section class="panel" style="{style}"><h2>{title}</h2><div class="body">{body}</div></section>'


STYLE = """
* { box-sizing: border-box; }
body { margin: 0; background: #111217; color: #ccccdc; font: 12px "DejaVu Sans", "Liberation Sans", sans-serif; }
header { padding: 14px 16px 10px; display: flex; justify-content: space-between; align-items: baseline; gap: 24px; }
header h1 { margin: 0; font-size: 18px; font-weight: 500; color: #d8d9da; }
header .range { color: #ccccdc; font-size: 13px; white-space: nowrap; }
.source { padding: 0 16px 12px; color: #8e8e9a; font-size: 12px; }
.grid { position: relative; margin: 0 16px 16px; }
.panel { position: absolute; background: #181b1f; border: 1px solid #2c3235; border-radius: 2px; overflow: hidden; }
.panel h2 { margin: 0; height: 32px; line-height: 32px; padding: 0 8px; font-size: 13px; font-weight: 500;
  color: #d8d9da; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.body { padding: 0 8px 8px; }
svg line.grid { stroke: rgba(204, 204, 220, 0.09); stroke-width: 1; }
svg text.axis { fill: #9fa0a9; font-size: 11px; }
.legend { display: flex; flex-wrap: wrap; align-items: center; min-height: 20px; }
.legend .item { display: inline-flex; align-items: center; margin-right: 14px; height: 20px; white-space: nowrap; }
.legend i { display: inline-block; width: 14px; height: 4px; border-radius: 2px; margin-right: 6px; }
.cells { display: flex; }
.cell { position: relative; display: flex; flex-direction: column; justify-content: center; align-items: center; }
.cell .spark { position: absolute; left: 0; top: 0; }
.cell .name { position: relative; font-size: 13px; color: #ccccdc; }
.cell .value { position: relative; font-weight: 500; line-height: 1.15; }
.nodata { color: #8e8e9a; padding: 20px; }
"""


def page_html(*, title: str, views: Sequence[PanelView], start: float, end: float, width: float, source: str) -> str:
    """The whole page: a header (title, time range), one line on where the figures come from, the grid."""
    zone = time.strftime("%Z", time.localtime(end))
    first, last = time.localtime(start), time.localtime(end)
    when = f"{time.strftime('%Y-%m-%d %H:%M:%S', first)} to {time.strftime('%H:%M:%S', last)} {zone}"
    height = max((v.rect.y + v.rect.height for v in views), default=0)
    panels = "".join(panel_html(view, start=start, end=end) for view in views)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<style>{STYLE}</style></head><body style="width:{width:.0f}px">'
        f'<header><h1>{html.escape(title)}</h1><span class="range">{html.escape(when)}</span></header>'
        f'<div class="source">{html.escape(source)}</div>'
        f'<div class="grid" style="height:{height:.0f}px">{panels}</div></body></html>'
    )
