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
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import FixedThresholdClassifier

from slipway.config import load_config
from slipway.propose import gate, gate_rules
from slipway.propose.contract import prepare, read_dataset
from slipway.propose.datasets import split_paths
from slipway.propose.evaluation import Scores, bootstrap, flipped, group_recall, point_metrics
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
    (tmp_path / "train.json").write_text(json.dumps({"version": int(champion.version)}))
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


def _knobs(config, eval_path=None, group_column="team", **gates):
    """``config`` with every knob the gate step passes on set off its default; ``gates``
    replaces whole sections (``thresholds``, ``fairness``...) or, for ``regression``, fields."""
    found = config.gates
    regression = {"resamples": 60, "confidence": 0.8, "on_inconclusive": "fail"}
    sections = {
        "regression": found.regression.model_copy(
            update={**regression, **gates.pop("regression", {})}
        ),
        "fairness": found.fairness.model_copy(update={"min_positives": 5}),
        "stability": found.stability.model_copy(update={"flips": "all"}),
        "latency": found.latency.model_copy(update={"calls": 4}),
        **gates,
    }
    update = {
        "gates": found.model_copy(update=sections),
        "training": config.training.model_copy(update={"seed": 7}),
        "group_column": group_column,
    }
    if eval_path is not None:
        update["data"] = config.data.model_copy(update={"eval": eval_path})
    return config.model_copy(update=update)


def _scores(model, features):
    proba = model.predict_proba(features)[:, 1]
    return Scores(proba, model.predict(features))


def _samples(config, y, cand, champ, groups):
    rules = config.gates
    return bootstrap(
        y,
        cand,
        champ,
        groups,
        resamples=rules.regression.resamples,
        seed=config.training.seed,
        min_positives=rules.fairness.min_positives,
        negative_flips=rules.stability.flips == "negative",
    )


def _expected(config, y, cand, champ, groups):
    """The candidate's and production's point metrics and team tables, and every verdict but
    latency's, from the gate rules on a bootstrap run by hand."""
    rules = config.gates
    min_pos, negative = rules.fairness.min_positives, rules.stability.flips == "negative"
    samples = _samples(config, y, cand, champ, groups)
    metrics = [point_metrics(y, s) for s in (cand, champ)]
    teams = [group_recall(y, s.pred, groups) for s in (cand, champ)]
    flip_rate = float(np.mean(flipped(y, cand.pred, champ.pred, negative)))
    confidence = rules.regression.confidence
    verdicts = [
        *gate_rules.thresholds(rules, metrics[0], metrics[1], samples, confidence),
        *gate_rules.regression(rules, metrics[0], metrics[1], samples),
        gate_rules.fairness(
            rules, gate._gap(teams[0], min_pos), gate._gap(teams[1], min_pos), samples, confidence
        ),
        gate_rules.stability(rules, flip_rate, samples, confidence),
    ]
    return metrics, teams, verdicts


@pytest.fixture
def pair(config, eval_set):
    """A candidate that flags fewer releases than production, with their eval-set scores and
    the eval rows' teams."""
    features, y = eval_set
    frame = read_dataset(split_paths(config)["eval"])
    groups = frame["team"].astype("string").to_numpy(dtype=object)
    candidate, production = _fitted(features, y, 0.6), _fitted(features, y, 0.3)
    scores = _scores(candidate, features), _scores(production, features)
    return candidate, production, *scores, groups


