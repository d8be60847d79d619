"""The gate step on a real MLflow registry (SQLite): what it records and which model it judges.

`record` writes gate.json, tags the candidate version with the verdict and logs the eval metrics
to the candidate's run; `evaluate` loads the candidate from the copy `train` left (else from the
registry) and the production version behind its alias.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import FixedThresholdClassifier

from slipway.config import load_config
from slipway.propose import gate, gate_rules
from slipway.propose.contract import prepare, read_dataset
from slipway.propose.datasets import split_paths
from slipway.registry import MODEL_COPY_DIR, MODEL_DIGEST_TAG, ModelRef

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def config():
    """The example model's config with a cheap bootstrap and latency gate."""
    found = load_config(REPO / "model" / "slipway.yaml")
    gates = found.gates.model_copy(
        update={
            "regression": found.gates.regression.model_copy(
                update={"resamples": 50, "confidence": 0.9}
            ),
            "latency": found.gates.latency.model_copy(update={"calls": 5}),
        }
    )
    return found.model_copy(update={"gates": gates})


@pytest.fixture
def eval_set(config):
    frame = read_dataset(split_paths(config)["eval"])
    return prepare(frame, config)


def _fitted(features, y, threshold: float):
    model = FixedThresholdClassifier(
        LogisticRegression(max_iter=300), threshold=threshold, response_method="predict_proba"
    )
    return model.fit(features, y)


def _register(registry, config, eval_set, threshold: float, copy_to: Path | None = None):
    features, y = eval_set
    return registry.log_and_register(
        config.name,
        _fitted(features, y, threshold),
        features,
        params={"threshold": threshold},
        metrics={},
        tags={"slipway.git_commit": f"commit-{threshold}"},
        copy_to=str(copy_to) if copy_to else None,
    )


def _verdict(gate_name: str, metric: str, status: str) -> gate_rules.Verdict:
    return gate_rules.Verdict(gate_name, metric, status, 0.5, 0.4, None, None, (0.25, 0.75), "why")


def _judgement(champion, status="fail", verdicts=None, p95_ms=3.14159) -> gate.Judgement:
    return gate.Judgement(
        status=status,
        verdicts=verdicts
        or [
            _verdict("threshold", "recall", gate_rules.FAIL),
            _verdict("regression", "log_loss", gate_rules.INCONCLUSIVE),
            _verdict("regression", "recall", gate_rules.PASS),
            _verdict("fairness", "recall_gap", gate_rules.SKIPPED),
            _verdict("threshold", "precision", gate_rules.FAIL),
        ],
        metrics={"recall": 0.75, "log_loss": 0.5, "confusion_matrix": [[3, 1], [1, 3]]},
        teams={"a": {"recall": 0.75, "positives": 4}},
        p95_ms=p95_ms,
        champion=champion,
        champion_metrics={"recall": 0.5} if champion else None,
        champion_teams={"b": {"recall": 0.5, "positives": 2}} if champion else {},
        eval={"rows": 8, "positives": 4, "sha256": "eval-digest"},
        probabilities=np.array([0.25]),
        labels=np.array([1]),
        threshold=0.5,
    )


