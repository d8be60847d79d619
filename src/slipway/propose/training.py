"""Train the model project's pipeline and register it as a new MLflow model version."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slipway.config import ModelConfig
from slipway.errors import TrainingError
from slipway.fsutil import write_json
from slipway.progress import Progress
from slipway.propose.contract import prepare, read_dataset
from slipway.propose.datasets import check_lock, split_paths
from slipway.registry import MODEL_COPY_DIR, MODEL_DIGEST_TAG, Registry

SCHEMA = "slipway.train/1"


def load_recipe(config: ModelConfig) -> Callable[..., Any]:
    """``build_pipeline`` from the model project's ``train.py``."""
    path = config.root / "train.py"
    fix = f"fix {path}: it must define build_pipeline(params, features, seed)"
    if not path.is_file():
        raise TrainingError(f"no training recipe at {path}", fix)
    spec = importlib.util.spec_from_file_location("slipway_model_recipe", path)
    if spec is None or spec.loader is None:
        raise TrainingError(f"cannot import {path}", fix)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise TrainingError(f"{path} raised {type(exc).__name__} on import: {exc}", fix) from exc
    build = getattr(module, "build_pipeline", None)
    if not callable(build):
        raise TrainingError(f"{path} has no build_pipeline function", fix)
    return build


def fit(config: ModelConfig, features: Any, target: np.ndarray) -> Any:
    """Build the pipeline from params and fit it with every seed fixed."""
    build = load_recipe(config)
    seed = config.training.seed
    random.seed(seed)
    np.random.seed(seed)
    path = config.root / "train.py"
    try:
        model = build(dict(config.training.params), list(config.features), seed)
        model.fit(features, target)
    except Exception as exc:
        raise TrainingError(
            f"{path} failed while building or fitting: {type(exc).__name__}: {exc}",
            f"fix {path} or the params under `training:` in slipway.yaml",
        ) from exc
    if not hasattr(model, "predict_proba"):
        raise TrainingError(
            f"the pipeline from {path} has no predict_proba", "end it with a classifier"
        )
    return model


def git_commit(root: Path) -> str:
    """The commit being trained: ``GITHUB_SHA`` in Actions, else ``git rev-parse HEAD``."""
    if os.environ.get("GITHUB_SHA"):
        return os.environ["GITHUB_SHA"]
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip()


def pr_number() -> str | None:
    """The pull request number from ``SLIPWAY_PR_NUMBER`` or the Actions event payload."""
    if os.environ.get("SLIPWAY_PR_NUMBER"):
        return os.environ["SLIPWAY_PR_NUMBER"]
    event = os.environ.get("GITHUB_EVENT_PATH")
    if event and Path(event).is_file():
        try:
            number = json.loads(Path(event).read_text()).get("pull_request", {}).get("number")
        except ValueError:
            return None
        return str(number) if number is not None else None
    return None


@dataclass(frozen=True)
class Fitted:
    """A model fitted on the locked training data, not yet logged."""

    model: Any
    features: pd.DataFrame
    target: np.ndarray
    digests: dict[str, str]


def fit_locked(config: ModelConfig, progress: Progress = lambda _message: None) -> Fitted:
    """Check the lock, read the training set and fit the pipeline."""
    digests = check_lock(config)
    paths = split_paths(config)
    progress(f"reading {paths['train']}")
    features, target = prepare(read_dataset(paths["train"]), config)
    progress(f"fitting on {len(target)} rows (seed {config.training.seed})")
    return Fitted(fit(config, features, target), features, target, digests)


def register(
    config: ModelConfig,
    registry: Registry,
    fitted: Fitted,
    out_dir: Path,
    progress: Progress = lambda _message: None,
) -> Callable[[], dict[str, Any]]:
    """Start logging ``fitted`` to MLflow and registering it as a new version.

    Returns a function that waits for the version, writes ``train.json`` and returns it, so
    a caller can gate the model while a registry that works in the background logs it.
    """
    commit = git_commit(config.root)
    number = pr_number()
    tags = {
        "slipway.git_commit": commit,
        "slipway.data_digest": fitted.digests["train"],
        "slipway.eval_digest": fitted.digests["eval"],
        "slipway.schema_version": str(config.schema_version),
    }
    if number:
        tags["slipway.pr_number"] = number
    if config.owners:
        tags["slipway.owners"] = ",".join(config.owners)
    if config.intended_use:
        tags["slipway.intended_use"] = config.intended_use
    progress(f"logging to MLflow at {registry.tracking_uri}")
    params = {"seed": config.training.seed, **config.training.params}
    pending = registry.submit_log_and_register(
        config.name,
        fitted.model,
        fitted.features,
        params,
        {
            "train_rows": float(len(fitted.target)),
            "train_positive_share": float(fitted.target.mean()),
        },
        tags,
        copy_to=str(out_dir / MODEL_COPY_DIR),
    )

    def finish() -> dict[str, Any]:
        ref = pending.result()
        progress(f"registered {config.name} version {ref.version}")
        document = {
            "schema": SCHEMA,
            "model": config.name,
            "version": ref.version,
            "model_uri": ref.uri,
            "run_id": ref.run_id,
            "run_url": registry.run_url(ref.run_id),
            "tracking_uri": registry.tracking_uri,
            "params": params,
            "tags": tags,
            "model_dir": MODEL_COPY_DIR,
            "model_digest": ref.tags.get(MODEL_DIGEST_TAG),
            "train_rows": len(fitted.target),
            "python": sys.version.split()[0],
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json(out_dir / "train.json", document)
        return document

    return finish


def train(
    config: ModelConfig,
    registry: Registry,
    out_dir: Path,
    progress: Progress = lambda _message: None,
) -> dict[str, Any]:
    """Check the lock, fit, log everything to MLflow, register a version; write ``train.json``."""
    return register(config, registry, fit_locked(config, progress), out_dir, progress)()
