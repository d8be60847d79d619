"""``slipway pr``: the pull-request workflow on the working tree, its steps overlapping."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from slipway.config import ModelConfig
from slipway.fsutil import write_json
from slipway.progress import Progress
from slipway.propose.datasets import validate
from slipway.propose.gate import judge, load_champion, record
from slipway.propose.report import write_report
from slipway.propose.training import fit_locked, register
from slipway.registry import MODEL_COPY_DIR, Registry

OUTPUTS = ("validation.json", "train.json", "gate.json", "package.json", "report.md")


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
            result["gate"] = record(config, registry, out_dir, candidate, judgement)
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
