"""``python -m dashboard_shot``: the metrics dashboard's picture, from a real Prometheus.

1. A gateway as deployed (chaos.stack: gunicorn, two Celery workers and beat on PostgreSQL and
   RabbitMQ, the Botpress and Zendesk stand-ins), its ``/metrics`` set up as the README says for
   production: multiprocess mode, a token, no trusted network (checked: 403 without the token).
2. Debian's ``prometheus`` scraping it every ``--scrape-seconds`` with that token.
3. ``--seconds`` of traffic with faults (``dashboard_shot.traffic``).
4. Every query of every panel of ``docs/grafana-dashboard.json``, its variables substituted as
   Grafana does, through ``/api/v1/query_range``: a query Prometheus refuses, or that finds no
   series, or only series with no value, fails the run with the panel's title and the query.
5. The panels drawn on their grid into one HTML page and photographed by headless Chromium
   (``docs/screenshots/metrics-dashboard.png``; on a failure only ``artifacts/``, never the docs).

Exit status 0 when every query drew something. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import requests

from chaos.stack import Database, Stack, log
from dashboard_shot.panels import (
    DASHBOARD,
    dashboard_load,
    dashboard_panels,
    dashboard_variables,
    expr_substitute,
    grid_layout,
    legend_text,
    promql_references,
    query_interval,
)
from dashboard_shot.prometheus import Prometheus, QueryError
from dashboard_shot.render import PADDING, Line, PanelView, page_html
from dashboard_shot.traffic import TRAFFIC_ENV, Traffic

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "dashboard"
SHOT_NAME = "metrics-dashboard"
MARGIN = 16  # px each side of the grid (render.STYLE's .grid)


def metrics_access_check(gateway_url: str, token: str) -> None:
    """The production set-up is in force: loopback without the token is refused, the token is let in."""
    anonymous = requests.get(f"{gateway_url}/metrics", timeout=10)
    holder = requests.get(f"{gateway_url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    if anonymous.status_code != 403 or holder.status_code != 200 or "hitl_sessions" not in holder.text:
        raise RuntimeError(f"/metrics answered {anonymous.status_code} without the token, {holder.status_code} with it")


def assignment_timeout_set(stack: Stack, *, minutes: int) -> None:
    """The integration's lifecycle policy ends a session no agent took within ``minutes`` (the admin's
    form, through its service), so sessions whose ticket the desk's outage delayed are ended by it."""
    code = (
        "from django.db import transaction\n"
        "from sessions_app.models import Integration\n"
        "from sessions_app.services.lifecycle import integration_policy_update\n"
        "with transaction.atomic():\n"
        f"    integration = Integration.objects.get(pk={stack.integration_id!r})\n"
        f"    integration_policy_update(integration=integration, changes={{'assignment_timeout_minutes': {minutes}}})\n"
    )
    stack.gateway.manage("shell", "--no-imports", "-c", code)


