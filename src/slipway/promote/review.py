"""What the promotion check reads from, and says on, the pull request it checks.

In a ``pull_request`` workflow run (``GITHUB_TOKEN``, ``GITHUB_REPOSITORY`` and the event
payload at ``GITHUB_EVENT_PATH``) the check asks GitHub which other open pull requests change
the same manifest, and keeps one sticky comment on the pull request with every check's reason.
Outside such a run both are skipped, and say so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slipway.github import GitHub, GitHubError
from slipway.promote import checks

MARKER = "<!-- slipway:promote-check -->"
_ICONS = {checks.PASS: "✅", checks.FAIL: "❌", checks.SKIPPED: "➖"}


@dataclass(frozen=True)
class PullContext:
    """The pull request a check runs for, and a client for its repository."""

    github: GitHub
    number: int


def github_from_env(env: dict[str, str] | None = None) -> GitHub | None:
    """A client for ``GITHUB_REPOSITORY`` with ``GITHUB_TOKEN`` (or ``GH_TOKEN``); None
    without them."""
    env = dict(os.environ) if env is None else env
    token = env.get("GITHUB_TOKEN") or env.get("GH_TOKEN")
    repo = env.get("GITHUB_REPOSITORY")
    if not token or not repo:
        return None
    return GitHub(token, repo, api_url=env.get("GITHUB_API_URL"))


def pull_context(env: dict[str, str] | None = None) -> PullContext | None:
    """The pull request of a ``pull_request`` run, or None outside one (or without a token)."""
    env = dict(os.environ) if env is None else env
    number = _event_number(env.get("GITHUB_EVENT_PATH"))
    github = github_from_env(env) if number is not None else None
    return PullContext(github, number) if github is not None and number is not None else None


def _event_number(event_path: str | None) -> int | None:
    if not event_path or not Path(event_path).is_file():
        return None
    try:
        event = json.loads(Path(event_path).read_text(encoding="utf-8"))
        return int(event["pull_request"]["number"])
    except (ValueError, KeyError, TypeError):
        return None


def open_promotion(context: PullContext | None, manifest: str) -> checks.Check:
    """:func:`checks.one_open_promotion` on the repository's open pull requests."""
    if context is None:
        return checks.Check(
            "one-open-promotion",
            checks.SKIPPED,
            "not a pull request run with a token: open pull requests not checked",
        )
    try:
        open_files = {
            pull["number"]: context.github.pull_request_files(pull["number"])
            for pull in context.github.open_pull_requests()
            if pull["number"] != context.number
        }
    except GitHubError as exc:
        return checks.Check(
            "one-open-promotion", checks.FAIL, f"could not list open pull requests: {exc.message}"
        )
    return checks.one_open_promotion(manifest, context.number, open_files)


def render(document: dict[str, Any]) -> str:
    """The sticky comment: the verdict, then every check with its reason."""
    verdict = document["status"]
    where = document.get("environment") or "an environment"
    version = document.get("version")
    head = f"v{version} to {where}" if version is not None else where
    lines = [
        MARKER,
        f"### {_ICONS[verdict]} Promotion of {head}: {verdict}",
        "",
        "| | check | why |",
        "|---|---|---|",
    ]
    for item in document["checks"]:
        reason = str(item["reason"]).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {_ICONS[item['status']]} | {item['check']} | {reason} |")
    lines += [
        "",
        f"Checked at {document['checked_at']} by `slipway promote --check`; "
        "it runs again on every push to this pull request.",
    ]
    return "\n".join(lines) + "\n"


def post(context: PullContext, document: dict[str, Any]) -> dict[str, Any]:
    """Keep the one check comment on the pull request; a refused write is reported, not raised
    (pull requests from forks get a read-only token, and the check itself still counts)."""
    try:
        done = context.github.upsert_comment(context.number, render(document), marker=MARKER)
    except GitHubError as exc:
        return {"posted": False, "reason": exc.message, "hint": exc.hint}
    return {"posted": True, **done, "number": context.number}
