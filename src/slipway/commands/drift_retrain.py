"""The command that closes the loop: ``retrain-pr``."""

from __future__ import annotations

import argparse

from slipway.commands.common import (
    config_of,
    github_output,
    progress,
    registry_of,
    report_pull_request,
)


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
        github_output({"pull-request": ""})
        return 1
    for path in document.get("written", []):
        progress(f"wrote {path}")
    report_pull_request(document["pull_request"])
    return 0
