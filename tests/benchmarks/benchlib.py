"""Helpers shared by the benchmarks: figures, timing, simulated data, a copy of the model project.

Every benchmark prints one figure: Slipway's time as a ratio against a baseline measured in the
same run on the same machine. Nothing asserts on timings; the benchmarks assert only that the
work they timed was correct.
"""

from __future__ import annotations

import gc
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "model"
FIGURES: list[str] = []


def report(line: str) -> None:
    """Print a benchmark figure now; conftest.py repeats it in the session summary."""
    FIGURES.append(line)
    print(f"\n{line}", flush=True)


def load_simulate() -> ModuleType:
    """``model/simulate.py`` as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location(
        "slipway_bench_simulate", MODEL_DIR / "simulate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_project(root: Path, train: Path, evaluation: Path) -> Path:
    """A copy of the model project under ``root`` whose data paths point at the given CSVs.

    Returns the path of the copied ``slipway.yaml``; ``train.py`` sits beside it.
    """
    root.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load((MODEL_DIR / "slipway.yaml").read_text(encoding="utf-8"))
    raw["data"]["train"] = str(train.resolve())
    raw["data"]["eval"] = str(evaluation.resolve())
    raw["data"]["lock"] = str((root / "data.lock.json").resolve())
    config = root / "slipway.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    (root / "train.py").write_bytes((MODEL_DIR / "train.py").read_bytes())
    return config


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time in seconds of one call (after a garbage collection), and its result."""
    gc.collect()
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def best_of(repeats: int, function: Callable[[], Any]) -> tuple[float, Any]:
    """The fastest of ``repeats`` calls, and the result of the last one."""
    best, result = float("inf"), None
    for _ in range(repeats):
        seconds, result = timed(function)
        best = min(best, seconds)
    return best, result
