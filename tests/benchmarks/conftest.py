"""Benchmark session set-up: isolated Slipway/MLflow state and a summary of the figures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from benchlib import FIGURES

# Variables that would make a subprocess write into a real workflow run or pull request.
_CI_VARIABLES = (
    "GITHUB_ACTIONS",
    "GITHUB_OUTPUT",
    "GITHUB_STEP_SUMMARY",
    "GITHUB_EVENT_PATH",
    "GITHUB_SHA",
    "SLIPWAY_PR_NUMBER",
)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("slipway benchmarks")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def bench_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """MLflow and Slipway state under ``tmp_path``, never the repository's ``.slipway/``.

    Yields the environment to hand to subprocesses.
    """
    home = tmp_path / "slipway-home"
    home.mkdir()
    settings = {
        "SLIPWAY_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "BENTOML_DO_NOT_TRACK": "true",
        "DO_NOT_TRACK": "1",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    for name in _CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield dict(os.environ)
