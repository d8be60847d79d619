"""``slipway retrain-pr``: why retrain, on what, and the one pull request that carries it.

A model is retrained when the drift check (``drift.json``) says **drifted**, or when the version
the environment's manifest names was registered more than ``drift.max_age_days`` ago, drift or
not; the pull request says which. It carries the new training window
(:mod:`slipway.drift.window`) on the fixed branch ``slipway/retrain``: a later run updates the
open pull request, never opens a second; a branch holding a commit the bot did not make gets a
comment with the new evidence instead of a push. A retrain pull request closed without merging
is not opened again until the evidence changes **materially**: another production version, or
another set of triggers and drifted features (the *fingerprint*, kept in a hidden marker in the
body). New figures on the same features are the same evidence.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slipway.config import ModelConfig
from slipway.drift.retrain_report import MARKER, body, drift_summary, title
from slipway.drift.window import build, write_into_project
from slipway.errors import ConfigError, DriftError, GitHubError
from slipway.fsutil import atomic_write_text, read_json, write_json
from slipway.manifests import load_manifest, manifest_path
from slipway.progress import Progress
from slipway.promote.repository import toplevel
from slipway.registry import Registry

SCHEMA = "slipway.retrain/1"
DRIFT_SCHEMA = "slipway.drift/1"
BRANCH = "slipway/retrain"
_MARKED = re.compile(re.escape(MARKER) + r" (.*?) -->")


def clock() -> datetime:
    """Now, in UTC (what a test moves to see a version grow old)."""
    return datetime.now(UTC)


def read_drift(path: Path, required: bool) -> dict[str, Any] | None:
    """The drift check's report, or None when it is not there and not ``required``."""
    if not path.is_file():
        if required:
            raise DriftError(f"no drift report at {path}", "run `slipway drift ENV` first")
        return None
    try:
        document = read_json(path)
    except ValueError as exc:
        raise DriftError(f"{path} is not JSON: {exc}", "run `slipway drift ENV` again") from exc
    if not isinstance(document, dict) or document.get("schema") != DRIFT_SCHEMA:
        raise DriftError(
            f"{path} is not a drift report ({DRIFT_SCHEMA})", "pass --drift OUT/drift.json"
        )
    return document


def drifted(drift: dict[str, Any]) -> list[str]:
    """What the report found drifted: its triggers and every drifted feature as ``data:NAME``."""
    found = {str(t) for t in drift.get("triggers") or []}
    features = drift.get("features") or {}
    found |= {f"data:{name}" for name, f in features.items() if f.get("status") == "drifted"}
    return sorted(found) or ["drift"]