def panels_query(
    dashboard: dict, prometheus: Prometheus, *, start: float, end: float, grid_width: float
) -> tuple[list[PanelView], list[str]]:
    """Each panel's series over [start, end], as Grafana would ask for them; and what failed."""
    panels = dashboard_panels(dashboard)
    layout = grid_layout(panels, width=grid_width)
    variables = dashboard_variables(dashboard)
    views, failures = [], []
    known: set[str] | None = None
    for panel in panels:
        rect, lines = layout[panel["id"]], []
        for target in [t for t in panel.get("targets", []) if not t.get("hide") and t.get("expr")]:
            interval = query_interval(
                range_seconds=end - start,
                max_data_points=target.get("maxDataPoints") or panel.get("maxDataPoints") or rect.width - 2 * PADDING,
                scrape_seconds=prometheus.scrape_seconds,
                min_interval=target.get("interval") or panel.get("interval") or "",
            )
            expr = expr_substitute(target["expr"], interval.variables | variables)
            step = interval.step
            where = f"{panel.get('title')} ({target.get('refId')}): {expr}"
            try:
                # Grafana aligns the range on the step, so neighbouring refreshes draw the same points.
                series = prometheus.query_range(expr, start=start // step * step, end=end // step * step, step=step)
            except QueryError as exc:
                failures.append(f"{where}: Prometheus refused it: {exc}")
                continue
            if not series:
                known = prometheus.metric_names() if known is None else known
                unknown = sorted(promql_references(expr).metrics - known)
                failures.append(
                    f"{where}: no series" + (f"; Prometheus has no {', '.join(unknown)}" if unknown else "")
                )
            elif not any(s.finite for s in series):
                failures.append(f"{where}: {len(series)} series, none with a value in the range")
            lines += [Line(name=legend_text(target.get("legendFormat", ""), s.labels), points=s.points) for s in series]
        views.append(PanelView(panel=panel, rect=rect, lines=lines))
    return views, failures


def photograph(page: Path, *, width: int, docs: bool) -> Path:
    """Headless Chromium's full-page PNG of ``page``: in docs/screenshots (and artifacts) or artifacts only."""
    from tests.browser import CHROMEDRIVER, CHROMIUM, chromium_start, docs_screenshot, screenshot, viewport

    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        raise RuntimeError("Debian's chromium and chromium-driver are required: `make browser` installs them")
    driver, profile = chromium_start(window=f"{width},900")
    try:
        driver.get(page.as_uri())
        if docs:
            return docs_screenshot(driver, SHOT_NAME, width=width, full_page=True)
        viewport(driver, width, int(driver.execute_script("return document.documentElement.scrollHeight")))
        return screenshot(driver, f"{SHOT_NAME}-failed")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard_shot", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240, help="traffic duration (the picture's range)")
    parser.add_argument("--sessions", type=int, default=36, help="sessions opened during the traffic")
    parser.add_argument("--scrape-seconds", type=float, default=2.0, help="Prometheus's scrape interval")
    parser.add_argument("--width", type=int, default=1600, help="the picture's width in px")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' and Prometheus's files")
    options = parser.parse_args(argv)
    # The servers, from the environment (make passes TEST_DATABASE_URL and TEST_BROKER_URL): a
    # throw-away database is made on that PostgreSQL server, the workers use that broker.
    database_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    broker_url = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    if not broker_url.startswith(("amqp://", "pyamqp://", "redis://", "rediss://")):
        parser.error("CELERY_BROKER_URL: the gateway's workers need a real broker (RabbitMQ or Redis)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: processes stopped, database dropped
    clock = time.monotonic()
    dashboard = dashboard_load(options.dashboard)
    grid_width = options.width - 2 * MARGIN
    grid_layout(dashboard_panels(dashboard), width=grid_width)  # a panel off the grid fails before any start
    work_dir = Path(tempfile.mkdtemp(prefix="hitl-dashboard-"))
    token = secrets.token_urlsafe(32)
    # README, "Health and metrics", behind a proxy: a token and no trusted network.
    env = TRAFFIC_ENV | {"HITL_METRICS_TOKEN": token, "HITL_METRICS_ALLOWED_NETWORKS": ""}
    prometheus = None
    with Database(database_url) as database:
        stack = Stack(database_url=database.url, broker_url=broker_url, work_dir=work_dir, workers=2, env=env)
        try:
            stack.start()
            metrics_access_check(stack.gateway.url, token)
            assignment_timeout_set(stack, minutes=1)
            prometheus = Prometheus(
                work_dir=work_dir / "prometheus-server",  # work_dir / "prometheus" holds the gateway's files
                target=f"127.0.0.1:{stack.gateway.port}",
                token=token,
                scrape_seconds=options.scrape_seconds,
            )
            prometheus.start()
            version = prometheus.version()
            log(f"prometheus {version} scraping {stack.gateway.url}/metrics every {options.scrape_seconds:g} s")
            start = time.time()
            tally = Traffic(stack, seconds=options.seconds, sessions=options.sessions).run()
            time.sleep(2 * options.scrape_seconds)  # the last figures scraped
            end = time.time()
            log(f"traffic done: {tally.as_dict()}")
            errors = prometheus.target_errors()
            views, failures = panels_query(dashboard, prometheus, start=start, end=end, grid_width=grid_width)
            failures += [f"scrape failing: {error}" for error in errors]
        finally:
            if prometheus is not None:
                prometheus.stop()
            stack.stop()
    source = (
        f"Panels and queries: docs/grafana-dashboard.json. Figures: Prometheus {version} scraping the gateway's "
        f"/metrics (bearer token) every {options.scrape_seconds:g} s during {options.seconds:g} s of traffic "
        "with faults and a desk outage. Drawn by python -m dashboard_shot, not by Grafana."
    )
    page = ARTIFACTS / f"{SHOT_NAME}.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    title = dashboard.get("title", "dashboard")
    page.write_text(page_html(title=title, views=views, start=start, end=end, width=options.width, source=source))
    picture = photograph(page, width=options.width, docs=not failures)
    if options.keep_logs:
        log(f"logs kept in {work_dir}")
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    for failure in failures:
        log(f"FAILED {failure}")
    result = {
        "picture": str(picture.relative_to(ROOT)),
        "page": str(page.relative_to(ROOT)),
        "panels": len(views),
        "queries": sum(len(v.panel.get("targets", [])) for v in views),
        "series": sum(len(v.lines) for v in views),
        "failures": len(failures),
        "traffic": tally.as_dict(),
        "seconds": round(time.monotonic() - clock, 1),
    }
    print(json.dumps(result), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
