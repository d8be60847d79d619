"""`slipway promote ENV`: the manifest rewrite and `--check` in a real git repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from slipway.cli import main
from slipway.promote import checks

REPO = Path(__file__).resolve().parent.parent
DIGEST = "sha256:" + "5e" * 32


def _git(cwd: Path, *args: str) -> str:
    identity = ["-c", "user.name=Slipway Tests", "-c", "user.email=tests@example.com"]
    done = subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True)
    return done.stdout.decode()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository whose main holds the committed manifests; work goes on a branch."""
    for name in ("GITHUB_TOKEN", "GH_TOKEN", "GITHUB_REPOSITORY", "GITHUB_EVENT_PATH"):
        monkeypatch.delenv(name, raising=False)  # no GitHub unless a test brings the emulator
    root = tmp_path / "repo"
    shutil.copytree(REPO / "environments", root / "environments")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "manifests")
    _git(root, "checkout", "-q", "-b", "slipway/promote-staging")
    return root


def _promote(repo: Path, *args: str) -> int:
    return main(["promote", *args, "--environments", str(repo / "environments")])


def _check(repo, tmp_path, env="staging") -> tuple[int, dict]:
    out = tmp_path / "out"
    code = _promote(repo, env, "--check", "--out", str(out))
    return code, json.loads((out / "promote.json").read_text())


def _statuses(document: dict) -> dict[str, str]:
    return {c["check"]: c["status"] for c in document["checks"]}


def test_promote_rewrites_only_the_version_and_digest_lines(repo, versions, capsys):
    version = versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST})
    path = repo / "environments" / "staging.yaml"
    before = path.read_text().splitlines()
    assert _promote(repo, "staging", "--version", version) == 0
    after = path.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert [b.split("#")[0].strip() for _, b in changed] == [
        f"version: {version}",
        f"digest: {DIGEST}",
    ]
    assert all(a.split("#")[1] == b.split("#")[1] for a, b in changed)  # comments kept
    out = capsys.readouterr().out
    assert f"Promote release-risk v{version} to staging" in out
    # The real diff, as git sees it: two lines out, two lines in.
    diff = _git(repo, "diff", "--numstat", "main", "--", "environments/staging.yaml")
    assert diff.split()[:2] == ["2", "2"]


@pytest.mark.parametrize(
    ("tags", "reason"),
    [
        ({"slipway.digest": DIGEST}, "was never gated"),
        ({"slipway.gate": "fail", "slipway.digest": DIGEST}, "gate verdict is fail"),
        ({"slipway.gate": "pass"}, "has no Bento; run `slipway package`"),
    ],
)
def test_promote_refuses_and_writes_nothing(repo, versions, registry, capsys, tags, reason):
    version = versions(**tags)
    path = repo / "environments" / "staging.yaml"
    before = path.read_bytes()
    assert _promote(repo, "staging", "--version", version) == 1
    assert reason in capsys.readouterr().err
    # Nothing written: not the manifest, no other file in the repository, no registry tag.
    assert path.read_bytes() == before
    assert _git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert registry.get("release-risk", version).tags == tags


def test_promote_of_an_unknown_version_is_exit_2(repo, versions, capsys):
    versions(**{"slipway.gate": "pass"})
    assert _promote(repo, "staging", "--version", "42") == 2
    assert "has no version 42" in capsys.readouterr().err


def test_a_gated_packaged_version_passes_the_staging_checks(repo, versions, tmp_path):
    version = versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST})
    assert _promote(repo, "staging", "--version", version) == 0
    _git(repo, "commit", "-qam", f"Promote release-risk v{version} to staging")
    code, document = _check(repo, tmp_path)
    assert code == 0 and document["status"] == "pass"
    assert _statuses(document) == {
        "one-environment": "pass",
        "schema": "pass",
        "fields": "pass",
        "version": "pass",
        "gate": "pass",
        "digest": "pass",
        "candidate": "skipped",
        "stage": "skipped",
        "freeze": "pass",
        "one-open-promotion": "skipped",
    }


