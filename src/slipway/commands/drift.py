"""The drift commands: ``slipway drift ENV``, and ``slipway retrain-pr`` that closes the loop."""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from slipway.commands.common import (
    config_of,
    github_output,
    progress,
    registry_of,
    report_pull_request,
)


def cmd_drift(args: argparse.Namespace) -> int:
    from slipway.drift import check
    from slipway.drift.profile import load_profile
    from slipway.errors import ConfigError, DriftError, RegistryError
    from slipway.manifests import load_manifest, manifest_path
    from slipway.registry import default_tracking_uri
    from slipway.registry_rest import RestReads
    from slipway.serve.prediction_log import log_directory

    config = config_of(args)
    environment = args.environment
    manifest = load_manifest(manifest_path(environment, args.environments))
    if manifest.model != config.name:
        raise ConfigError(
            f"environments/{environment}.yaml serves {manifest.model}, not {config.name}",
            "pass the --config of the model the manifest names",
        )
    until = args.until or datetime.now(UTC)
    length = _length(args, config.drift.window_days, until)
    versions = [str(v) for v in manifest.versions()]
    if not versions:
        nothing = f"environments/{environment}.yaml names no version: nothing serves to judge"
        progress(nothing)
        document = check.unjudged(
            config, environment, [], until, length, check.INCONCLUSIVE, [nothing]
        )
        return _publish(args, document)
    registry = RestReads(default_tracking_uri(), registry_of)
    profiles: dict[str, dict[str, Any]] = {}
    problems: dict[str, dict[str, str]] = {}
    try:
        for version in versions:
            progress(f"loading the reference profile of {config.name} v{version}")
            try:
                profiles[version] = load_profile(registry, config.name, version)
            except (DriftError, RegistryError) as exc:
                problems[version] = {"error": exc.message, "fix": exc.hint}
    finally:
        registry.close()
    if problems:
        notes = [f"v{v}: {p['error']}; fix: {p['fix']}" for v, p in problems.items()]
        document = check.unjudged(
            config, environment, versions, until, length, check.ERROR, notes, problems
        )
        _publish(args, document)
        raise DriftError(
            f"no drift check of {environment}: " + "; ".join(p["error"] for p in problems.values()),
            "; ".join(dict.fromkeys(p["fix"] for p in problems.values())),
        )
    source = args.log or _configured_log(config) or log_directory(environment)
    labels, notes = _labels(args, config, until)
    window = (
        f"{until - length * config.drift.persistence.n:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M}"
    )
    progress(f"reading the prediction log {source} from {window} (UTC)")
    document = check.check_drift(
        config, environment, profiles, source, until, length, labels, progress, notes=notes
    )
    return _publish(args, document)


def _length(args: argparse.Namespace, window_days: float, until: datetime) -> timedelta:
    """How long each window is: ``--since`` to ``--until``, or ``--days``, or the config's."""
    from slipway.errors import ConfigError

    if args.since is not None and args.days is not None:
        raise ConfigError("--since and --days both set the window", "pass one of them")
    if args.since is not None:
        if args.since >= until:
            raise ConfigError(
                f"--since {args.since.isoformat()} is not before --until {until.isoformat()}",
                "pass a --since earlier than --until (default: now)",
            )
        return until - args.since
    days = window_days if args.days is None else args.days
    if days <= 0:
        raise ConfigError(f"--days {days:g} is not a length of time", "pass a number above 0")
    return timedelta(days=days)


def _configured_log(config) -> str | Path | None:
    """``drift.log``: a URI as it stands, a path from the model project."""
    configured = config.drift.log
    if configured is None:
        return None
    return configured if "://" in configured else config.path(Path(configured))


def _labels(args: argparse.Namespace, config, until: datetime):
    """The delayed labels of ``--labels`` (which must exist) or ``drift.labels`` (which may
    not yet), and a note when there are none."""
    from slipway.drift.labels import read_labels

    path = args.labels
    if path is None and config.drift.labels is not None:
        path = config.path(config.drift.labels)
        if not path.exists():
            return None, [f"drift.labels names {path}, which does not exist yet"]
    if path is None:
        return None, []
    labels = read_labels(
        path, config.data.id_column, config.target.column, config.target.positive, until
    )
    progress(f"{len(labels.values):,} delayed labels from {labels.files} file(s) in {path}")
    return labels, []


def _publish(args: argparse.Namespace, document: dict[str, Any]) -> int:
    """Write the reports, the step summary and outputs; the exit code of the status."""
    from slipway.drift.check import DRIFTED
    from slipway.drift.report import render_text, write_reports

    paths = write_reports(document, args.out)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with Path(summary).open("a", encoding="utf-8") as handle:
            handle.write(paths["md"].read_text(encoding="utf-8") + "\n")
    print(json.dumps(document, indent=2) if args.json else "\n".join(render_text(document)))
    progress(f"wrote {paths['json']}, {paths['md'].name} and {paths['html'].name}")
    github_output(
        {
            "status": document["status"],
            "report": str(paths["json"]),
            "triggers": ",".join(document["triggers"]),
        }
    )
    return 1 if document["status"] == DRIFTED else 0


def cmd_retrain_pr(args: argparse.Namespace) -> int:
    from slipway.drift import retrain
    from slipway.registry import default_tracking_uri
    from slipway.registry_rest import RestReads

    config = config_of(args)
    # One version's creation time: over REST when a tracking server answers, no MLflow import.
    registry = RestReads(default_tracking_uri(), registry_of)
    try:
        document = retrain.run(
            config,
            args.environment,
            registry,
            args.environments,
            args.drift or args.out / "drift.json",
            args.out,
            args.base,
            drift_required=args.drift is not None,
            write=args.write,
            progress=progress,
        )
    finally:
        registry.close()
    triggers = ",".join(t["kind"] for t in document["triggers"])
    github_output({"retrain": str(document["retrain"]).lower(), "triggers": triggers})
    if not document["retrain"]:
        print(f"no retraining of {config.name}: " + "; ".join(document["not_triggered"]))
        github_output({"pull-request": ""})
        return 0
    window = document["window"]
    train, evaluation = window["splits"]["train"], window["splits"]["eval"]
    print(retrain.title(document))
    print(
        f"new window: {train['rows']:,} train rows, {evaluation['rows']:,} eval rows "
        f"({window['from']['log']:,} from the log, {window['from']['source']:,} from the data "
        f"source, {window['from']['left_out']:,} oldest left out) in {window['root']}"
    )
    if not window["valid"]:
        print(
            f"the new window breaks the data contract ({window['violations']} violation(s), "
            f"{window['validation']}): no pull request"
        )
        for broken in window.get("broken", []):
            print(f"  {broken}")
        print(
            "fix: if the world really changed (a label share, a range or a category the contract "
            "did not expect), widen that rule in model/slipway.yaml in a pull request; else "
            "mend the log or the data source the window is built from"
        )
        github_output({"pull-request": ""})
        return 1
    for path in document.get("written", []):
        progress(f"wrote {path}")
    report_pull_request(document["pull_request"])
    return 0
