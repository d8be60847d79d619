"""``slipway`` command line: parse arguments, dispatch, map errors to exit codes.

Exit codes: 0 success, 1 a check failed (data validation or a gate), 2 usage, configuration or
environment error. Every message says what to do next.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from slipway.arguments import build_parser
from slipway.errors import SlipwayError

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


def _config(args: argparse.Namespace):
    from slipway.config import load_config, parse_param  # deferred: `report` needs no pydantic

    config = load_config(args.config)
    overrides = dict(parse_param(text) for text in getattr(args, "param", None) or [])
    return config.with_params(overrides) if overrides else config


def _registry(in_child: bool = False, logs_models: bool = False):
    """The MLflow registry; with ``in_child``, run by a child process that imports MLflow
    while this one works. ``logs_models`` for commands that train."""
    from slipway.registry import MlflowRegistry
    from slipway.registry_process import ProcessRegistry  # deferred: MLflow is slow

    kind = ProcessRegistry if in_child else MlflowRegistry
    return kind(logs_models=logs_models)


def cmd_validate(args: argparse.Namespace) -> int:
    from slipway.fsutil import write_json
    from slipway.propose.datasets import validate

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
    from slipway.propose.datasets import lock_path, validate, write_lock

    config = _config(args)
    report = validate(config, as_of=args.as_of)
    if not report["passed"]:
        print("refusing to lock data that fails validation; run `slipway validate`")
        return 1
    rows = {d["split"]: d["rows"] for d in report["datasets"] if "rows" in d}
    document = write_lock(config, rows)
    for split, entry in document["files"].items():
        print(f"{split}: {entry['path']} {entry['rows']} rows sha256 {entry['sha256'][:12]}")
    print(f"wrote {lock_path(config)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from slipway.propose.training import train

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
    from slipway.registry import default_tracking_uri
    from slipway.registry_rest import RestReads

    # Reads over REST; MLflow loads in the child meanwhile, for the champion and the tags.
    registry = RestReads(default_tracking_uri(), lambda: _registry(in_child=True), eager=True)
    try:
        from slipway.propose.gate import run_gate

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
    from slipway.serve.packaging import package, packaged_version

    version = args.version or packaged_version(args.out)
    if version is None:
        raise PackagingError(
            f"no version to package: {args.out / 'train.json'} does not exist",
            "pass --version N or run `slipway train` first",
        )
    from slipway.registry import default_tracking_uri
    from slipway.registry_rest import RestReads

    # With the copy `train` left, packaging reads one version's tags: over REST, no MLflow.
    registry = RestReads(default_tracking_uri(), lambda: _registry(in_child=True))
    try:
        document = package(_config(args), registry, version, args.out, progress, args.config)
    finally:
        registry.close()
    print(f"bento {document['bento_tag']} digest {document['digest']}")
    _github_output({"bento-tag": document["bento_tag"], "digest": document["digest"]})
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from slipway.manifests import manifest_path
    from slipway.serve.server import start_server, stop_server

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
    from slipway.fsutil import write_json
    from slipway.propose.contract import read_dataset
    from slipway.serve.smoke import records_from_frame, smoke

    config = _config(args)
    frame = read_dataset(config.path(config.data.eval)).head(args.rows)
    records = records_from_frame(frame, config)
    document = smoke(args.url, records, args.max_p95_ms, id_column=config.data.id_column)
    write_json(args.out / "smoke.json", document)
    for check in document["checks"]:
        print(f"{'pass' if check['passed'] else 'FAIL':>5}  {check['check']}: {check['detail']}")
    print("smoke tests passed" if document["passed"] else "smoke tests failed")
    return 0 if document["passed"] else 1


def cmd_report(args: argparse.Namespace) -> int:
    from slipway.propose.report import write_report

    path, markdown = write_report(args.out)
    print(markdown)
    progress(f"wrote {path}")
    url = ""
    if args.publish:
        from slipway.propose.comment import publish_report

        result = publish_report(markdown, args.out)
        if result["posted"]:
            url = result["url"] or ""
            progress(f"comment {result['action']} on PR #{result['pr_number']}: {result['url']}")
        else:
            progress(f"{result['reason']}; the comment it would post is in {result['path']}")
    else:
        from slipway.propose.comment import record_pr

        if recorded := record_pr(args.out):
            progress(f"recorded the pull request in {recorded} for the report workflow")
    _github_output({"report": str(path), "comment-url": url})
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from slipway.errors import ConfigError
    from slipway.promote import promotion
    from slipway.registry import default_tracking_uri
    from slipway.registry_rest import RestReads

    # A promotion reads one version's tags: over REST, with no MLflow, pandas or scikit-learn.
    registry = RestReads(default_tracking_uri(), _registry)
    if args.check:
        return _promote_check(args, registry)
    if args.environment is None:
        raise ConfigError("promote needs ENV (staging or production)", "slipway promote --help")
    version = args.version
    if args.merged:
        version = _merged_version(args, registry)
    elif args.when_soaked:
        from slipway.promote.automatic import soaked

        found = soaked(registry, args.environment, args.environments)
        progress(found["reason"])
        if not found["ready"]:
            _github_output({"version": "", "pull-request": ""})
            return 0
        version = found["version"]
    if version is None:
        raise ConfigError(
            "promote needs --version N, --merged, --when-soaked or --check",
            "pass the version to promote",
        )
    done = promotion.promote(args.environment, int(version), registry, args.environments)
    print(done["title"])
    print("\n".join(done["diff"]) or "(already there: nothing changed)")
    _github_output({"version": str(version)})
    _report_pull_request(promotion.pull_request(done, registry, args.out, args.base))
    return 0


def _promote_check(args: argparse.Namespace, registry) -> int:
    from slipway.promote import promotion, review

    context = review.pull_context()
    try:
        document = promotion.check(
            args.environment, registry, args.environments, args.base, context=context
        )
        path = promotion.write_check(document, args.out)
        for item in document["checks"]:
            print(f"{item['status']:>8}  {item['check']}: {item['reason']}")
        verdict = "passes" if document["status"] == "pass" else "fails"
        print(f"promotion to {document['environment']} {verdict} its checks ({path})")
        if args.comment and context is None:
            progress("no pull request run with a token: no comment posted")
        elif args.comment and context is not None:
            posted = review.post(context, document)
            if posted["posted"]:
                progress(f"check comment {posted['action']} on #{posted['number']}")
            else:
                progress(f"could not post the check comment: {posted['reason']}")
    finally:
        if context is not None:
            context.github.close()
    _github_output({"status": document["status"], "environment": document["environment"]})
    return 0 if document["status"] == "pass" else 1


def _merged_version(args: argparse.Namespace, registry) -> int:
    """The version the merged PR gated, or a new one from the propose flow on the merged tree."""
    from slipway.errors import PromotionError
    from slipway.promote.automatic import merged
    from slipway.promote.repository import git, toplevel
    from slipway.promote.review import github_from_env

    root = toplevel(args.environments)
    sha = args.sha or os.environ.get("GITHUB_SHA") or git(root, "rev-parse", "HEAD").strip()
    config = _config(args)
    github = github_from_env()
    try:
        found = merged(registry, config.name, root, sha, github)
    finally:
        if github is not None:
            github.close()
    progress(found["reason"])
    if not found["rerun"]:
        return int(found["version"])
    from slipway.pipeline import run_pr

    progress("running the propose flow on the merged tree")
    full = _registry(logs_models=True)
    try:
        result = run_pr(config, full, args.out, progress)
    finally:
        full.close()
    if result["status"] != "pass":
        raise PromotionError(
            f"the merged tree's model did not pass its gate; see {result['report']}",
            "fix model/ on main with a pull request; nothing was promoted",
        )
    return int(result["train"]["version"])


def _report_pull_request(result: dict) -> None:
    if result["action"] == "not posted":
        progress(f"{result['reason']}: the pull request it would open is in {result['path']}")
    elif not result.get("pushed", True):
        progress(f"did not push to {result['branch']}: {result['reason']} ({result['action']})")
    else:
        progress(f"pull request {result['action']}: {result['url']} (branch {result['branch']})")
        if result.get("reviewers_error"):
            progress(f"could not request the owners' review: {result['reviewers_error']}")
    _github_output({"pull-request": str(result.get("number") or "")})


def cmd_deploy(args: argparse.Namespace) -> int:
    from slipway.manifests import load_manifest, manifest_path
    from slipway.promote.deploy import deploy
    from slipway.promote.deployments import record_from_env
    from slipway.propose.contract import read_dataset
    from slipway.serve.server import server_state
    from slipway.serve.smoke import records_from_frame

    manifest = load_manifest(manifest_path(args.environment, args.environments))
    if manifest.version is None and not server_state(args.environment).is_file():
        # A push that touches the rules of an environment nothing was promoted to yet.
        progress(f"environments/{args.environment}.yaml names no version yet: nothing to deploy")
        _github_output({"status": "skipped", "url": "", "pull-request": ""})
        return 0
    config = _config(args)
    frame = read_dataset(config.path(config.data.eval)).head(args.rows)
    record = record_from_env(args.environment)
    try:
        document = deploy(
            config,
            _registry(),
            args.environment,
            args.environments,
            args.config,
            records_from_frame(frame, config),
            args.out,
            args.max_p95_ms,
            args.timeout,
            progress,
            record,
            os.environ.get("GITHUB_REF_NAME") or "main",
        )
    finally:
        if record is not None:
            record.github.close()
    if document["deployment"]:
        deployment = document["deployment"]
        trouble = f" (its final status was refused: {deployment['error']})"
        progress(f"GitHub Deployment {deployment['id']}{trouble if deployment['error'] else ''}")
    revert = document.get("revert") or {}
    for check in document["smoke"]["checks"]:
        print(f"{'pass' if check['passed'] else 'FAIL':>5}  {check['check']}: {check['detail']}")
    serving = document["serving"]
    where = f"v{serving['version']} at {serving['url']}" if serving else "nothing"
    status = document["status"]
    print(f"deploy of {args.environment} v{document['version']}: {status}; serving {where}")
    _github_output(
        {
            "status": document["status"],
            "url": serving["url"] if serving else "",
            "pull-request": str(revert.get("number") or ""),
        }
    )
    return 0 if document["status"] == "success" else 1


def cmd_rollback(args: argparse.Namespace) -> int:
    from slipway.promote.promotion import pull_request
    from slipway.promote.rollback import rollback

    registry = _registry()
    done = rollback(args.environment, registry, args.environments, args.to, args.direct)
    print(done["title"])
    print("\n".join(done["diff"]))
    if done["committed"]:
        progress(f"committed {done['committed'][:12]}; push it, and deploy.yml deploys it")
    else:
        _report_pull_request(pull_request(done, registry, args.out, "main", "rollback"))
    return 0


def cmd_canary_report(args: argparse.Namespace) -> int:
    from slipway.manifests import load_manifest, manifest_path
    from slipway.promote import canary
    from slipway.promote.promotion import pull_request
    from slipway.serve.prediction_log import log_directory

    config = _config(args)
    path = manifest_path(args.environment, args.environments)
    manifest = load_manifest(path)
    if manifest.rollout.mode != "canary":  # a schedule asks whether a canary runs or not
        mode = manifest.rollout.mode
        progress(f"{args.environment} runs no canary (rollout mode {mode}): nothing to decide")
        _github_output({"verdict": "none", "report": ""})
        return 0
    document = canary.canary_report(
        args.environment, config, manifest, log_directory(args.environment), args.labels
    )
    written = canary.write_report(document, args.out)
    print(json.dumps(document, indent=2) if args.json else "\n".join(canary.render(document)))
    _github_output({"verdict": document["verdict"], "report": str(written)})
    if not args.apply or document["verdict"] == canary.WAIT:
        return 0
    from slipway.registry import default_tracking_uri
    from slipway.registry_rest import RestReads

    registry = RestReads(default_tracking_uri(), _registry)
    report = "\n".join(["### Canary report", "", "```", *canary.render(document), "```"])
    candidate = document.get("candidate_version") or load_manifest(path).rollout.candidate_version
    if document["verdict"] == canary.PROMOTE:
        done = canary.finish(path, registry)
        done["lead"] = (
            f"Finishes the canary in **{args.environment}**: **v{candidate}** met every limit "
            f"with confidence and becomes the stable version (merging deploys it)."
        )
        done["evidence"] = report
        print(done["title"])
        print("\n".join(done["diff"]))
        _report_pull_request(pull_request(done, registry, args.out, args.base, purpose="canary"))
        return 0
    done = canary.abort(path, registry)
    done["lead"] = (
        f"Aborts the canary of **v{candidate}** in **{args.environment}**: a limit was broken "
        f"with confidence. The abort is already applied (v{done['version']} alone takes the "
        "traffic); merging this puts git in line with what runs."
    )
    done["evidence"] = report
    print(done["title"])
    print("\n".join(done["diff"]))
    progress(f"deploying {args.environment} v{done['version']} alone: the candidate stops now")
    try:
        code = cmd_deploy(args)
    finally:  # the manifest says stable only: git catches up whatever the deploy did
        _report_pull_request(pull_request(done, registry, args.out, args.base, purpose="canary"))
    return code


def cmd_history(args: argparse.Namespace) -> int:
    from slipway.promote.history import history
    from slipway.promote.review import github_from_env

    github = github_from_env()
    try:
        document = history(args.environment, _registry(), args.environments, github)
    finally:
        if github is not None:
            github.close()
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    print(
        f"{'version':>7}  {'when':<25} {'who':<18} {'PR':>5}  gate  smoke  deploy   "
        "GitHub    rolled back"
    )
    for e in document["entries"]:
        pr = f"#{e['pull_request']}" if e["pull_request"] else "-"
        recorded = e.get("deployments") or [{}]
        print(
            f"{'v' + e['version'] if e['version'] else '-':>7}  {e['at']:<25} "
            f"{e['author'][:18]:<18} {pr:>5}  {e['gate'] or '-':<5} {e['smoke'] or '-':<6} "
            f"{e['deploy'] or '-':<8} {recorded[0].get('state') or '-':<9} "
            f"{'yes' if e['rolled_back'] else ''}"
        )
    print(f"{len(document['entries'])} change(s) of environments/{args.environment}.yaml")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from slipway.promote.status import status

    document = status(_registry(), args.environments)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        for env in document["environments"]:
            manifest, serving = env.get("manifest") or {}, env.get("serving") or {}
            print(
                f"{env['environment']:<11} git v{manifest.get('version')}  "
                f"serving v{serving.get('version')} {serving.get('url', '')}  "
                f"alias v{env.get('alias')}"
            )
            for finding in env["findings"]:
                print(f"  ✗ {finding['problem']}\n    fix: {finding['fix']}")
        print("git, servers and aliases agree" if document["agree"] else "they disagree")
    return 0 if document["agree"] else 1


def cmd_pr(args: argparse.Namespace) -> int:
    from slipway.pipeline import run_pr

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
    from slipway.demo import demo_state, run_demo

    with demo_state(args.out) as home:
        registry = _registry(logs_models=True)
        result = run_demo(_config(args), registry, args.out, progress, print, args.config)
        print("## slipway history production\n")
        where = result["environments"]
        cmd_history(argparse.Namespace(environment="production", environments=where, json=False))
    progress(f"demo done — manifests and their git log in {where}, registry and logs in {home}")
    return 0


def _github_output(values: dict[str, str | None]) -> None:
    target = os.environ.get("GITHUB_OUTPUT")
    if target:
        with Path(target).open("a", encoding="utf-8") as handle:
            for key, value in values.items():
                handle.write(f"{key}={value if value is not None else ''}\n")


COMMANDS = {
    "validate": cmd_validate,
    "lock": cmd_lock,
    "train": cmd_train,
    "gate": cmd_gate,
    "package": cmd_package,
    "serve": cmd_serve,
    "smoke": cmd_smoke,
    "report": cmd_report,
    "promote": cmd_promote,
    "deploy": cmd_deploy,
    "rollback": cmd_rollback,
    "canary-report": cmd_canary_report,
    "history": cmd_history,
    "status": cmd_status,
    "pr": cmd_pr,
    "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SlipwayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            print(f"::error::{json.dumps(exc.message)[1:-1]}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``slipway`` console script: :func:`main`, then exit at once.

    Every output is written and every child process stopped when ``main`` returns, so the
    interpreter's teardown of MLflow, scikit-learn and BentoML (up to a second a command)
    buys nothing.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
