"""A small chaos run per help desk, the same program as `make chaos`: faults, a SIGKILLed worker, a web restart."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
@pytest.mark.parametrize("provider", ["zendesk", "freshdesk", "jsm", "slack"])
def test_small_chaos_run_loses_doubles_and_reorders_nothing(provider):
    if os.environ.get("CELERY_BROKER_URL", "filesystem://").startswith("filesystem://"):
        pytest.skip("the chaos run needs a real broker: set CELERY_BROKER_URL (make test does)")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaos",
            "--provider",
            provider,
            "--sessions",
            "8",
            "--messages",
            "160",
            "--timeout",
            "240",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    lines = run.stdout.strip().splitlines()
    assert lines, run.stderr[-3000:]
    result = json.loads(lines[-1])
    assert (result["lost"], result["duplicated"], result["out_of_order"]) == (0, 0, 0), run.stdout
    assert result["provider"] == provider and result["accepted"] == result["delivered"] >= 160
    assert result["faults_injected"] > 0 and result["worker_killed"] and result["web_restarted"]
    by_direction = result["delay_ms_by_direction"]
    assert set(by_direction) == {"to_agent", "to_user"}
    assert all(d["p50"] is not None and 0 < d["p50"] <= d["p99"] for d in by_direction.values()), by_direction
    assert run.returncode == 0
