"""`slipway gate`, `report`, `pr` and `demo` end to end on a real MLflow registry."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import edit_config
from contract_helpers import edit_csv, set_cells
from slipway.cli import main
from slipway.propose.report import MARKER

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str) -> int:
    return main(list(args))


def test_gate_without_champion_then_against_production(
    project, tracking_uri, registry, tmp_path, capsys
):
    out = tmp_path / "out"
    cfg = ["--config", str(project), "--out", str(out)]
    assert _run("train", *cfg, "--param", "n_estimators=20", "--param", "max_depth=4") == 0
    assert _run("gate", *cfg) == 0
    first = json.loads((out / "gate.json").read_text())
    assert first["schema"] == "slipway.gate/1"
    assert first["champion"] is None
    assert {g["status"] for g in first["gates"] if g["gate"] in ("regression", "stability")} == {
        "skipped"
    }
    registry.set_alias("release-risk", "production", "1")

    assert _run("train", *cfg) == 0
    assert _run("gate", *cfg) == 0
    gate = json.loads((out / "gate.json").read_text())
    assert gate["candidate"]["version"] == "2" and gate["champion"]["version"] == "1"
    for item in gate["gates"]:
        assert set(item) >= {"value", "threshold", "baseline", "delta", "interval", "reason"}
        assert item["status"] in {"pass", "inconclusive"}
    regression = [g for g in gate["gates"] if g["gate"] == "regression"]
    assert all(g["baseline"] is not None and g["interval"] is not None for g in regression)
    metrics = gate["candidate"]["metrics"]
    assert set(metrics) >= {
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "pr_auc",
        "log_loss",
        "confusion_matrix",
    }
    assert registry.get("release-risk", "2").tags["slipway.gate"] == "pass"
    run = registry._client.get_run(registry.get("release-risk", "2").run_id)
    assert run.data.metrics["eval_roc_auc"] == pytest.approx(metrics["roc_auc"])
    latency = next(g for g in gate["gates"] if g["gate"] == "latency")
    recorded = registry.get("release-risk", "1").tags["slipway.latency_p95_ms"]
    assert latency["baseline"] == pytest.approx(float(recorded))  # production's own figure
    assert "gate pass for version 2" in capsys.readouterr().out


def test_degraded_model_fails_the_gate_with_reasons(
    project, tracking_uri, registry, tmp_path, capsys
):
    out = tmp_path / "out"
    cfg = ["--config", str(project), "--out", str(out)]
    # A threshold of 0.9 flags almost nothing as high-risk: recall collapses.
    assert _run("train", *cfg, "--param", "threshold=0.9") == 0
    assert _run("gate", *cfg) == 1
    gate = json.loads((out / "gate.json").read_text())
    assert gate["status"] == "fail"
    assert "threshold:recall" in gate["failed"]
    recall = next(g for g in gate["gates"] if g["gate"] == "threshold" and g["metric"] == "recall")
    assert "below the minimum 0.8" in recall["reason"]
    assert registry.get("release-risk", "1").tags["slipway.gate"] == "fail"
    assert _run("report", *cfg) == 0
    report = (out / "report.md").read_text()
    assert "❌ release-risk v1 fails: threshold:recall" in report
    assert "❌ **threshold · recall**" in report
    assert "fail" in capsys.readouterr().out


def test_gate_without_a_trained_version_is_a_usage_error(project, tracking_uri, tmp_path, capsys):
    code = _run("gate", "--config", str(project), "--out", str(tmp_path / "out"))
    assert code == 2
    assert "run `slipway train` first" in capsys.readouterr().err


def test_pr_stops_at_invalid_data_and_reports_it(project, tracking_uri, registry, tmp_path, capsys):
    edit_csv(project, "train", lambda frame: set_cells(frame, "test_coverage", [0], "140"))
    out = tmp_path / "out"
    code = _run("pr", "--config", str(project), "--out", str(out))
    assert code == 1
    report = (out / "report.md").read_text()
    assert "❌ Data validation failed: 1 violation(s)" in report
    assert "test_coverage" in report and "line 2 = 140" in report
    assert not (out / "train.json").exists()
    assert registry._client.search_model_versions("name='release-risk'") == []
    capsys.readouterr()


def test_pr_writes_step_summary_and_all_outputs(project, tracking_uri, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = tmp_path / "out"
    assert _run("pr", "--config", str(project), "--out", str(out)) == 0
    for name in ("validation.json", "train.json", "gate.json", "report.md"):
        assert (out / name).is_file(), name
    assert summary.read_text() == (out / "report.md").read_text()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp leftovers


def _subjects(repo: Path, revisions: str = "HEAD") -> list[str]:
    done = subprocess.run(
        ["git", "log", "--reverse", "--format=%s", revisions],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.slow
def test_demo_moves_models_through_manifests_only(project, tracking_uri, tmp_path, capsys):
    import requests

    from slipway.manifests import load_manifest
    from slipway.promote.history import history
    from slipway.registry import MlflowRegistry

    # Limits a few hundred requests can decide (the demo's own need five passes of the eval set).
    edit_config(
        project,
        **{
            "canary.min_predictions": 100,
            "canary.max_error_rate_increase": 0.05,
            "canary.max_high_risk_share_change": 0.2,
        },
    )
    out = tmp_path / "out"
    # Remove the data: the demo regenerates it with model/simulate.py and locks it.
    for name in ("train.csv", "eval.csv", "data.lock.json"):
        (project.parent / "data" / name).unlink()
    users = {path: path.read_bytes() for path in (REPO / "environments").iterdir()}
    assert _run("demo", "--config", str(project), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert {path: path.read_bytes() for path in (REPO / "environments").iterdir()} == users

    # What a reviewer would have seen: the pull requests, the gate report, the canary report.
    assert "# Promote release-risk v1 to staging" in printed
    assert "# Promote release-risk v1 to production" in printed
    assert MARKER in printed and "Candidate **v2**" in printed and "vs production **v1**" in printed
    assert "## slipway canary-report production" in printed and "verdict: promote" in printed
    assert "# Finish the canary: release-risk v2 to production" in printed
    assert "## slipway history production" in printed

    # The drift loop: drifted traffic through production and its delayed labels, one drift run
    # that decides, the retrain pull request with the evidence, the retrained candidate gated.
    assert "## slipway drift production" in printed
    assert "Drift in production: release-risk v2 — drifted" in printed
    drift = json.loads(next(out.glob("steps/*-drift-production/drift.json")).read_text())
    assert drift["status"] == "drifted" and drift["versions"] == ["2"]
    assert drift["persistence"]["k"] == drift["persistence"]["n"] == 1
    assert drift["labels"]["matched"] >= 1500 and drift["quality"]["rejected"]
    assert any(f["status"] == "drifted" for f in drift["features"].values())
    body = next(out.glob("steps/*-retrain-pr/retrain-pr.md")).read_text()
    assert body.startswith("# Retrain release-risk: drift in production") and body in printed
    assert "### Drift evidence" in body and "🔴 Drift in production" in body
    retrained = json.loads(next(out.glob("steps/*-retrain-candidate/gate.json")).read_text())
    assert retrained["candidate"]["version"] == "3" and retrained["champion"]["version"] == "2"
    assert "Candidate **v3**" in printed and "vs production **v2**" in printed
    window = json.loads(next(out.glob("steps/*-retrain-pr/retrain.json")).read_text())["window"]
    assert retrained["eval"]["sha256"] == window["splits"]["eval"]["sha256"]  # the new window
    timeline = printed[printed.index("## Timeline") :]
    for step in ("promote staging v1", "canary-report production", "drift production"):
        assert f"| {step} |" in timeline
    assert "| retrain-pr |" in timeline and "retrain-pr.md" in timeline
    assert "| pr on the retrain branch | v3 " in timeline

    # Only commits to the scratch manifests moved the models; the retrain pull request's
    # branch holds the new window.
    repo = out / "gitops"
    *moves, project = _subjects(repo)
    assert moves == [
        "Environment manifests from environments, nothing deployed yet",
        "Promote release-risk v1 to staging",
        "Demo only: production's soak_hours 24 → 0, so the demo need not wait 24 h in staging",
        "Promote release-risk v1 to production",
        "Canary release-risk v2 at 10% in production",
        "Finish the canary: release-risk v2 to production",
    ]
    assert project.startswith("Demo only: the model project, drift.window_days ")
    assert _subjects(repo, "main..slipway/retrain") == ["Retrain release-risk: drift in production"]
    changed = subprocess.run(
        ["git", "diff", "--name-only", "main", "slipway/retrain"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert changed == ["model/data/data.lock.json", "model/data/eval.csv", "model/data/train.csv"]
    staging = load_manifest(repo / "environments" / "staging.yaml")
    production = load_manifest(repo / "environments" / "production.yaml")
    assert (staging.version, production.version) == (1, 2)
    assert production.rollout.mode == "none" and production.promotion.soak_hours == 0
    registry = MlflowRegistry(f"sqlite:///{out / 'state' / 'mlflow.db'}", logs_models=False)
    assert registry.alias("release-risk", "staging").version == "1"
    assert registry.alias("release-risk", "production").version == "2"
    assert production.digest == registry.get("release-risk", "2").tags["slipway.digest"]
    entries = history("production", registry, repo / "environments")["entries"]
    assert [(e["version"], e["deploy"]) for e in entries] == [
        ("2", "success"),
        ("1", "success"),
        (None, None),
    ]

    # Every server the demo started is stopped; the caller's registry was never touched.
    assert list((out / "state" / "serve").glob("*.json")) == []
    urls = {json.loads(p.read_text())["serving"]["url"] for p in out.glob("steps/*/deploy.json")}
    assert len(list(out.glob("steps/*/deploy.json"))) == 4
    for url in urls:
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/readyz", timeout=2)
    assert not Path(tracking_uri.removeprefix("sqlite:///")).exists()


@pytest.mark.parametrize("on_inconclusive", ["warn", "fail"])
def test_inconclusive_policy(project, tracking_uri, registry, tmp_path, on_inconclusive):
    """The same model against itself with an impossible tolerance of 0 is never 'worse by more
    than 0' for sure, nor surely within it: the policy decides."""
    edit_config(
        project,
        **{"gates.regression.tolerance": 0.0, "gates.regression.on_inconclusive": on_inconclusive},
    )
    out = tmp_path / "out"
    cfg = ["--config", str(project), "--out", str(out)]
    assert _run("train", *cfg, "--param", "n_estimators=30") == 0
    registry.set_alias("release-risk", "production", "1")
    assert _run("train", *cfg, "--param", "n_estimators=31") == 0
    code = _run("gate", *cfg)
    gate = json.loads((out / "gate.json").read_text())
    assert gate["inconclusive"], gate["gates"]  # seeds are fixed: this outcome is too
    assert gate["failed"] == []
    assert code == (1 if on_inconclusive == "fail" else 0)
    assert gate["status"] == ("fail" if on_inconclusive == "fail" else "pass")


