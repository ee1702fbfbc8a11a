"""A Grafana dashboard JSON read as Grafana reads it: panels on the grid, queries with variables.

Pure functions, no Prometheus and no browser, so the test suite checks them on the real
``docs/grafana-dashboard.json``:

- ``grid_layout``: a panel's ``gridPos`` (24 columns, rows of 30 px with 8 px gaps) in pixels;
- ``query_interval`` / ``expr_substitute``: ``$__interval``, ``$__rate_interval``, ``$__range``
  and the dashboard's own variables replaced as Grafana's Prometheus data source does, with the
  step it sends to ``/api/v1/query_range``;
- ``promql_references`` / ``dashboard_problems``: the metric and label names each query reads,
  checked against what the gateway exports.

The Grafana facts are from its source (grafana/grafana, v10): ``packages/grafana-data/src/datetime/
rangeutil.ts`` (``roundInterval``, ``calculateInterval``), ``public/app/plugins/datasource/prometheus/
datasource.ts`` (``createQuery``, ``adjustInterval``, ``getRateIntervalScopedVariable``,
``interpolateQueryExpr``) and ``public/app/core/constants.ts`` (``GRID_CELL_HEIGHT``, ``GRID_CELL_VMARGIN``,
``GRID_COLUMN_COUNT``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"

GRID_COLUMNS = 24
GRID_CELL_HEIGHT = 30  # px, one grid row
GRID_MARGIN = 8  # px between panels, both ways

# rangeutil.roundInterval: (upper bound, rounded interval), milliseconds.
_ROUNDED_MS = (
    (10, 1),
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1_500, 1_000),
    (3_500, 2_000),
    (7_500, 5_000),
    (12_500, 10_000),
    (17_500, 15_000),
    (25_000, 20_000),
    (45_000, 30_000),
    (90_000, 60_000),
    (210_000, 120_000),
    (450_000, 300_000),
    (750_000, 600_000),
    (1_050_000, 900_000),
    (1_500_000, 1_200_000),
    (2_700_000, 1_800_000),
    (5_400_000, 3_600_000),
    (9_000_000, 7_200_000),
    (16_200_000, 10_800_000),
    (32_400_000, 21_600_000),
    (86_400_000, 43_200_000),
    (604_800_000, 86_400_000),
    (1_814_400_000, 604_800_000),
    (3_628_800_000, 2_592_000_000),
)
_YEAR_MS = 31_536_000_000
# Prometheus refuses a range query of more than 11,000 points (datasource.ts, adjustInterval).
MAX_POINTS = 11_000
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)?$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}

# $name, ${name}, ${name:format}, [[name]], [[name:format]] (Grafana's templateSrv).
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::[\w-]+)?\}|\[\[(\w+)(?::[\w-]+)?\]\]")
_REGEX_SPECIALS = re.compile(r"([\\^$*+?.()|{}\[\]])")

# PromQL words that are neither metrics nor functions; label lists follow the first group.
_LABEL_LIST_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_OPERATOR_WORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
_TOKEN = re.compile(
    r"""(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)"""
    r"|(?P<range>\[[^\]]*\])"
    r"|(?P<matchers>\{[^}]*\})"
    r"|(?P<number>(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+)(?:ms|s|m|h|d|w|y)?)"
    r"|(?P<word>[a-zA-Z_:][\w:]*)"
    r"|(?P<other>\S)"
)
_MATCHER = re.compile(r"""\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)\s*,?""")
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class Rect:
    """A panel's box on the page, in CSS pixels from the dashboard's top left corner."""

    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Interval:
    """What Grafana sends for one panel: ``step`` (s) and the values of its interval variables."""

    step: float
    variables: dict[str, str]


@dataclass(frozen=True)
class References:
    """The names one query reads: ``metrics`` (series names) and ``labels`` (grouping, matchers)."""

    metrics: frozenset[str]
    labels: frozenset[str]


def dashboard_load(path: Path = DASHBOARD) -> dict:
    return json.loads(path.read_text())


def dashboard_panels(dashboard: Mapping) -> list[dict]:
    """Every panel in page order, rows' folded panels included (a row is itself a panel, with no query)."""
    panels: list[dict] = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []) if panel.get("type") == "row" else [])
    return panels


