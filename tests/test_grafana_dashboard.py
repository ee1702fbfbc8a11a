"""docs/grafana-dashboard.json, without Prometheus or Grafana: what ``make dashboard-shot`` relies on.

- Every metric and label its queries read is one the gateway exports: the names come from the
  process's Prometheus registry and the database collector, the same objects ``/metrics`` serves.
- Every panel has a query and a place on the 24-column grid, laid out in pixels as Grafana does.
- ``$__interval``, ``$__rate_interval`` and the dashboard's variables substitute as Grafana's
  Prometheus data source does; an unknown variable is an error, not a query sent as is.
"""

from __future__ import annotations

import copy
import html
import math

import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from dashboard_shot.panels import (
    dashboard_load,
    dashboard_panels,
    dashboard_problems,
    dashboard_variables,
    expr_substitute,
    grid_layout,
    layout_overlaps,
    legend_text,
    promql_references,
    query_interval,
)
from dashboard_shot.render import Line, PanelView, page_html, value_format

# Series names a metric family of each type is exposed under (Prometheus text format).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}


def _family_series(name: str, kind: str, labels: set[str]) -> dict[str, frozenset[str]]:
    series = {}
    for suffix in SUFFIXES[kind]:
        extra = {"le"} if suffix == "_bucket" else {"quantile"} if kind == "summary" and not suffix else set()
        series[name + suffix] = frozenset(labels | extra)
    return series


def gateway_series() -> dict[str, frozenset[str]]:
    """``{series name: label names}`` of everything the gateway's ``/metrics`` can carry.

    The event metrics are the collectors registered in this process's registry (the gateway's
    and django-prometheus's; their label names are the metric objects' own, since a labelled
    metric has no sample before its first event); the states are ``DatabaseCollector``'s.
    """
    from django_prometheus.middleware import Metrics

    from hitl_gateway.metrics import DatabaseCollector

    Metrics.get_instance()  # django-prometheus registers its request metrics on first use
    exported: dict[str, frozenset[str]] = {}
    for collector in list(REGISTRY._collector_to_names):
        if isinstance(collector, MetricWrapperBase):
            exported |= _family_series(collector._name, collector._type, set(collector._labelnames))
            continue
        for family in collector.collect():
            labels = {label for sample in family.samples for label in sample.labels}
            exported |= _family_series(family.name, family.type, labels)
    for family in DatabaseCollector().collect():
        exported |= _family_series(family.name, family.type, set(family._labelnames))
    return exported


@pytest.fixture(scope="module")
def dashboard():
    return dashboard_load()


@pytest.fixture
def exported(db):
    return gateway_series()


def _targets(dashboard):
    return [(p, t) for p in dashboard_panels(dashboard) for t in p.get("targets", [])]


# --- The names ------------------------------------------------------------------------------
def test_every_metric_and_label_the_dashboard_reads_is_exported(dashboard, exported):
    assert dashboard_problems(dashboard, exported) == []
    assert exported["hitl_relay_latency_seconds_bucket"] == {"direction", "le"}
    # And the dashboard shows every one of the gateway's own metrics (a counter's total, a
    # histogram's buckets, a gauge).
    own = {name for name in exported if name.startswith("hitl_") and not name.endswith(("_created", "_count", "_sum"))}
    read = set().union(*(promql_references(t["expr"]).metrics for _, t in _targets(dashboard)))
    assert len(own) >= 8 and own - read == set()


def test_in_multiprocess_mode_metrics_still_serves_the_figures_read_at_scrape_time(db, tmp_path, monkeypatch):
    """Production (README: PROMETHEUS_MULTIPROC_DIR) sums the processes' files; the gateway's figures
    that collectors compute from the database at scrape time must be served beside them."""
    from hitl_gateway.metrics import DatabaseCollector, metrics_registry

    computed = {f.name for f in DatabaseCollector().collect()}
    for collector in list(REGISTRY._collector_to_names):
        if not isinstance(collector, MetricWrapperBase):
            computed |= {f.name for f in collector.collect() if f.name.startswith("hitl_")}
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    served = {family.name for family in metrics_registry().collect()}
    assert len(computed) >= 4 and computed - served == set()


