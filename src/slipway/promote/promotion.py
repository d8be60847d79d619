"""``slipway promote ENV``: move a version into an environment's manifest, and check such a change.

``promote`` rewrites ``environments/ENV.yaml`` (the ``version`` and ``digest`` lines only) for
a version that passed its gate and was packaged; nothing is written when it did not.
``check`` runs :mod:`slipway.promote.checks` on the manifest as it stands against a git base,
the way the promotion pull request's required check does, and writes ``promote.json``.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slipway.errors import ConfigError, PromotionError, RegistryError
from slipway.fsutil import atomic_write_text, write_json
from slipway.manifests import (
    ENVIRONMENTS,
    Manifest,
    load_manifest,
    manifest_path,
    parse_manifest,
    update_manifest,
)
from slipway.promote import checks, kubernetes, review
from slipway.promote.repository import git, show, toplevel
from slipway.promote.review import PullContext
from slipway.registry import Registry

SCHEMA = "slipway.promote-check/1"


def title(manifest: Manifest, version: int) -> str:
    """The promotion PR's and commit's title: it names the model, version and environment."""
    return f"Promote {manifest.model} v{version} to {manifest.environment}"


def promote(environment: str, version: int, registry: Registry, directory: Path) -> dict[str, Any]:
    """Point ``environment`` at ``version`` and its packaged digest; refuse an ungated or
    unpackaged version, leaving the manifest as it was."""
    path = manifest_path(environment, directory)
    current = load_manifest(path)
    ref = registry.get(current.model, str(version))
    tags = ref.tags
    reasons = []
    gate = checks.gate_passed(version, tags)
    if gate.status == checks.FAIL:
        reasons.append(gate.reason)
    if checks.DIGEST_TAG not in tags:
        reasons.append(f"v{version} has no Bento; run `slipway package`")
    changes: dict[str, Any] = {"version": version, "digest": tags.get(checks.DIGEST_TAG)}
    if current.target == "kubernetes":
        if kubernetes.IMAGE_TAG not in tags:
            reasons.append(
                f"v{version} has no container image; run the image workflow for it "
                "(`bentoml containerize` and push, then `slipway package --image REF`)"
            )
        changes["kubernetes.image"] = tags.get(kubernetes.IMAGE_TAG)
    if reasons:
        raise PromotionError(
            f"not promoted: {'; '.join(reasons)}",
            "gate and package the version first (`slipway pr`, or `slipway gate` and "
            "`slipway package`)",
        )
    before = path.read_text(encoding="utf-8")
    rendered_before = (
        _rendered_texts(environment, directory) if current.target == "kubernetes" else {}
    )
    updated = update_manifest(path, changes)
    after = path.read_text(encoding="utf-8")
    rendered: dict[str, str] = {}
    if updated.target == "kubernetes":
        try:
            kubernetes.render(environment, directory)
        except Exception:
            atomic_write_text(path, before)  # nothing half done: the manifest is as it was
            raise
        rendered = {
            str(p): p.read_text(encoding="utf-8") for p in kubernetes.files(environment, directory)
        }
    return {
        "rendered": rendered,
        "rendered_before": rendered_before,
        "environment": environment,
        "title": title(updated, version),
        "path": str(path),
        "from_version": current.version,
        "version": version,
        "digest": updated.digest,
        "diff": _changed_lines(before, after),
        "tags": tags,
        "run_id": ref.run_id,
        "manifest": current,
        "before": before,
    }


def pull_request(
    done: dict[str, Any],
    registry: Registry,
    out_dir: Path,
    base: str,
    purpose: str = "promote",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Open or update the pull request carrying ``done``'s manifest change, on the fixed branch
    ``slipway/PURPOSE-ENV``; without a token and repository, write its body to
    ``OUT/PURPOSE-pr.md`` and say what would have been opened. ``done["lead"]`` replaces the
    body's first line, ``done["evidence"]`` (Markdown) follows it, and ``done["sections"]``
    replaces the text under a ``### heading`` (None drops the section), when set."""
    from slipway.promote.pull_request import body

    env = dict(os.environ) if env is None else env
    tags, manifest = done["tags"], done["manifest"]
    metrics = registry.run_metrics(done["run_id"]) if done["run_id"] else {}
    current: dict[str, float] | None = None
    if manifest.version is not None:
        ref = registry.get(manifest.model, str(manifest.version))
        current = registry.run_metrics(ref.run_id) if ref.run_id else None
    text_body = body(manifest, done["version"], tags, metrics, current, ["staging", "production"])
    if done.get("lead"):  # a change other than a promotion says what it is first
        text_body = done["lead"] + "\n" + text_body.split("\n", 1)[1]
    if done.get("evidence"):
        first, rest = text_body.split("\n\n", 1)
        text_body = f"{first}\n\n{done['evidence'].rstrip()}\n\n{rest}"
    for heading, text in (done.get("sections") or {}).items():
        text_body = _replace_section(text_body, heading, text)
    branch = f"slipway/{purpose}-{done['environment']}"
    token = env.get("GITHUB_TOKEN") or env.get("GH_TOKEN")
    repo = env.get("GITHUB_REPOSITORY")
    if not token or not repo:
        path = out_dir / f"{purpose}-pr.md"
        atomic_write_text(path, f"# {done['title']}\n\n{text_body}")
        return {
            "action": "not posted",
            "branch": branch,
            "path": str(path),
            "reason": "no GITHUB_TOKEN and GITHUB_REPOSITORY",
        }
    from slipway.github import GitHub

    manifest_file = Path(done["path"]).resolve()
    root = toplevel(manifest_file.parent)
    owners = [o for o in (tags.get("slipway.owners") or "").split(",") if o]
    github = GitHub(token, repo, api_url=env.get("GITHUB_API_URL"))
    try:
        files = {
            manifest_file.relative_to(root).as_posix(): manifest_file.read_text(encoding="utf-8")
        }
        for name, text in (done.get("rendered") or {}).items():  # a kubernetes target's objects
            files[Path(name).resolve().relative_to(root).as_posix()] = text
        result = _open_or_update_or_restore(
            done, github, branch, base, files, done["title"], text_body, owners
        )
    finally:
        github.close()
    return {**result, "branch": branch}


