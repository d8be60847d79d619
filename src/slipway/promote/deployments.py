"""A deploy's record on GitHub: a Deployment with its statuses, and the revert pull request.

With ``GITHUB_TOKEN`` and ``GITHUB_REPOSITORY`` (a workflow run), ``slipway deploy ENV`` creates
a GitHub Deployment of the commit it deploys (``GITHUB_SHA``) to the environment ENV, marks it
``in_progress``, then ``success`` with the service's URL or ``failure`` with why. When the smoke
tests fail, the previous version serves on while main names the new one; the revert pull request
on the fixed branch ``slipway/revert-ENV`` puts the manifest back to what runs, so git never
says one thing while the service does another without an open pull request saying so.
"""

from __future__ import annotations

import os
from typing import Any

from slipway.github import GitHub, GitHubError
from slipway.progress import Progress
from slipway.promote.pull_request import open_or_update

REVERT_BRANCH = "slipway/revert-{environment}"


class DeploymentRecord:
    """The GitHub Deployment of one ``slipway deploy``; ``start`` first, then ``finish``."""

    def __init__(self, github: GitHub, environment: str, ref: str) -> None:
        self.github = github
        self.environment = environment
        self.ref = ref
        self.id: int | None = None
        self.error: str | None = None

    def start(self, version: str, digest: str) -> None:
        """Create the Deployment and mark it in progress; a refusal raises (nothing moved yet)."""
        created = self.github.create_deployment(
            self.ref,
            self.environment,
            f"release-risk v{version} to {self.environment}",
            {"version": version, "digest": digest},
        )
        self.id = int(created["id"])
        self.github.create_deployment_status(self.id, "in_progress", description="smoke testing")

    def finish(self, state: str, url: str = "", description: str = "") -> None:
        """Add the final status; a refusal is kept in ``error`` (the deploy itself is done)."""
        if self.id is None:
            return
        try:
            self.github.create_deployment_status(self.id, state, url, description)
        except GitHubError as exc:
            self.error = exc.message


def record_from_env(environment: str, env: dict[str, str] | None = None) -> DeploymentRecord | None:
    """A :class:`DeploymentRecord` in a workflow run with a token; None outside one."""
    env = dict(os.environ) if env is None else env
    token = env.get("GITHUB_TOKEN") or env.get("GH_TOKEN")
    repo = env.get("GITHUB_REPOSITORY")
    if not token or not repo:
        return None
    github = GitHub(token, repo, api_url=env.get("GITHUB_API_URL"))
    return DeploymentRecord(github, environment, env.get("GITHUB_SHA") or "main")


def revert_body(document: dict[str, Any]) -> str:
    """Why the revert is needed: the smoke checks that failed and what serves instead."""
    environment, version = document["environment"], document["version"]
    serving = document.get("serving") or {}
    failed = [c for c in document["smoke"]["checks"] if not c["passed"]]
    lines = [
        f"**v{version} failed its smoke tests in {environment}**, so it never took traffic"
        + (
            f": v{serving['version']} serves on at {serving['url']}."
            if serving
            else "; nothing serves there."
        ),
        "",
        f"`environments/{environment}.yaml` on main names v{version}. Merging this puts it back "
        "to what runs, so git and the service agree again. To try the new version again, fix it "
        f"and promote it with a new pull request.",
        "",
        "### Failed checks",
        "",
        *[f"- **{c['check']}**: {c['detail']}" for c in failed],
    ]
    return "\n".join(lines) + "\n"


def open_revert(
    github: GitHub,
    document: dict[str, Any],
    path: str,
    text: str,
    base: str,
    owners: list[str],
    progress: Progress = lambda _m: None,
) -> dict[str, Any]:
    """Open (or update) the one revert pull request that sets ``path`` back to ``text``."""
    environment = document["environment"]
    serving = document.get("serving") or {}
    back_to = f"v{serving['version']}" if serving else "its previous manifest"
    title = f"Revert {environment} to {back_to}: v{document['version']} failed its smoke tests"
    branch = REVERT_BRANCH.format(environment=environment)
    result = open_or_update(github, branch, base, path, text, title, revert_body(document), owners)
    progress(f"revert pull request {result.get('action')}: {result.get('url')} ({branch})")
    return {**result, "branch": branch, "title": title}
