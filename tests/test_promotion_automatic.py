"""Promotions no one names a version for, and the check's pull-request side, against the
GitHub emulator and a real MLflow registry in a real git repository."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from slipway.cli import main
from slipway.promote import automatic, checks, review

REPO = Path(__file__).resolve().parent.parent
CONFIG = str(REPO / "model" / "slipway.yaml")
DIGEST = "sha256:" + "5e" * 32


def _git(cwd: Path, *args: str) -> str:
    identity = ["-c", "user.name=Slipway Tests", "-c", "user.email=tests@example.com"]
    done = subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True)
    return done.stdout.decode().strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """main holds the manifests and a model/ folder; nothing of GitHub unless a test adds it."""
    for name in (
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "GITHUB_REPOSITORY",
        "GITHUB_EVENT_PATH",
        "GITHUB_SHA",
    ):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "repo"
    shutil.copytree(REPO / "environments", root / "environments")
    (root / "model").mkdir()
    (root / "model" / "params.txt").write_text("n_estimators=100\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "manifests and model")
    return root


def _gated(**tags: str) -> dict[str, str]:
    return {checks.GATE_TAG: "pass", checks.DIGEST_TAG: DIGEST, **tags}


def _model_pr(repo: Path, number: int, text: str) -> tuple[str, str]:
    """A model PR's branch commit (what its run gated) and its squash merge on main."""
    _git(repo, "checkout", "-q", "-b", f"pr-{number}", "main")
    (repo / "model" / "params.txt").write_text(text)
    _git(repo, "commit", "-qam", "Tune the forest")
    gated = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "main")
    _git(repo, "merge", "-q", "--squash", f"pr-{number}")
    _git(repo, "commit", "-qm", f"Tune the forest (#{number})")
    return gated, _git(repo, "rev-parse", "HEAD")


def _args(repo: Path, *extra: str) -> list[str]:
    out = ["--out", str(repo.parent / "out"), "--config", CONFIG]
    return [*extra, "--environments", str(repo / "environments"), *out]


def test_after_a_model_pr_merges_its_gated_version_goes_to_staging(repo, versions, capsys):
    gated, merged = _model_pr(repo, 7, "n_estimators=200\n")
    versions(**_gated(**{automatic.PR_TAG: "7", automatic.COMMIT_TAG: gated}))
    wanted = versions(**_gated(**{automatic.PR_TAG: "7", automatic.COMMIT_TAG: gated}))
    versions(**{automatic.PR_TAG: "7", checks.GATE_TAG: "fail", automatic.COMMIT_TAG: gated})
    versions(**_gated(**{automatic.PR_TAG: "8", automatic.COMMIT_TAG: gated}))
    assert main(["promote", "staging", *_args(repo, "--merged", "--sha", merged)]) == 0
    captured = capsys.readouterr()
    assert f"v{wanted} of #7 passed its gate on the same model/" in captured.err
    assert f"version: {wanted}" in (repo / "environments" / "staging.yaml").read_text()
    assert f"Promote release-risk v{wanted} to staging" in captured.out


def test_a_merge_that_changed_model_since_the_gate_needs_the_propose_flow(repo, versions):
    gated, merged = _model_pr(repo, 7, "n_estimators=200\n")
    (repo / "model" / "params.txt").write_text("n_estimators=300\n")  # a later merge
    _git(repo, "commit", "-qam", "Another tweak")
    moved = _git(repo, "rev-parse", "HEAD")
    ref = versions(**_gated(**{automatic.PR_TAG: "7", automatic.COMMIT_TAG: gated}))
    from slipway.registry import MlflowRegistry

    registry = MlflowRegistry(logs_models=False)
    same = automatic.merged(registry, "release-risk", repo, merged, None)
    assert (same["version"], same["rerun"], same["pull_request"]) == (int(ref), False, 7)
    assert automatic.model_changed(repo, gated, merged) is False
    assert automatic.model_changed(repo, gated, moved) is True
    assert automatic.model_changed(repo, "0" * 40, merged) is True  # unknown here: train again
    assert automatic.model_changed(repo, None, merged) is True
    # `moved` is no merge: nothing to find; a merge whose PR gated nothing: the same.
    assert automatic.merged(registry, "release-risk", repo, moved, None)["rerun"] is True
    gated_9, merged_9 = _model_pr(repo, 9, "n_estimators=50\n")
    found = automatic.merged(registry, "release-risk", repo, merged_9, None)
    assert found == {
        "pull_request": 9,
        "sha": merged_9,
        "version": None,
        "rerun": True,
        "reason": "#9 registered no version",
    }
    versions(**{automatic.PR_TAG: "9", checks.GATE_TAG: "fail", automatic.COMMIT_TAG: gated_9})
    found = automatic.merged(registry, "release-risk", repo, merged_9, None)
    assert found["reason"] == "#9 has no gated, packaged version" and found["rerun"] is True


def test_the_merged_pull_request_is_asked_of_github_first(repo, emulator):
    from github_emulator import TOKEN
    from slipway.github import GitHub

    _, merged = _model_pr(repo, 7, "n_estimators=200\n")
    emulator.add_pull(12, "pr-12", "1" * 40)
    emulator.merge(12, merged)  # GitHub says #12: the message's (#7) is not asked
    github = GitHub(TOKEN, emulator.repo, api_url=emulator.url)
    try:
        assert automatic.merged_pull_request(repo, merged, github) == 12
    finally:
        github.close()
    assert automatic.merged_pull_request(repo, merged, None) == 7


