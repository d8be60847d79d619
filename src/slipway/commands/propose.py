"""The propose commands: ``validate``, ``lock``, ``train``, ``gate``, ``package``, ``report``,
``pr`` and ``demo``."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from slipway.commands.common import config_of, github_output, progress, registry_of


def cmd_validate(args: argparse.Namespace) -> int:
    from slipway.fsutil import write_json
    from slipway.propose.datasets import validate

    config = config_of(args)
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
    github_output(
        {
            "passed": str(report["passed"]).lower(),
            "violations": str(report["violation_count"]),
            "report": str(args.out / "validation.json"),
        }
    )
    return 0 if report["passed"] else 1


def cmd_lock(args: argparse.Namespace) -> int:
    from slipway.propose.datasets import lock_path, validate, write_lock

    config = config_of(args)
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

    registry = registry_of(in_child=True, logs_models=True)
    try:
        document = train(config_of(args), registry, args.out, progress)
    finally:
        registry.close()
    print(f"registered {document['model']} version {document['version']} ({document['model_uri']})")
    github_output(
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
    registry = RestReads(default_tracking_uri(), lambda: registry_of(in_child=True), eager=True)
    try:
        from slipway.pipeline import record_gate, training_rows
        from slipway.propose.gate import evaluate

        config = config_of(args)
        candidate, judgement = evaluate(config, registry, args.out, args.version, progress)
        trained_on = candidate.tags.get("slipway.data_digest")
        rows = training_rows(config, candidate, trained_on)
        document = record_gate(config, registry, args.out, candidate, judgement, rows, progress)
    finally:
        registry.close()
    for g in document["gates"]:
        print(f"{g['status']:>12}  {g['gate']}:{g['metric']}  {g['reason']}")
    print(f"gate {document['status']} for version {document['candidate']['version']}")
    github_output({"status": document["status"]})
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
    if getattr(args, "image", None):
        return _record_image(args, str(version))
    from slipway.registry import default_tracking_uri
    from slipway.registry_rest import RestReads

    # With the copy `train` left, packaging reads one version's tags: over REST, no MLflow.
    registry = RestReads(default_tracking_uri(), lambda: registry_of(in_child=True))
    try:
        document = package(config_of(args), registry, version, args.out, progress, args.config)
    finally:
        registry.close()
    print(f"bento {document['bento_tag']} digest {document['digest']}")
    github_output({"bento-tag": document["bento_tag"], "digest": document["digest"]})
    return 0


def _record_image(args: argparse.Namespace, version: str) -> int:
    """Tag ``version`` with the image pushed from its Bento (``--image``)."""
    from slipway.errors import PackagingError
    from slipway.manifests import IMAGE_PATTERN
    from slipway.promote.kubernetes import IMAGE_TAG

    if not re.match(IMAGE_PATTERN, args.image):
        raise PackagingError(
            f"--image {args.image} is not REPO:TAG@sha256:DIGEST",
            "pass the pushed image with its tag and its registry digest, e.g. "
            "`docker inspect --format '{{index .RepoDigests 0}}'` gives REPO@sha256:DIGEST",
        )
    config = config_of(args)
    registry = registry_of()
    registry.get(config.name, version)  # a version that does not exist is a usage error
    registry.tag(config.name, version, {IMAGE_TAG: args.image})
    print(f"{config.name} v{version} image {args.image}")
    github_output({"image": args.image})
    return 0


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
    github_output({"report": str(path), "comment-url": url})
    return 0


def cmd_pr(args: argparse.Namespace) -> int:
    from slipway.pipeline import run_pr

    registry = registry_of(in_child=args.skip_package, logs_models=True)
    try:
        result = run_pr(
            config_of(args), registry, args.out, progress, package_step=not args.skip_package
        )
    finally:
        registry.close()
    print(result["markdown"])
    progress(f"outputs in {args.out}/ — report: {result['report']}")
    return 0 if result["status"] == "pass" else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from slipway.commands.promote import cmd_history
    from slipway.demo import demo_state, run_demo

    with demo_state(args.out) as home:
        registry = registry_of(logs_models=True)
        result = run_demo(config_of(args), registry, args.out, progress, print, args.config)
        print("## slipway history production\n")
        where = result["environments"]
        cmd_history(argparse.Namespace(environment="production", environments=where, json=False))
    progress(f"demo done — manifests and their git log in {where}, registry and logs in {home}")
    return 0