def test_production_needs_a_soaked_staging_run(repo, versions, registry, tmp_path):
    version = versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST})
    _git(repo, "checkout", "-q", "-b", "slipway/promote-production", "main")
    assert _promote(repo, "production", "--version", version) == 0
    code, document = _check(repo, tmp_path, "production")
    assert code == 1 and _statuses(document)["stage"] == "fail"
    stage = next(c for c in document["checks"] if c["check"] == "stage")
    assert stage["reason"] == f"v{version} never ran in staging; promote it there"

    started = datetime.now(UTC) - timedelta(hours=2)
    registry.tag("release-risk", version, {checks.deployed_tag("staging"): started.isoformat()})
    registry.tag("release-risk", version, {checks.smoke_tag("staging"): "pass"})
    code, document = _check(repo, tmp_path, "production")
    stage = next(c for c in document["checks"] if c["check"] == "stage")
    assert code == 1 and stage["reason"].endswith("of the 24 h soak; 22.0 h to go"), stage

    long_ago = (datetime.now(UTC) - timedelta(hours=25)).isoformat()
    registry.tag("release-risk", version, {checks.deployed_tag("staging"): long_ago})
    code, document = _check(repo, tmp_path, "production")
    assert code == 0, document


def test_two_environments_in_one_change_fail(repo, versions, tmp_path):
    version = versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST})
    assert _promote(repo, "staging", "--version", version) == 0
    assert _promote(repo, "production", "--version", version) == 0
    code, document = _check(repo, tmp_path)
    assert code == 1
    assert document["checks"][0] == {
        "check": "one-environment",
        "status": "fail",
        "reason": "changes 2 manifests: environments/production.yaml, environments/staging.yaml",
    }


def test_a_digest_that_is_not_the_packaged_one_fails(repo, versions, tmp_path):
    version = versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST})
    assert _promote(repo, "staging", "--version", version) == 0
    path = repo / "environments" / "staging.yaml"
    path.write_text(path.read_text().replace(DIGEST, "sha256:" + "00" * 32))
    code, document = _check(repo, tmp_path)
    assert code == 1 and _statuses(document)["digest"] == "fail"


def _freeze(repo: Path, start: datetime, end: datetime) -> None:
    path = repo / "environments" / "staging.yaml"
    window = f"[{{start: '{start.isoformat()}', end: '{end.isoformat()}', reason: launch}}]"
    text = path.read_text().replace("  freeze: []", f"  freeze: {window}")
    path.write_text(text)
    _git(repo, "commit", "-qam", "Freeze staging")
    _git(repo, "branch", "-f", "main", "HEAD")  # the freeze is on main already


def test_a_freeze_window_in_force_fails_unless_the_label_lifts_it(
    repo, versions, tmp_path, monkeypatch
):
    now = datetime.now(UTC)
    _freeze(repo, now - timedelta(hours=1), now + timedelta(hours=1))
    version = versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST})
    assert _promote(repo, "staging", "--version", version) == 0
    code, document = _check(repo, tmp_path)
    assert code == 1 and _statuses(document)["freeze"] == "fail"

    event = tmp_path / "event.json"
    event.write_text(
        json.dumps(
            {
                "pull_request": {"labels": [{"name": "slipway/override-freeze"}]},
                "sender": {"login": "release-manager"},
            }
        )
    )
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    code, document = _check(repo, tmp_path)
    freeze = next(c for c in document["checks"] if c["check"] == "freeze")
    assert code == 0 and "lifted by @release-manager" in freeze["reason"]


def test_a_malformed_manifest_fails_the_schema_check(repo, tmp_path):
    path = repo / "environments" / "staging.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["replicas"] = 3
    path.write_text(yaml.safe_dump(raw))
    code, document = _check(repo, tmp_path)
    assert code == 1
    schema = next(c for c in document["checks"] if c["check"] == "schema")
    assert schema["status"] == "fail" and "replicas" in schema["reason"]


