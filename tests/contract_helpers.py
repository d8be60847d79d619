"""Helpers for the data-contract tests: a small simulated model project in a temp dir.

The project is a copy of ``model/slipway.yaml`` and ``model/train.py`` with freshly simulated
CSVs (900 train and 600 eval rows, both above the contract's ``min_rows: 500``). Tests corrupt
the CSVs as text (every cell read as a string) so a case changes exactly the cells it names.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from datetime import date
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "model"
AS_OF = date(2026, 11, 1)  # the simulator's END_DATE: fresh data whatever today's date is
TRAIN_ROWS = 900
EVAL_ROWS = 600
COLUMNS = [
    "release_id",
    "release_date",
    "team",
    "code_changes",
    "files_modified",
    "past_defects",
    "test_coverage",
    "release_frequency",
    "historical_failure_rate",
    "high_risk",
]


@cache
def simulator() -> ModuleType:
    """``model/simulate.py`` imported by path (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("slipway_model_simulate", MODEL / "simulate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def _csv_texts(seed: int, null_coverage: float) -> tuple[str, str]:
    sim = simulator()
    frame = sim.simulate(TRAIN_ROWS + EVAL_ROWS, seed=seed, null_coverage=null_coverage)
    train, evaluation = sim.split(frame, EVAL_ROWS)
    return train.to_csv(index=False), evaluation.to_csv(index=False)


def make_project(root: Path, *, seed: int = 11, null_coverage: float = 0.0) -> Path:
    """Write a model project under ``root/model``; returns the path of its slipway.yaml.

    ``null_coverage`` is the simulator's share of empty ``test_coverage`` cells (0 by default
    so that a case adding nulls knows exactly how many there are).
    """
    model = root / "model"
    (model / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(MODEL / "slipway.yaml", model / "slipway.yaml")
    shutil.copy(MODEL / "train.py", model / "train.py")
    train_text, eval_text = _csv_texts(seed, null_coverage)
    (model / "data" / "train.csv").write_text(train_text, encoding="utf-8")
    (model / "data" / "eval.csv").write_text(eval_text, encoding="utf-8")
    return model / "slipway.yaml"


def data_path(config: Path, split: str) -> Path:
    return config.parent / "data" / f"{split}.csv"


def read_text_frame(path: Path) -> pd.DataFrame:
    """A CSV with every cell as the exact text in the file (empty cells stay empty strings)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_text_frame(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False)


def edit_csv(config: Path, split: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Path:
    """Rewrite one dataset of the project through ``change``; returns the CSV path."""
    path = data_path(config, split)
    write_text_frame(change(read_text_frame(path)), path)
    return path


def set_cells(frame: pd.DataFrame, column: str, rows: list[int], value: str) -> pd.DataFrame:
    """Set ``column`` to ``value`` in the given row positions (CSV line = position + 2)."""
    frame = frame.copy()
    frame.loc[frame.index[rows], column] = value
    return frame


def edit_yaml(config: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Mutate the parsed slipway.yaml in place through ``change`` and write it back."""
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    change(document)
    config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def violations(report: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """The violations of one dataset (``train``, ``eval`` or ``train+eval``) in a report."""
    (dataset,) = [d for d in report["datasets"] if d["split"] == split]
    return dataset["violations"]


def only_violation(report: dict[str, Any], split: str) -> dict[str, Any]:
    """The single violation of a report; fails if anything else is wrong anywhere."""
    assert report["violation_count"] == 1, report
    (found,) = violations(report, split)
    return found
