"""The GitHub client against an emulator that validates every request with GitHub's OpenAPI file."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from github_emulator import BOT_EMAIL, TOKEN, Emulator
from slipway.github import MARKER, GitHub, GitHubError
from slipway.github_repo import DEPLOYMENT_STATES

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def sleeps() -> list[float]:
    return []


NOW = 1_800_000_000  # the test clients' wall clock, in epoch seconds


@pytest.fixture
def github(emulator, sleeps):
    """A client that records the waits it would make instead of sleeping, on a fixed clock."""
    client = GitHub(
        TOKEN,
        emulator.repo,
        api_url=emulator.url,
        max_wait=120,
        sleep=sleeps.append,
        clock=lambda: NOW,
    )
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
        # A timeout above the barrier's: a thread that starts late must not make another retry.
        client = GitHub(TOKEN, emulator.repo, api_url=emulator.url, timeout=90)
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
            lambda e: e.fail(503, headers={"retry-after": formatdate(NOW + 5, usegmt=True)}),
            [5.0],
            id="503-retry-after-a-date",
        ),
        pytest.param(
            lambda e: e.rate_limit(retry_after=None, reset_in=2, now=NOW),
            [2.0],
            id="403-remaining-0-reset",
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
    assert sleeps == expected_waits  # exactly the waits the policy gives, in order
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


def test_the_backoff_doubles_from_its_base_and_sleeps_for_real_by_default(emulator, sleeps):
    client = GitHub(TOKEN, emulator.repo, api_url=emulator.url, backoff=0.01, sleep=sleeps.append)
    emulator.fail(500, times=3)
    assert client.create_issue_comment(2, "x")["body"] == "x"
    assert sleeps == [0.01, 0.02, 0.04]
    assert [status for _, _, status in emulator.log] == [500, 500, 500, 201]
    default = GitHub(TOKEN, emulator.repo, api_url=emulator.url)
    assert (default._sleep, default._clock) == (time.sleep, time.time)


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


def race(emulator: Emulator, *calls) -> list:
    """Run each of ``calls(client)`` in its own thread with its own client, every one's first GET
    held at the emulator's barrier until all have sent it: each looks before any acts."""

    def release() -> None:  # later GETs (a loser looking again) are not held
        emulator.hold = None

    emulator.hold = threading.Barrier(len(calls), action=release)
    results: list = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        client = GitHub(TOKEN, emulator.repo, api_url=emulator.url, timeout=90)
        try:
            results[index] = calls[index](client)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    emulator.hold = None
    assert errors == []
    return results


def test_pull_request_created_concurrently_is_updated_instead(emulator):
    first, second = race(
        emulator,
        lambda g: g.upsert_pull_request("slipway/retrain", "main", "t1", "b1"),
        lambda g: g.upsert_pull_request("slipway/retrain", "main", "t2", "b2"),
    )
    assert sorted([first["action"], second["action"]]) == ["created", "updated"]
    assert first["number"] == second["number"]
    assert len(emulator.pulls) == 1
    assert emulator.count("POST", "/pulls") == 2  # both looked, found none and tried to open it
    assert [s for m, p, s in emulator.log if m == "POST" and "/pulls" in p].count(422) == 1
    assert emulator.count("PATCH", "/pulls/") == 1


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


# -- files, branches, commits ---------------------------------------------------------------------


def _blob_sha(text: str) -> str:
    data = text.encode()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.mark.parametrize(
    ("branch", "path", "first", "second"),
    [
        pytest.param("main", "deploy/prod.yaml", "model: v1\n", "model: v2\n", id="ascii-nested"),
        pytest.param(
            "feature", "notes/café ✓.md", "modèle 模型 🚀\n", "naïve — ü\n", id="non-ascii"
        ),
        pytest.param("main", "empty.txt", "", "now\n", id="empty-then-text"),
    ],
)
def test_put_file_creates_then_updates_a_file(emulator, github, branch, path, first, second):
    created = github.put_file(branch, path, first, "Add the file")
    updated = github.put_file(branch, path, second, "Change the file")

    assert created["sha"] == _blob_sha(first)
    assert updated["sha"] == _blob_sha(second)
    assert updated["commit"] == emulator.branches[branch] != created["commit"]
    puts = emulator.sent("PUT", "/contents/")
    assert "sha" not in puts[0]
    assert puts[1]["sha"] == created["sha"]
    assert [base64.b64decode(p["content"]).decode() for p in puts] == [first, second]
    assert {p["branch"] for p in puts} == {branch}
    assert emulator.file(branch, path) == second
    answer = github.request(
        "GET", f"/repos/acme/models/contents/{quote(path)}", params={"ref": branch}
    )
    assert base64.b64decode(answer.json()["content"]).decode() == second
    assert emulator.file("slipway/retrain", path) is None  # other branches are untouched


