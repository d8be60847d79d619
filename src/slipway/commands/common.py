"""What the commands share: progress lines, the configuration, the registry, step outputs.

Printing belongs to this layer (the ``slipway`` command line); the flows below it return data.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _name, _value in (
    ("MLFLOW_DISABLE_TELEMETRY", "true"),
    ("BENTOML_DO_NOT_TRACK", "true"),
    ("DO_NOT_TRACK", "1"),
):
    os.environ.setdefault(_name, _value)

_START = time.monotonic()


def progress(message: str) -> None:
    """Progress goes to stderr so stdout stays clean for reports and JSON."""
    print(f"[slipway {time.monotonic() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


def config_of(args: argparse.Namespace):
    from slipway.config import load_config, parse_param  # deferred: `report` needs no pydantic

    config = load_config(args.config)
    overrides = dict(parse_param(text) for text in getattr(args, "param", None) or [])
    return config.with_params(overrides) if overrides else config


def registry_of(in_child: bool = False, logs_models: bool = False):
    """The MLflow registry; with ``in_child``, run by a child process that imports MLflow
    while this one works. ``logs_models`` for commands that train."""
    from slipway.registry import MlflowRegistry
    from slipway.registry_process import ProcessRegistry  # deferred: MLflow is slow

    kind = ProcessRegistry if in_child else MlflowRegistry
    return kind(logs_models=logs_models)


def github_output(values: dict[str, str | None]) -> None:
    target = os.environ.get("GITHUB_OUTPUT")
    if target:
        with Path(target).open("a", encoding="utf-8") as handle:
            for key, value in values.items():
                handle.write(f"{key}={value if value is not None else ''}\n")


def report_pull_request(result: dict) -> None:
    if result["action"] == "not posted":
        progress(f"{result['reason']}: the pull request it would open is in {result['path']}")
    elif not result.get("pushed", True):
        progress(f"did not push to {result['branch']}: {result['reason']} ({result['action']})")
    else:
        progress(f"pull request {result['action']}: {result['url']} (branch {result['branch']})")
        if result.get("reviewers_error"):
            progress(f"could not request the owners' review: {result['reviewers_error']}")
    github_output({"pull-request": str(result.get("number") or "")})