@pytest.mark.parametrize("flips", ["negative", "all"])
def test_judge_scores_production_apart_and_passes_every_knob_on(config, eval_set, pair, flips):
    _, y = eval_set
    candidate, production, cand, champ, groups = pair
    # The team cut-off leaves out the team with the fewest positives, so it shows.
    positives = sorted(t["positives"] for t in group_recall(y, y, groups).values())
    fairness = config.gates.fairness.model_copy(update={"min_positives": positives[0] + 1})
    stability = config.gates.stability.model_copy(update={"flips": flips})
    config = _knobs(config, fairness=fairness, stability=stability)
    metrics, teams, verdicts = _expected(config, y, cand, champ, groups)
    ref = ModelRef("release-risk", "3", "run", {gate.P95_TAG: "0.001"})

    judged = gate.judge(config, candidate, lambda: gate.Champion(ref, production), {"eval": "e"})

    assert (judged.metrics, judged.champion_metrics) == (metrics[0], metrics[1])
    assert (judged.teams, judged.champion_teams) == (teams[0], teams[1])
    assert judged.verdicts[:-1] == verdicts
    latency = judged.verdicts[-1]
    assert (latency.gate, latency.metric, latency.baseline) == ("latency", "p95_ms", 0.001)
    assert latency.value == judged.p95_ms > 0
    assert latency.delta == pytest.approx(judged.p95_ms - 0.001)
    np.testing.assert_array_equal(judged.probabilities, cand.proba)
    assert judged.threshold == 0.6
    assert judged.eval == {"rows": len(y), "positives": int(y.sum()), "sha256": "e"}
    changed = cand.pred != champ.pred
    wrong = cand.pred != y
    flip_rate = {v.gate: v for v in judged.verdicts}["stability"].value
    assert flip_rate == float(np.mean(changed & wrong if flips == "negative" else changed))
    assert 0 < np.mean(changed & wrong) < np.mean(changed)  # the two kinds differ here


@pytest.mark.parametrize("on_inconclusive", ["fail", "warn"])
def test_judge_applies_the_inconclusive_policy(config, eval_set, pair, on_inconclusive):
    """Every gate passes but one regression straddles its tolerance: the policy decides."""
    _, y = eval_set
    candidate, production, cand, champ, groups = pair
    loose = {
        "thresholds": {},
        "fairness": config.gates.fairness.model_copy(update={"max_gap": 1.0}),
        "stability": config.gates.stability.model_copy(update={"max_flip_rate": 1.0}),
        "latency": config.gates.latency.model_copy(update={"p95_ms": 10_000, "calls": 4}),
    }
    probe = _knobs(config, **loose)
    samples = _samples(probe, y, cand, champ, groups)
    low, high = gate_rules.interval(samples["cand.recall"] - samples["champ.recall"], 0.8)
    assert high < 0  # the candidate's recall is lower: the whole 80% interval is below 0
    straddle = {"metrics": ["recall"], "tolerance": -(low + high) / 2}
    config = _knobs(config, regression={**straddle, "on_inconclusive": on_inconclusive}, **loose)
    ref = ModelRef("release-risk", "3", "run", {})

    judged = gate.judge(config, candidate, lambda: gate.Champion(ref, production), {"eval": "e"})

    statuses = {(v.gate, v.metric): v.status for v in judged.verdicts}
    assert statuses.pop(("regression", "recall")) == gate_rules.INCONCLUSIVE
    assert set(statuses.values()) == {gate_rules.PASS}
    assert judged.status == {"fail": gate_rules.FAIL, "warn": gate_rules.PASS}[on_inconclusive]


def test_judge_counts_rows_without_a_team_as_their_own_group_and_skips_fairness_without_one(
    tmp_path, config, eval_set
):
    features, y = eval_set
    frame = read_dataset(split_paths(config)["eval"])
    frame.loc[frame.index[:40], "team"] = None
    path = tmp_path / "eval.csv"
    frame.to_csv(path, index=False)
    model = _fitted(features, y, 0.3)
    scores = _scores(model, features)
    groups = frame["team"].astype("string").fillna("(none)").to_numpy(dtype=object)

    judged = gate.judge(_knobs(config, path), model, lambda: None, {"eval": "e"})

    assert judged.teams == group_recall(y, scores.pred, groups)
    assert "(none)" in judged.teams
    fairness = {v.gate: v for v in judged.verdicts}["fairness"]
    assert fairness.value == gate._gap(judged.teams, 5)

    alone = gate.judge(_knobs(config, path, group_column=None), model, lambda: None, {"eval": "e"})
    assert alone.teams == {} and alone.champion_teams == {}
    assert {v.gate: v for v in alone.verdicts}["fairness"].status == gate_rules.SKIPPED