def decide(
    config: ModelConfig,
    environment: str,
    drift: dict[str, Any] | None,
    drift_path: Path,
    version: str | None,
    registered: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """The triggers that hold, and for those that do not, why not."""
    triggers: list[dict[str, Any]] = []
    not_triggered: list[str] = []
    about = (config.name, environment)
    if drift is not None and (drift.get("model"), drift.get("environment")) != about:
        raise DriftError(
            f"{drift_path} is the report of {drift.get('model')} in {drift.get('environment')}, "
            f"not {config.name} in {environment}",
            f"run `slipway drift {environment}` for this model",
        )
    if drift is None:
        not_triggered.append(f"no drift report at {drift_path}: drift not considered")
    elif drift.get("status") == "drifted":
        window = drift.get("window") or {}
        triggers.append(
            {"kind": "drift", "found": drifted(drift), "window": window, "path": str(drift_path)}
        )
    else:
        not_triggered.append(f"the drift check says {drift.get('status')}, not drifted")
    max_age = config.drift.max_age_days
    if version is None:
        not_triggered.append(f"{environment} runs no version yet: no age to judge")
    elif max_age is None:
        not_triggered.append("drift.max_age_days is not set: no retraining by age")
    elif registered is not None:
        age = (now - registered).total_seconds() / 86400
        if age > max_age:
            triggers.append(
                {
                    "kind": "age",
                    "version": version,
                    "registered_at": registered.isoformat(timespec="seconds"),
                    "age_days": round(age, 1),
                    "max_age_days": max_age,
                }
            )
        else:
            not_triggered.append(
                f"v{version} was registered {age:.0f} days ago, within drift.max_age_days "
                f"({max_age})"
            )
    return {
        "schema": SCHEMA,
        "model": config.name,
        "environment": environment,
        "version": version,
        "generated_at": now.isoformat(timespec="seconds"),
        "retrain": bool(triggers),
        "triggers": triggers,
        "not_triggered": not_triggered,
        "fingerprint": fingerprint(version, triggers),
    }


def fingerprint(version: str | None, triggers: list[dict[str, Any]]) -> str:
    """The evidence, as far as "materially" goes: the version, the triggers, what drifted."""
    items = set()
    for trigger in triggers:
        items |= {"age"} if trigger["kind"] == "age" else set(trigger["found"])
    return f"version={version or '-'} triggers={','.join(sorted(items)) or '-'}"


def marked(body: str | None) -> str | None:
    """The fingerprint a retrain pull request's body carries, if any."""
    found = _MARKED.search(body or "")
    return found.group(1) if found else None


def repository_paths(config: ModelConfig) -> dict[str, str]:
    """The train, eval and lock files' paths in the repository (the git top level of the model
    project; outside a repository, relative to the model project's parent)."""
    from slipway.propose.datasets import lock_path, split_paths

    project = config.root.resolve()
    try:
        root = toplevel(project)
    except ConfigError:
        root = project.parent
    files = {**split_paths(config), "lock": lock_path(config)}
    return {
        key: path.resolve().relative_to(root.resolve()).as_posix() for key, path in files.items()
    }


def publish(
    document: dict[str, Any],
    text: str,
    files: dict[str, str],
    owners: list[str],
    base: str,
    out_dir: Path,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Open or update the retrain pull request; without a token and repository, write its body
    to ``OUT/retrain-pr.md`` (the files are in ``OUT/retrain/``)."""
    env = dict(os.environ) if env is None else env
    token = env.get("GITHUB_TOKEN") or env.get("GH_TOKEN")
    repo = env.get("GITHUB_REPOSITORY")
    heading = title(document)
    if not token or not repo:
        path = out_dir / "retrain-pr.md"
        atomic_write_text(path, f"# {heading}\n\n{text}")
        reason = "no GITHUB_TOKEN and GITHUB_REPOSITORY"
        return {"action": "not posted", "branch": BRANCH, "path": str(path), "reason": reason}
    from slipway.github import GitHub
    from slipway.promote.pull_request import open_or_update_files

    github = GitHub(token, repo, api_url=env.get("GITHUB_API_URL"))
    try:
        if github.find_pull_request(BRANCH, base) is None:
            closed = github.closed_pull_requests(BRANCH, base)
            last = closed[0] if closed else None
            if (
                last
                and not last.get("merged_at")
                and marked(last.get("body")) == document["fingerprint"]
            ):
                return {
                    "action": "not reopened",
                    "branch": BRANCH,
                    "number": None,  # nothing is open
                    "closed": last["number"],
                    "url": last.get("html_url"),
                    "pushed": False,
                    "reason": f"#{last['number']} was closed without merging on the same "
                    f"evidence ({document['fingerprint']}); one opens when it changes",
                }
        try:
            evidence = f"{MARKER} {document['fingerprint']} -->"
            result = open_or_update_files(
                github, BRANCH, base, files, heading, text, owners, evidence
            )
        except GitHubError as exc:
            raise GitHubError(
                f"{exc.message}; the retrain pull request was not opened (its files are in "
                f"{out_dir / 'retrain'})",
                exc.hint,
                exc.status,
                exc.endpoint,
            ) from exc
    finally:
        github.close()
    return {**result, "branch": BRANCH}


def run(
    config: ModelConfig,
    environment: str,
    registry: Registry,
    environments: Path,
    drift_path: Path,
    out_dir: Path,
    base: str,
    *,
    drift_required: bool = True,
    write: bool = False,
    now: datetime | None = None,
    progress: Progress = lambda _line: None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Decide; when a trigger holds, build the window and open or update the pull request.
    ``OUT/retrain.json`` says what was decided and done."""
    now = now or clock()
    manifest = load_manifest(manifest_path(environment, environments))
    if manifest.model != config.name:
        raise ConfigError(
            f"environments/{environment}.yaml serves {manifest.model}, not {config.name}",
            "pass the --config of the model the manifest names",
        )
    version = None if manifest.version is None else str(manifest.version)
    registered = None
    if version is not None and config.drift.max_age_days is not None:
        registered = registry.created_at(config.name, version)
    drift = read_drift(drift_path, drift_required)
    document = decide(config, environment, drift, drift_path, version, registered, now)
    target = out_dir / "retrain.json"
    if not document["retrain"]:
        write_json(target, document)
        return document
    progress(f"retraining {config.name}: {title(document).split(': ', 1)[1]}")
    window = build(config, environment, out_dir, now, progress)
    paths = repository_paths(config)
    document |= {"window": window, "files": list(paths.values()), "pull_request": None}
    if not window["valid"]:
        write_json(target, document)
        return document
    if write:
        document["written"] = [str(p) for p in write_into_project(config, window)]
    markdown = drift_path.with_suffix(".md")
    evidence = markdown.read_text(encoding="utf-8") if markdown.is_file() else None
    if evidence is None and drift is not None:
        evidence = drift_summary(drift)
    text = body(document, evidence)
    files = {
        path: Path(window["paths"][key]).read_text(encoding="utf-8") for key, path in paths.items()
    }
    write_json(target, document)
    document["pull_request"] = publish(document, text, files, config.owners, base, out_dir, env)
    write_json(target, document)
    return document
