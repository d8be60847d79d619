"""``slipway`` command line: parse arguments, dispatch, map errors to exit codes.

Exit codes: 0 success, 1 a check failed (data validation or a gate), 2 usage, configuration or
environment error. Every message says what to do next.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

from slipway import __version__
from slipway.config import DEFAULT_CONFIG, load_config, parse_param
from slipway.errors import SlipwayError

for _name, _value in (
    ("MLFLOW_DISABLE_TELEMETRY", "true"),
    ("BENTOML_DO_NOT_TRACK", "true"),
    ("DO_NOT_TRACK", "1"),
):
    os.environ.setdefault(_name, _value)

DEFAULT_OUT = Path(".slipway/out")
_START = time.monotonic()


def progress(message: str) -> None:
    """Progress goes to stderr so stdout stays clean for reports and JSON."""
    print(f"[slipway {time.monotonic() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


def _config(args: argparse.Namespace):
    config = load_config(args.config)
    overrides = dict(parse_param(text) for text in getattr(args, "param", None) or [])
    return config.with_params(overrides) if overrides else config


def _registry(in_child: bool = False, logs_models: bool = False):
    """The MLflow registry; with ``in_child``, run by a child process that imports MLflow
    while this one works. Only for commands whose MLflow calls all go through the registry:
    packaging calls MLflow itself. ``logs_models`` for commands that train."""
    from slipway.registry import MlflowRegistry
    from slipway.registry_process import ProcessRegistry  # deferred: MLflow is slow

    kind = ProcessRegistry if in_child else MlflowRegistry
    return kind(logs_models=logs_models)


def cmd_validate(args: argparse.Namespace) -> int:
    from slipway.datasets import validate
    from slipway.fsutil import write_json

    config = _config(args)
    paths = {Path(f).stem: Path(f) for f in args.files} if args.files else None
    report = validate(config, paths, args.as_of)
    write_json(args.out / "validation.json", report)
    if args.json:
        write_json(args.json, report)
    for dataset in report["datasets"]:
        rows = f" ({dataset['rows']} rows)" if "rows" in dataset else ""
        print(f"{dataset['split']}{rows}: {len(dataset['violations'])} violation(s)")
        for v in dataset["violations"]:
            lines = ", ".join(str(e["line"]) for e in v["examples"])
            print(
                f"  [{v['check']}] {v['column'] or '-'}: {v['message']} — {v['count']} row(s)"
                + (f", e.g. line {lines}" if lines else "")
            )
    print("data is valid" if report["passed"] else f"{report['violation_count']} violation(s)")
    _github_output(
        {
            "passed": str(report["passed"]).lower(),
            "violations": str(report["violation_count"]),
            "report": str(args.out / "validation.json"),
        }
    )
    return 0 if report["passed"] else 1


def cmd_lock(args: argparse.Namespace) -> int:
    from slipway.datasets import lock_path, validate, write_lock

    config = _config(args)
    if not validate(config, as_of=args.as_of)["passed"]:
        print("refusing to lock data that fails validation; run `slipway validate`")
        return 1
    document = write_lock(config)
    for split, entry in document["files"].items():
        print(f"{split}: {entry['path']} {entry['rows']} rows sha256 {entry['sha256'][:12]}")
    print(f"wrote {lock_path(config)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from slipway.training import train

    registry = _registry(in_child=True, logs_models=True)
    try:
        document = train(_config(args), registry, args.out, progress)
    finally:
        registry.close()
    print(f"registered {document['model']} version {document['version']} ({document['model_uri']})")
    _github_output(
        {
            "version": document["version"],
            "model-uri": document["model_uri"],
            "run-id": document["run_id"],
        }
    )
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    registry = _registry(in_child=True)  # MLflow loads in the child while gating imports
    try:
        from slipway.gating import run_gate

        document = run_gate(_config(args), registry, args.out, args.version, progress)
    finally:
        registry.close()
    for g in document["gates"]:
        print(f"{g['status']:>12}  {g['gate']}:{g['metric']}  {g['reason']}")
    print(f"gate {document['status']} for version {document['candidate']['version']}")
    _github_output({"status": document["status"]})
    return 0 if document["status"] == "pass" else 1


def cmd_package(args: argparse.Namespace) -> int:
    from slipway.errors import PackagingError
    from slipway.packaging import package, packaged_version

    version = args.version or packaged_version(args.out)
    if version is None:
        raise PackagingError(
            f"no version to package: {args.out / 'train.json'} does not exist",
            "pass --version N or run `slipway train` first",
        )
    document = package(_config(args), _registry(), version, args.out, progress, args.config)
    print(f"bento {document['bento_tag']} digest {document['digest']}")
    _github_output({"bento-tag": document["bento_tag"], "digest": document["digest"]})
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from slipway.manifests import manifest_path
    from slipway.servers import start_server, stop_server

    path = manifest_path(args.environment, args.environments)
    if args.stop:
        stopped = stop_server(args.environment)
        print(
            f"stopped {args.environment} (pid {stopped['pid']})"
            if stopped
            else f"{args.environment} is not being served"
        )
        return 0
    config = _config(args)
    running = start_server(
        config, _registry(), path, args.config, args.port, args.timeout, progress
    )
    print(
        f"{args.environment} v{running['version']} ready at {running['url']} (pid {running['pid']})"
    )
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    from slipway.contract import read_dataset
    from slipway.fsutil import write_json
    from slipway.serving import records_from_frame, smoke

    config = _config(args)
    frame = read_dataset(config.path(config.data.eval)).head(args.rows)
    document = smoke(args.url, records_from_frame(frame, config), args.max_p95_ms)
    write_json(args.out / "smoke.json", document)
    for check in document["checks"]:
        print(f"{'pass' if check['passed'] else 'FAIL':>5}  {check['check']}: {check['detail']}")
    print("smoke tests passed" if document["passed"] else "smoke tests failed")
    return 0 if document["passed"] else 1


def cmd_report(args: argparse.Namespace) -> int:
    from slipway.report import write_report

    path, markdown = write_report(args.out)
    print(markdown)
    progress(f"wrote {path}")
    url = ""
    if args.publish:
        from slipway.publish import publish_report

        result = publish_report(markdown, args.out)
        if result["posted"]:
            url = result["url"] or ""
            progress(f"comment {result['action']} on PR #{result['pr_number']}: {result['url']}")
        else:
            progress(f"{result['reason']}; the comment it would post is in {result['path']}")
    else:
        from slipway.publish import record_pr

        if recorded := record_pr(args.out):
            progress(f"recorded the pull request in {recorded} for the report workflow")
    _github_output({"report": str(path), "comment-url": url})
    return 0


def cmd_pr(args: argparse.Namespace) -> int:
    from slipway.flows import run_pr

    registry = _registry(in_child=args.skip_package, logs_models=True)
    try:
        result = run_pr(
            _config(args), registry, args.out, progress, package_step=not args.skip_package
        )
    finally:
        registry.close()
    print(result["markdown"])
    progress(f"outputs in {args.out}/ — report: {result['report']}")
    return 0 if result["status"] == "pass" else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from slipway.flows import run_demo

    result = run_demo(_config(args), _registry(logs_models=True), args.out, progress)
    print(result["markdown"])
    progress(f"demo done — challenger report: {result['report']}")
    return 0


def _github_output(values: dict[str, str | None]) -> None:
    target = os.environ.get("GITHUB_OUTPUT")
    if target:
        with Path(target).open("a", encoding="utf-8") as handle:
            for key, value in values.items():
                handle.write(f"{key}={value if value is not None else ''}\n")


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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "validate",
        parents=[common],
        help="check datasets against the contract",
        description="Check the train and eval sets (or the FILES given) against "
        "the data contract in slipway.yaml. Exit 1 on any violation.",
    )
    p.add_argument("files", nargs="*", help="datasets to check (default: train and eval)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the report to PATH")
    p.add_argument(
        "--as-of",
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="reference date for the freshness check (default: today)",
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "lock",
        parents=[common],
        help="record digests of valid data in the lock",
        description="Validate the data, then write its digests to the data lock.",
    )
    p.add_argument(
        "--as-of",
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="reference date for the freshness check (default: today)",
    )
    p.set_defaults(func=cmd_lock)

    p = sub.add_parser(
        "train",
        parents=[common, params],
        help="train and register a version",
        description="Check the data lock, fit model/train.py's pipeline, log it to "
        "MLflow and register a new model version.",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "gate",
        parents=[common],
        help="judge a version against production",
        description="Evaluate the candidate and @production on the frozen eval set "
        "and apply every gate. Exit 1 when a gate fails.",
    )
    p.add_argument(
        "--version",
        dest="version",
        metavar="N",
        help="version to gate (default: the one in OUT/train.json)",
    )
    p.set_defaults(func=cmd_gate)

    p = sub.add_parser(
        "package",
        parents=[common],
        help="build the Bento of a version",
        description="Import a registered version into the repo-local BentoML store by exact "
        "tag and build its Bento offline; the same version again reuses both.",
    )
    p.add_argument(
        "--version",
        dest="version",
        metavar="N",
        help="version to package (default: the one in OUT/train.json)",
    )
    p.set_defaults(func=cmd_package)

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
        "--environments",
        type=Path,
        default=Path("environments"),
        metavar="DIR",
        help="directory of the environment manifests (default: %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=90.0,
        metavar="S",
        help="seconds to wait for readiness (default: %(default)s)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "smoke",
        parents=[common],
        help="smoke-test a running service",
        description="Send eval-set records to URL and check readiness, metadata, the answers, "
        "the error format and latency. Exit 1 when a check fails.",
    )
    p.add_argument("url", metavar="URL", help="base URL, e.g. http://127.0.0.1:3000")
    p.add_argument("--rows", type=int, default=20, help="eval rows to send (default: %(default)s)")
    p.add_argument(
        "--max-p95-ms",
        type=float,
        default=250.0,
        metavar="MS",
        help="largest allowed p95 latency of single-record calls (default: %(default)s)",
    )
    p.set_defaults(func=cmd_smoke)

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
    p.set_defaults(func=cmd_report)

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
    p.set_defaults(func=cmd_pr)

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="the whole lifecycle on sample data",
        description="Generate data if missing, train a first model, promote it "
        "to production, then gate a challenger against it.",
    )
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SlipwayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            print(f"::error::{json.dumps(exc.message)[1:-1]}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
