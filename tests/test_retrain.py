"""`slipway retrain-pr`: why, the new training window, and the one retrain pull request.

Against the GitHub emulator and a real MLflow registry on SQLite, with a prediction log and
delayed labels written the way the service and a labelling job write them.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import edit_config
from contract_helpers import simulator
from slipway.cli import main
from slipway.config import load_config
from slipway.drift import retrain
from slipway.drift.retrain_report import MARKER, nested
from slipway.manifests import update_manifest
from slipway.propose.datasets import check_lock

REPO = Path(__file__).resolve().parent.parent
BRANCH = "slipway/retrain"
DIGEST = "sha256:" + "5e" * 32
DRIFTED = {
    "schema": "slipway.drift/1",
    "environment": "production",
    "model": "release-risk",
    "versions": ["1"],
    "window": {"since": "2026-11-30T00:00:00+00:00", "until": "2026-12-01T00:00:00+00:00"},
    "windows": [],
    "status": "drifted",
    "triggers": ["data:code_changes", "prediction"],
    "features": {
        "code_changes": {
            "status": "drifted",
            "psi": 0.41,
            "psi_interval": [0.33, 0.52],
            "tolerance": 0.2,
            "test": "ks",
            "statistic": 0.21,
            "pvalue": 1e-12,
            "adjusted_pvalue": 6e-12,
            "rows": 1600,
        },
        "test_coverage": {
            "status": "stable",
            "psi": 0.01,
            "psi_interval": [0.0, 0.03],
            "tolerance": 0.2,
            "test": "ks",
            "statistic": 0.02,
            "pvalue": 0.6,
            "adjusted_pvalue": 0.7,
            "rows": 1600,
        },
    },
    "prediction": {"high_risk_share": 0.52, "interval": [0.49, 0.55], "reference": 0.31},
    "generated_at": "2026-12-01T00:05:00+00:00",
}


@pytest.fixture
def setup(project: Path, tmp_path: Path, registry, monkeypatch):
    """A model project whose production runs v1, a log of 1,600 drifted labelled predictions."""
    for name in ("GITHUB_TOKEN", "GH_TOKEN", "GITHUB_REPOSITORY", "GITHUB_EVENT_PATH"):
        monkeypatch.delenv(name, raising=False)
    log = tmp_path / "log"
    edit_config(project, **{"drift.log": str(log), "owners": ["qa-lead", "ml-platform"]})
    environments = tmp_path / "environments"
    shutil.copytree(REPO / "environments", environments)
    client = registry._client
    client.create_registered_model("release-risk")
    run = client.create_run(registry._experiment("retrain"))  # artifacts beside the database
    version = client.create_model_version(
        "release-risk", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    ).version
    update_manifest(environments / "production.yaml", {"version": int(version), "digest": DIGEST})
    out = tmp_path / "out"
    state = {"project": project, "log": log, "environments": environments, "out": out}
    state["version"], state["run_id"] = str(version), run.info.run_id
    serve(state, rows=1600, seed=21)
    write_drift(out, DRIFTED)
    return state


def serve(
    state: dict, rows: int, seed: int, at: str = "2026-11-30T12:00:00", **drift: float
) -> pd.DataFrame:
    """Log ``rows`` served predictions of simulated releases at ``at`` and label them all."""
    frame = simulator().simulate(
        rows, seed=seed, end_date=date(2026, 11, 30), days=30, id_prefix="LIVE", **drift
    )
    records = []
    for row in frame.to_dict("records"):
        features = {k: (None if pd.isna(v) else v) for k, v in row.items() if k != "high_risk"}
        records.append(
            {
                "timestamp": f"{at}.000+00:00",
                "environment": "production",
                "model": "release-risk",
                "model_version": state["version"],
                "route": "stable",
                "served": True,
                "request_id": "0" * 32,
                "release_id": row["release_id"],
                "features": features,
                "imputed": [],
                "output": {"high_risk": True, "probability": 0.7},
                "latency_ms": 2.0,
            }
        )
    records.append({**records[0], "release_id": "slipway-smoke:1"})  # never trained on
    state["log"].mkdir(parents=True, exist_ok=True)
    with (state["log"] / f"predictions-{seed}.jsonl").open("w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    labels = state["project"].parent / "data" / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    frame.assign(labelled_at="2026-12-01T00:00:00Z")[
        ["release_id", "high_risk", "labelled_at"]
    ].to_csv(labels / f"labels-{seed}.csv", index=False)
    return frame


def write_drift(out: Path, document: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "drift.json").write_text(json.dumps(document))


def retrain_pr(state: dict, *args: str) -> int:
    return main(
        [
            "retrain-pr",
            "--config",
            str(state["project"]),
            "--out",
            str(state["out"]),
            "--environments",
            str(state["environments"]),
            *args,
        ]
    )


@pytest.fixture
def github(github):
    """conftest's emulator, where the model's owners may be asked to review."""
    github.collaborators |= {"qa-lead", "ml-platform"}
    return github


def _pulls(gh, state: str = "open") -> list[dict]:
    return [p for p in gh.pulls.values() if p["head"]["ref"] == BRANCH and p["state"] == state]


def _created(gh) -> int:
    """How many pull requests were asked for (``POST /pulls``)."""
    return sum(1 for method, path, _ in gh.log if method == "POST" and path.endswith("/pulls"))


def _branch_commits(gh) -> list[dict]:
    return [gh.commits[s] for s in gh._history(gh.branches[BRANCH])[:-1]]  # above main's seed


def test_drift_opens_one_pull_request_with_the_evidence_and_the_files(setup, github, capsys):
    before = (setup["project"].parent / "data" / "train.csv").read_bytes()
    assert retrain_pr(setup) == 0
    [pull] = _pulls(github)
    assert pull["title"] == "Retrain release-risk: drift in production"
    body = pull["body"]
    assert body.startswith(f"{MARKER} version={setup['version']} triggers=data:code_changes,")
    assert (
        "`data:code_changes`" in body and "| code_changes | drifted | 0.410 [0.330, 0.520]" in body
    )
    assert "1,600 labelled predictions from the production log" in body
    assert "not a trigger: v1 was registered 0 days ago" in body
    assert "pr.yml" in body and "closed without merging" in body
    document = json.loads((setup["out"] / "retrain.json").read_text())
    assert document["schema"] == "slipway.retrain/1" and document["retrain"] is True
    window = document["window"]
    assert window["splits"]["train"]["rows"] == 4000 and window["splits"]["eval"]["rows"] == 1500
    assert window["from"] == {"current": 3900, "log": 1600, "source": 0, "left_out": 1600}
    assert window["labels"]["unknown"] == 0
    paths = ["model/data/train.csv", "model/data/eval.csv", "model/data/data.lock.json"]
    assert document["files"] == paths
    for path, local in zip(paths, ("train", "eval", "lock"), strict=True):
        assert github.file(BRANCH, path) == Path(window["paths"][local]).read_text()
    commits = _branch_commits(github)
    assert len(commits) == 3 and all(c["login"] == "github-actions[bot]" for c in commits)
    assert github.sent("POST", "/requested_reviewers") == [
        {"reviewers": ["qa-lead", "ml-platform"]}
    ]
    evaluation = pd.read_csv(window["paths"]["eval"])
    assert evaluation["release_id"].str.startswith("LIVE").all()  # the newest rows
    assert not evaluation["release_id"].str.startswith("slipway-smoke").any()
    assert (setup["project"].parent / "data" / "train.csv").read_bytes() == before
    config = load_config(setup["project"]).model_copy(update={"root": Path(window["root"])})
    assert set(check_lock(config)) == {"train", "eval"}  # the new lock holds the new files
    assert "pull request created" in capsys.readouterr().err


def test_a_second_run_updates_the_same_pull_request(setup, github):
    assert retrain_pr(setup) == 0
    [pull] = _pulls(github)
    serve(setup, rows=400, seed=22, shift=0.8)
    assert retrain_pr(setup) == 0
    [again] = _pulls(github)
    assert again["number"] == pull["number"] and _created(github) == 1
    assert "2,000 labelled predictions" in again["body"]
    assert len(_branch_commits(github)) == 3  # reset to main, one commit per file again


def test_a_persons_commit_on_the_branch_gets_a_comment_not_a_push(setup, github, capsys):
    assert retrain_pr(setup) == 0
    [pull] = _pulls(github)
    mine = github.push(BRANCH, {"model/data/eval.csv": "hand-picked\n"}, login="carol")
    serve(setup, rows=400, seed=22)
    capsys.readouterr()
    assert retrain_pr(setup) == 0
    assert github.branches[BRANCH] == mine
    [note] = [c["body"] for c in github.issue_comments(pull["number"])]
    assert note.startswith(f"Not pushed: `{BRANCH}` holds commits by carol")
    assert "2,000 labelled predictions" in note
    assert "did not push" in capsys.readouterr().err
    # The next runs: on the same evidence nothing more is said; on new evidence, once more.
    serve(setup, rows=400, seed=23)
    assert retrain_pr(setup) == 0
    assert len(github.issue_comments(pull["number"])) == 1
    assert "(already commented)" in capsys.readouterr().err
    write_drift(setup["out"], {**DRIFTED, "triggers": ["data:code_changes", "performance:recall"]})
    assert retrain_pr(setup) == 0
    notes = [c["body"] for c in github.issue_comments(pull["number"])]
    assert len(notes) == 2 and "performance:recall" in notes[1]
    assert github.branches[BRANCH] == mine


def test_a_closed_pull_request_is_not_reopened_until_the_evidence_changes(setup, github, capsys):
    assert retrain_pr(setup) == 0
    [pull] = _pulls(github)
    pull.update(state="closed", closed_at="2026-12-01T10:00:00Z")
    serve(setup, rows=400, seed=22)  # new figures, the same drifted features
    capsys.readouterr()
    assert retrain_pr(setup) == 0
    assert _pulls(github) == [] and _created(github) == 1
    assert f"#{pull['number']} was closed without merging" in capsys.readouterr().err
    decided = json.loads((setup["out"] / "retrain.json").read_text())["pull_request"]
    assert (decided["action"], decided["closed"], decided["pushed"]) == (
        "not reopened",
        pull["number"],
        False,
    )
    write_drift(setup["out"], {**DRIFTED, "triggers": ["data:code_changes", "performance:recall"]})
    assert retrain_pr(setup) == 0
    [reopened] = _pulls(github)
    assert reopened["number"] != pull["number"]
    assert "performance:recall" in reopened["body"].splitlines()[0]


def test_a_merged_retrain_does_not_hold_back_the_next(setup, github):
    assert retrain_pr(setup) == 0
    [pull] = _pulls(github)
    github.merge(pull["number"], github.branches[BRANCH])
    github.branches["main"] = github.branches[BRANCH]
    serve(setup, rows=400, seed=22)
    assert retrain_pr(setup) == 0
    [second] = _pulls(github)
    assert second["number"] != pull["number"]


def test_an_old_production_version_is_retrained_without_drift(setup, github, monkeypatch):
    write_drift(setup["out"], {**DRIFTED, "status": "no_drift", "triggers": [], "features": {}})
    later = datetime.now(UTC) + timedelta(days=100)
    monkeypatch.setattr(retrain, "clock", lambda: later)
    assert retrain_pr(setup) == 0
    [pull] = _pulls(github)
    assert pull["title"] == "Retrain release-risk: production v1 is 100 days old"
    assert f"{MARKER} version=1 triggers=age -->" in pull["body"]
    assert "not a trigger: the drift check says no_drift" in pull["body"]
    assert "### Drift evidence" not in pull["body"]


def test_without_a_drift_report_only_the_age_is_judged(setup, github, monkeypatch):
    (setup["out"] / "drift.json").unlink()
    monkeypatch.setattr(retrain, "clock", lambda: datetime.now(UTC) + timedelta(days=91))
    assert retrain_pr(setup) == 0
    [pull] = _pulls(github)
    assert pull["title"] == "Retrain release-risk: production v1 is 91 days old"
    assert "not a trigger: no drift report at" in pull["body"]


def test_neither_drift_nor_age_opens_nothing(setup, github, capsys):
    write_drift(setup["out"], {**DRIFTED, "status": "inconclusive", "triggers": []})
    assert retrain_pr(setup) == 0
    assert github.pulls == {} and github.count("PUT") == 0
    out = capsys.readouterr().out
    assert "no retraining of release-risk: the drift check says inconclusive" in out
    assert "v1 was registered 0 days ago, within drift.max_age_days (90)" in out
    assert not (setup["out"] / "retrain").exists()


def test_without_a_token_the_pull_request_is_written_down(setup, capsys):
    labels = setup["project"].parent / "data" / "labels"
    (labels / "late.csv").write_text(
        "release_id,high_risk,labelled_at\n"
        "LIVE-21-000001,0,2026-12-01\nLIVE-21-000001,1,2026-12-01\nLIVE-21-000002,1,soon\n"
    )  # one release labelled both ways, one row with no readable time
    assert retrain_pr(setup) == 0
    text = (setup["out"] / "retrain-pr.md").read_text()
    assert text.startswith("# Retrain release-risk: drift in production\n\n")
    assert "### The new training window" in text
    assert "1,599 labels read" in text  # the release labelled both ways is left out
    assert "2 left out: malformed, or a release labelled both ways" in text
    assert (setup["out"] / "retrain" / "data" / "train.csv").is_file()
    assert "retrain-pr.md" in capsys.readouterr().err


def test_write_puts_the_window_into_the_model_project(setup):
    assert retrain_pr(setup, "--write") == 0
    config = load_config(setup["project"])
    assert set(check_lock(config)) == {"train", "eval"}
    assert (
        pd.read_csv(setup["project"].parent / "data" / "eval.csv")["release_id"]
        .str.startswith("LIVE")
        .all()
    )


def test_the_data_source_fills_in_when_the_log_holds_too_few(setup):
    for old in setup["log"].iterdir():
        old.unlink()
    serve(setup, rows=200, seed=23)
    assert retrain_pr(setup) == 0
    window = json.loads((setup["out"] / "retrain.json").read_text())["window"]
    assert window["data_source"]["ran"] is True and window["from"]["log"] == 200
    assert window["from"]["source"] > 0
    assert window["splits"]["eval"]["dates"][1] == date.today().isoformat()  # to --until: today


def test_a_window_that_breaks_the_contract_opens_nothing(setup, capsys):
    edit_config(
        setup["project"],
        **{
            "data.source.command": [
                "python",
                "simulate.py",
                "--out",
                "{out}",
                "--seed",
                "9",
                "--new-team",
            ]
        },
    )
    for old in setup["log"].iterdir():
        old.unlink()
    assert retrain_pr(setup) == 1
    said = capsys.readouterr().out
    assert "breaks the data contract" in said
    assert "  train: categories (`team` has values outside" in said  # the broken rule, named
    assert "fix: if the world really changed" in said and "model/slipway.yaml" in said
    assert not (setup["out"] / "retrain-pr.md").exists()
    report = json.loads((setup["out"] / "retrain" / "validation.json").read_text())
    assert report["passed"] is False


def test_nothing_new_to_train_on_is_an_error_naming_the_fix(setup, capsys):
    edit_config(setup["project"], **{"data.source": None})
    for old in setup["log"].iterdir():
        old.unlink()
    assert retrain_pr(setup) == 2
    err = capsys.readouterr().err
    assert "nothing new to retrain release-risk on" in err and "data.source" in err


@pytest.mark.parametrize(
    ("status", "age_days", "expected"),
    [
        ("drifted", 10, "version=1 triggers=data:code_changes,prediction"),
        ("drifted", 200, "version=1 triggers=age,data:code_changes,prediction"),
        ("no_drift", 200, "version=1 triggers=age"),
        ("inconclusive", 10, "version=1 triggers=-"),
    ],
)
def test_the_fingerprint_is_the_version_the_triggers_and_what_drifted(
    project, status, age_days, expected
):
    config = load_config(project)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    document = retrain.decide(
        config,
        "production",
        {**DRIFTED, "status": status},
        Path("drift.json"),
        "1",
        now - timedelta(days=age_days),
        now,
    )
    assert document["fingerprint"] == expected
    assert document["retrain"] is (expected != "version=1 triggers=-")
    assert retrain.marked(f"{MARKER} {expected} -->\nbody") == expected


def test_a_drift_report_of_another_model_is_refused(setup, capsys):
    write_drift(setup["out"], {**DRIFTED, "model": "churn"})
    assert retrain_pr(setup) == 2
    assert "is the report of churn in production" in capsys.readouterr().err


def test_an_explicit_drift_report_must_exist(setup, capsys):
    assert retrain_pr(setup, "--drift", str(setup["out"] / "missing.json")) == 2
    assert "run `slipway drift ENV` first" in capsys.readouterr().err


def test_the_drift_checks_own_report_opens_the_pull_request(setup, registry, github):
    """`slipway drift production` over drifted traffic, then `slipway retrain-pr` on its
    drift.json and drift.md, as drift.yml runs them."""
    from slipway.drift.profile import build_profile, store_profile
    from slipway.registry import ModelRef

    config = load_config(setup["project"])
    train = pd.read_csv(setup["project"].parent / "data" / "train.csv")
    rng = np.random.default_rng(1)
    probabilities = rng.beta(0.3, 0.3, 2000)
    labels = (rng.random(2000) < probabilities).astype(int)
    metrics = {"accuracy": 0.86, "precision": 0.8, "recall": 0.85}
    profile = build_profile(config, train, probabilities, labels, 0.5, metrics, setup["version"])
    ref = ModelRef("release-risk", setup["version"], setup["run_id"])
    store_profile(registry, ref, profile)
    for old in setup["log"].iterdir():
        old.unlink()
    serve(setup, rows=900, seed=31, at="2026-11-29T12:00:00", shift=0.5)
    serve(setup, rows=900, seed=32, at="2026-11-30T12:00:00", shift=0.5)
    common = ["--config", str(setup["project"]), "--out", str(setup["out"])]
    common += ["--environments", str(setup["environments"])]
    assert main(["drift", "production", "--until", "2026-12-01T00:00:00+00:00", *common]) == 1
    drift = json.loads((setup["out"] / "drift.json").read_text())
    assert drift["status"] == "drifted" and "data:past_defects" in drift["triggers"]
    assert retrain_pr(setup) == 0
    [pull] = _pulls(github)
    assert pull["title"] == "Retrain release-risk: drift in production"
    assert "data:past_defects" in pull["body"].splitlines()[0]
    summary = (setup["out"] / "drift.md").read_text()
    assert summary.startswith("## ") and "\n### Features" in summary
    evidence = nested(summary, 4)  # the check's own Markdown, charts and all, one level down
    assert evidence.startswith("#### ") and "\n##### Features" in evidence
    assert evidence in pull["body"] and "```mermaid" in pull["body"]
    assert "1,800 labelled predictions from the production log" in pull["body"]
