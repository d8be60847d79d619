"""The GitHub client against an emulator that validates every request with GitHub's OpenAPI file."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests

from github_emulator import TOKEN, Emulator
from slipway.github import MARKER, GitHub, GitHubError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def github(emulator, sleeps):
    """A client that records the waits it would make instead of sleeping."""
    client = GitHub(TOKEN, emulator.repo, api_url=emulator.url, max_wait=120, sleep=sleeps.append)
    yield client
    client.close()


def marked(emulator: Emulator, number: int) -> list[dict]:
    return [c for c in emulator.issue_comments(number) if c["body"].startswith(MARKER)]


# -- sticky comment -----------------------------------------------------------------------------


def test_upsert_creates_one_comment_then_edits_it(emulator, github):
    first = github.upsert_comment(7, f"{MARKER}\nv1")
    second = github.upsert_comment(7, f"{MARKER}\nv2")
    third = github.upsert_comment(7, f"{MARKER}\nv2")

    assert [first["action"], second["action"], third["action"]] == [
        "created",
        "updated",
        "unchanged",
    ]
    assert first["id"] == second["id"] == third["id"]
    assert [c["body"] for c in marked(emulator, 7)] == [f"{MARKER}\nv2"]
    assert emulator.count("POST", "/comments") == 1
    assert emulator.count("PATCH", "/issues/comments/") == 1


def test_marker_is_prepended_and_other_comments_are_left_alone(emulator, github):
    emulator.add_comment(3, "LGTM")
    emulator.add_comment(3, f"> quoting\n{MARKER}")  # a human quoting the bot is not the bot
    github.upsert_comment(3, "## report")
    bodies = [c["body"] for c in emulator.issue_comments(3)]
    assert bodies == ["LGTM", f"> quoting\n{MARKER}", f"{MARKER}\n## report"]


def test_a_report_too_long_for_a_comment_is_truncated(emulator, github):
    github.upsert_comment(6, "x" * 100_000)
    (comment,) = emulator.issue_comments(6)
    assert len(comment["body"]) == 65536
    assert comment["body"].startswith(MARKER)
    assert comment["body"].endswith("the full one is in the job summary.\n")


def test_marker_found_on_a_later_page(emulator, github):
    for i in range(250):
        emulator.add_comment(9, f"chatter {i}")
    sticky = emulator.add_comment(9, f"{MARKER}\nold")
    for i in range(10):
        emulator.add_comment(9, f"more {i}")

    result = github.upsert_comment(9, f"{MARKER}\nnew")

    assert result == {"action": "updated", "id": sticky["id"], "url": sticky["html_url"]}
    assert emulator.count("GET", "/issues/9/comments") == 3  # 261 comments, 100 per page
    assert emulator.count("POST") == 0
    assert emulator.comments[sticky["id"]]["body"] == f"{MARKER}\nnew"


def test_concurrent_upserts_leave_one_comment(emulator, github):
    emulator.hold = threading.Barrier(4)  # every run lists before any creates: all four create
    errors: list[BaseException] = []

    def run(n: int) -> None:
        client = GitHub(TOKEN, emulator.repo, api_url=emulator.url)
        try:
            client.upsert_comment(5, f"{MARKER}\nrun {n}")
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    emulator.hold = None
    assert errors == []
    assert emulator.count("POST", "/comments") == 4
    assert len(marked(emulator, 5)) == 1
    github.upsert_comment(5, f"{MARKER}\nrerun")
    assert [c["body"] for c in marked(emulator, 5)] == [f"{MARKER}\nrerun"]


# -- retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inject", "expected_waits"),
    [
        pytest.param(lambda e: e.fail(502, times=2), [1.0, 2.0], id="502-backoff"),
        pytest.param(
            lambda e: e.rate_limit(status=429, retry_after=7), [7.0], id="429-retry-after"
        ),
        pytest.param(lambda e: e.rate_limit(retry_after=3), [3.0], id="403-secondary-retry-after"),
        pytest.param(
            lambda e: e.rate_limit(retry_after=None, reset_in=2), [1.5], id="403-remaining-0-reset"
        ),
        pytest.param(
            lambda e: e.fail(403, message="You have exceeded a secondary rate limit"),
            [60.0],
            id="403-secondary-no-headers",
        ),
    ],
)
def test_transient_failures_are_retried_and_the_comment_posted_once(
    emulator, github, sleeps, inject, expected_waits
):
    inject(emulator)
    result = github.upsert_comment(11, "report")

    assert result["action"] == "created"
    assert len(marked(emulator, 11)) == 1
    assert emulator.count("POST", "/comments") == 1
    assert sleeps == pytest.approx(expected_waits, abs=1.0)
    faults = sum(1 for _, _, status in emulator.log if status >= 400)
    assert faults == len(expected_waits)


def test_a_create_that_answered_502_after_applying_is_not_duplicated(emulator, github):
    emulator.add_comment(12, "hello")
    emulator.fail(502, after_apply=True, method="POST")
    assert github.upsert_comment(12, "report")["action"] == "created"
    assert emulator.count("POST", "/comments") == 2  # retried: GitHub had applied the first
    assert len(marked(emulator, 12)) == 1
    assert emulator.count("DELETE") == 1


def test_retries_give_up_with_an_error(emulator, github, sleeps):
    emulator.fail(503, times=10)
    with pytest.raises(GitHubError) as caught:
        github.list_issue_comments(1)
    assert caught.value.status == 503
    assert len(sleeps) == github.retries
    assert "re-run" in caught.value.hint


def test_a_wait_longer_than_the_cap_fails_at_once(emulator, sleeps):
    client = GitHub(TOKEN, emulator.repo, api_url=emulator.url, max_wait=5, sleep=sleeps.append)
    emulator.rate_limit(retry_after=600)
    with pytest.raises(GitHubError, match="wait 600 s") as caught:
        client.create_issue_comment(1, "x")
    assert sleeps == []
    assert caught.value.status == 403
    assert "secondary rate limit" in caught.value.message
    assert "re-run" in caught.value.hint


def test_real_sleeps_are_tiny_in_tests(emulator):
    client = GitHub(TOKEN, emulator.repo, api_url=emulator.url, backoff=0.01)
    emulator.fail(500, times=3)
    started = time.monotonic()
    assert client.create_issue_comment(2, "x")["body"] == "x"
    assert time.monotonic() - started < 2


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "hint_word"),
    [(401, "permissions"), (403, "permissions"), (404, "repository"), (410, "gone")],
)
def test_errors_name_status_endpoint_and_fix_without_the_token(emulator, github, status, hint_word):
    emulator.fail(status, message="Resource not accessible by integration")
    with pytest.raises(GitHubError) as caught:
        github.create_issue_comment(4, "x")
    error = caught.value
    assert error.status == status
    assert f"GitHub answered {status} to POST /repos/acme/models/issues/4/comments" in error.message
    assert "Resource not accessible by integration" in error.message
    assert hint_word in error.hint
    for text in (str(error), repr(error), repr(github), error.hint):
        assert TOKEN not in text


def test_wrong_token_is_a_401_and_never_echoed(emulator):
    secret = "ghp_wrongTokenThatMustNotLeak42"
    client = GitHub(secret, emulator.repo, api_url=emulator.url)
    with pytest.raises(GitHubError) as caught:
        client.upsert_comment(1, "x")
    assert caught.value.status == 401
    assert "Bad credentials" in str(caught.value)
    assert secret not in str(caught.value) + repr(caught.value) + repr(client)


def test_unreachable_api_is_an_error_without_the_token(sleeps):
    client = GitHub(
        TOKEN, "acme/models", api_url="http://127.0.0.1:9", retries=1, sleep=sleeps.append
    )
    with pytest.raises(GitHubError, match="GITHUB_API_URL") as caught:
        client.list_issue_comments(1)
    assert TOKEN not in str(caught.value)


def test_a_next_link_to_another_host_is_refused(emulator, github):
    with pytest.raises(GitHubError, match="refusing to send the token"):
        list(github.paginate("http://evil.invalid/repos/acme/models/pulls"))


def test_enterprise_server_api_url_prefix(emulator, sleeps):
    emulator.prefix = "/api/v3"
    client = GitHub(TOKEN, emulator.repo, api_url=emulator.url, sleep=sleeps.append)
    for i in range(120):
        emulator.add_comment(8, f"c{i}")
    assert client.upsert_comment(8, "r")["action"] == "created"
    assert all(path.startswith("/api/v3/") for _, path, _ in emulator.log)


# -- pull requests, labels, statuses --------------------------------------------------------------


def test_pull_request_from_a_fixed_branch_is_created_once_then_updated(emulator, github):
    first = github.upsert_pull_request("slipway/retrain", "main", "Retrain release-risk", "drift")
    second = github.upsert_pull_request("slipway/retrain", "main", "Retrain release-risk", "more")

    assert (first["action"], second["action"]) == ("created", "updated")
    assert first["number"] == second["number"]
    assert len(emulator.pulls) == 1
    assert emulator.pulls[first["number"]]["body"] == "more"
    assert emulator.count("POST", "/pulls") == 1
    assert github.find_pull_request("feature") is None


def test_pull_request_created_concurrently_is_updated_instead(emulator, github, monkeypatch):
    github.upsert_pull_request("slipway/retrain", "main", "t", "b")
    monkeypatch.setattr(github, "find_pull_request", _missing_once(github.find_pull_request))
    result = github.upsert_pull_request("slipway/retrain", "main", "t2", "b2")
    assert result["action"] == "updated"
    assert len(emulator.pulls) == 1


def _missing_once(find):
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        return None if len(calls) == 1 else find(*args, **kwargs)

    return wrapper


def test_pull_request_from_a_missing_branch_names_the_field(emulator, github):
    with pytest.raises(GitHubError, match="422") as caught:
        github.upsert_pull_request("nope", "main", "t", "b")
    assert "branch not found" in caught.value.message
    assert "field" in caught.value.hint


def test_labels_are_added(emulator, github):
    assert github.add_labels(3, ["retrain"]) == ["retrain"]
    assert github.add_labels(3, ["retrain", "drift"]) == ["retrain", "drift"]


def test_commit_status(emulator, github):
    status = github.create_status(
        "a" * 40, "success", "slipway/gate", "x" * 300, "https://ci.invalid/run/1"
    )
    assert status["state"] == "success"
    assert emulator.statuses[0]["description"] == "x" * 140
    assert emulator.statuses[0]["sha"] == "a" * 40


def test_invalid_requests_are_caught_by_the_openapi_description(emulator, github):
    with pytest.raises(GitHubError, match="422"):
        github.request("POST", "/repos/acme/models/statuses/abc", json={"state": "great"})
    with pytest.raises(GitHubError, match="422"):
        github.request("GET", "/repos/acme/models/pulls", params={"colour": "blue"})
    with pytest.raises(GitHubError, match="422"):
        github.request("POST", "/repos/acme/models/issues/1/comments", json={"text": "x"})
    assert requests.get(f"{emulator.url}/repos/acme/models/pulls", timeout=5).status_code == 422
    assert len(emulator.invalid) == 4
    assert "'great' is not one of" in emulator.invalid[0]
    assert "undeclared query parameter 'colour'" in emulator.invalid[1]
    assert "'body' is a required property" in emulator.invalid[2]
    assert "X-GitHub-Api-Version is None" in emulator.invalid[3]
    emulator.invalid.clear()  # these were deliberate
