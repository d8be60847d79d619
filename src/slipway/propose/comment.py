"""The report as the sticky pull-request comment, safely across the two workflows.

``pr.yml`` runs the PR's code with no write token and records which pull request it ran for in
``pr.json`` next to the report outputs. ``report.yml`` runs trusted code with a write token: it
takes the number from its ``workflow_run`` event, or — for PRs from forks, whose event lists no
pull requests — from ``pr.json``, and then checks with GitHub that this pull request's head is the
commit the run was for, so an artifact cannot steer the comment onto another pull request.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from slipway.fsutil import atomic_write_text, write_json
from slipway.github import DEFAULT_API_URL, GitHub, GitHubError

PR_FILE = "pr.json"


def _event(env: Mapping[str, str]) -> dict:
    path = env.get("GITHUB_EVENT_PATH")
    if not path or not Path(path).is_file():
        return {}
    try:
        event = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def _recorded_number(out_dir: Path) -> int | None:
    """The PR number the PR job wrote to ``pr.json`` (untrusted: checked before use)."""
    path = Path(out_dir) / PR_FILE
    if not path.is_file():
        return None
    try:
        number = json.loads(path.read_text(encoding="utf-8")).get("number")
    except (ValueError, AttributeError):
        number = None
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise GitHubError(
            f"{path} does not hold a pull request number",
            "the report artifact is not one that pr.yml wrote; rerun the PR workflow",
        )
    return number


def pr_context(
    env: Mapping[str, str] = os.environ, out_dir: Path | None = None
) -> tuple[str | None, int | None]:
    """``(repository, PR number)`` from the Actions environment, each None when unknown.

    The number comes from ``SLIPWAY_PR_NUMBER``, else the event payload at ``GITHUB_EVENT_PATH``
    (``pull_request.number`` or ``workflow_run.pull_requests[0].number``), else ``OUT/pr.json``.
    """
    repo = env.get("GITHUB_REPOSITORY") or None
    if env.get("SLIPWAY_PR_NUMBER"):
        if not env["SLIPWAY_PR_NUMBER"].isdigit():
            raise GitHubError(
                f"SLIPWAY_PR_NUMBER is {env['SLIPWAY_PR_NUMBER']!r}, not a pull request number",
                "set it to the PR number, e.g. SLIPWAY_PR_NUMBER=42, or unset it",
            )
        return repo, int(env["SLIPWAY_PR_NUMBER"])
    event = _event(env)
    number = (event.get("pull_request") or {}).get("number")
    if number is None:
        pulls = (event.get("workflow_run") or {}).get("pull_requests") or []
        number = pulls[0].get("number") if pulls else None
    if number is None and out_dir is not None:
        number = _recorded_number(out_dir)
    return repo, int(number) if number is not None else None


def record_pr(out_dir: Path, env: Mapping[str, str] = os.environ) -> Path | None:
    """In a ``pull_request`` run, write ``OUT/pr.json`` (number and head commit) for report.yml."""
    pull = _event(env).get("pull_request") or {}
    if not isinstance(pull.get("number"), int):
        return None
    path = Path(out_dir) / PR_FILE
    write_json(path, {"number": pull["number"], "head_sha": (pull.get("head") or {}).get("sha")})
    return path


def _check_head(github: GitHub, number: int, event: dict) -> None:
    """In a ``workflow_run`` run, refuse a PR whose head is not the commit the run was for."""
    expected = (event.get("workflow_run") or {}).get("head_sha")
    if not expected:
        return
    head = (github.get_pull_request(number).get("head") or {}).get("sha")
    if head != expected:
        raise GitHubError(
            f"pull request #{number} is at {str(head)[:12]}, but the workflow run was for "
            f"{expected[:12]}: not posting the report there",
            "a newer push supersedes this run (its own run will comment), or the report "
            "artifact names the wrong pull request",
        )


def post_report(
    markdown: str,
    *,
    repo: str,
    pr_number: int,
    token: str,
    api_url: str | None = None,
    event: dict | None = None,
    **client,
) -> dict:
    """Upsert the sticky report comment on a pull request; ``client`` goes to :class:`GitHub`."""
    github = GitHub(token, repo, api_url=api_url, **client)
    try:
        _check_head(github, pr_number, event or {})
        result = github.upsert_comment(pr_number, markdown)
    finally:
        github.close()
    return {"posted": True, "repo": repo, "pr_number": pr_number, **result}


def publish_report(
    markdown: str,
    out_dir: Path,
    env: Mapping[str, str] = os.environ,
    *,
    repo: str | None = None,
    pr_number: int | None = None,
    **client,
) -> dict:
    """Post the report as the sticky PR comment, or say why not; never prints.

    Always writes ``out_dir/comment.md`` (what is, or would be, posted). Without a token
    (``GITHUB_TOKEN`` or ``GH_TOKEN``) or without a repository and PR number it returns
    ``{"posted": False, "reason": ..., "path": ...}`` for the caller to print.
    """
    path = Path(out_dir) / "comment.md"
    atomic_write_text(path, markdown)
    found_repo, found_number = pr_context(env, out_dir)
    repo, pr_number = repo or found_repo, pr_number or found_number
    token = env.get("GITHUB_TOKEN") or env.get("GH_TOKEN")
    reason = None
    if not token:
        reason = "no GITHUB_TOKEN: nothing posted"
    elif not repo:
        reason = "no GITHUB_REPOSITORY: nothing posted"
    elif not pr_number:
        reason = "no pull request number (SLIPWAY_PR_NUMBER, the event or pr.json): nothing posted"
    if reason:
        return {"posted": False, "reason": reason, "path": str(path)}
    result = post_report(
        markdown,
        repo=repo,
        pr_number=pr_number,
        token=token,
        api_url=env.get("GITHUB_API_URL") or DEFAULT_API_URL,
        event=_event(env),
        **client,
    )
    return {**result, "path": str(path)}
