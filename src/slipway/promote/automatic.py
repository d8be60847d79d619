"""Which version to promote when no one names it: after a model PR merges, and after a soak.

``merged`` finds the version the merged pull request's run registered and gated, and whether
``model/`` is still what that run trained (a later merge may have changed it: then the propose
flow must run on the merged tree first). ``soaked`` finds the version the stage before an
environment runs, and whether it has soaked there long enough. Neither changes anything.
"""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slipway.errors import ConfigError
from slipway.github import GitHub, GitHubError
from slipway.manifests import load_manifest, manifest_path
from slipway.promote import checks
from slipway.promote.repository import git
from slipway.registry import Registry

PR_TAG = "slipway.pr_number"  # set by `slipway train` in a pull request's run
COMMIT_TAG = "slipway.git_commit"
_MERGED_PR = re.compile(r"\(#(\d+)\)\s*$|^Merge pull request #(\d+)", re.MULTILINE)


def merged_pull_request(root: Path, sha: str, github: GitHub | None) -> int | None:
    """The pull request merged as commit ``sha``: GitHub's answer, else the commit message's
    ``(#N)`` (squash) or ``Merge pull request #N`` (merge commit)."""
    if github is not None:
        try:
            pulls = github.pulls_of_commit(sha)
        except GitHubError:
            pulls = []
        merged = [p for p in pulls if p.get("merge_commit_sha") == sha] or pulls
        if merged:
            return int(merged[0]["number"])
    message = git(root, "log", "-1", "--format=%B", sha, fix="pass an existing commit as --sha")
    found = _MERGED_PR.search(message)
    return int(found[1] or found[2]) if found else None


def model_changed(root: Path, gated_commit: str | None, sha: str, paths: str = "model") -> bool:
    """Whether ``paths`` differ between the gated commit and ``sha``; True when the gated
    commit is unknown here (the safe answer: train and gate again)."""
    if not gated_commit:
        return True
    done = subprocess.run(
        ["git", "diff", "--quiet", gated_commit, sha, "--", paths],
        cwd=root,
        capture_output=True,
        check=False,
    )
    return done.returncode != 0


def merged(
    registry: Registry, model: str, root: Path, sha: str, github: GitHub | None
) -> dict[str, Any]:
    """The gated, packaged version of the pull request merged as ``sha``, if any, and whether
    it still is what ``model/`` holds at ``sha``."""
    number = merged_pull_request(root, sha, github)
    found: dict[str, Any] = {"pull_request": number, "sha": sha, "version": None}
    if number is None:
        return {**found, "rerun": True, "reason": f"{sha[:12]} merged no pull request we know"}
    candidates = registry.find(model, {PR_TAG: str(number)})
    usable = [
        ref
        for ref in candidates
        if ref.tags.get(checks.GATE_TAG) == "pass" and ref.tags.get(checks.DIGEST_TAG)
    ]
    if not usable:
        why = "registered no version" if not candidates else "has no gated, packaged version"
        return {**found, "rerun": True, "reason": f"#{number} {why}"}
    ref = usable[0]
    gated = ref.tags.get(COMMIT_TAG)
    if model_changed(root, gated, sha):
        return {
            **found,
            "rerun": True,
            "reason": f"model/ at {sha[:12]} differs from v{ref.version}'s gated commit "
            f"{(gated or 'unknown')[:12]}",
        }
    return {
        **found,
        "version": int(ref.version),
        "rerun": False,
        "reason": f"v{ref.version} of #{number} passed its gate on the same model/",
    }


def soaked(
    registry: Registry, environment: str, directory: Path, now: datetime | None = None
) -> dict[str, Any]:
    """The version the stage before ``environment`` runs, and whether it may move on now."""
    now = now or datetime.now(UTC)
    target = load_manifest(manifest_path(environment, directory))
    stage = target.promotion.from_stage
    if stage is None:
        raise ConfigError(
            f"{environment} names no stage to promote from (promotion.from is null)",
            f"promote into {environment} with --version N",
        )
    source = load_manifest(manifest_path(stage, directory))
    if source.version is None:
        return {"version": None, "ready": False, "reason": f"{stage} runs nothing yet"}
    if source.version == target.version:
        reason = f"{environment} already runs v{source.version}"
        return {"version": source.version, "ready": False, "reason": reason}
    tags = registry.get(source.model, str(source.version)).tags
    moved = target.model_copy(update={"version": source.version})
    verdict = checks.soaked(moved, tags, now)
    return {
        "version": source.version,
        "ready": verdict.status == checks.PASS,
        "reason": verdict.reason,
    }