# --- the model copy train leaves for gate and package ------------------------------------------


def _tamper(model_dir) -> None:
    pickled = model_dir / "model.pkl"
    data = bytearray(pickled.read_bytes())
    data[-2] ^= 0xFF  # a flipped byte near the end: still a file, no longer the registered bytes
    pickled.write_bytes(bytes(data))


def test_train_leaves_the_registered_model_and_gate_uses_it(
    project, tracking_uri, registry, tmp_path, capsys
):
    from slipway.fsutil import tree_digest
    from slipway.registry import MODEL_DIGEST_TAG, load_copy

    out = tmp_path / "out"
    cfg = ["--config", str(project), "--out", str(out)]
    assert _run("train", *cfg, "--param", "n_estimators=20") == 0
    train = json.loads((out / "train.json").read_text())
    ref = registry.get("release-risk", train["version"])
    digest = f"sha256:{tree_digest(out / 'model')}"
    assert ref.tags[MODEL_DIGEST_TAG] == digest == train["model_digest"]
    assert train["model_dir"] == "model"
    # The copy is the registry's model: same predictions as the one MLflow loads.
    from slipway.config import load_config
    from slipway.propose.contract import prepare, read_dataset

    config = load_config(project)
    features, _ = prepare(read_dataset(project.parent / "data" / "eval.csv").head(50), config)
    copied = load_copy(out / "model", ref).predict_proba(features)
    assert (copied == registry.load(ref).predict_proba(features)).all()
    capsys.readouterr()

    assert _run("gate", *cfg) == 0
    assert f"using {out / 'model'}: v{ref.version}'s registered bytes" in capsys.readouterr().err