def test_rule_changes_are_not_a_promotion(repo, versions, tmp_path):
    prod = repo / "environments" / "production.yaml"
    _git(repo, "checkout", "-q", "-b", "loosen", "main")
    prod.write_text(prod.read_text().replace("soak_hours: 24", "soak_hours: 1"))
    code, document = _check(repo, tmp_path, "production")
    assert code == 1
    fields = next(c for c in document["checks"] if c["check"] == "fields")
    assert fields["reason"] == "also changes promotion: not a promotion"


def test_promote_without_a_version_or_check_is_a_usage_error(repo, capsys):
    assert _promote(repo, "staging") == 2
    assert "--version N" in capsys.readouterr().err


@pytest.mark.slow
def test_check_against_a_tracking_server_loads_no_model_library(repo, tmp_path):
    from act_harness import MlflowServer
    from slipway.registry import MlflowRegistry

    server = MlflowServer(tmp_path / "mlflow").start()
    try:
        client = MlflowRegistry(server.uri, logs_models=False)._client
        client.create_registered_model("release-risk")
        run = client.create_run(client.create_experiment("promotion"))
        tags = {"slipway.gate": "pass", "slipway.digest": DIGEST}
        source = f"runs:/{run.info.run_id}/model"
        client.create_model_version("release-risk", source, run_id=run.info.run_id, tags=tags)
        env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri}
        env.pop("GITHUB_EVENT_PATH", None)
        probe = (
            "import json, sys\n"
            "from slipway.cli import main\n"
            "codes = [main(sys.argv[1:4] + sys.argv[5:]), main(sys.argv[1:3] + sys.argv[4:])]\n"
            "heavy = ('sklearn', 'pandas', 'bentoml', 'mlflow')\n"
            "print(json.dumps([codes, [m for m in heavy if m in sys.modules]]))\n"
        )
        environments = str(repo / "environments")
        args = ["promote", "staging", "--version=1", "--check", "--environments", environments]
        done = subprocess.run(
            [sys.executable, "-c", probe, *args, "--out", str(tmp_path / "out")],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        server.stop()
    codes, loaded = json.loads(done.stdout.splitlines()[-1])
    assert codes == [0, 0], done.stdout + done.stderr  # promoted, then checked
    assert loaded == []


def _deployed(**extra: str) -> dict[str, str]:
    return {
        "slipway.gate": "pass",
        "slipway.digest": DIGEST,
        checks.smoke_tag("staging"): "pass",
        "slipway.deploy.staging": "success",
        checks.deployed_tag("staging"): "2026-11-30T12:00:00+00:00",
        **extra,
    }


def test_history_and_rollback_through_the_manifest_log(repo, versions, capsys, monkeypatch):
    first, second = versions(**_deployed()), versions(**_deployed())
    environments = ["--environments", str(repo / "environments")]
    assert _promote(repo, "staging", "--version", first) == 0
    _git(repo, "commit", "-qam", f"Promote release-risk v{first} to staging (#11)")
    assert _promote(repo, "staging", "--version", second) == 0
    _git(repo, "commit", "-qam", f"Promote release-risk v{second} to staging (#12)")
    capsys.readouterr()
    for variable in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(variable, "On Call")  # --direct commits as whoever runs it
    for variable in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(variable, "oncall@example.com")

    assert main(["rollback", "staging", "--direct", *environments]) == 0
    assert f"Roll back release-risk to v{first} in staging" in capsys.readouterr().out
    subject = _git(repo, "log", "-1", "--format=%s").strip()
    assert subject == f"Roll back release-risk to v{first} in staging (direct)"
    assert _git(repo, "status", "--porcelain").strip() == ""  # committed, nothing left over

    assert main(["history", "staging", "--json", *environments]) == 0
    entries = json.loads(capsys.readouterr().out)["entries"]
    assert [(e["version"], e["pull_request"], e["rolled_back"]) for e in entries] == [
        (first, None, False),
        (second, 12, True),
        (first, 11, False),
        (None, None, False),  # the manifest as first committed
    ]
    assert entries[1]["gate"] == "pass" and entries[1]["deploy"] == "success"
    assert entries[1]["author"] == "Slipway Tests" and len(entries[1]["commit"]) == 40
    assert entries[0]["author"] == "On Call"
    assert main(["history", "staging", *environments]) == 0
    assert "4 change(s) of environments/staging.yaml" in capsys.readouterr().out


def test_rollback_needs_a_version_that_deployed_well(repo, versions, capsys):
    versions(**_deployed(**{"slipway.deploy.staging": "failure"}))
    environments = ["--environments", str(repo / "environments")]
    before = (repo / "environments" / "staging.yaml").read_bytes()
    assert main(["rollback", "staging", *environments]) == 1
    assert "no earlier version that deployed successfully" in capsys.readouterr().err
    assert (repo / "environments" / "staging.yaml").read_bytes() == before
    good = versions(**_deployed())
    assert main(["rollback", "staging", "--to", good, *environments]) == 0  # --to: a PR's worth
    assert f"version: {good}" in (repo / "environments" / "staging.yaml").read_text()


def _open_pulls(gh, branch: str) -> list[dict]:
    return [p for p in gh.pulls.values() if p["state"] == "open" and p["head"]["ref"] == branch]


def test_promote_opens_one_pull_request_on_its_fixed_branch_and_updates_it(
    repo, versions, github, capsys
):
    owners = {"slipway.owners": "alice,ml/platform", "slipway.intended_use": "rank releases"}
    first = versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST}, **owners)
    assert _promote(repo, "staging", "--version", first) == 0
    [pull] = _open_pulls(github, "slipway/promote-staging")
    assert pull["title"] == f"Promote release-risk v{first} to staging"
    body = pull["body"]
    assert f"`version` → {first}" in body and DIGEST in body and "rank releases" in body
    assert "**staging** → production" in body and "slipway rollback staging" in body
    local = (repo / "environments" / "staging.yaml").read_text()
    assert github.file("slipway/promote-staging", "environments/staging.yaml") == local
    assert github.sent("POST", "/requested_reviewers") == [{"reviewers": ["alice"]}]  # users
    assert "pull request created" in capsys.readouterr().err

    second = versions(**{"slipway.gate": "pass", "slipway.digest": "sha256:" + "7a" * 32})
    assert _promote(repo, "staging", "--version", second) == 0
    [again] = _open_pulls(github, "slipway/promote-staging")
    assert again["number"] == pull["number"] and f"v{second}" in again["title"]
    text = github.file("slipway/promote-staging", "environments/staging.yaml")
    assert f"version: {second}" in text and "sha256:" + "7a" * 32 in text


