"""``slipway pr``: the pull-request workflow on the working tree, its steps overlapping."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pandas as pd

from slipway.config import ModelConfig
from slipway.drift.profile import ARTIFACT, build_profile, store_profile
from slipway.errors import DriftError
from slipway.fsutil import sha256_file, write_json
from slipway.progress import Progress
from slipway.propose.contract import read_dataset
from slipway.propose.datasets import split_paths, validate
from slipway.propose.gate import Judgement, judge, load_champion, record
from slipway.propose.report import write_report
from slipway.propose.training import fit_locked, register
from slipway.registry import MODEL_COPY_DIR, ModelRef, Registry

PROFILE_FILE = "profile.json"  # the candidate's reference profile, as stored with its run
OUTPUTS = ("validation.json", "train.json", "gate.json", PROFILE_FILE, "package.json", "report.md")
DECISION_THRESHOLD = 0.5  # the profile's, for a model without a fixed threshold: predict's


def run_pr(
    config: ModelConfig,
    registry: Registry,
    out_dir: Path,
    progress: Progress,
    package_step: bool = True,
) -> dict[str, Any]:
    """validate → train → gate → package → report; returns the step results and the status.

    The steps overlap where they can: the production model loads while the data is checked
    and the candidate fits, and the candidate is gated (in memory: the object MLflow is
    serialising and checks by loading back) while the registry logs it. Only a version that
    passes its gate is packaged.
    """
    for name in OUTPUTS:  # a report must never mix this run with an earlier one
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / MODEL_COPY_DIR, ignore_errors=True)
    champion = _in_background(load_champion, config, registry)
    progress("[1/5] validate")
    validation = validate(config)
    write_json(out_dir / "validation.json", validation)
    result: dict[str, Any] = {"validation": validation, "status": "fail"}
    try:
        if validation["passed"]:
            progress("[2/5] train")
            fitted = fit_locked(config, progress)
            registered = register(config, registry, fitted, out_dir, progress)
            progress("[3/5] gate")
            judgement = judge(config, fitted.model, champion.result, fitted.digests, progress)
            result["train"] = registered()
            candidate = registry.get(config.name, result["train"]["version"])
            rows = training_rows(config, candidate, fitted.digests["train"])
            result["gate"] = record_gate(
                config, registry, out_dir, candidate, judgement, rows, progress
            )
            result["status"] = result["gate"]["status"]
            if result["status"] == "pass" and package_step:
                from slipway.serve.packaging import package  # deferred: imports the serving stack

                progress("[4/5] package")
                version = result["train"]["version"]
                result["package"] = package(config, registry, version, out_dir, progress)
    finally:
        progress("[5/5] report")
        result["report"], result["markdown"] = write_report(out_dir)
    return result


def training_rows(config: ModelConfig, candidate: ModelRef, trained_on: str | None) -> pd.DataFrame:
    """The locked training file as read (before imputation): the rows ``candidate`` was
    fitted on, whose SHA-256 is ``trained_on``; :class:`DriftError` for any other file."""
    path = split_paths(config)["train"]
    if not trained_on or sha256_file(path) != trained_on:
        raise DriftError(
            f"{path} is not the data {candidate.uri} was trained on "
            f"(sha256 {trained_on or 'not recorded'}): its reference profile needs those rows",
            "gate the version from the commit it was trained at, or train a new version",
        )
    return read_dataset(path)


def record_gate(
    config: ModelConfig,
    registry: Registry,
    out_dir: Path,
    candidate: ModelRef,
    judgement: Judgement,
    train_rows: pd.DataFrame,
    progress: Progress,
) -> dict[str, Any]:
    """Store the candidate's reference profile, then record the gate's result naming it.

    The profile is built once, from the training rows and the eval scores the gate computed;
    the version's run stores it (``slipway.drift.profile``) and ``profile.json`` holds a copy.
    It is stored first, so a version the gate tagged always has its profile.
    """
    threshold = DECISION_THRESHOLD if judgement.threshold is None else judgement.threshold
    profile = build_profile(
        config,
        train_rows,
        judgement.probabilities,
        judgement.labels,
        threshold,
        judgement.metrics,
        candidate.version,
    )
    progress(f"storing the reference profile {ARTIFACT} with {candidate.uri}")
    sha256 = store_profile(registry, candidate, profile, copy_to=out_dir / PROFILE_FILE)
    named = {"artifact": ARTIFACT, "sha256": sha256}
    return record(config, registry, out_dir, candidate, judgement, named)


def _in_background(function: Callable[..., Any], *args: Any) -> Future[Any]:
    """Run ``function`` on a daemon thread (one a failed run need not wait for)."""
    future: Future[Any] = Future()

    def run() -> None:
        try:
            future.set_result(function(*args))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name=function.__name__, daemon=True).start()
    return future
