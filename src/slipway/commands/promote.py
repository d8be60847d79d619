"""The commands that move versions: ``promote``, ``deploy``, ``rollback``, ``canary-report``,
``history`` and ``status``."""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime

from slipway.commands.common import (
    config_of,
    github_output,
    progress,
    registry_of,
    report_pull_request,
)
from slipway.fsutil import atomic_write_text


def cmd_promote(args: argparse.Namespace) -> int:
    from slipway.errors import ConfigError
    from slipway.promote import promotion
    from slipway.registry import default_tracking_uri
    from slipway.registry_rest import RestReads

    # A promotion reads one version's tags: over REST, with no MLflow, pandas or scikit-learn.
    registry = RestReads(default_tracking_uri(), registry_of)
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
            github_output({"version": "", "pull-request": ""})
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
    github_output({"version": str(version)})
    report_pull_request(promotion.pull_request(done, registry, args.out, args.base))
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
    github_output({"status": document["status"], "environment": document["environment"]})
    return 0 if document["status"] == "pass" else 1


def _merged_version(args: argparse.Namespace, registry) -> int:
    """The version the merged PR gated, or a new one from the propose flow on the merged tree."""
    from slipway.errors import PromotionError
    from slipway.promote.automatic import merged
    from slipway.promote.repository import git, toplevel
    from slipway.promote.review import github_from_env

    root = toplevel(args.environments)
    sha = args.sha or os.environ.get("GITHUB_SHA") or git(root, "rev-parse", "HEAD").strip()
    config = config_of(args)
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
    full = registry_of(logs_models=True)
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