def test_gate_loads_from_the_registry_when_the_copy_is_not_the_registered_bytes(
    project, tracking_uri, registry, tmp_path, capsys
):
    from slipway.registry import load_copy

    out = tmp_path / "out"
    cfg = ["--config", str(project), "--out", str(out)]
    assert _run("train", *cfg, "--param", "n_estimators=20") == 0
    ref = registry.get("release-risk", "1")
    _tamper(out / "model")
    assert load_copy(out / "model", ref) is None
    capsys.readouterr()
    assert _run("gate", *cfg) == 0
    err = capsys.readouterr().err
    assert "loading release-risk v1 from the registry" in err and "registered bytes" not in err


def test_load_copy_refuses_what_it_cannot_vouch_for(project, tracking_uri, registry, tmp_path):
    import dataclasses

    import yaml

    from slipway.registry import MODEL_DIGEST_TAG, load_copy

    out = tmp_path / "out"
    assert (
        _run("train", "--config", str(project), "--out", str(out), "--param", "n_estimators=5") == 0
    )
    ref = registry.get("release-risk", "1")
    assert load_copy(out / "model", ref) is not None
    untagged = dataclasses.replace(
        ref, tags={k: v for k, v in ref.tags.items() if k != MODEL_DIGEST_TAG}
    )
    assert load_copy(out / "model", untagged) is None
    assert load_copy(tmp_path / "nowhere", ref) is None
    mlmodel = out / "model" / "MLmodel"
    document = yaml.safe_load(mlmodel.read_text())
    document["flavors"]["sklearn"]["serialization_format"] = "skops"
    mlmodel.write_text(yaml.safe_dump(document))
    assert load_copy(out / "model", ref) is None  # another format (and another digest)