def test_put_file_on_a_missing_branch_is_an_error(emulator, github):
    with pytest.raises(GitHubError, match="404") as caught:
        github.put_file("nope", "a.txt", "x", "m")
    assert "Branch nope not found" in caught.value.message


@pytest.mark.parametrize(
    ("branch", "from_ref"),
    [
        pytest.param("slipway/promote/prod", "main", id="from-branch"),
        pytest.param("release", "refs/heads/main", id="from-full-ref"),
        pytest.param("hotfix", None, id="from-sha"),
    ],
)
def test_ensure_branch_is_idempotent(emulator, github, branch, from_ref):
    main = emulator.branches["main"]
    assert github.ensure_branch(branch, from_ref or main) == main
    emulator.push(branch, {"x.txt": "moved on"})
    assert github.ensure_branch(branch, from_ref or main) == emulator.branches[branch] != main
    assert emulator.count("POST", "/git/refs") == 1


def test_ensure_branch_from_a_missing_ref_names_it(emulator, github):
    with pytest.raises(GitHubError, match="no branch 'nope'"):
        github.ensure_branch("new", "nope")
    assert "new" not in emulator.branches


def test_ensure_branch_created_concurrently_returns_its_head(emulator):
    heads = race(
        emulator,
        lambda g: g.ensure_branch("race", "main"),
        lambda g: g.ensure_branch("race", "main"),
    )
    assert heads == [emulator.branches["race"]] * 2 == [emulator.branches["main"]] * 2
    posts = [s for m, p, s in emulator.log if m == "POST" and "/git/refs" in p]
    assert sorted(posts) == [201, 422]  # both found no branch; the second create was refused


def test_reset_branch_forces_the_head_back(emulator, github):
    main = emulator.branches["main"]
    github.ensure_branch("slipway/promote/prod", "main")
    emulator.push("slipway/promote/prod", {"a.txt": "human edit"}, login="mallory")
    assert github.reset_branch("slipway/promote/prod", main) == main
    assert emulator.branches["slipway/promote/prod"] == main
    assert emulator.sent("PATCH", "/git/refs/") == [{"sha": main, "force": True}]


def test_branch_commits_report_who_pushed(emulator, github):
    branch = "slipway/promote/prod"
    github.ensure_branch(branch, "main")
    bot = github.put_file(branch, "deploy/prod.yaml", "model: v2\n", "Promote v2")["commit"]
    mallory = emulator.push(
        branch,
        {"deploy/prod.yaml": "model: v3\n"},
        login="mallory",
        email="mallory@example.com",
        message="sneaky",
    )
    ghost = emulator.push(branch, {"x": "y"}, login=None, email="ghost@nowhere.invalid")
    emulator.push("main", {"unrelated.txt": "main moved on"})

    commits = github.branch_commits(branch, "main")

    assert [c["sha"] for c in commits] == [bot, mallory, ghost]
    assert [c["author"] for c in commits] == ["github-actions[bot]", "mallory", None]
    assert [c["committer_email"] for c in commits] == [
        BOT_EMAIL,
        "mallory@example.com",
        "ghost@nowhere.invalid",
    ]
    assert commits[1]["message"] == "sneaky"
    assert github.branch_commits("main", "main") == []


def test_branch_commits_page_through_a_long_branch(emulator, github):
    for i in range(230):
        emulator.push("feature", {"n.txt": str(i)})
    commits = github.branch_commits("feature", "main")
    assert len(commits) == 230
    assert commits[-1]["sha"] == emulator.branches["feature"]
    assert emulator.count("GET", "/compare/") == 3  # 100 per page


# -- reviewers, pull request files ----------------------------------------------------------------


