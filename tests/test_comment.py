"""Publishing the report as the sticky PR comment, across pr.yml and report.yml."""

from __future__ import annotations

import json

import pytest

from github_emulator import TOKEN, Emulator
from slipway.errors import ReportError
from slipway.github import GitHubError
from slipway.propose.comment import pr_context, publish_report, record_pr
from slipway.propose.report import MARKER


def marked(emulator: Emulator, number: int) -> list[dict]:
    return [c for c in emulator.issue_comments(number) if c["body"].startswith(MARKER)]


# -- publishing the report ------------------------------------------------------------------------


def test_dry_run_without_token_writes_comment_md(tmp_path):
    env = {"GITHUB_REPOSITORY": "acme/models", "SLIPWAY_PR_NUMBER": "4"}
    result = publish_report(f"{MARKER}\nhello", tmp_path, env)
    assert result["posted"] is False
    assert "GITHUB_TOKEN" in result["reason"]
    assert (tmp_path / "comment.md").read_text() == f"{MARKER}\nhello"


def test_dry_run_without_pull_request(tmp_path):
    env = {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "acme/models"}
    result = publish_report("hello", tmp_path, env)
    assert result["posted"] is False
    assert "pull request" in result["reason"]
    assert TOKEN not in json.dumps(result)


def test_publish_posts_from_a_workflow_run_event(emulator, tmp_path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"workflow_run": {"pull_requests": [{"number": 21}]}}))
    env = {
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_REPOSITORY": emulator.repo,
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_API_URL": emulator.url,
    }
    first = publish_report(f"{MARKER}\nv1", tmp_path, env)
    second = publish_report(f"{MARKER}\nv2", tmp_path, env)
    assert (first["posted"], first["action"], second["action"]) == (True, "created", "updated")
    assert first["pr_number"] == 21
    assert [c["body"] for c in marked(emulator, 21)] == [f"{MARKER}\nv2"]


@pytest.mark.parametrize(
    ("event", "number"),
    [
        ({"pull_request": {"number": 5}}, 5),
        ({"workflow_run": {"pull_requests": [{"number": 6}]}}, 6),
        ({"workflow_run": {"pull_requests": []}}, None),  # a PR from a fork
        ({}, None),
    ],
)
def test_pr_context_from_the_event_payload(tmp_path, event, number):
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    assert pr_context({"GITHUB_REPOSITORY": "a/b", "GITHUB_EVENT_PATH": str(path)}) == (
        "a/b",
        number,
    )


def test_report_publish_cli_upserts_one_comment(emulator, tmp_path, monkeypatch, capsys):
    from slipway.cli import main

    out = tmp_path / "out"
    out.mkdir()
    for name, value in {
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_REPOSITORY": emulator.repo,
        "GITHUB_API_URL": emulator.url,
        "SLIPWAY_PR_NUMBER": "8",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert main(["report", "--out", str(out), "--publish"]) == 0
    assert main(["report", "--out", str(out), "--publish"]) == 0
    comments = marked(emulator, 8)
    assert len(comments) == 1
    assert comments[0]["body"] == (out / "report.md").read_text()
    err = capsys.readouterr().err
    assert "comment created on PR #8" in err and "comment unchanged on PR #8" in err
    assert TOKEN not in err


def test_report_without_token_says_what_it_would_post(tmp_path, monkeypatch, capsys):
    from slipway.cli import main

    for name in ("GITHUB_TOKEN", "GH_TOKEN", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["report", "--out", str(out), "--publish"]) == 0
    assert "no GITHUB_TOKEN: nothing posted" in capsys.readouterr().err
    assert (out / "comment.md").read_text() == (out / "report.md").read_text()


def _workflow_run_env(emulator, tmp_path, head_sha: str, pulls: list[dict]) -> dict:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"workflow_run": {"head_sha": head_sha, "pull_requests": pulls}}))
    return {
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_REPOSITORY": emulator.repo,
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_API_URL": emulator.url,
    }


def test_record_pr_writes_number_and_head_in_a_pull_request_run(tmp_path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 12, "head": {"sha": "ab" * 20}}}))
    path = record_pr(tmp_path, {"GITHUB_EVENT_PATH": str(event)})
    assert json.loads(path.read_text()) == {"number": 12, "head_sha": "ab" * 20}
    # Not a pull_request run (no event, or a push): nothing is written, not even the folder.
    push = tmp_path / "push.json"
    push.write_text(json.dumps({"ref": "refs/heads/main", "after": "cd" * 20}))
    for env in ({}, {"GITHUB_EVENT_PATH": str(push)}):
        assert record_pr(tmp_path / "other", env) is None
    assert not (tmp_path / "other").exists()


def test_fork_pr_number_comes_from_pr_json_and_is_checked_against_the_head(emulator, tmp_path):
    sha = "c0ffee" + "0" * 34
    emulator.add_pull(31, "patch-1", sha, fork="someone/models")
    (tmp_path / "pr.json").write_text(json.dumps({"number": 31, "head_sha": sha}))
    env = _workflow_run_env(emulator, tmp_path, sha, [])  # forks: the event lists no PRs
    result = publish_report(f"{MARKER}\nfrom a fork", tmp_path, env)
    assert (result["posted"], result["pr_number"]) == (True, 31)
    assert [c["body"] for c in marked(emulator, 31)] == [f"{MARKER}\nfrom a fork"]


def test_artifact_naming_another_pull_request_is_refused(emulator, tmp_path):
    emulator.add_pull(40, "victim", "1" * 40)
    (tmp_path / "pr.json").write_text(json.dumps({"number": 40}))
    env = _workflow_run_env(emulator, tmp_path, "2" * 40, [])
    with pytest.raises(GitHubError, match=r"pull request #40 is at 111111111111.*not posting"):
        publish_report(f"{MARKER}\nspoofed", tmp_path, env)
    assert emulator.issue_comments(40) == []


@pytest.mark.parametrize(
    "content", ['{"number": "40; rm -rf /"}', "[1]", "not json", '{"number": 0}']
)
def test_a_malformed_pr_json_is_an_error_naming_the_file(tmp_path, content):
    (tmp_path / "pr.json").write_text(content)
    with pytest.raises(GitHubError, match=r"pr\.json does not hold a pull request number"):
        pr_context({"GITHUB_REPOSITORY": "a/b"}, tmp_path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("gate.json", "{not json", "gate.json is not valid JSON"),
        ("gate.json", "[]", "gate.json is not a JSON object"),
        ("train.json", '{"model": "x"}', "are not Slipway's: KeyError"),
    ],
)
def test_report_from_untrusted_outputs_fails_clearly(tmp_path, name, content, message):
    from slipway.propose.report import write_report

    (tmp_path / name).write_text(content)
    with pytest.raises(ReportError, match=message):
        write_report(tmp_path)
    assert not (tmp_path / "report.md").exists()