class _Counted(FixedThresholdClassifier):
    """A threshold classifier that notes the rows of every ``predict`` call."""

    def predict(self, features):
        self.calls.append(len(features))
        return super().predict(features)


@pytest.fixture
def rows():
    rng = np.random.default_rng(0)
    features = pd.DataFrame(rng.normal(size=(500, 3)), columns=["a", "b", "c"])
    return features, (features["a"] + rng.normal(size=500) > 0).astype(int).to_numpy()


def _counted(rows, target=None, **options):
    features, y = rows
    model = _Counted(LogisticRegression(), **options).fit(features, y if target is None else target)
    model.calls = []
    return model


def test_decisions_of_a_threshold_classifier_come_from_its_probabilities_after_a_probe(rows):
    features, _ = rows
    model = _counted(rows, threshold=0.5, response_method="predict_proba")
    proba = model.predict_proba(features)[:, 1]
    model.threshold = float(proba[5])  # one row exactly at the threshold: >= predicts 1
    expected = model.predict(features)
    model.calls = []

    decisions = gate._decisions(model, features, proba)

    np.testing.assert_array_equal(decisions, expected)
    assert decisions[5] == 1 and decisions.dtype == np.int64
    assert model.calls == [200]  # the probe only
    whole = _counted(rows, threshold=1, response_method="predict_proba", pos_label=1)
    gate._decisions(whole, features, whole.predict_proba(features)[:, 1])
    assert whole.calls == [200]  # a whole-number threshold and the positive label named


@pytest.mark.parametrize(
    "options",
    [
        {"threshold": True, "response_method": "predict_proba"},  # a flag, not a number
        {"threshold": "auto", "response_method": "predict_proba"},
        {"threshold": 0.5, "response_method": "decision_function"},
        {"threshold": 0.5, "response_method": "predict_proba", "pos_label": 0},
    ],
)
def test_decisions_of_other_models_are_predicts(rows, options):
    features, _ = rows
    model = _counted(rows, **options)
    proba = model.predict_proba(features)[:, 1]

    decisions = gate._decisions(model, features, proba)

    assert model.calls == [500]
    model.calls = []
    np.testing.assert_array_equal(decisions, model.predict(features))


def test_decisions_with_other_labels_or_a_probe_that_disagrees_are_predicts(rows):
    features, y = rows
    labelled = _counted(rows, target=y + 1, threshold=0.5, response_method="predict_proba")
    decisions = gate._decisions(labelled, features, labelled.predict_proba(features)[:, 1])
    assert labelled.calls == [500] and set(decisions) == {1, 2}

    model = _counted(rows, threshold=0.5, response_method="predict_proba")
    proba = model.predict_proba(features)[:, 1]
    decisions = gate._decisions(model, features, 1 - proba)  # not this model's probabilities
    assert model.calls == [200, 500]
    model.calls = []
    np.testing.assert_array_equal(decisions, model.predict(features))


class _LooksLikeOne:
    """A model with a numeric ``threshold`` and only some of a threshold classifier's other
    attributes: ``predict`` is the only way to its decisions."""

    def __init__(self, **attributes):
        self.threshold = 0.5
        self.__dict__.update(attributes)
        self.calls = 0

    def predict(self, features):
        self.calls += 1
        return np.ones(len(features), dtype=np.int64)


@pytest.mark.parametrize(
    "attributes",
    [
        {},  # no response_method
        {"response_method": "predict_proba"},  # no pos_label, no classes_
        {"response_method": "predict_proba", "pos_label": 1},  # no classes_
    ],
)
def test_decisions_of_a_model_missing_attributes_are_predicts(rows, attributes):
    features, _ = rows
    model = _LooksLikeOne(**attributes)

    decisions = gate._decisions(model, features, np.zeros(len(features)))

    assert model.calls == 1 and decisions.tolist() == [1] * len(features)