def cmd_deploy(args: argparse.Namespace) -> int:
    from slipway.manifests import load_manifest, manifest_path
    from slipway.promote.deploy import deploy
    from slipway.promote.deployments import record_from_env
    from slipway.propose.contract import read_dataset
    from slipway.serve.server import server_state
    from slipway.serve.smoke import records_from_frame

    manifest = load_manifest(manifest_path(args.environment, args.environments))
    if manifest.target == "kubernetes" and manifest.version is not None:
        return _deploy_kubernetes(args, manifest)
    if manifest.version is None and not server_state(args.environment).is_file():
        # A push that touches the rules of an environment nothing was promoted to yet.
        progress(f"environments/{args.environment}.yaml names no version yet: nothing to deploy")
        github_output({"status": "skipped", "url": "", "pull-request": ""})
        return 0
    config = config_of(args)
    frame = read_dataset(config.path(config.data.eval)).head(args.rows)
    record = record_from_env(args.environment)
    try:
        document = deploy(
            config,
            registry_of(),
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
            revert=getattr(args, "revert", True),
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
    github_output(
        {
            "status": document["status"],
            "url": serving["url"] if serving else "",
            "pull-request": str(revert.get("number") or ""),
        }
    )
    return 0 if document["status"] == "success" else 1


def _deploy_kubernetes(args: argparse.Namespace, manifest) -> int:
    """A kubernetes target: wait for the rollout Argo CD or Flux starts, record it."""
    from slipway.fsutil import write_json
    from slipway.promote.deployments import record_from_env
    from slipway.promote.kubernetes import check_rollout

    # A GitHub Deployment only when there is a cluster whose rollout says how it went.
    record = record_from_env(args.environment) if os.environ.get("KUBECONFIG") else None
    try:
        if record is not None:
            record.start(str(manifest.version), str(manifest.digest))
        document = check_rollout(manifest, args.timeout, progress=progress)
        if document["status"] != "skipped":
            _tag_rollout(manifest, document["status"])
        if record is not None:
            description = f"v{manifest.version}: {document['reason']}"[:140]
            record.finish(document["status"], "", description)
    finally:
        if record is not None:
            record.github.close()
    write_json(args.out / "deploy.json", document)
    status = document["status"]
    print(f"deploy of {args.environment} v{manifest.version} ({document['image']}): {status}")
    progress(document["reason"])
    github_output({"status": status, "url": "", "pull-request": ""})
    return 1 if status == "failure" else 0


def _tag_rollout(manifest, status: str) -> None:
    """Record a rollout on the version as a local deploy is recorded: a healthy one (every pod
    passed its readiness probe) counts as passing smoke tests for the soak and for rollback's
    last good version, and moves the alias ENV."""
    from datetime import UTC

    from slipway.promote.checks import deployed_tag, smoke_tag
    from slipway.promote.deploy import RESULT_TAG

    passed = status == "success"
    tags = {
        smoke_tag(manifest.environment): "pass" if passed else "fail",
        RESULT_TAG.format(environment=manifest.environment): status,
    }
    if passed:
        tags[deployed_tag(manifest.environment)] = datetime.now(UTC).isoformat(timespec="seconds")
    registry = registry_of()
    registry.tag(manifest.model, str(manifest.version), tags)
    if passed:  # as after a local deploy: the alias ENV names what runs there
        registry.set_alias(manifest.model, manifest.environment, str(manifest.version))


def cmd_rollback(args: argparse.Namespace) -> int:
    from slipway.promote.promotion import pull_request
    from slipway.promote.rollback import rollback

    registry = registry_of()
    done = rollback(args.environment, registry, args.environments, args.to, args.direct)
    print(done["title"])
    print("\n".join(done["diff"]))
    if done["committed"]:
        progress(f"committed {done['committed'][:12]}; push it, and deploy.yml deploys it")
    else:
        report_pull_request(pull_request(done, registry, args.out, "main", "rollback"))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from slipway.fsutil import write_json
    from slipway.promote import kubernetes

    if args.check:
        differ = kubernetes.differences(args.environment, args.environments)
        for path in differ:
            print(f"differs: {path}")
        if differ:
            print(
                f"environments/{args.environment}.yaml renders other objects than are "
                f"committed; run `slipway render {args.environment}` and commit them"
            )
            return 1
        print(f"the committed objects of {args.environment} are what its manifest renders")
        return 0
    done = kubernetes.render(args.environment, args.environments)
    write_json(args.out / "render.json", done)
    for path in done["written"]:
        print(f"wrote {path}")
    for path in done["removed"]:
        print(f"removed {path}")
    print(
        f"{args.environment}: {len(done['files'])} files, valid for Kubernetes "
        f"{done['kubernetes_version']}, {len(done['written'])} changed"
    )
    return 0


def cmd_canary_report(args: argparse.Namespace) -> int:
    from slipway.manifests import load_manifest, manifest_path
    from slipway.promote import canary
    from slipway.promote.promotion import pull_request
    from slipway.serve.prediction_log import log_directory

    config = config_of(args)
    path = manifest_path(args.environment, args.environments)
    manifest = load_manifest(path)
    if manifest.rollout.mode != "canary":  # a schedule asks whether a canary runs or not
        mode = manifest.rollout.mode
        progress(f"{args.environment} runs no canary (rollout mode {mode}): nothing to decide")
        github_output({"verdict": "none", "report": ""})
        return 0
    document = canary.canary_report(
        args.environment,
        config,
        manifest,
        log_directory(args.environment),
        args.labels,
        started=_rollout_started(args.environment, manifest),
    )
    written = canary.write_report(document, args.out)
    print(json.dumps(document, indent=2) if args.json else "\n".join(canary.render(document)))
    github_output({"verdict": document["verdict"], "report": str(written)})
    if not args.apply or document["verdict"] == canary.WAIT:
        return 0
    from slipway.registry import default_tracking_uri
    from slipway.registry_rest import RestReads

    registry = RestReads(default_tracking_uri(), registry_of)
    report = "\n".join(["### Canary report", "", "```", *canary.render(document), "```"])
    candidate = document.get("candidate_version") or load_manifest(path).rollout.candidate_version
    if document["verdict"] == canary.PROMOTE:
        done = canary.finish(path, registry)
        done["lead"] = (
            f"Finishes the canary in **{args.environment}**: **v{candidate}** met every limit "
            f"with confidence and becomes the stable version (merging deploys it)."
        )
        done["evidence"] = report
        done["sections"] = {
            "What changes": f"`environments/{args.environment}.yaml`: `version` → {candidate}, "
            f"`digest` → `{done['digest']}` (the candidate's Bento), and the rollout ends "
            "(`mode` → none, `candidate_version` → null, `canary_percent` → 0).",
        }
        print(done["title"])
        print("\n".join(done["diff"]))
        report_pull_request(pull_request(done, registry, args.out, args.base, purpose="canary"))
        return 0
    done = canary.abort(path, registry)
    print(done["title"])
    print("\n".join(done["diff"]))
    stable = done["version"]
    progress(f"deploying {args.environment} v{stable} alone: the candidate stops now")
    args.revert = False  # a failed redeploy leaves the canary serving, as main says
    try:
        code = cmd_deploy(args)
    except BaseException:
        atomic_write_text(path, done["before"])  # not applied: the file says what serves
        raise
    if code != 0:
        atomic_write_text(path, done["before"])
        progress(
            f"the abort is NOT applied: v{stable} alone failed its smoke tests, so the canary "
            f"of v{candidate} still serves; fix it, then run `slipway canary-report "
            f"{args.environment} --apply` again"
        )
        return code
    done["applied"] = True  # it runs now, whatever GitHub says next: the file must stay so
    done["lead"] = (
        f"Aborts the canary of **v{candidate}** in **{args.environment}**: a limit was broken "
        f"with confidence. The abort is already applied (v{stable} alone takes the traffic); "
        "merging this puts git in line with what runs."
    )
    done["evidence"] = report
    done["sections"] = {
        "What changes": f"`environments/{args.environment}.yaml`: the rollout ends (`mode` → "
        f"none, `candidate_version` → null, `canary_percent` → 0); `version` and `digest` stay "
        f"v{stable}'s.",
        "Gate": None,
        "On merge": f"`deploy.yml` deploys v{stable} alone: what already runs since the abort, "
        "so the traffic sees no change. To try the candidate again, fix it and start a new "
        "canary with a pull request.",
    }
    report_pull_request(pull_request(done, registry, args.out, args.base, purpose="canary"))
    return 0


def _rollout_started(environment: str, manifest) -> datetime | None:
    """When the server running ``manifest``'s rollout started (its state says), else None."""
    from slipway.fsutil import read_json
    from slipway.serve.server import server_state

    state = server_state(environment)
    if not state.is_file():
        return None
    running = read_json(state)
    same = running.get("rollout") == manifest.rollout.model_dump()
    if not same or str(running.get("version")) != str(manifest.version):
        return None
    try:
        return datetime.fromisoformat(str(running["started_at"]))
    except (KeyError, ValueError):
        return None


def cmd_history(args: argparse.Namespace) -> int:
    from slipway.promote.history import history
    from slipway.promote.review import github_from_env

    github = github_from_env()
    try:
        document = history(args.environment, registry_of(), args.environments, github)
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

    document = status(registry_of(), args.environments)
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