# --- Layout ---------------------------------------------------------------------------------
def grid_layout(panels: Iterable[Mapping], *, width: float) -> dict[int, Rect]:
    """``{panel id: Rect}`` for a dashboard ``width`` px wide, as Grafana's react-grid-layout places them.

    A column is ``(width - 23 * 8) / 24`` px; a panel ``w`` columns wide spans ``w`` columns and
    the ``w - 1`` gaps between them; a row is 30 px plus an 8 px gap. Raises ``ValueError`` for a
    panel outside the 24 columns or with no size, since Grafana would move it.
    """
    column = (width - (GRID_COLUMNS - 1) * GRID_MARGIN) / GRID_COLUMNS
    rects: dict[int, Rect] = {}
    for panel in panels:
        grid = panel.get("gridPos") or {}
        x, y, w, h = (int(grid.get(key, -1)) for key in ("x", "y", "w", "h"))
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > GRID_COLUMNS:
            raise ValueError(f"panel {panel.get('title')!r}: gridPos {grid} is not on the 24-column grid")
        rects[panel["id"]] = Rect(
            x=x * (column + GRID_MARGIN),
            y=y * (GRID_CELL_HEIGHT + GRID_MARGIN),
            width=w * column + (w - 1) * GRID_MARGIN,
            height=h * GRID_CELL_HEIGHT + (h - 1) * GRID_MARGIN,
        )
    return rects


def layout_overlaps(rects: Mapping[int, Rect]) -> list[tuple[int, int]]:
    """Pairs of panels whose boxes overlap (Grafana would push one down; the JSON should not need it)."""
    items = sorted(rects.items())
    return [
        (a, b)
        for i, (a, ra) in enumerate(items)
        for b, rb in items[i + 1 :]
        if ra.x < rb.x + rb.width and rb.x < ra.x + ra.width and ra.y < rb.y + rb.height and rb.y < ra.y + ra.height
    ]


# --- Intervals and variables ----------------------------------------------------------------
def round_interval(milliseconds: float) -> int:
    """Grafana's "nice" interval for a raw one (``rangeutil.roundInterval``), in milliseconds."""
    for bound, rounded in _ROUNDED_MS:
        if milliseconds < bound:
            return rounded
    return _YEAR_MS


def duration_seconds(text: str) -> float:
    """``"15s"``, ``"1m"``, ``"500ms"``, ``"30"`` (seconds) as seconds; ``ValueError`` otherwise."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return float(match[1]) * _DURATION_SECONDS[match[2] or "s"]


def duration_text(seconds: float) -> str:
    """A PromQL duration: whole seconds as ``"8s"``, else milliseconds (``"500ms"``)."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def query_interval(
    *, range_seconds: float, max_data_points: float, scrape_seconds: float, min_interval: str = ""
) -> Interval:
    """The step and interval variables Grafana gives one panel's Prometheus queries.

    ``$__interval``: the range over the panel's points (its width in px unless ``maxDataPoints``),
    rounded, at least the panel's min interval or else the data source's scrape interval; the
    step is that, raised so the query stays under 11,000 points. ``$__rate_interval``:
    ``max($__interval + scrape, 4 * scrape)``, four scrapes at least, so ``rate()`` always has
    two samples even when one scrape is missed.
    """
    low = duration_seconds(min_interval) if min_interval else scrape_seconds
    interval = max(round_interval(range_seconds * 1000 / max_data_points) / 1000, low)
    safe = range_seconds / MAX_POINTS
    step = max(interval, low, math.ceil(safe) if safe > 1 else safe)
    rate = max(step + scrape_seconds, 4 * scrape_seconds)
    return Interval(
        step=step,
        variables={
            "__interval": duration_text(step),
            "__interval_ms": str(round(step * 1000)),
            "__rate_interval": duration_text(rate),
            "__range": duration_text(round(range_seconds)),
            "__range_s": str(round(range_seconds)),
            "__range_ms": str(round(range_seconds * 1000)),
        },
    )


def dashboard_variables(dashboard: Mapping) -> dict[str, str | list[str]]:
    """The dashboard's template variables at their saved values (``current``), as Grafana opens it.

    "All" becomes the variable's ``allValue`` or the list of its options. Raises ``ValueError``
    for a variable with no saved value: its queries cannot be run as saved.
    """
    values: dict[str, str | list[str]] = {}
    for variable in (dashboard.get("templating") or {}).get("list", []):
        name, current = variable["name"], (variable.get("current") or {}).get("value")
        if current is None:
            current = variable.get("query") if variable.get("type") in ("constant", "textbox") else None
        if current is None:
            raise ValueError(f"dashboard variable {name!r} has no saved value")
        if current == "$__all" or current == ["$__all"]:
            current = variable.get("allValue") or [
                option["value"] for option in variable.get("options", []) if option.get("value") != "$__all"
            ]
        values[name] = current
    return values


