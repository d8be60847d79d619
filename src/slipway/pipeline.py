"""Multi-step flows: ``slipway pr`` (the PR workflow on the working tree) and ``slipway demo``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from slipway.config import ModelConfig
from slipway.errors import SlipwayError
from slipway.fsutil import write_json
from slipway.progress import Progress
from slipway.propose.datasets import split_paths, validate, write_lock
from slipway.propose.gate import CHAMPION_ALIAS, judge, load_champion, record
from slipway.propose.report import write_report
from slipway.propose.training import fit_locked, register
from slipway.registry import MODEL_COPY_DIR, Registry

OUTPUTS = ("validation.json", "train.json", "gate.json", "package.json", "report.md")
# The demo's first model: deliberately small, so the challenger has something to beat.
DEMO_CHAMPION_PARAMS: dict[str, Any] = {"n_estimators": 20, "max_depth": 4}


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


def ensure_demo_data(config: ModelConfig, progress: Progress) -> None:
    """Generate the sample data with the model project's simulator when it is missing."""
    paths = split_paths(config)
    if all(path.is_file() for path in paths.values()):
        return
    progress("generating sample data with model/simulate.py")
    script = config.root / "simulate.py"
    out = paths["train"].parent
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SlipwayError(f"{script} failed: {done.stderr.strip()}", f"fix {script}")
    write_lock(config)


def run_demo(
    config: ModelConfig, registry: Registry, out_dir: Path, progress: Progress
) -> dict[str, Any]:
    """A first model, promoted to production by alias, then a challenger gated against it."""
    ensure_demo_data(config, progress)
    progress("== first model (small forest) ==")
    first = run_pr(config.with_params(DEMO_CHAMPION_PARAMS), registry, out_dir / "first", progress)
    if first["status"] != "pass":
        raise SlipwayError(
            f"the demo's first model did not pass its gates; see {first['report']}",
            "inspect the report, fix data or params in model/, and run `make demo` again",
        )
    version = first["train"]["version"]
    registry.set_alias(config.name, CHAMPION_ALIAS, version)
    progress(f"promoted {config.name} v{version} to @{CHAMPION_ALIAS}")
    progress("== challenger (params from slipway.yaml) ==")
    return run_pr(config, registry, out_dir, progress)
