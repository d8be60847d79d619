"""The bot pull request that carries a change (a manifest, or new training data): one fixed
branch per purpose.

The branch ``slipway/promote-ENV`` (or ``slipway/rollback-ENV``; ``slipway/retrain`` for new
training data) is reset to the base and the files committed on it through the REST API, one
commit per file; the one open pull request from it is opened or updated, never a second. A
branch holding a commit the bot did not make is a person's now: it is not pushed over, and the
pull request gets a comment with the new evidence instead.
"""

from __future__ import annotations

from typing import Any

from slipway.github import GitHub, GitHubError
from slipway.manifests import Manifest

METRICS = ("recall", "precision", "f1", "accuracy", "roc_auc", "pr_auc", "log_loss")


def _is_bot(commit: dict[str, Any]) -> bool:
    return str(commit.get("author") or "").endswith("[bot]") or "[bot]" in str(
        commit.get("committer_email") or ""
    )


def body(
    manifest: Manifest,
    version: int,
    tags: dict[str, str],
    metrics: dict[str, float],
    current_metrics: dict[str, float] | None,
    stage_path: list[str],
) -> str:
    """The evidence a reviewer needs to merge without opening another tab."""
    environment, model = manifest.environment, manifest.model
    current = manifest.version
    lines = [
        f"Promotes **{model} v{version}** to **{environment}**"
        + (f" (runs v{current} now)." if current else " (nothing runs there yet)."),
        "",
        "### What changes",
        "",
        f"`environments/{environment}.yaml`: `version` → {version}, "
        f"`digest` → `{tags.get('slipway.digest')}` (the Bento `slipway package` stored)"
        + (
            f", `kubernetes.image` → `{tags.get('slipway.image')}`, and the objects "
            f"`slipway render {environment}` makes of it under `environments/kubernetes/` "
            "(in this pull request, so the cluster runs exactly what is merged)."
            if manifest.target == "kubernetes"
            else "."
        ),
        "",
        "### Gate",
        "",
        f"- verdict: **{tags.get('slipway.gate', 'not gated')}** on the frozen eval set "
        f"(`{str(tags.get('slipway.gate_eval_digest', ''))[:12]}`)",
        "",
        f"| metric | v{version} | {f'v{current}' if current else 'now'} | Δ |",
        "|---|---:|---:|---:|",
    ]
    for name in METRICS:
        value = metrics.get(f"eval_{name}")
        before = (current_metrics or {}).get(f"eval_{name}")
        delta = f"{value - before:+.3f}" if value is not None and before is not None else "—"
        lines.append(f"| {name} | {_num(value)} | {_num(before)} | {delta} |")
    lines += [
        "",
        "### Stage path",
        "",
        " → ".join(f"**{stage}**" if stage == environment else stage for stage in stage_path),
        "",
        "### Version card",
        "",
        f"- owners: {tags.get('slipway.owners') or '—'}",
        f"- intended use: {tags.get('slipway.intended_use') or '—'}",
        f"- trained from commit `{tags.get('slipway.git_commit', '—')}`, "
        f"data sha256 `{str(tags.get('slipway.data_digest', '—'))[:12]}`",
        "",
        "### On merge",
        "",
        (
            f"Argo CD or Flux applies `environments/kubernetes/{environment}/`; `deploy.yml` "
            f"runs `slipway deploy {environment}`, which waits for the rollout to be healthy. "
            if manifest.target == "kubernetes"
            else f"`deploy.yml` runs `slipway deploy {environment}`: the new version starts "
            "beside the old one, is smoke-tested, and only then takes the traffic. "
        )
        + f"To undo: `slipway rollback {environment}`.",
    ]
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def open_or_update(
    github: GitHub,
    branch: str,
    base: str,
    path: str,
    text: str,
    title: str,
    text_body: str,
    reviewers: list[str],
) -> dict[str, Any]:
    """Commit ``text`` to ``path`` on ``branch`` and open or update its one pull request."""
    return open_or_update_files(github, branch, base, {path: text}, title, text_body, reviewers)


def open_or_update_files(
    github: GitHub,
    branch: str,
    base: str,
    files: dict[str, str],
    title: str,
    text_body: str,
    reviewers: list[str],
    evidence: str | None = None,
) -> dict[str, Any]:
    """Commit ``files`` (path → text) on ``branch``, one bot commit per file on top of
    ``base``, and open or update its one pull request. One file's commit is titled ``title``;
    of several, each commit's title names its file too.

    A branch that holds a person's commits is not pushed: the change is commented on its pull
    request instead, once per ``evidence`` (a line of ``text_body`` that names what the change
    rests on) when given, else on every call."""
    github.ensure_branch(branch, base)
    people = [c for c in github.branch_commits(branch, base) if not _is_bot(c)]
    existing = github.find_pull_request(branch, base)
    if people:
        names = {c.get("author") or c.get("committer_email") or "?" for c in people}
        who = ", ".join(sorted(names))
        note = (
            f"Not pushed: `{branch}` holds commits by {who}, so it is theirs now. "
            f"The change Slipway would make:\n\n{text_body}"
        )
        action = "skipped"
        if existing is not None:
            said = [c.get("body") or "" for c in github.list_issue_comments(existing["number"])]
            if evidence is not None and any(evidence in body for body in said):
                action = "already commented"
            else:
                github.create_issue_comment(existing["number"], note)
                action = "commented"
        return {
            "action": action,
            "number": existing["number"] if existing else None,
            "url": existing.get("html_url") if existing else None,
            "pushed": False,
            "reason": f"the branch holds commits by {who}",
        }
    github.reset_branch(branch, _sha_of(github, base))  # one bot commit per file on top of base
    for path, text in files.items():
        github.put_file(branch, path, text, title if len(files) == 1 else f"{title}: {path}")
    pull = github.upsert_pull_request(branch, base, title, text_body)
    result = {**pull, "pushed": True, "reviewers": [], "reviewers_error": None}
    users = [r for r in reviewers if "/" not in r]  # org/team owners: CODEOWNERS asks them
    if users:
        try:
            github.request_reviewers(pull["number"], users)
            result["reviewers"] = users
        except GitHubError as exc:
            result["reviewers_error"] = exc.message
    return result


def _sha_of(github: GitHub, ref: str) -> str:
    """The commit ``ref`` (a branch) points at."""
    return github.ensure_branch(ref, ref)
