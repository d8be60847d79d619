"""The GitHub client's calls on a repository's content: files, branches, commits, deployments.

A mixin of :class:`slipway.github.GitHub`: every call goes through its ``request`` (timeouts,
retries, the token in one header) and ``paginate``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import requests

from slipway.errors import GitHubError

PER_PAGE = 100  # GitHub's maximum page size
DEPLOYMENT_STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")


class RepositoryContent:
    """Files, branches, commits and deployments of the client's repository."""

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        raise NotImplementedError

    def paginate(self, path: str, params: dict | None = None) -> Iterator[Any]:
        raise NotImplementedError

    def _repo(self, suffix: str) -> str:
        raise NotImplementedError

    # -- files, branches, commits ------------------------------------------------------------

    def put_file(self, branch: str, path: str, content_text: str, message: str) -> dict:
        """Commit ``path`` (new or not) on ``branch``; ``{"commit": sha, "sha": file's sha}``."""
        url = self._repo(f"/contents/{quote(path.lstrip('/'))}")
        content = base64.b64encode(content_text.encode("utf-8")).decode("ascii")
        payload = {"message": message, "content": content, "branch": branch}
        try:
            current = self.request("GET", url, params={"ref": branch}).json()
        except GitHubError as exc:
            if exc.status != 404:  # 404: a new file
                raise
        else:
            if not isinstance(current, dict) or current.get("type") != "file":
                raise GitHubError(f"{path} on {branch} is not a file", "choose a file's path")
            payload["sha"] = current["sha"]
        answer = self.request("PUT", url, json=payload).json()
        return {"commit": answer["commit"]["sha"], "sha": answer["content"]["sha"]}

    def _head(self, branch: str) -> str | None:
        try:
            ref = self.request("GET", self._repo(f"/git/ref/heads/{quote(branch)}")).json()
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise
        return ref["object"]["sha"]

    def ensure_branch(self, branch: str, from_ref: str) -> str:
        """Create ``branch`` unless it exists, at ``from_ref`` (branch or sha); its head sha."""
        head = self._head(branch)
        if head is not None:
            return head
        start = from_ref.removeprefix("refs/heads/")
        sha = start if re.fullmatch(r"[0-9a-f]{40}", start) else self._head(start)
        if sha is None:
            text = f"cannot create branch {branch}: {self.repo} has no branch {from_ref!r}"
            raise GitHubError(text, "name an existing branch or a full commit sha", 404)
        body = {"ref": f"refs/heads/{branch}", "sha": sha}
        try:
            return self.request("POST", self._repo("/git/refs"), json=body).json()["object"]["sha"]
        except GitHubError as exc:  # a concurrent run created it first
            if exc.status != 422 or (head := self._head(branch)) is None:
                raise
            return head

    def reset_branch(self, branch: str, sha: str) -> str:
        """Force ``branch`` to commit ``sha``, dropping commits not in it; the new head sha."""
        path = self._repo(f"/git/refs/heads/{quote(branch)}")
        return self.request("PATCH", path, json={"sha": sha, "force": True}).json()["object"]["sha"]

    def branch_commits(self, branch: str, base: str) -> list[dict]:
        """The commits on ``branch`` not on ``base``, oldest first: ``sha``, ``author`` (a login;
        None when the email is no account's), ``committer_email``, ``message``."""
        url = self._repo(f"/compare/{quote(base)}...{quote(branch)}")
        commits, total, page = [], 1, 1
        while len(commits) < total:
            answer = self.request("GET", url, params={"per_page": PER_PAGE, "page": page}).json()
            if not answer["commits"]:
                break
            total, page = answer["total_commits"], page + 1
            commits += [
                {
                    "sha": c["sha"],
                    "author": (c.get("author") or {}).get("login"),
                    "committer_email": (c["commit"].get("committer") or {}).get("email"),
                    "message": c["commit"]["message"],
                }
                for c in answer["commits"]
            ]
        return commits

    # -- deployments -------------------------------------------------------------------------

    def create_deployment(
        self, ref: str, environment: str, description: str, payload: dict
    ) -> dict:
        """Record a deployment of ``ref`` to ``environment`` (no auto-merge, no status checks)."""
        body = {"ref": ref, "environment": environment, "description": description}
        body |= {"payload": payload, "auto_merge": False, "required_contexts": []}
        return self.request("POST", self._repo("/deployments"), json=body).json()

    def create_deployment_status(
        self, deployment_id: int, state: str, environment_url: str = "", description: str = ""
    ) -> dict:
        """Add a status (one of :data:`DEPLOYMENT_STATES`) to a deployment."""
        if state not in DEPLOYMENT_STATES:
            raise GitHubError(f"deployment state {state!r} is not one of {DEPLOYMENT_STATES}")
        body = {"state": state, "environment_url": environment_url}
        body["description"] = description[:140]  # GitHub's limit
        path = self._repo(f"/deployments/{deployment_id}/statuses")
        return self.request("POST", path, json=body).json()

    def list_deployments(self, environment: str) -> list[dict]:
        """The deployments to ``environment``, newest first, across every page."""
        return list(self.paginate(self._repo("/deployments"), {"environment": environment}))

    def list_deployment_statuses(self, deployment_id: int) -> list[dict]:
        """A deployment's statuses, newest first, across every page."""
        return list(self.paginate(self._repo(f"/deployments/{deployment_id}/statuses")))