def _soak(repo: Path, version: str) -> None:
    path = repo / "environments" / "staging.yaml"
    text = path.read_text().replace("\nversion: null", f"\nversion: {version}")
    path.write_text(text.replace("\ndigest: null", f"\ndigest: {DIGEST}"))
    _git(repo, "commit", "-qam", f"Promote release-risk v{version} to staging")


def test_production_is_proposed_once_staging_soaked(repo, versions, registry, capsys):
    now = datetime.now(UTC)
    version = versions(
        **_gated(
            **{
                checks.deployed_tag("staging"): (now - timedelta(hours=23)).isoformat(),
                checks.smoke_tag("staging"): "pass",
            }
        )
    )
    _soak(repo, version)
    production = repo / "environments" / "production.yaml"
    before, tags = production.read_bytes(), registry.get("release-risk", version).tags
    assert main(["promote", "production", *_args(repo, "--when-soaked")]) == 0
    assert "of the 24 h soak; 1.0 h to go" in capsys.readouterr().err
    # Not yet: nothing written, neither the manifest nor any other file, nor a registry tag.
    assert production.read_bytes() == before
    assert _git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert registry.get("release-risk", version).tags == tags

    long_ago = (now - timedelta(hours=25)).isoformat()
    registry.tag("release-risk", version, {checks.deployed_tag("staging"): long_ago})
    assert main(["promote", "production", *_args(repo, "--when-soaked")]) == 0
    assert f"version: {version}" in production.read_text()
    _git(repo, "commit", "-qam", "Promote to production")
    capsys.readouterr()
    assert main(["promote", "production", *_args(repo, "--when-soaked")]) == 0
    assert f"production already runs v{version}" in capsys.readouterr().err
    assert main(["promote", "staging", *_args(repo, "--when-soaked")]) == 2  # first stage


def test_the_check_sees_other_open_promotions_and_keeps_one_comment(
    repo, versions, emulator, monkeypatch, tmp_path
):
    from github_emulator import TOKEN

    version = versions(**_gated())
    _git(repo, "checkout", "-q", "-b", "slipway/promote-staging")
    _soak(repo, version)
    text = (repo / "environments" / "staging.yaml").read_text()
    emulator.push("slipway/promote-staging", {"environments/staging.yaml": text})
    emulator.add_pull(5, "slipway/promote-staging", "3" * 40)
    emulator.push("hand-edit", {"environments/staging.yaml": text + "# mine\n"})
    emulator.add_pull(3, "hand-edit", "4" * 40)
    emulator.push("docs", {"README.md": "# more\n"})
    emulator.add_pull(4, "docs", "6" * 40)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 5, "labels": []}}))
    for name, value in {
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_REPOSITORY": emulator.repo,
        "GITHUB_API_URL": emulator.url,
        "GITHUB_EVENT_PATH": str(event),
    }.items():
        monkeypatch.setenv(name, value)
    out = repo.parent / "out"
    args = ["--check", "--base", "main", "--comment", "--environments", str(repo / "environments")]
    assert main(["promote", *args, "--out", str(out)]) == 1  # ENV: the manifest changed
    document = json.loads((out / "promote.json").read_text())
    assert document["environment"] == "staging"
    [found] = [c for c in document["checks"] if c["check"] == "one-open-promotion"]
    assert found == {
        "check": "one-open-promotion",
        "status": "fail",
        "reason": "#3 also changes environments/staging.yaml; merge or close it first",
    }
    [comment] = emulator.issue_comments(5)
    assert comment["body"].startswith(review.MARKER)
    assert (
        "❌ Promotion of v" in comment["body"]
        and "| ❌ | one-open-promotion | #3" in comment["body"]
    )

    emulator.pulls[3]["state"] = "closed"  # the other PR is closed: the check passes, same comment
    assert main(["promote", *args, "--out", str(out)]) == 0
    [comment] = emulator.issue_comments(5)
    assert f"✅ Promotion of v{version} to staging: pass" in comment["body"]


def test_a_refused_comment_does_not_fail_the_check(repo, versions, emulator, monkeypatch):
    from github_emulator import TOKEN

    version = versions(**_gated())
    _git(repo, "checkout", "-q", "-b", "slipway/promote-staging")
    _soak(repo, version)
    emulator.add_pull(5, "slipway/promote-staging", "3" * 40)
    event = repo.parent / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 5}}))
    context = review.pull_context(
        {
            "GITHUB_TOKEN": TOKEN,
            "GITHUB_REPOSITORY": emulator.repo,
            "GITHUB_API_URL": emulator.url,
            "GITHUB_EVENT_PATH": str(event),
        }
    )
    assert context is not None and context.number == 5
    emulator.fail(403, times=10)
    context.github.retries = 0
    posted = review.post(context, {"status": "pass", "checks": [], "checked_at": "now"})
    assert posted["posted"] is False and "403" in posted["reason"]
    context.github.close()
    assert review.pull_context({"GITHUB_TOKEN": TOKEN}) is None