def test_a_branch_a_person_pushed_to_is_commented_on_not_pushed_over(
    repo, versions, github, capsys
):
    first = versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST})
    assert _promote(repo, "staging", "--version", first) == 0
    [pull] = _open_pulls(github, "slipway/promote-staging")
    mine = "# hand-edited\n"
    github.push("slipway/promote-staging", {"environments/staging.yaml": mine}, login="carol")
    second = versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST})
    capsys.readouterr()
    assert _promote(repo, "staging", "--version", second) == 0
    assert github.file("slipway/promote-staging", "environments/staging.yaml") == mine
    [note] = [c["body"] for c in github.issue_comments(pull["number"])]
    assert note.startswith("Not pushed: `slipway/promote-staging` holds commits by carol")
    assert f"v{second}" in note
    assert "did not push" in capsys.readouterr().err


def test_without_a_token_the_pull_request_is_written_down(repo, versions, tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("GH_TOKEN", raising=False)
    first = versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST})
    out = tmp_path / "out"
    assert _promote(repo, "staging", "--version", first, "--out", str(out)) == 0
    text = (out / "promote-pr.md").read_text()
    assert text.startswith(f"# Promote release-risk v{first} to staging")


def test_a_github_refusal_leaves_the_manifest_as_it_was(repo, versions, github, capsys):
    version = versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST})
    path = repo / "environments" / "staging.yaml"
    before = path.read_bytes()
    github.fail(403)  # not retried (5xx and 429 are, as tests/test_github.py shows)
    assert _promote(repo, "staging", "--version", version) == 2
    err = capsys.readouterr().err
    assert "403" in err and "no pull request was opened" in err and "is as it was" in err
    assert path.read_bytes() == before  # nothing moved
    assert github.pulls == {}