def _replace_section(text: str, heading: str, replacement: str | None) -> str:
    """``text`` with the section under ``### heading`` replaced (or dropped, for None)."""
    start = text.find(f"### {heading}\n")
    if start < 0:
        return text
    end = text.find("\n### ", start + 1)
    end = len(text) if end < 0 else end + 1
    if replacement is None:
        return text[:start] + text[end:]
    tail = "\n" if end < len(text) else ""
    return f"{text[:start]}### {heading}\n\n{replacement.rstrip()}\n{tail}{text[end:]}"


def _open_or_update_or_restore(done: dict[str, Any], github: Any, *args: Any) -> dict[str, Any]:
    """:func:`~slipway.promote.pull_request.open_or_update_files`; when GitHub refuses, the
    manifest (and a kubernetes target's rendered files) is put back as it was, unless
    ``done["applied"]`` says the change already runs (an aborted canary), and the error says
    so."""
    from slipway.github import GitHubError
    from slipway.promote.pull_request import open_or_update_files

    try:
        return open_or_update_files(github, *args)
    except GitHubError as exc:
        if done.get("applied") or "before" not in done:
            raise
        atomic_write_text(Path(done["path"]), done["before"])
        _restore_rendered(done)
        raise GitHubError(
            f"{exc.message}; no pull request was opened, and {done['path']} is as it was",
            exc.hint,
            exc.status,
            exc.endpoint,
        ) from exc


def _rendered_texts(environment: str, directory: Path) -> dict[str, str | None]:
    """The rendered files of ENV as they are now (None: not there), to put back on failure."""
    own = directory / kubernetes.RENDER_DIR
    controllers = [own / c / f"{environment}.yaml" for c in kubernetes.CONTROLLERS]
    paths = [*sorted((own / environment).glob("*")), *controllers]
    return {str(p): p.read_text(encoding="utf-8") if p.is_file() else None for p in paths}


def _restore_rendered(done: dict[str, Any]) -> None:
    """Put the rendered files of a promotion back as they were before it."""
    for name, text in (done.get("rendered_before") or {}).items():
        if text is None:
            Path(name).unlink(missing_ok=True)
        else:
            atomic_write_text(Path(name), text)
    for name in done.get("rendered") or {}:
        if name not in (done.get("rendered_before") or {}):
            Path(name).unlink(missing_ok=True)


def _changed_lines(before: str, after: str) -> list[str]:
    old, new = before.splitlines(), after.splitlines()
    return [f"-{a}\n+{b}" for a, b in zip(old, new, strict=True) if a != b]