def test_a_misspelt_metric_a_missing_label_and_a_panel_without_query_are_reported(dashboard, exported):
    broken = copy.deepcopy(dashboard)
    panels = {p["title"]: p for p in dashboard_panels(broken)}
    target = panels["Webhooks by result and reason"]["targets"][0]
    target["expr"] = target["expr"].replace("hitl_webhooks_total", "hitl_webhook_total")
    panels["Open sessions"]["targets"][0]["expr"] = "max by (status) (hitl_sessions)"
    panels["Retries by kind"]["targets"][0]["legendFormat"] = "{{provider}}"
    panels["Oldest pending delivery"]["targets"] = []
    assert dashboard_problems(broken, exported) == [
        "Open sessions (A): no label 'status' on hitl_sessions",
        "Oldest pending delivery: no query",
        "Retries by kind (A): no label 'provider' on hitl_delivery_attempts_total",
        "Webhooks by result and reason (A): no metric 'hitl_webhook_total'",
        "Webhooks by result and reason (A): no label 'reason' on hitl_webhook_total",
        "Webhooks by result and reason (A): no label 'result' on hitl_webhook_total",
    ]


def test_promql_references_tell_metrics_from_functions_labels_and_keywords():
    refs = promql_references(
        'histogram_quantile(0.9, sum by (le, view) (rate(a_bucket{method="GET", view!~"x|y"}[$__rate_interval])))'
        " / on (view) group_left (method) b offset 5m > bool 1 or sum(c) without (d) unless"
        ' {__name__="e", f="g"} and label_replace(vector(0), "h", "i", "", "")'
    )
    assert refs.metrics == {"a_bucket", "b", "c", "e"}
    assert refs.labels == {"le", "view", "method", "d", "f"}


# --- Panels and layout ----------------------------------------------------------------------
def test_every_panel_has_a_query_and_a_place_on_the_grid(dashboard):
    panels = [p for p in dashboard_panels(dashboard) if p.get("type") != "row"]
    assert len({p["id"] for p in panels}) == len(panels) >= 12
    assert all(any(t.get("expr") for t in p.get("targets", [])) for p in panels)
    rects = grid_layout(panels, width=1568)
    assert layout_overlaps(rects) == []
    assert all(r.x >= 0 and r.x + r.width <= 1568 + 1e-6 for r in rects.values())
    by_title = {p["title"]: rects[p["id"]] for p in panels}
    # 24 columns of (1568 - 23 * 8) / 24 px, 8 px apart; rows of 30 px, 8 px apart (Grafana's grid).
    assert (by_title["Open sessions"].width, by_title["Open sessions"].height) == pytest.approx((517.33, 182), abs=0.01)
    assert by_title["Time to first agent reply"].x == pytest.approx(788)
    assert (by_title["Time to assignment"].y, by_title["Time to assignment"].height) == (190, 296)


def test_a_panel_off_the_grid_or_overlapping_is_refused():
    with pytest.raises(ValueError, match="not on the 24-column grid"):
        grid_layout([{"id": 1, "title": "wide", "gridPos": {"x": 12, "y": 0, "w": 13, "h": 4}}], width=1000)
    rects = grid_layout(
        [
            {"id": 1, "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8}},
            {"id": 2, "gridPos": {"x": 6, "y": 4, "w": 12, "h": 8}},
        ],
        width=1000,
    )
    assert layout_overlaps(rects) == [(1, 2)]


# --- Substitution ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("range_seconds", "points", "scrape", "min_interval", "step", "rate"),
    [
        (300, 780, 2, "", 2, "8s"),  # the picture: the scrape interval is the floor
        (6 * 3600, 780, 15, "", 30, "60s"),  # the dashboard's 6 h: 27.7 s rounds to 30 s; 4 scrapes = 60 s
        (6 * 3600, 780, 15, "1m", 60, "75s"),  # a panel's min interval
        (30 * 86400, 100_000, 15, "", 236, "251s"),  # 11,000 points at most: 2,592,000 s / 11,000, rounded up
    ],
)
def test_interval_variables_are_grafanas(range_seconds, points, scrape, min_interval, step, rate):
    interval = query_interval(
        range_seconds=range_seconds, max_data_points=points, scrape_seconds=scrape, min_interval=min_interval
    )
    assert interval.step == step
    assert interval.variables["__rate_interval"] == rate
    assert interval.variables["__interval"] == f"{step}s"
    assert interval.variables["__range_s"] == str(range_seconds)


