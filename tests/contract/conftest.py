"""Runs the contract suite once per desk: every ``tests/contract/<kind>_fixture.py`` found here."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

FIXTURE_MODULES = sorted(path.stem for path in Path(__file__).parent.glob("*_fixture.py"))


@pytest.fixture(params=FIXTURE_MODULES, ids=[name.removesuffix("_fixture") for name in FIXTURE_MODULES])
def desk(request, db):  # adapters may keep state there (Slack: the channel's pace)
    module = importlib.import_module(f"tests.contract.{request.param}")
    with module.desk() as ready:
        yield ready
