"""``slipway history ENV``: every version an environment's manifest named, newest first.

Built from the manifest's git log (when, who, which commit and pull request, which version and
digest) and the registry's tags on each version (gate verdict, smoke result and deploy result in
that environment) and, in a repository on GitHub, the Deployments of each commit with their
final status. Nothing is capped: the whole log is read in one ``git log -p``, and every page of
Deployments.
"""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path
from typing import Any

from slipway.errors import RegistryError
from slipway.github import GitHub
from slipway.manifests import load_manifest, manifest_path
from slipway.promote.checks import GATE_TAG, deployed_tag, smoke_tag
from slipway.promote.deploy import RESULT_TAG
from slipway.promote.repository import git, toplevel
from slipway.registry import Registry

SCHEMA = "slipway.history/1"
_SEP = "\x1f"
_START = "\x1e"
_PR = re.compile(r"\(#(\d+)\)|pull request #(\d+)")
_LINE = re.compile(r"^\+(version|digest):[ \t]*([^#\s]*)")


def manifest_log(path: Path) -> list[dict[str, Any]]:
    """Each commit that changed the manifest's ``version`` or ``digest``, newest first."""
    root = toplevel(path.parent)
    relative = path.resolve().relative_to(root).as_posix()
    text = git(
        root,
        "log",
        "-p",
        "--unified=0",
        f"--format={_START}%H{_SEP}%aI{_SEP}%an{_SEP}%ae{_SEP}%s",
        "--",
        relative,
    )
    entries = []
    for chunk in text.split(_START)[1:]:
        header, _, patch = chunk.partition("\n")
        sha, when, author, email, subject = header.split(_SEP)
        values = {m[1]: m[2] for m in map(_LINE.match, patch.splitlines()) if m}
        if "version" not in values and "digest" not in values:
            continue
        number = _PR.search(subject)
        entries.append(
            {
                "commit": sha,
                "at": when,
                "author": author,
                "email": email,
                "subject": subject,
                "pull_request": int(number[1] or number[2]) if number else None,
                "version": None if values.get("version") in (None, "null") else values["version"],
                "digest": None if values.get("digest") in (None, "null") else values["digest"],
            }
        )
    return entries


def deployments(github: GitHub, environment: str) -> dict[str, list[dict[str, Any]]]:
    """GitHub's Deployments to ``environment`` by the commit deployed, newest first, each with
    its latest status and the service's URL."""
    by_commit: dict[str, list[dict[str, Any]]] = {}
    for deployment in github.list_deployments(environment):
        statuses = github.list_deployment_statuses(int(deployment["id"]))
        latest = statuses[0] if statuses else {}
        by_commit.setdefault(deployment["sha"], []).append(
            {
                "id": deployment["id"],
                "at": deployment.get("created_at"),
                "state": latest.get("state"),
                "url": latest.get("environment_url") or None,
            }
        )
    return by_commit


def history(
    environment: str, registry: Registry, directory: Path, github: GitHub | None = None
) -> dict[str, Any]:
    """The manifest's log joined with each version's tags in the registry and, with
    ``github``, the GitHub Deployments of each commit."""
    path = manifest_path(environment, directory)
    model = load_manifest(path).model
    entries = manifest_log(path)
    recorded = deployments(github, environment) if github is not None else {}
    tags_of: dict[str, dict[str, str]] = {}
    for entry in entries:
        version = entry["version"]
        if version is not None and version not in tags_of:
            try:
                tags_of[version] = registry.get(model, version).tags
            except RegistryError:
                tags_of[version] = {}
        tags = tags_of.get(version or "", {})
        entry["gate"] = tags.get(GATE_TAG)
        entry["smoke"] = tags.get(smoke_tag(environment))
        entry["deploy"] = tags.get(RESULT_TAG.format(environment=environment))
        entry["deployed_at"] = tags.get(deployed_tag(environment))
        entry["deployments"] = recorded.get(entry["commit"], [])
    for newer, older in pairwise(entries):
        older["rolled_back"] = newer["subject"].lower().startswith(("roll back", "revert"))
    if entries:
        entries[0]["rolled_back"] = False
    return {"schema": SCHEMA, "environment": environment, "model": model, "entries": entries}