def test_every_query_of_the_dashboard_substitutes_completely(dashboard):
    variables = query_interval(range_seconds=300, max_data_points=780, scrape_seconds=2).variables
    variables |= dashboard_variables(dashboard)
    for panel, target in _targets(dashboard):
        expr = expr_substitute(target["expr"], variables)
        assert "$" not in expr and "[[" not in expr, (panel["title"], expr)
    rate = expr_substitute("rate(x[$__rate_interval]) / ${__interval_ms} + [[__range_s]]", variables)
    assert rate == "rate(x[8s]) / 2000 + 300"


def test_dashboard_variables_substitute_and_an_unknown_one_is_an_error():
    board = {
        "templating": {
            "list": [
                {"name": "provider", "type": "custom", "current": {"value": ["zendesk", "slack"]}},
                {"name": "one", "type": "custom", "current": {"value": ["a.b"]}},
                {"name": "job", "type": "constant", "query": "hitl"},
                {
                    "name": "kind",
                    "type": "query",
                    "current": {"value": "$__all"},
                    "options": [{"value": "$__all"}, {"value": "ticket_create"}, {"value": "message_to_user"}],
                },
            ]
        }
    }
    values = dashboard_variables(board)
    expr = expr_substitute('x{provider=~"$provider", one=~"${one}", job="[[job]]", kind=~"${kind:regex}"}', values)
    assert expr == 'x{provider=~"(zendesk|slack)", one=~"a\\.b", job="hitl", kind=~"(ticket_create|message_to_user)"}'
    with pytest.raises(KeyError, match=r"\$tenant"):
        expr_substitute('x{tenant="$tenant"}', values)
    with pytest.raises(ValueError, match="'broken' has no saved value"):
        dashboard_variables({"templating": {"list": [{"name": "broken", "type": "query"}]}})


def test_legend_names_fill_the_labels_or_print_them():
    labels = {"__name__": "hitl_deliveries", "kind": "ticket_create", "status": "dead"}
    assert legend_text("{{kind}} {{ status }}", labels) == "ticket_create dead"
    assert legend_text("", labels) == 'hitl_deliveries{kind="ticket_create", status="dead"}'


# --- Drawing --------------------------------------------------------------------------------
def test_every_panel_of_the_real_json_is_drawn_with_its_title_unit_and_legend(dashboard):
    panels = dashboard_panels(dashboard)
    rects = grid_layout(panels, width=1568)
    start = 1_700_000_000.0
    points = [(start + i * 2, float(i % 7) if i != 5 else math.nan) for i in range(60)]
    views = [
        PanelView(panel=p, rect=rects[p["id"]], lines=[Line(name=f"series {p['id']}", points=points)]) for p in panels
    ]
    page = page_html(title=dashboard["title"], views=views, start=start, end=start + 120, width=1600, source="test")
    for panel in panels:
        assert f"<h2>{html.escape(panel['title'])}</h2>" in page
        assert f"series {panel['id']}" in page
    assert page.count("<polyline") >= len(panels) and "http" not in page.split("</style>")[1]
    assert [value_format(v, "s") for v in (0.25, 12.5, 90, 7200)] == ["250 ms", "12.5 s", "1.5 min", "2 hour"]
    assert (value_format(0.5, "ops"), value_format(3, "reqps"), value_format(1500, "short")) == (
        "0.5 ops/s",
        "3 req/s",
        "1.5 K",
    )