def test_request_reviewers(emulator, github):
    emulator.add_pull(4, "slipway/retrain", emulator.branches["slipway/retrain"])
    pull = github.request_reviewers(4, ["alice", "bob"])
    github.request_reviewers(4, ["alice"])
    assert [u["login"] for u in pull["requested_reviewers"]] == ["alice", "bob"]
    assert [u["login"] for u in emulator.pulls[4]["requested_reviewers"]] == ["alice", "bob"]


@pytest.mark.parametrize(
    "reviewers",
    [["mallory"], ["alice", "mallory"], ["github-actions[bot]"]],
    ids=["not-a-collaborator", "one-of-two", "the-author"],
)
def test_request_reviewers_422_names_the_users(emulator, github, reviewers):
    emulator.collaborators.add("github-actions[bot]")
    emulator.add_pull(4, "slipway/retrain", emulator.branches["slipway/retrain"])
    with pytest.raises(GitHubError) as caught:
        github.request_reviewers(4, reviewers)
    error = caught.value
    assert error.status == 422
    assert f"cannot ask {', '.join(reviewers)} to review #4" in error.message
    assert "Reviews may only be requested from collaborators" in error.message
    assert "collaborators" in error.hint
    assert emulator.pulls[4].get("requested_reviewers", []) == []


@pytest.mark.parametrize(
    ("setup", "call", "expected", "gets"),
    [
        pytest.param(
            lambda e, g: (
                e.push("slipway/retrain", {f"data/f{i:03}.csv": "x" for i in range(150)}),
                e.push("slipway/retrain", {"README.md": None}),
                g.upsert_pull_request("slipway/retrain", "main", "Retrain", "b"),
            ),
            lambda g: g.pull_request_files(1),
            ["README.md"] + [f"data/f{i:03}.csv" for i in range(150)],
            ("/pulls/1/files", 2),
            id="pull-request-files",
        ),
        pytest.param(
            lambda e, g: [e.add_pull(n, f"b{n}", "a" * 40) for n in range(1, 131)],
            lambda g: [p["number"] for p in g.open_pull_requests()],
            list(range(130, 0, -1)),
            ("/pulls", 2),
            id="open-pull-requests",
        ),
    ],
)
def test_pull_request_lists_page_past_100(emulator, github, setup, call, expected, gets):
    setup(emulator, github)
    before = emulator.count("GET", gets[0])
    assert call(github) == expected
    assert emulator.count("GET", gets[0]) - before == gets[1]


def test_pull_request_files_name_modified_and_removed_files(emulator, github):
    emulator.push("feature", {"README.md": "# changed\n", "new.txt": "n"})
    github.upsert_pull_request("feature", "main", "t", "b")
    emulator.push("main", {"main-only.txt": "not in the PR"})
    assert github.pull_request_files(1) == ["README.md", "new.txt"]


# -- deployments ----------------------------------------------------------------------------------


def test_deployments_and_statuses_round_trip_and_list_by_environment(emulator, github):
    payload = {"model": "release-risk", "version": 7, "digest": "sha256:ab", "nested": {"ok": True}}
    main = emulator.branches["main"]
    first = github.create_deployment("main", "staging", "v7 to staging", payload)
    sha = github.put_file("main", "deploy/staging.yaml", "v8\n", "v8")["commit"]
    second = github.create_deployment(sha, "staging", "v8 to staging", {"version": 8})
    prod = github.create_deployment("main", "production", "v8 to prod", {"version": 8})

    assert (first["sha"], first["environment"], first["payload"]) == (main, "staging", payload)
    assert second["sha"] == sha
    assert [d["id"] for d in github.list_deployments("staging")] == [second["id"], first["id"]]
    assert [d["id"] for d in github.list_deployments("production")] == [prod["id"]]
    assert github.list_deployments("qa") == []
    assert emulator.sent("POST", "/deployments")[0] == {
        "ref": "main",
        "environment": "staging",
        "description": "v7 to staging",
        "payload": payload,
        "auto_merge": False,
        "required_contexts": [],
    }

    served_at = "https://staging.models.invalid/"
    github.create_deployment_status(second["id"], "in_progress", description="rolling out")
    done = github.create_deployment_status(second["id"], "success", served_at, "y" * 200)
    assert (done["state"], done["environment_url"], done["description"]) == (
        "success",
        served_at,
        "y" * 140,
    )
    statuses = github.list_deployment_statuses(second["id"])
    assert [s["state"] for s in statuses] == ["success", "in_progress"]
    assert github.list_deployment_statuses(first["id"]) == []