def test_record_writes_gate_json_tags_the_version_and_logs_the_eval_metrics(
    tmp_path, registry, versions, config
):
    candidate = registry.get("release-risk", versions(**{"slipway.git_commit": "c0ffee"}))
    champion = gate.Champion(registry.get("release-risk", versions()), model=None)
    judgement = _judgement(champion)
    before = datetime.now(UTC).replace(microsecond=0)

    document = gate.record(config, registry, tmp_path, candidate, judgement, {"artifact": "p"})

    assert json.loads((tmp_path / "gate.json").read_text()) == document
    evaluated = datetime.fromisoformat(document.pop("evaluated_at"))
    assert before <= evaluated <= datetime.now(UTC) and evaluated.microsecond == 0
    assert document == {
        "schema": "slipway.gate/1",
        "model": "release-risk",
        "status": "fail",
        "failed": ["threshold:recall", "threshold:precision"],
        "inconclusive": ["regression:log_loss"],
        "candidate": {
            "version": candidate.version,
            "model_uri": f"models:/release-risk/{candidate.version}",
            "run_id": candidate.run_id,
            "run_url": None,  # a SQLite registry has no web page for a run
            "git_commit": "c0ffee",
            "metrics": judgement.metrics,
            "teams": judgement.teams,
        },
        "champion": {
            "version": champion.ref.version,
            "model_uri": f"models:/release-risk/{champion.ref.version}",
            "run_id": champion.ref.run_id,
            "run_url": None,
            "git_commit": None,
            "metrics": {"recall": 0.5},
            "teams": {"b": {"recall": 0.5, "positives": 2}},
        },
        "eval": {"rows": 8, "positives": 4, "sha256": "eval-digest"},
        "profile": {"artifact": "p"},
        "bootstrap": {"resamples": 50, "confidence": 0.9},
        "gates": [gate_rules.to_dict(v) for v in judgement.verdicts],
    }
    tags = registry.get("release-risk", candidate.version).tags
    assert {k: v for k, v in tags.items() if k != "slipway.git_commit"} == {
        "slipway.gate": "fail",
        "slipway.gate_eval_digest": "eval-digest",
        "slipway.gate_champion": champion.ref.version,
        gate.P95_TAG: "3.142",  # three decimals
    }
    # every eval metric but the confusion matrix, on the candidate's run, prefixed
    assert registry.run_metrics(candidate.run_id) == {"eval_recall": 0.75, "eval_log_loss": 0.5}
    assert registry.run_metrics(champion.ref.run_id) == {}


def test_record_without_a_champion_or_profile_or_run_says_none_and_logs_nothing(
    tmp_path, registry, versions, config
):
    registered = registry.get("release-risk", versions())
    candidate = ModelRef(registered.name, registered.version, None, {})  # a version with no run
    judgement = _judgement(None, status="pass", verdicts=[_verdict("latency", "p95_ms", "pass")])

    document = gate.record(config, registry, tmp_path, candidate, judgement)

    assert document["champion"] is None and "profile" not in document
    assert (document["status"], document["failed"], document["inconclusive"]) == ("pass", [], [])
    assert document["candidate"]["run_id"] is None and document["candidate"]["git_commit"] is None
    tags = registry.get("release-risk", registered.version).tags
    assert (tags["slipway.gate"], tags["slipway.gate_champion"]) == ("pass", "none")
    assert registry.run_metrics(registered.run_id) == {}


def test_evaluate_judges_the_copy_train_left_else_the_registrys_against_the_production_alias(
    tmp_path, registry, config, eval_set
):
    _, y = eval_set
    candidate = _register(registry, config, eval_set, 0.6, copy_to=tmp_path / MODEL_COPY_DIR)
    (tmp_path / "train.json").write_text(json.dumps({"version": int(candidate.version)}))
    steps: list[str] = []

    ref, alone = gate.evaluate(config, registry, tmp_path, progress=steps.append)

    assert (ref.version, ref.run_id) == (candidate.version, candidate.run_id)
    assert ref.tags[MODEL_DIGEST_TAG] == candidate.tags[MODEL_DIGEST_TAG]
    assert alone.threshold == 0.6 and alone.eval["rows"] == len(y)
    assert alone.champion is None and alone.champion_metrics is None
    assert steps[:2] == [
        f"using {tmp_path / MODEL_COPY_DIR}: v{candidate.version}'s registered bytes",
        f"scoring release-risk on {len(y)} eval rows",
    ]

    champion = _register(registry, config, eval_set, 0.4)  # a later version, made production
    registry.set_alias("release-risk", "production", champion.version)
    registry.tag("release-risk", champion.version, {gate.P95_TAG: "2.5"})
    shutil.rmtree(tmp_path / MODEL_COPY_DIR)
    steps.clear()

    ref, judged = gate.evaluate(config, registry, tmp_path, candidate.version, steps.append)

    assert ref.version == candidate.version
    assert judged.threshold == 0.6  # the candidate's model, not production's
    assert judged.champion.ref.version == champion.version
    assert judged.champion.model.threshold == 0.4
    by_gate = {(v.gate, v.metric): v for v in judged.verdicts}
    assert by_gate["latency", "p95_ms"].baseline == 2.5
    assert steps[:3] == [
        f"loading release-risk v{candidate.version} from the registry",
        f"scoring release-risk on {len(y)} eval rows",
        f"scoring production v{champion.version} on the same rows",
    ]
