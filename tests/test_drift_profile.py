"""The reference profile: its parts on small cases by hand, stored with a version and checked
when loaded, and built by the gate for every version it judges."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slipway.cli import main
from slipway.config import Column, load_config
from slipway.drift.profile import (
    ARTIFACT,
    CALIBRATION_MIN_ROWS,
    ECE_TOLERANCE,
    PROFILE_TAG,
    SCHEMA,
    build_profile,
    calibration,
    calibration_verdict,
    categorical_feature,
    ece_interval,
    expected_calibration_error,
    load_profile,
    numeric_feature,
    prediction_profile,
    profile_bytes,
    quantile_edges,
    sorted_sample,
    store_profile,
)
from slipway.errors import DriftError
from slipway.pipeline import training_rows

REPO = Path(__file__).resolve().parent.parent
CONFIG = load_config(REPO / "model" / "slipway.yaml")
TRAIN = REPO / "model" / "data" / "train.csv"

# --- the parts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "bins", "expected"),
    [
        ([3, 1, 2, 2, 5], 10, [1, 2, 3, 5]),  # observed values; ties merge bins
        ([7, 7, 7], 10, [7, 7]),  # one value: one bin
        (list(range(1, 101)), 4, [1, 25, 50, 75, 100]),  # the ceil(100 k / 4)-th smallest
        (list(range(1, 101)), 10, [1, *range(10, 101, 10)]),
    ],
)
def test_quantile_edges(values, bins, expected):
    assert quantile_edges(np.array(values, dtype=float), bins) == expected


def test_sorted_sample_keeps_every_value_up_to_the_limit_then_even_order_statistics():
    values = np.array([9.0, 3, 0, 6, 1, 2, 4, 5, 7, 8])
    assert sorted_sample(values, 10).tolist() == list(range(10))
    assert sorted_sample(values, 4).tolist() == [0, 3, 6, 9]  # ranks 0, 3, 6, 9 of 0..9
    assert sorted_sample(values, 2).tolist() == [0, 9]


def test_numeric_feature_rates_are_shares_of_all_rows_and_bins_hold_the_present_values():
    values = np.array([np.nan, -1, 0, 5, 10, 11])  # contract 0..10: -1 and 11 are out
    profile = numeric_feature(values, Column(dtype="float", min=0, max=10))
    assert profile["kind"] == "numeric"
    assert profile["null_rate"] == pytest.approx(1 / 6)
    assert profile["out_of_range_rate"] == pytest.approx(2 / 6)
    assert profile["edges"] == [-1, 0, 5, 10, 11]
    assert profile["counts"] == [1, 1, 1, 2]  # the last bin holds its upper edge
    assert profile["sample"] == [-1, 0, 5, 10, 11]


@pytest.mark.parametrize(
    ("spec", "value", "out"),
    [
        (Column(dtype="float", min=0, max=10), 10.0, 0),  # on a bound: inside
        (Column(dtype="float", min=0, max=10), 10.001, 1),
        (Column(dtype="float", min=0, max=10), 0.0, 0),
        (Column(dtype="float", min=0, max=10), -0.001, 1),
        (Column(dtype="float"), -1e9, 0),  # no bounds: nothing is out
        (Column(dtype="float", min=0), 1e9, 0),
    ],
)
def test_out_of_range_on_both_sides_of_each_bound(spec, value, out):
    assert numeric_feature(np.array([value]), spec)["out_of_range_rate"] == out


def test_a_numeric_feature_with_only_nulls_has_no_bins():
    profile = numeric_feature(np.array([np.nan, np.nan]), Column(dtype="float"))
    assert (profile["edges"], profile["counts"], profile["sample"]) == ([], [], [])
    assert profile["null_rate"] == 1.0


def test_categorical_feature_counts_the_contract_categories():
    values = pd.Series(["a", None, "b", "a", "zz"])
    profile = categorical_feature(values, Column(dtype="category", categories=["a", "b", "c"]))
    assert profile["categories"] == ["a", "b", "c"] and profile["counts"] == [2, 1, 0]
    assert profile["null_rate"] == pytest.approx(0.2)
    assert profile["out_of_range_rate"] == pytest.approx(0.2)  # "zz" is not in the contract
    seen = categorical_feature(pd.Series(["y", "x", "y"]), Column(dtype="string"))
    assert (seen["categories"], seen["counts"]) == (["x", "y"], [1, 2])
    assert seen["out_of_range_rate"] == 0


@pytest.mark.parametrize(("threshold", "high_risk"), [(0.4, 2), (0.41, 1), (0.39, 3), (0.91, 0)])
def test_high_risk_share_at_the_threshold_counts_it(threshold, high_risk):
    prediction = prediction_profile(np.array([0.1, 0.4, 0.39, 0.9]), threshold)
    assert prediction["high_risk"] == high_risk
    assert prediction["high_risk_share"] == high_risk / 4
    assert prediction["rows"] == 4 and prediction["threshold"] == threshold
    assert prediction["sample"] == [0.1, 0.39, 0.4, 0.9]
    assert sum(prediction["probability_counts"]) == 4


def test_expected_calibration_error_by_hand():
    # Bin [0, .1): p .05, label 0; bin [.1, .2): p .15 twice, labels 1 and 0; bin [.9, 1]: p .95,
    # label 1. ECE = 1/4 |0 - .05| + 2/4 |.5 - .15| + 1/4 |1 - .95| = .0125 + .175 + .0125 = .2.
    p, y = np.array([0.05, 0.15, 0.15, 0.95]), np.array([0, 1, 0, 1])
    assert expected_calibration_error(p, y) == pytest.approx(0.2, abs=1e-12)
    # Same bins whatever the labels' order inside one: the sums are per bin.
    assert expected_calibration_error(p, np.array([0, 0, 1, 1])) == pytest.approx(0.2)


def test_expected_calibration_error_puts_0_and_1_in_the_end_bins():
    assert expected_calibration_error(np.array([0.0, 1.0]), np.array([0, 1])) == 0.0
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([0, 1])) == 0.5


@pytest.mark.parametrize(
    ("interval", "rows", "verdict"),
    [
        ((0.01, ECE_TOLERANCE), 1500, "calibrated"),  # the whole interval within: sure
        ((0.01, ECE_TOLERANCE + 1e-9), 1500, "inconclusive"),
        ((ECE_TOLERANCE, 0.2), 1500, "inconclusive"),  # the low end on the tolerance: could be
        ((ECE_TOLERANCE + 1e-9, 0.2), 1500, "miscalibrated"),
        ((0.0, 0.01), CALIBRATION_MIN_ROWS, "calibrated"),
        ((0.0, 0.01), CALIBRATION_MIN_ROWS - 1, "inconclusive"),  # too few rows to tell
        ((0.3, 0.4), CALIBRATION_MIN_ROWS, "miscalibrated"),
        ((0.3, 0.4), CALIBRATION_MIN_ROWS - 1, "inconclusive"),
    ],
)
def test_calibration_verdict_on_both_sides_of_the_tolerance_and_the_rows(interval, rows, verdict):
    assert CALIBRATION_MIN_ROWS == 200
    assert calibration_verdict(interval, rows) == verdict


def _labels_from(p: np.ndarray, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).random(p.size) < p).astype(np.int64)


def test_a_calibrated_model_on_a_large_eval_set_is_calibrated():
    p = np.random.default_rng(0).random(20_000)
    result = calibration(p, _labels_from(p))
    assert result["verdict"] == "calibrated" and result["calibrated"] is True
    low, high = result["ece_interval"]
    assert 0 <= low < high < ECE_TOLERANCE
    assert [row["rows"] for row in result["bins"]] == np.histogram(p, np.linspace(0, 1, 11))[
        0
    ].tolist()
    assert result["bins"][0]["low"] == 0.0 and result["bins"][-1]["high"] == 1.0


def test_an_overconfident_model_is_miscalibrated_and_a_small_eval_set_cannot_tell():
    p = np.random.default_rng(0).random(5_000)
    shifted = np.clip(p + 0.2, 0, 1)  # says 20 points more than it sees
    overconfident = calibration(shifted, _labels_from(p))
    assert overconfident["verdict"] == "miscalibrated"
    assert 0.15 < overconfident["ece_interval"][0] < overconfident["ece"] < 0.2
    few = np.clip(np.random.default_rng(2).random(CALIBRATION_MIN_ROWS - 1) + 0.2, 0, 1)
    small = calibration(few, _labels_from(few - 0.2))  # as overconfident, on too few rows
    assert small["verdict"] == "inconclusive" and small["calibrated"] is False


def test_the_ece_interval_takes_off_what_resampling_adds():
    # The basic bootstrap interval: 2 ece minus the resampled quantiles, at least 0.
    p = np.random.default_rng(4).random(400)
    y = _labels_from(p, seed=3)
    ece = expected_calibration_error(p, y)
    low, high = ece_interval(p, y)
    assert 0 <= low < high
    assert (low + high) / 2 < ece  # resampled ECEs sit above the estimate


def test_empty_reliability_bins_say_so():
    result = calibration(np.array([0.05, 0.95]), np.array([0, 1]))
    assert result["bins"][4] == {
        "low": 0.4,
        "high": 0.5,
        "rows": 0,
        "mean_probability": None,
        "positive_rate": None,
    }
    assert result["bins"][0]["mean_probability"] == 0.05 and result["bins"][0]["rows"] == 1


def test_ece_interval_is_reproducible():
    p = np.random.default_rng(0).random(500)
    y = _labels_from(p)
    assert ece_interval(p, y) == ece_interval(p, y)
    assert ece_interval(p, y) != ece_interval(p, y, seed=1)


# --- the whole profile ---------------------------------------------------------------------------


def _eval_scores(rows: int = 300) -> tuple[np.ndarray, np.ndarray]:
    p = np.random.default_rng(5).random(rows)
    return p, _labels_from(p)


def _profile(version: str = "3") -> dict:
    p, y = _eval_scores()
    metrics = {"recall": 0.9, "roc_auc": float("nan"), "confusion_matrix": [[1, 2], [3, 4]]}
    return build_profile(CONFIG, pd.read_csv(TRAIN), p, y, 0.4, metrics, version)


def test_the_profile_of_the_sample_data():
    profile = _profile()
    assert profile["schema"] == SCHEMA and profile["model"] == "release-risk"
    assert profile["version"] == "3" and profile["rows"] == 4000
    assert list(profile["features"]) == [*CONFIG.features, "team"]
    coverage = profile["features"]["test_coverage"]
    assert coverage["null_rate"] == 37 / 4000  # before imputation: the nulls the file has
    assert sum(coverage["counts"]) == len(coverage["sample"]) == 4000 - 37
    assert coverage["sample"] == sorted(coverage["sample"])
    for name in CONFIG.features:
        feature = profile["features"][name]
        assert feature["out_of_range_rate"] == 0.0  # the committed data passes validation
        assert len(feature["counts"]) == len(feature["edges"]) - 1 <= 10
    team = profile["features"]["team"]
    assert team["kind"] == "categorical" and sum(team["counts"]) == 4000
    assert team["categories"] == ["payments", "search", "mobile", "platform", "identity"]
    assert profile["metrics"] == {"recall": 0.9, "roc_auc": None}  # strict JSON, numbers only
    assert profile["prediction"]["rows"] == 300 and profile["prediction"]["threshold"] == 0.4
    assert set(profile["calibration"]) >= {"ece", "ece_interval", "calibrated", "bins"}
    assert json.loads(profile_bytes(profile)) == profile


def test_the_profile_is_reproducible_from_its_inputs():
    first, second = _profile(), _profile()
    first.pop("created_at"), second.pop("created_at")
    assert first == second


def test_training_rows_are_refused_unless_they_are_the_ones_trained_on():
    ref = type("Ref", (), {"uri": "models:/release-risk/1"})()
    digest = hashlib.sha256(TRAIN.read_bytes()).hexdigest()
    assert len(training_rows(CONFIG, ref, digest)) == 4000
    for wrong in ("0" * 64, None):
        with pytest.raises(DriftError) as caught:
            training_rows(CONFIG, ref, wrong)
        assert "is not the data models:/release-risk/1 was trained on" in caught.value.message
        assert caught.value.exit_code == 2 and "train a new version" in caught.value.hint


# --- stored with the version, checked when loaded -----------------------------------------------


@pytest.fixture
def version(registry):
    """Version 1 of release-risk with a run (no model: the profile needs only the run)."""
    client = registry._client
    client.create_registered_model("release-risk")
    run = client.create_run(registry._experiment("profiles"))  # artifacts beside the database
    client.create_model_version("release-risk", f"runs:/{run.info.run_id}/model", run.info.run_id)
    return registry.get("release-risk", "1")


def test_a_stored_profile_loads_back_and_is_tagged_with_its_sha256(registry, version, tmp_path):
    profile = _profile("1")
    copy = tmp_path / "out" / "profile.json"
    sha256 = store_profile(registry, version, profile, copy_to=copy)
    assert sha256 == hashlib.sha256(profile_bytes(profile)).hexdigest()
    assert copy.read_bytes() == profile_bytes(profile)
    assert registry.get("release-risk", "1").tags[PROFILE_TAG] == sha256
    assert load_profile(registry, "release-risk", "1") == profile


def test_loading_a_version_without_a_profile_names_the_fix(registry, version):
    with pytest.raises(DriftError) as caught:
        load_profile(registry, "release-risk", "1")
    assert f"has no reference profile (no {PROFILE_TAG} tag)" in caught.value.message
    assert "slipway gate --version 1" in caught.value.hint and caught.value.exit_code == 2


def test_a_profile_whose_bytes_changed_is_refused(registry, version, tmp_path):
    store_profile(registry, version, _profile("1"))
    other = tmp_path / "reference.json"
    other.write_bytes(profile_bytes(_profile("1")) + b" ")
    registry.log_artifact(version.run_id, str(other), "profile")  # replaces the stored file
    with pytest.raises(DriftError, match="is not the one its gate stored"):
        load_profile(registry, "release-risk", "1")


def test_a_tag_without_its_artifact_is_refused(registry, version):
    registry.tag("release-risk", "1", {PROFILE_TAG: "0" * 64})
    with pytest.raises(DriftError, match=f"cannot download {ARTIFACT}"):
        load_profile(registry, "release-risk", "1")


def test_a_profile_is_stored_only_with_its_own_version(registry, version):
    with pytest.raises(DriftError, match="cannot be stored with models:/release-risk/1"):
        store_profile(registry, version, _profile("2"))
    with pytest.raises(DriftError, match="has no run"):
        store_profile(registry, dataclasses.replace(version, run_id=None), _profile("1"))
    assert PROFILE_TAG not in registry.get("release-risk", "1").tags


# --- built by the gate ---------------------------------------------------------------------------


def _stored_and_named(registry, out: Path, version: str) -> dict:
    gate = json.loads((out / "gate.json").read_text())
    body = (out / "profile.json").read_bytes()
    sha256 = hashlib.sha256(body).hexdigest()
    assert gate["profile"] == {"artifact": ARTIFACT, "sha256": sha256}
    assert registry.get("release-risk", version).tags[PROFILE_TAG] == sha256
    profile = load_profile(registry, "release-risk", version)
    assert profile == json.loads(body)
    metrics = {k: v for k, v in gate["candidate"]["metrics"].items() if k != "confusion_matrix"}
    assert profile["metrics"] == pytest.approx(metrics)
    assert profile["prediction"]["rows"] == gate["eval"]["rows"]
    return profile


def test_the_gate_command_stores_the_candidates_profile(project, tracking_uri, registry, tmp_path):
    out = tmp_path / "out"
    cfg = ["--config", str(project), "--out", str(out)]
    assert main(["train", *cfg, "--param", "n_estimators=10"]) == 0
    assert main(["gate", *cfg]) == 0
    profile = _stored_and_named(registry, out, "1")
    assert profile["prediction"]["threshold"] == 0.4  # the recipe's FixedThresholdClassifier


def test_a_failed_gate_still_stores_the_profile(project, tracking_uri, registry, tmp_path):
    out = tmp_path / "out"
    cfg = ["--config", str(project), "--out", str(out)]
    assert main(["pr", *cfg, "--skip-package", "--param", "threshold=0.9"]) == 1
    assert json.loads((out / "gate.json").read_text())["status"] == "fail"
    profile = _stored_and_named(registry, out, "1")
    assert profile["prediction"]["threshold"] == 0.9
    assert profile["prediction"]["high_risk_share"] < 0.05
