"""A throw-away Prometheus server (Debian's ``prometheus``) scraping the gateway, and its query API.

The configuration is what an operator writes for the gateway (README, "Health and metrics"):
one job on ``/metrics`` with ``Authorization: Bearer <HITL_METRICS_TOKEN>``. Celery workers are
not scraped apart: with ``PROMETHEUS_MULTIPROC_DIR`` the web's ``/metrics`` sums their figures.
HTTP API: https://prometheus.io/docs/prometheus/2.42/querying/api/ (``/api/v1/query_range``,
``/api/v1/targets``, ``/-/ready``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from chaos.processes import Process
from chaos.stack import free_port

BINARY = "prometheus"


class QueryError(Exception):
    """Prometheus refused a query (a syntax error, an unknown function): its own message."""


@dataclass(frozen=True)
class Series:
    """One series of a range query: its labels and ``(unix time, value)`` points (NaN kept as NaN)."""

    labels: dict[str, str]
    points: list[tuple[float, float]]

    @property
    def finite(self) -> list[tuple[float, float]]:
        return [(t, v) for t, v in self.points if math.isfinite(v)]


def scrape_config(*, target: str, token_file: Path, scrape_seconds: float) -> dict:
    """The gateway's scrape job. JSON is YAML, so this is written as is."""
    interval = f"{int(scrape_seconds * 1000)}ms"
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "hitl-gateway",
                "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                "static_configs": [{"targets": [target]}],
            }
        ],
    }


class Prometheus:
    """``prometheus`` on a free loopback port, with its configuration and data in ``work_dir``."""

    def __init__(self, *, work_dir: Path, target: str, token: str, scrape_seconds: float) -> None:
        binary = shutil.which(BINARY)
        if binary is None:
            raise RuntimeError("prometheus is not installed: `make dashboard-shot` installs Debian's package")
        work_dir.mkdir(parents=True, exist_ok=True)
        token_file = work_dir / "metrics-token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        config = work_dir / "prometheus.yml"
        config.write_text(
            json.dumps(scrape_config(target=target, token_file=token_file, scrape_seconds=scrape_seconds))
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.scrape_seconds = scrape_seconds
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.process = Process("prometheus", argv, dict(os.environ), work_dir / "prometheus.log")

    def start(self, timeout: float = 60.0) -> None:
        """Start it and wait until it is ready and its first scrape of the gateway succeeded."""
        self.process.start()
        deadline = time.monotonic() + timeout
        last = "not ready"
        while time.monotonic() < deadline:
            if self.process.popen.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.process.log_path.read_text()[-2000:]}")
            try:
                targets = requests.get(f"{self.url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
                last = "; ".join(f"{t['scrapeUrl']}: {t['health']} {t['lastError']}" for t in targets)
                if targets and all(t["health"] == "up" for t in targets):
                    return
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prometheus never scraped the gateway: {last}")

    def version(self) -> str:
        return requests.get(f"{self.url}/api/v1/status/buildinfo", timeout=5).json()["data"]["version"]

    def target_errors(self) -> list[str]:
        """Scrapes that failed at the last try (a wrong token would show here as 403)."""
        targets = requests.get(f"{self.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return [f"{t['scrapeUrl']}: {t['lastError']}" for t in targets if t["health"] != "up"]

    def query_range(self, expr: str, *, start: float, end: float, step: float) -> list[Series]:
        """``/api/v1/query_range``: every series of ``expr`` over [start, end] (unix s) every ``step`` s."""
        response = requests.post(
            f"{self.url}/api/v1/query_range",
            data={"query": expr, "start": start, "end": end, "step": step},
            timeout=30,
        )
        body = response.json()
        if body.get("status") != "success":
            raise QueryError(f"{body.get('errorType')}: {body.get('error')}")
        return [
            Series(labels=item["metric"], points=[(float(t), float(v)) for t, v in item["values"]])
            for item in body["data"]["result"]
        ]

    def metric_names(self) -> set[str]:
        """Every series name Prometheus holds (to say which name of a query that found nothing is unknown)."""
        return set(requests.get(f"{self.url}/api/v1/label/__name__/values", timeout=10).json()["data"])

    def stop(self) -> None:
        self.process.stop()