@pytest.mark.parametrize("state", DEPLOYMENT_STATES)
def test_every_deployment_state_is_accepted(emulator, github, state):
    deployment = github.create_deployment("main", "qa", "", {})
    assert github.create_deployment_status(deployment["id"], state)["state"] == state


def test_an_unknown_deployment_state_is_refused_before_sending(emulator, github):
    deployment = github.create_deployment("main", "qa", "", {})
    with pytest.raises(GitHubError, match="'done' is not one of"):
        github.create_deployment_status(deployment["id"], "done")
    assert emulator.count("POST", "/statuses") == 0


def test_list_deployments_pages(emulator, github):
    for i in range(105):
        github.create_deployment("main", "staging" if i % 3 else "qa", f"d{i}", {"i": i})
    assert len(github.list_deployments("staging")) == 70
    assert emulator.count("GET", "/deployments?") == 1  # 70 fit on one page of 100
    emulator.log.clear()
    for _ in range(40):
        github.create_deployment("main", "staging", "more", {})
    assert len(github.list_deployments("staging")) == 110
    assert emulator.count("GET", "/deployments?") == 2


@pytest.mark.parametrize(
    ("inject", "call", "applied", "sends", "waits"),
    [
        pytest.param(
            lambda e, g: e.fail(502, method="POST"),
            lambda g, e: g.create_deployment("main", "production", "v1", {"v": 1}),
            lambda e: len(e.deployments),
            ("POST", "/deployments", 2),
            [1.0],
            id="deployment-502",
        ),
        pytest.param(
            lambda e, g: (g.create_deployment("main", "qa", "", {}), e.rate_limit(retry_after=4)),
            lambda g, e: g.create_deployment_status(max(e.deployments), "success"),
            lambda e: sum(len(s) for s in e.deployment_statuses.values()),
            ("POST", "/statuses", 2),
            [4.0],
            id="deployment-status-rate-limited",
        ),
        pytest.param(
            lambda e, g: e.fail(503, times=2, method="PUT"),
            lambda g, e: g.put_file("main", "deploy/prod.yaml", "v1\n", "m"),
            lambda e: len(e.commits) - 1,  # the seed commit
            ("PUT", "/contents/", 3),
            [1.0, 2.0],
            id="put-file-503-twice",
        ),
        pytest.param(
            lambda e, g: e.fail(500, method="POST"),
            lambda g, e: g.ensure_branch("slipway/promote/qa", "main"),
            lambda e: len(e.branches) - 3,  # the seeded branches
            ("POST", "/git/refs", 2),
            [1.0],
            id="create-branch-500",
        ),
    ],
)
def test_transient_failures_on_promotion_calls_apply_once(
    emulator, github, sleeps, inject, call, applied, sends, waits
):
    inject(emulator, github)
    call(github, emulator)
    assert applied(emulator) == 1
    assert emulator.count(sends[0], sends[1]) == sends[2]
    assert sleeps == waits


def test_a_deployment_of_an_unknown_ref_names_it(emulator, github):
    with pytest.raises(GitHubError, match="No ref found for: nope"):
        github.create_deployment("nope", "qa", "", {})


def test_new_endpoints_reject_requests_outside_the_description(emulator, github):
    with pytest.raises(GitHubError, match="422"):
        github.request("PATCH", "/repos/acme/models/git/refs/heads/a/b", json={"force": True})
    with pytest.raises(GitHubError, match="422"):
        github.request("PUT", "/repos/acme/models/contents/a/b.txt", json={"content": "eA=="})
    with pytest.raises(GitHubError, match="422"):
        github.request("POST", "/repos/acme/models/deployments/1/statuses", json={"state": "done"})
    with pytest.raises(GitHubError, match="422"):
        github.request("GET", "/repos/acme/models/compare/main...a/b", params={"ref": "x"})
    assert len(emulator.invalid) == 4
    assert "'sha' is a required property" in emulator.invalid[0]
    assert "'message' is a required property" in emulator.invalid[1]
    assert "'done' is not one of" in emulator.invalid[2]
    assert "undeclared query parameter 'ref'" in emulator.invalid[3]
    emulator.invalid.clear()  # these were deliberate