def _variable_value(value: str | list[str]) -> str:
    """Prometheus's interpolation: a list becomes a regex alternation; a single value stays as is."""
    if isinstance(value, list):
        escaped = [_REGEX_SPECIALS.sub(r"\\\1", item) for item in value]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    return value


def expr_substitute(expr: str, variables: Mapping[str, str | list[str]]) -> str:
    """``expr`` with every ``$name``, ``${name}``, ``[[name]]`` replaced; ``KeyError`` naming an unknown one."""

    def value(match: re.Match) -> str:
        name = match[1] or match[2] or match[3]
        if name not in variables:
            raise KeyError(f"unknown variable ${name} in {expr!r}")
        return _variable_value(variables[name])

    return _VARIABLE.sub(value, expr)


def legend_text(legend_format: str, labels: Mapping[str, str]) -> str:
    """A series' name: ``legendFormat`` with ``{{label}}`` filled, else its labels as Prometheus prints them."""
    if legend_format and legend_format != "__auto":
        return _LEGEND_LABEL.sub(lambda m: labels.get(m[1], ""), legend_format).strip()
    name = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}" if rest else name or "{}"


# --- What a query reads ---------------------------------------------------------------------
def promql_references(expr: str) -> References:
    """The metric names and label names a PromQL expression reads.

    A word followed by ``(`` is a function or an aggregation; the words inside ``by``/``without``/
    ``on``/``ignoring``/``group_left``/``group_right`` lists are labels, as are the names in
    ``{...}`` matchers; any other word is a series name (``__name__`` matchers count as one).
    Interval variables may still be in ``expr``: range brackets are skipped whole.
    """
    tokens = [(m.lastgroup, m[0]) for m in _TOKEN.finditer(expr)]
    metrics: set[str] = set()
    labels: set[str] = set()
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1][1] if index + 1 < len(tokens) else ""
        if kind == "matchers":
            for name, operator, value in _MATCHER.findall(text[1:-1]):
                if name == "__name__" and operator == "=":
                    metrics.add(value[1:-1])
                else:
                    labels.add(name)
        elif kind == "word" and text.lower() in _LABEL_LIST_WORDS and following == "(":
            close = next(i for i in range(index + 1, len(tokens)) if tokens[i][1] == ")")
            labels.update(word for k, word in tokens[index + 2 : close] if k == "word")
            index = close
        elif (
            kind == "word"
            and text.lower() not in _OPERATOR_WORDS | _LABEL_LIST_WORDS
            # A function or an aggregation is followed by its arguments or by its grouping.
            and following != "("
            and following.lower() not in ("by", "without")
        ):
            metrics.add(text)
        index += 1
    return References(metrics=frozenset(metrics), labels=frozenset(labels))


def target_problems(expr: str, legend_format: str, exported: Mapping[str, frozenset[str]]) -> list[str]:
    """What in one query names something the gateway does not export (empty when all is known).

    ``exported``: ``{series name: its label names}`` (a histogram's ``_bucket`` has ``le``).
    A label is known when one of the series the query reads carries it.
    """
    references = promql_references(expr)
    problems = [f"no metric {name!r}" for name in sorted(references.metrics - exported.keys())]
    known = set().union(*(exported.get(name, frozenset()) for name in references.metrics))
    used = references.labels | set(_LEGEND_LABEL.findall(legend_format or ""))
    problems += [f"no label {label!r} on {', '.join(sorted(references.metrics))}" for label in sorted(used - known)]
    if not references.metrics:
        problems.append("reads no metric")
    return problems


def dashboard_problems(dashboard: Mapping, exported: Mapping[str, frozenset[str]]) -> list[str]:
    """Every panel without a query, query with an unknown variable, metric or label: ``"<panel>: <why>"``."""
    variables = query_interval(range_seconds=3600, max_data_points=1000, scrape_seconds=15).variables
    variables |= dashboard_variables(dashboard)
    problems: list[str] = []
    for panel in dashboard_panels(dashboard):
        if panel.get("type") == "row":
            continue
        title = panel.get("title") or f"panel {panel.get('id')}"
        targets = [t for t in panel.get("targets", []) if not t.get("hide")]
        if not any(t.get("expr") for t in targets):
            problems.append(f"{title}: no query")
        for target in targets:
            try:
                expr = expr_substitute(target.get("expr", ""), variables)
            except KeyError as exc:
                problems.append(f"{title}: {exc.args[0]}")
                continue
            problems += [
                f"{title} ({target.get('refId')}): {p}"
                for p in target_problems(expr, target.get("legendFormat", ""), exported)
            ]
    return problems
