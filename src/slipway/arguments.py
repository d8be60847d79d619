"""The ``slipway`` command line's arguments: one sub-command per verb, each with ``--help``."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from pathlib import Path

from slipway import __version__
from slipway.fsutil import DEFAULT_CONFIG

DEFAULT_OUT = Path(".slipway/out")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slipway",
        description="Ship machine-learning models through pull requests.",
        epilog="Exit codes: 0 ok, 1 a check failed, 2 usage or environment error.",
    )
    parser.add_argument("--version", action="version", version=f"slipway {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="model project configuration (default: %(default)s)",
    )
    common.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="directory for JSON and Markdown outputs (default: %(default)s)",
    )
    params = argparse.ArgumentParser(add_help=False)
    params.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="override a training param from slipway.yaml (repeatable)",
    )
    as_of = argparse.ArgumentParser(add_help=False)
    as_of.add_argument(
        "--as-of",
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="reference date for the freshness check (default: today)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "validate",
        parents=[common, as_of],
        help="check datasets against the contract",
        description="Check the train and eval sets (or the FILES given) against "
        "the data contract in slipway.yaml. Exit 1 on any violation.",
    )
    p.add_argument("files", nargs="*", help="datasets to check (default: train and eval)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the report to PATH")

    p = sub.add_parser(
        "lock",
        parents=[common, as_of],
        help="record digests of valid data in the lock",
        description="Validate the data, then write its digests to the data lock.",
    )

    p = sub.add_parser(
        "train",
        parents=[common, params],
        help="train and register a version",
        description="Check the data lock, fit model/train.py's pipeline, log it to "
        "MLflow and register a new model version.",
    )

    p = sub.add_parser(
        "gate",
        parents=[common],
        help="judge a version against production",
        description="Evaluate the candidate and @production on the frozen eval set "
        "and apply every gate. Exit 1 when a gate fails.",
    )
    _version_option(p, "gate")

    p = sub.add_parser(
        "package",
        parents=[common],
        help="build the Bento of a version",
        description="Import a registered version into the repo-local BentoML store by exact "
        "tag and build its Bento offline; the same version again reuses both.",
    )
    _version_option(p, "package")
    p.add_argument(
        "--image",
        metavar="REF",
        help="instead of building: record REF (REPO:TAG@sha256:DIGEST), the image "
        "`bentoml containerize` built from the version's Bento and pushed, on the version; a "
        "kubernetes target's promotion puts it in the manifest",
    )

    p = sub.add_parser(
        "serve",
        parents=[common],
        help="serve an environment on 127.0.0.1",
        description="Start `bentoml serve` on 127.0.0.1 for the versions in "
        "environments/ENV.yaml, wait until it is ready and record its PID.",
    )
    p.add_argument("environment", metavar="ENV", help="staging or production")
    p.add_argument("--stop", action="store_true", help="stop the server of ENV")
    p.add_argument(
        "--port", type=int, help="port on 127.0.0.1 (default: 3000 staging, 3001 production)"
    )
    p.add_argument(
        "--workers",
        type=_at_least_one,
        default=1,
        metavar="N",
        help="worker processes sharing the port, each with the models loaded and at most "
        "SLIPWAY_MAX_CONCURRENCY (default 32) requests at once, then 503 with Retry-After; "
        "a worker that dies is replaced (default: %(default)s)",
    )
    _environments_option(p)
    _timeout_option(p, "readiness")

    p = sub.add_parser(
        "smoke",
        parents=[common],
        help="smoke-test a running service",
        description="Send eval-set records to URL and check readiness, metadata, the answers, "
        "the error format and latency. Exit 1 when a check fails.",
    )
    p.add_argument("url", metavar="URL", help="base URL, e.g. http://127.0.0.1:3000")
    p.add_argument("--rows", type=int, default=20, help="eval rows to send (default: %(default)s)")
    _max_p95_option(p)

    p = sub.add_parser(
        "report",
        parents=[common],
        help="render the Markdown report",
        description="Render OUT/report.md from the JSON outputs (and the GitHub "
        "step summary when GITHUB_STEP_SUMMARY is set). With --publish, upsert it as the one "
        "sticky comment on the pull request; without a token or PR context it writes "
        "OUT/comment.md and says what it would have posted.",
    )
    p.add_argument(
        "--publish",
        action="store_true",
        help="post or update the sticky PR comment (needs GITHUB_TOKEN, GITHUB_REPOSITORY "
        "and a PR number from SLIPWAY_PR_NUMBER or the event payload)",
    )

    p = sub.add_parser(
        "promote",
        parents=[common],
        help="point an environment at a version, or check such a change",
        description="Rewrite environments/ENV.yaml to serve version N: only its version and "
        "digest lines change, and only for a version that passed its gate and was packaged "
        "(exit 1 otherwise, nothing written). With --check, run every promotion check on the "
        "manifest against the git ref --base and write OUT/promote.json; exit 1 when one fails. "
        "With --merged (after a model PR merged) or --when-soaked (staging's version, once it "
        "soaked) the version is found for you. With GitHub context (GITHUB_TOKEN, "
        "GITHUB_REPOSITORY) the change goes to one pull request on slipway/promote-ENV.",
    )
    p.add_argument(
        "environment",
        metavar="ENV",
        nargs="?",
        help="staging or production (with --check: default, the manifest the change touches)",
    )
    p.add_argument("--version", dest="version", type=int, metavar="N", help="version to promote")
    p.add_argument(
        "--check",
        action="store_true",
        help="check the manifest as it stands against --base instead of changing it",
    )
    p.add_argument(
        "--comment",
        action="store_true",
        help="with --check in a pull_request run: keep one comment with every check's reason",
    )
    p.add_argument(
        "--merged",
        action="store_true",
        help="promote the version the merged pull request of commit --sha (default: "
        "GITHUB_SHA or HEAD) registered and gated; runs the propose flow first when model/ "
        "changed since the gated commit",
    )
    p.add_argument("--sha", metavar="SHA", help="with --merged: the merge commit on the base")
    p.add_argument(
        "--when-soaked",
        action="store_true",
        help="promote the version ENV's `promotion.from` stage runs, once it has soaked there "
        "with passing smoke tests; otherwise say how long is left and exit 0",
    )
    p.add_argument(
        "--base",
        default="main",
        metavar="REF",
        help="git ref the promotion is compared with (default: %(default)s)",
    )
    _environments_option(p)

    p = sub.add_parser(
        "deploy",
        parents=[common],
        help="run the version environments/ENV.yaml names, behind smoke tests",
        description="Fetch the Bento archive of the manifest's version (refused unless its "
        "digest is the manifest's), start it on 127.0.0.1 beside the version serving, smoke-test "
        "it, then switch to it, stop the previous server and move the MLflow alias ENV. When the "
        "smoke tests fail the previous version keeps serving and the exit code is 1. For "
        "`target: kubernetes`: wait (--timeout) until the cluster of KUBECONFIG runs the "
        "manifest's image and its rollout is complete, exit 1 if not; without KUBECONFIG say "
        "so and exit 0. Writes OUT/deploy.json.",
    )
    p.add_argument("environment", metavar="ENV", help="staging or production")
    _environments_option(p)
    p.add_argument("--rows", type=int, default=20, help="eval rows to smoke-test with")
    _max_p95_option(p)
    _timeout_option(p, "the new server's readiness")

    p = sub.add_parser(
        "rollback",
        parents=[common],
        help="point an environment back at its last good version",
        description="Rewrite environments/ENV.yaml to the newest earlier version whose deploy "
        "in ENV succeeded (or --to N); only the version and digest lines change. The change is "
        "left for a pull request, or committed at once with --direct.",
    )
    p.add_argument("environment", metavar="ENV", help="staging or production")
    p.add_argument("--to", metavar="N", help="the version to go back to")
    p.add_argument("--direct", action="store_true", help="commit the change now (for emergencies)")
    _environments_option(p)

    p = sub.add_parser(
        "render",
        parents=[common],
        help="write a kubernetes target's objects from environments/ENV.yaml",
        description="For a manifest with `target: kubernetes`: write the Deployment (the "
        "version's image by tag and digest), Service, HorizontalPodAutoscaler, "
        "PodDisruptionBudget and kustomization.yaml under environments/kubernetes/ENV/, and the "
        "Argo CD Application and Flux Kustomization that sync that folder under "
        "environments/kubernetes/argocd/ENV.yaml and flux/ENV.yaml. Every object is validated "
        "against the Kubernetes schemas first. The output depends on the manifest only.",
    )
    p.add_argument("environment", metavar="ENV", help="staging or production")
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 when the committed files differ from what the manifest "
        "renders (name them)",
    )
    _environments_option(p)

    p = sub.add_parser(
        "canary-report",
        parents=[common],
        help="decide a canary from its prediction log: promote, abort or wait",
        description="Read the prediction log of ENV's canary (stable and candidate routes, "
        "joined with --labels when given), show per route the error rate, p95 latency, share "
        "predicted high-risk and recall with their intervals, and judge the limits under "
        "`canary:` in slipway.yaml. Writes OUT/canary.json; exit 0 for any verdict. With "
        "--apply: promote finishes the canary in the manifest and opens its pull request; "
        "abort ends it in the manifest, deploys the stable version alone at once and opens "
        "the pull request; wait changes nothing.",
    )
    p.add_argument("environment", metavar="ENV", help="staging or production")
    p.add_argument(
        "--labels",
        type=Path,
        metavar="PATH",
        help="delayed labels to join by release id: a CSV or JSONL file with the id and "
        "target columns of slipway.yaml (default: none; the recall limit is not judged)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--apply",
        action="store_true",
        help="act on the verdict: finish (promote) or abort the canary",
    )
    p.add_argument(
        "--base",
        default="main",
        metavar="REF",
        help="base branch of the canary pull request (default: %(default)s)",
    )
    _environments_option(p)
    p.add_argument(
        "--rows", type=int, default=20, help="eval rows to smoke-test an abort's deploy with"
    )
    _max_p95_option(p)
    _timeout_option(p, "the stable server's readiness after an abort")

    p = sub.add_parser(
        "history",
        parents=[common],
        help="every version an environment ran, newest first",
        description="Every change of environments/ENV.yaml's version or digest, from its git "
        "log (when, who, commit, pull request), with each version's gate verdict, smoke result "
        "and deploy result in ENV from the registry, and whether it was rolled back. No cap.",
    )
    p.add_argument("environment", metavar="ENV", help="staging or production")
    _environments_option(p)
    p.add_argument("--json", action="store_true", help="print the history as JSON")

    p = sub.add_parser(
        "status",
        parents=[common],
        help="what git, the servers and the registry say runs where",
        description="For each environment: the manifest's version, the version its server "
        "answers with, and the version its MLflow alias points at. Exit 1 when any disagree, "
        "with the fix for each.",
    )
    _environments_option(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")

    p = sub.add_parser(
        "drift",
        parents=[common],
        help="judge an environment's traffic against its versions' reference profiles",
        description="Read the prediction log of the versions environments/ENV.yaml serves, "
        "over the last n windows (drift.persistence in slipway.yaml), join the delayed labels, "
        "and judge against each version's reference profile: data drift per feature (PSI with "
        "its interval, KS or chi-square, Benjamini-Hochberg), prediction drift, realised and "
        "estimated performance, data quality. Writes OUT/drift.json, drift.md and drift.html. "
        "Exit 0 no_drift or inconclusive, 1 drifted (in k of the n windows), 2 error (e.g. a "
        "version without a reference profile).",
    )
    p.add_argument("environment", metavar="ENV", help="staging or production")
    p.add_argument(
        "--since",
        type=moment,
        metavar="TIME",
        help="start of the current window, an ISO date or time, UTC unless it names a zone "
        "(default: --until minus drift.window_days); every window is as long",
    )
    p.add_argument(
        "--until", type=moment, metavar="TIME", help="end of the current window (default: now)"
    )
    p.add_argument(
        "--days",
        type=float,
        metavar="N",
        help="length of each window in days (default: drift.window_days)",
    )
    p.add_argument(
        "--labels",
        type=Path,
        metavar="PATH",
        help="delayed labels: a CSV or JSONL file, or a directory of them, with release_id, "
        "high_risk and labelled_at (default: drift.labels; none: performance is not judged)",
    )
    p.add_argument(
        "--log",
        metavar="SOURCE",
        help="the prediction log: a directory, a file, or a URI such as s3://bucket/prefix "
        "(default: drift.log, else the environment's log directory)",
    )
    p.add_argument("--json", action="store_true", help="print the document as JSON")
    _environments_option(p)

    p = sub.add_parser(
        "pr",
        parents=[common, params],
        help="validate, train, gate, package and report",
        description="Run the pull-request workflow on the working tree.",
    )
    p.add_argument(
        "--skip-package",
        action="store_true",
        help="stop after the gate: no Bento is built (faster local iterations)",
    )

    p = sub.add_parser(
        "retrain-pr",
        parents=[common],
        help="open the one retrain pull request when drift or age calls for it",
        description="Retrain when the drift report (--drift) says drifted, or when the "
        "version environments/ENV.yaml names was registered more than drift.max_age_days ago; "
        "otherwise say why not and exit 0. Builds the new training window (the labelled "
        "prediction log, the data source when the log holds too few new releases, and the "
        "current data, merged by date), validates and locks it in OUT/retrain/, and carries "
        "it with the evidence to ONE pull request on slipway/retrain (updated, never "
        "duplicated; never pushed over a person's commits; not reopened after it was closed "
        "unmerged on the same evidence). Without GITHUB_TOKEN and GITHUB_REPOSITORY the body "
        "goes to OUT/retrain-pr.md. Exit 1 when the new window breaks the data contract.",
    )
    p.add_argument(
        "--drift",
        type=Path,
        metavar="PATH",
        help="the drift report of `slipway drift ENV` (default: OUT/drift.json; when that is "
        "missing only the age is judged)",
    )
    p.add_argument(
        "--environment",
        default="production",
        metavar="ENV",
        help="environment whose drift and version are judged (default: %(default)s)",
    )
    p.add_argument(
        "--base",
        default="main",
        metavar="REF",
        help="base branch of the retrain pull request (default: %(default)s)",
    )
    p.add_argument(
        "--write",
        action="store_true",
        help="also write the new train, eval and lock over the model project's (local use)",
    )
    _environments_option(p)

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="the whole lifecycle on sample data",
        description="The whole lifecycle, models moved by manifest changes only: generate "
        "data if missing; train, gate and package a first model; promote, merge and deploy it "
        "to staging, then production; gate a challenger against it, run it as a 10%% canary on "
        "live traffic until the canary report decides, finish the canary; send drifted traffic "
        "and delayed labels, run the drift check, open (print) the retrain pull request and gate "
        "the retrained candidate against production; print each pull request it would open, "
        "a timeline and the production history. Works in a scratch git repository with its own "
        "registry and servers under OUT/ (gitops/, state/); stops every server.",
    )
    return parser


def moment(text: str) -> datetime:
    """An ISO date or time as an aware datetime; one without a zone is UTC."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date or time (e.g. 2026-11-04 or 2026-11-04T12:00:00Z)"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _version_option(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument(
        "--version",
        dest="version",
        metavar="N",
        help=f"version to {verb} (default: the one in OUT/train.json)",
    )


def _environments_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--environments",
        type=Path,
        default=Path("environments"),
        metavar="DIR",
        help="directory of the environment manifests (default: %(default)s)",
    )


def _max_p95_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-p95-ms",
        type=float,
        default=250.0,
        metavar="MS",
        help="largest allowed p95 latency of single-record calls (default: %(default)s)",
    )


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _timeout_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=90.0,
        metavar="S",
        help=f"seconds to wait for {what} (default: %(default)s)",
    )