def check(
    environment: str | None,
    registry: Registry,
    directory: Path,
    base: str,
    now: datetime | None = None,
    env: dict[str, str] | None = None,
    context: PullContext | None = None,
) -> dict[str, Any]:
    """Every promotion check on ``environments/ENV.yaml`` against git ``base``.

    Without ``environment`` the manifest the change touches is checked (the first, when it
    touches several: the one-environment check fails then anyway). ``context``: the pull
    request's, for the check that no other open pull request changes the same manifest.
    """
    now = now or datetime.now(UTC)
    env = dict(os.environ) if env is None else env
    root = toplevel(directory)
    fix = "pass an existing --base (a branch or commit)"
    changed = git(root, "diff", "--name-only", base, fix=fix).splitlines()  # tree vs base
    found: list[checks.Check] = [checks.one_environment(changed)]
    if environment is None:
        environment = _changed_environment(changed, root, directory)
        if environment is None:
            return _document(None, found, None)
    path = manifest_path(environment, directory)
    relative = path.resolve().relative_to(root).as_posix()
    try:
        manifest = load_manifest(path)
    except ConfigError as exc:
        found.append(checks.Check("schema", checks.FAIL, exc.message))
        return _document(environment, found, None)
    found.append(checks.Check("schema", checks.PASS, f"{relative} is a valid manifest"))
    before_text = show(root, base, relative)
    before = parse_manifest(before_text, f"{base}:{relative}") if before_text else None
    found.append(checks.promoted_fields(before, manifest))
    found.append(review.open_promotion(context, relative))
    if manifest.version is None:
        found.append(checks.Check("version", checks.FAIL, "version is null: nothing to promote"))
        return _document(environment, found, manifest)
    try:
        tags = registry.get(manifest.model, str(manifest.version)).tags
    except RegistryError as exc:
        found.append(checks.Check("version", checks.FAIL, exc.message))
        return _document(environment, found, manifest)
    found.append(
        checks.Check("version", checks.PASS, f"{manifest.model} v{manifest.version} exists")
    )
    found += [
        checks.gate_passed(manifest.version, tags),
        checks.digest_matches(manifest, tags),
        *_kubernetes_checks(environment, directory, manifest, tags),
        checks.candidate_gated(manifest, _candidate_tags(registry, manifest)),
        checks.soaked(manifest, tags, now),
        checks.not_frozen(manifest, now, _override_by(env)),
    ]
    return _document(environment, found, manifest)


def _kubernetes_checks(
    environment: str, directory: Path, manifest: Manifest, tags: dict[str, str]
) -> list[checks.Check]:
    """For a kubernetes target: the image is the version's, the objects are rendered."""
    if manifest.target != "kubernetes":
        return []
    try:
        differ = kubernetes.differences(environment, directory)
    except ConfigError as exc:
        differ = [f"(cannot render: {exc.message})"]
    return [checks.image_matches(manifest, tags), checks.rendered(differ)]


def _changed_environment(changed: list[str], root: Path, directory: Path) -> str | None:
    """The environment of the first manifest in ``changed``, None when there is none."""
    folder = directory.resolve().relative_to(root).as_posix()
    for name in sorted(changed):
        stem = name.removeprefix(f"{folder}/").removesuffix(".yaml")
        if name.startswith(f"{folder}/") and name.endswith(".yaml") and stem in ENVIRONMENTS:
            return stem
    return None


def _candidate_tags(registry: Registry, manifest: Manifest) -> dict[str, str] | None:
    candidate = manifest.rollout.candidate_version
    if candidate is None:
        return None
    try:
        return registry.get(manifest.model, str(candidate)).tags
    except RegistryError:
        return None


def _document(
    environment: str | None, found: list[checks.Check], manifest: Manifest | None
) -> dict:
    return {
        "schema": SCHEMA,
        "environment": environment,
        "version": manifest.version if manifest else None,
        "digest": manifest.digest if manifest else None,
        "status": checks.verdict(found),
        "checks": [c.to_dict() for c in found],
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _override_by(env: dict[str, str]) -> str | None:
    """Who lifted a freeze: the sender of a pull-request event whose PR has the label."""
    event_path = env.get("GITHUB_EVENT_PATH")
    if not event_path or not Path(event_path).is_file():
        return None
    try:
        event = json.loads(Path(event_path).read_text(encoding="utf-8"))
        labels = {label["name"] for label in event["pull_request"].get("labels", [])}
    except (ValueError, KeyError, TypeError):
        return None
    if checks.OVERRIDE_FREEZE_LABEL not in labels:
        return None
    return str((event.get("sender") or {}).get("login") or "unknown")


def write_check(document: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / "promote.json"
    write_json(path, document)
    return path
