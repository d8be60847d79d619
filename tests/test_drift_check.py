"""The drift check: each verdict on both sides of its limit, the exact KS distance from counts,
the label-free estimate, delayed labels, bad input, the reports, and `slipway drift` end to end
against a real registry and a log written by the service's PredictionLog."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import shutil
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest
from scipy import stats

from conftest import edit_config
from slipway.cli import main
from slipway.config import load_config
from slipway.drift.check import (
    DRIFTED,
    ERROR,
    INCONCLUSIVE,
    NO_DRIFT,
    SCHEMA,
    SKIPPED,
    STABLE,
    check_drift,
    drop_status,
    feature_status,
    judge,
    persistent_status,
    rise_status,
    share_status,
    window_bounds,
    window_status,
)
from slipway.drift.chunks import Chunk, Coded
from slipway.drift.labels import read_labels
from slipway.drift.profile import PROFILE_TAG, build_profile
from slipway.drift.report import render_markdown, write_reports
from slipway.drift.statistics import chi_square, ks_statistic, psi
from slipway.drift.tally import (
    Reference,
    Tally,
    distinct_ecdf,
    expected_metrics,
    ks_cells,
    ks_from_cells,
    outside_count,
    realised_metrics,
    sorted_ks_cells,
)
from slipway.errors import DataError
from slipway.intervals import wilson, z_value
from slipway.serve.prediction_log import SMOKE_ID_PREFIX, PredictionLog
from slipway.serve.service import Deployment, Scorer, rejection_record

REPO = Path(__file__).resolve().parent.parent
CONFIG = load_config(REPO / "model" / "slipway.yaml")
EVAL = pd.read_csv(REPO / "model" / "data" / "eval.csv")
UNTIL = datetime(2026, 11, 4, tzinfo=UTC)
DAY = timedelta(days=1)


def _after(x: float) -> float:
    return math.nextafter(x, math.inf)


def _before(x: float) -> float:
    return math.nextafter(x, -math.inf)


# --- verdicts, both sides of every limit -----------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "psi_low", "adjusted", "expected"),
    [
        (199, 0.9, 0.001, INCONCLUSIVE),  # fewer values than min_rows
        (200, 0.9, 0.001, DRIFTED),
        (200, 0.2, 0.001, STABLE),  # the interval's low end at the tolerance is not above it
        (200, _after(0.2), 0.001, DRIFTED),
        (200, 0.9, 0.05, STABLE),  # an adjusted p-value at the fdr is not below it
        (200, 0.9, _before(0.05), DRIFTED),
        (200, 0.9, 0.6, STABLE),  # a big effect the test cannot tell from noise
        (200, 0.05, 1e-12, STABLE),  # a certain but small effect
        (200, None, 0.001, INCONCLUSIVE),
        (200, 0.9, None, INCONCLUSIVE),
    ],
)
def test_a_feature_drifts_only_with_a_big_effect_that_is_no_accident(
    rows, psi_low, adjusted, expected
):
    assert feature_status(rows, 200, psi_low, 0.2, adjusted, 0.05) == expected


REF, TOL = 0.3, 0.1


@pytest.mark.parametrize(
    ("rows", "interval", "expected"),
    [
        (199, (0.9, 0.95), INCONCLUSIVE),
        (200, (REF + TOL, 0.6), STABLE),  # low end on the band's edge: within
        (200, (_after(REF + TOL), 0.6), DRIFTED),
        (200, (0.05, REF - TOL), STABLE),
        (200, (0.05, _before(REF - TOL)), DRIFTED),
        (200, (0.05, 0.9), STABLE),  # reaches past both sides: cannot say it moved
    ],
)
def test_the_high_risk_share_drifts_when_its_whole_interval_leaves_the_band(
    rows, interval, expected
):
    assert share_status(rows, 200, interval, REF, TOL) == expected


@pytest.mark.parametrize(
    ("rows", "interval", "reference", "expected"),
    [
        (200, (0.5, 0.85 - 0.05), 0.85, STABLE),  # high end at reference - tolerance
        (200, (0.5, _before(0.85 - 0.05)), 0.85, DRIFTED),
        (199, (0.1, 0.2), 0.85, INCONCLUSIVE),
        (200, (None, None), 0.85, INCONCLUSIVE),  # no value (no predicted positive, say)
        (200, (0.1, 0.2), None, SKIPPED),  # the gate recorded no such metric
        (0, (None, None), None, SKIPPED),
    ],
)
def test_a_metric_drifts_when_even_its_interval_top_is_below_the_allowed_drop(
    rows, interval, reference, expected
):
    assert drop_status(rows, 200, interval, reference, 0.05) == expected


@pytest.mark.parametrize(
    ("rows", "low", "expected"),
    [(200, 0.01 + 0.05, STABLE), (200, _after(0.01 + 0.05), DRIFTED), (199, 0.9, INCONCLUSIVE)],
)
def test_a_quality_rate_is_flagged_when_its_interval_rises_past_the_tolerance(rows, low, expected):
    assert rise_status(rows, 200, (low, 1.0), 0.01, 0.05) == expected


@pytest.mark.parametrize(
    ("statuses", "rows", "expected"),
    [
        ([DRIFTED], 10, DRIFTED),  # a drop seen with confidence needs no more rows
        ([STABLE, INCONCLUSIVE], 199, INCONCLUSIVE),
        ([STABLE, INCONCLUSIVE], 200, NO_DRIFT),
        ([], 200, NO_DRIFT),
    ],
)
def test_a_window_is_drifted_by_any_trigger_and_inconclusive_when_too_small(
    statuses, rows, expected
):
    assert window_status(statuses, rows, 200) == expected


D, N, U = DRIFTED, NO_DRIFT, INCONCLUSIVE  # U: undecided


@pytest.mark.parametrize(
    ("windows", "k", "expected"),
    [
        ([N, D, D], 2, D),
        ([D, N, D], 2, D),
        ([N, N, D], 2, N),  # one noisy day opens nothing
        ([N, U, D], 2, U),  # the inconclusive window could make it two
        ([U, U, N], 2, U),
        ([U, N, N], 2, N),  # not even counting it as drifted reaches two
        ([N, N, N], 2, N),
        ([N, N, D], 1, D),
        ([D, D, U], 3, U),
        ([D, D, N], 3, N),
    ],
)
def test_drifted_needs_k_of_the_last_n_windows(windows, k, expected):
    assert persistent_status(windows, k) == expected


def test_windows_end_at_until_oldest_first():
    assert window_bounds(UNTIL, DAY, 3) == [
        (UNTIL - 3 * DAY, UNTIL - 2 * DAY),
        (UNTIL - 2 * DAY, UNTIL - DAY),
        (UNTIL - DAY, UNTIL),
    ]


# --- the exact KS distance, from counts ------------------------------------------------------


def _ks(reference, current, parts: int = 1) -> float:
    reference = np.sort(np.asarray(reference, dtype=np.float64))
    unique = np.unique(reference)
    cdf = np.searchsorted(reference, unique, side="right") / reference.size
    chunks = np.array_split(np.asarray(current, dtype=np.float64), parts)
    return ks_from_cells(cdf, sum(ks_cells(unique, chunk) for chunk in chunks))


@pytest.mark.parametrize(
    ("reference", "current", "expected"),
    [
        ([1, 2, 3], [2], 1 / 3),  # at 1: 1/3 vs 0; just below 2 the same; at 2: 2/3 vs 1
        ([1, 2, 3, 4], [0], 1.0),  # all below the reference
        ([1, 2, 3, 4], [10, 11], 1.0),  # all above
        ([1, 2, 3, 4], [2.5, 2.5], 0.5),  # between two reference values
        ([1, 1, 2, 2], [1, 2], 0.0),  # ties on both sides
    ],
)
def test_ks_from_cells_by_hand(reference, current, expected):
    assert _ks(reference, current) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("seed", range(4))
def test_ks_from_cells_is_the_two_sample_ks_distance_in_chunks(seed):
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 30, 700).astype(float)  # many ties
    current = np.concatenate([rng.integers(-5, 40, 301), [0, 29]]).astype(float)
    d = _ks(reference, current, parts=7)
    assert d == pytest.approx(ks_statistic(np.sort(reference), current), abs=1e-12)
    assert d == pytest.approx(stats.ks_2samp(reference, current).statistic, abs=1e-9)
    continuous = rng.normal(0.3, 1.2, 999)
    gaussian = rng.normal(size=500)
    assert _ks(gaussian, continuous, 5) == pytest.approx(
        stats.ks_2samp(gaussian, continuous).statistic, abs=1e-9
    )


@pytest.mark.parametrize("seed", range(6))
def test_sorted_ks_cells_count_as_searching_each_value(seed):
    rng = np.random.default_rng(seed)
    unique = np.unique(rng.integers(0, 40, 200).astype(float))
    current = np.concatenate(
        [
            rng.integers(-10, 50, 2000).astype(float),  # ties, and values outside the reference
            rng.normal(20, 15, 500),  # between the reference values
            unique[[0, -1]],  # its ends
            np.full(rng.integers(0, 30), np.nan),
        ]
    )
    rng.shuffle(current)
    ordered = np.sort(current)
    expected = ks_cells(unique, current)  # NaN: in the last cell, as above everything
    assert sorted_ks_cells(unique, ordered).tolist() == expected.tolist()
    present = current[~np.isnan(current)]
    found = sorted_ks_cells(unique, ordered[: present.size])
    assert found.tolist() == ks_cells(unique, present).tolist()
    assert found.sum() == present.size


def test_sorted_ks_cells_of_nothing_and_of_one_reference_value():
    assert sorted_ks_cells(np.array([1.0, 2.0]), np.array([])).tolist() == [0] * 5
    assert sorted_ks_cells(np.array([2.0]), np.array([1.0, 2.0, 2.0, 3.0])).tolist() == [1, 2, 1]


def test_distinct_ecdf_is_the_share_at_or_below_each_distinct_value():
    unique, cdf = distinct_ecdf(np.array([1.0, 1.0, 2.0, 5.0, 5.0, 5.0, 7.0, 9.0]))
    assert unique.tolist() == [1.0, 2.0, 5.0, 7.0, 9.0]
    assert cdf.tolist() == [2 / 8, 3 / 8, 6 / 8, 7 / 8, 1.0]
    shuffled = distinct_ecdf(np.array([5.0, 1.0, 9.0, 5.0, 2.0, 1.0, 7.0, 5.0]))  # sorted first
    assert [part.tolist() for part in shuffled] == [unique.tolist(), cdf.tolist()]
    assert [part.tolist() for part in distinct_ecdf(np.array([3.0]))] == [[3.0], [1.0]]
    assert [part.size for part in distinct_ecdf(np.array([]))] == [0, 0]


@pytest.mark.parametrize(("low", "high"), [(None, None), (0.0, None), (None, 30.0), (0.0, 30.0)])
def test_outside_count_counts_values_past_either_bound(low, high):
    rng = np.random.default_rng(3)
    values = rng.integers(-5, 36, 1000).astype(float)  # ties on both bounds
    outside = np.zeros(values.size, dtype=bool)
    if low is not None:
        outside |= values < low
    if high is not None:
        outside |= values > high
    assert outside_count(np.sort(values), low, high) == int(outside.sum())


# --- performance with labels and without --------------------------------------------------------


def test_expected_metrics_by_hand():
    # predicted positive with q = 0.8, 0.6; predicted negative with q = 0.1, 0.3
    sums = (2, 1.4, 0.8 * 0.2 + 0.6 * 0.4, 0.4, 0.1 * 0.9 + 0.3 * 0.7)
    found = expected_metrics(sums, 4, 0.95)
    z = z_value(0.95)
    expected = {
        "accuracy": ((1.4 + 1.6) / 4, math.sqrt(0.4 + 0.3) / 4),
        "precision": (0.7, math.sqrt(0.4) / 2),
        "recall": (1.4 / 1.8, math.sqrt(0.4**2 * 0.4 + 1.4**2 * 0.3) / 1.8**2),
    }
    for name, (value, spread) in expected.items():
        assert found[name]["value"] == pytest.approx(value)
        low, high = max(0.0, value - z * spread), min(1.0, value + z * spread)
        assert found[name]["interval"] == pytest.approx([low, high])
    assert expected_metrics((0, 0, 0, 0, 0), 0, 0.95)["accuracy"]["value"] is None
    nothing_positive = expected_metrics((0, 0, 0, 0.5, 0.25), 1, 0.95)
    assert nothing_positive["precision"] == {"value": None, "interval": [None, None]}
    assert expected_metrics((1, 1.0, 0.0, 0.0, 0.0), 1, 0.95)["accuracy"]["interval"] == [1, 1]


def test_realised_metrics_with_wilson_intervals():
    found = realised_metrics((3, 1, 1, 5), 0.95)
    assert found["accuracy"] == {"value": 0.8, "interval": list(wilson(8, 10, 0.95)), "n": 10}
    assert found["precision"]["value"] == found["recall"]["value"] == 0.75
    assert realised_metrics((0, 0, 2, 2), 0.95)["precision"] == {
        "value": None,
        "interval": [None, None],
        "n": 0,
    }


# --- a profile and a log of the synthetic kind ------------------------------------------------


@pytest.fixture(scope="module")
def profile() -> dict:
    """Version 1's profile from the committed training data, with eval probabilities that are
    calibrated and about 86% accurate at the threshold 0.5."""
    rng = np.random.default_rng(1)
    p = rng.beta(0.3, 0.3, 2000)
    y = (rng.random(2000) < p).astype(int)
    decided = p >= 0.5
    metrics = {
        "accuracy": float((decided == y).mean()),
        "precision": float((decided & (y == 1)).sum() / decided.sum()),
        "recall": float((decided & (y == 1)).sum() / y.sum()),
    }
    train = pd.read_csv(REPO / "model" / "data" / "train.csv")
    return build_profile(CONFIG, train, p, y, 0.5, metrics, "1")


def _features(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def _traffic(day: int, rows: int, seed: int, shift: float = 1.0, accuracy: float | None = None):
    """``rows`` served records on day ``day`` (0 is the oldest of three windows ending at
    UNTIL) and their labels: drawn from the calibrated probabilities, or agreeing with the
    decision on exactly ``accuracy`` of them."""
    rng = np.random.default_rng(seed)
    at = UNTIL - (3 - day) * DAY + timedelta(hours=1)
    frame = EVAL.sample(rows, replace=rows > len(EVAL), random_state=seed)
    records, labels = [], []
    for i, row in enumerate(frame.drop(columns=["high_risk"]).to_dict("records")):
        features = _features(row)
        features["release_id"] = f"{row['release_id']}-{day}-{i}"
        features["code_changes"] = min(round(features["code_changes"] * shift), 100_000)
        probability = float(rng.beta(0.3, 0.3))
        decided = probability >= 0.5
        label = (
            rng.random() < probability
            if accuracy is None
            else decided == (i % 100 < accuracy * 100)
        )
        records.append(
            {
                "timestamp": (at + timedelta(seconds=i)).isoformat(timespec="milliseconds"),
                "environment": "production",
                "model": "release-risk",
                "model_version": "1",
                "route": "stable",
                "served": True,
                "request_id": f"{seed:08d}{i:024d}",
                "release_id": features["release_id"],
                "features": features,
                "imputed": ["test_coverage"] if features["test_coverage"] is None else [],
                "output": {"high_risk": decided, "probability": probability},
                "latency_ms": 1.0,
            }
        )
        labels.append({"release_id": features["release_id"], "high_risk": int(label)})
    return records, labels


def _write(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    path.write_text("".join(f"{line}\n" for line in text))
    return path


def _check(tmp_path, profile, days, labels=None, config=CONFIG, **options):
    records, found = [], []
    for day, spec in enumerate(days):
        if spec is not None:
            logged, labelled = _traffic(day, seed=day, **spec)
            records += logged
            found += labelled
    _write(tmp_path / "log" / "predictions.jsonl", records)
    if labels is not None:
        _write(tmp_path / "labels.jsonl", found + labels)
    read = (
        read_labels(tmp_path / "labels.jsonl", "release_id", "high_risk", 1, UNTIL)
        if labels is not None
        else None
    )
    return check_drift(
        config, "production", {"1": profile}, tmp_path / "log", UNTIL, DAY, read, **options
    )


def test_unchanged_traffic_is_no_drift(tmp_path, profile):
    document = _check(tmp_path, profile, [{"rows": 400}] * 3, labels=[])
    assert document["schema"] == SCHEMA and document["versions"] == ["1"]
    assert (document["status"], document["current"], document["triggers"]) == (
        NO_DRIFT,
        NO_DRIFT,
        [],
    )
    assert [w["status"] for w in document["windows"]] == [NO_DRIFT] * 3
    assert [w["rows"] for w in document["windows"]] == [400, 400, 400]
    assert {f["status"] for f in document["features"].values()} == {STABLE}
    assert document["features"]["team"]["test"] == "chi2"
    assert document["features"]["code_changes"]["test"] == "ks"
    assert document["prediction"]["status"] == STABLE
    accuracy = document["performance"]["metrics"]["accuracy"]
    assert accuracy["status"] == STABLE and accuracy["n"] == 400
    assert document["estimated"]["calibrated"] is True
    estimated = document["estimated"]["metrics"]["accuracy"]
    assert estimated["status"] == STABLE and estimated["realised"] == accuracy["value"]
    assert abs(estimated["value"] - profile["metrics"]["accuracy"]) < 0.05
    assert document["labels"]["matched"] == 1200 and document["labels"]["unmatched"] == 0
    assert document["records"]["used"] == 1200
    assert list(document["quality"]["imputed_rate"]) == ["test_coverage"]  # nulls: impute
    assert set(document["quality"]["null_rate"]) == set(document["features"])
    assert not any("no delayed labels" in note for note in document["notes"])


def test_a_shifted_feature_in_two_of_three_windows_is_drifted(tmp_path, profile):
    days = [{"rows": 400}, {"rows": 400, "shift": 3.0}, {"rows": 400, "shift": 3.0}]
    document = _check(tmp_path, profile, days)
    assert document["status"] == DRIFTED and document["current"] == DRIFTED
    assert [w["status"] for w in document["windows"]] == [NO_DRIFT, DRIFTED, DRIFTED]
    assert document["triggers"] == ["data:code_changes"]
    assert document["persistence"] == {"k": 2, "n": 3, "drifted": 2, "inconclusive": 0}
    shifted = document["features"]["code_changes"]
    assert shifted["status"] == DRIFTED and shifted["psi_interval"][0] > 0.2
    assert shifted["adjusted_pvalue"] < 0.05 and shifted["adjusted_pvalue"] >= shifted["pvalue"]
    assert {f["status"] for n, f in document["features"].items() if n != "code_changes"} == {STABLE}
    assert document["windows"][1]["psi"]["code_changes"] > 0.2
    assert document["performance"] == {"labelled": 0, "metrics": {}}  # no labels: not judged
    assert any("no delayed labels" in note for note in document["notes"])


def test_one_drifted_window_of_three_is_reported_but_not_drift(tmp_path, profile):
    days = [{"rows": 400}, {"rows": 400}, {"rows": 400, "shift": 3.0}]
    document = _check(tmp_path, profile, days)
    assert (document["status"], document["current"]) == (NO_DRIFT, DRIFTED)
    assert document["triggers"] == []  # only a persistent drift names what to retrain for
    assert document["windows"][-1]["triggers"] == ["data:code_changes"]


def test_windows_too_small_to_tell_are_inconclusive(tmp_path, profile):
    document = _check(tmp_path, profile, [{"rows": 50}] * 3)
    assert document["status"] == INCONCLUSIVE and document["current"] == INCONCLUSIVE
    assert {f["status"] for f in document["features"].values()} == {INCONCLUSIVE}
    assert document["features"]["code_changes"]["psi"] is not None  # still shown
    assert document["prediction"]["status"] == INCONCLUSIVE
    assert sum("fewer than min_rows (200): inconclusive" in n for n in document["notes"]) == 3


@pytest.mark.parametrize(("rows", "expected"), [(199, INCONCLUSIVE), (200, NO_DRIFT)])
def test_min_rows_predictions_are_enough_to_judge(tmp_path, profile, rows, expected):
    document = _check(tmp_path, profile, [{"rows": rows}] * 3)
    assert document["status"] == expected and document["current"] == expected
    coverage = document["features"]["code_changes"]
    assert coverage["rows"] == rows
    assert (coverage["adjusted_pvalue"] is None) == (expected == INCONCLUSIVE)
    assert document["prediction"]["status"] == (STABLE if rows == 200 else INCONCLUSIVE)
    noted = sum("fewer than min_rows" in note for note in document["notes"])
    assert noted == (3 if rows == 199 else 0)


def test_a_record_belongs_to_the_window_its_time_falls_in(tmp_path, profile):
    records, _ = _traffic(2, 4, seed=5)
    moments = [
        UNTIL - DAY,
        UNTIL - DAY - timedelta(milliseconds=1),
        UNTIL - timedelta(milliseconds=1),
        UNTIL - 3 * DAY,
    ]
    for record, moment in zip(records, moments, strict=True):
        record["timestamp"] = moment.isoformat(timespec="milliseconds")
    records.append({**records[0], "timestamp": UNTIL.isoformat()})  # until is not in any
    _write(tmp_path / "log" / "p.jsonl", records)
    document = check_drift(CONFIG, "production", {"1": profile}, tmp_path / "log", UNTIL, DAY)
    assert [w["rows"] for w in document["windows"]] == [1, 1, 2]
    assert document["records"]["outside_window"] == 1


def test_a_canary_candidate_is_judged_against_its_own_profile(tmp_path, profile):
    candidate = copy.deepcopy(profile)
    candidate["version"] = "2"
    records = []
    for day in range(3):
        stable, _ = _traffic(day, 300, seed=day)
        shifted, _ = _traffic(day, 300, seed=10 + day, shift=3.0)
        records += stable + [{**r, "model_version": "2", "route": "canary"} for r in shifted]
    _write(tmp_path / "log" / "p.jsonl", records)
    profiles = {"1": profile, "2": candidate}
    document = check_drift(CONFIG, "production", profiles, tmp_path / "log", UNTIL, DAY)
    assert document["versions"] == ["1", "2"]
    assert document["status"] == NO_DRIFT  # the status is the stable version's
    assert document["candidate"]["version"] == "2"
    assert document["candidate"]["status"] == DRIFTED
    assert document["candidate"]["triggers"][0] == "data:code_changes"
    assert document["records"]["other_version"] == 0
    assert "### Candidate v2" in render_markdown(document)


def test_a_big_psi_on_few_rows_is_not_drift_without_the_test(tmp_path, profile):
    """On 12 rows the PSI interval of every numeric feature is above 0.2 from its small-sample
    bias alone; the KS and chi-square tests, corrected across features, see no drift."""
    config = CONFIG.model_copy(update={"drift": CONFIG.drift.model_copy(update={"min_rows": 10})})
    document = _check(tmp_path, profile, [{"rows": 12}] * 3, config=config)
    features = document["features"].values()
    assert all(f["psi_interval"][0] > 0.2 for f in features if f["test"] == "ks")
    assert all(f["adjusted_pvalue"] >= 0.05 and f["status"] == STABLE for f in features)
    assert document["status"] == NO_DRIFT


def test_accuracy_falling_from_85_to_70_percent_is_performance_drift(tmp_path, profile):
    assert round(profile["metrics"]["accuracy"], 2) == 0.86
    days = [{"rows": 400, "accuracy": 0.85}, {"rows": 400, "accuracy": 0.70}]
    document = _check(tmp_path, profile, [*days, days[1]], labels=[])
    assert document["status"] == DRIFTED
    assert [w["status"] for w in document["windows"]] == [NO_DRIFT, DRIFTED, DRIFTED]
    assert [w["performance"]["accuracy"] for w in document["windows"]] == [0.85, 0.70, 0.70]
    accuracy = document["performance"]["metrics"]["accuracy"]
    assert accuracy["status"] == DRIFTED and accuracy["interval"][1] < accuracy["reference"] - 0.05
    assert "performance:accuracy" in document["triggers"]
    # The probabilities did not change, so the estimate without labels cannot see it: it is
    # shown beside the realised figure, not instead of it.
    estimated = document["estimated"]["metrics"]["accuracy"]
    assert estimated["status"] == STABLE and estimated["realised"] == 0.70


def test_the_estimate_sees_a_drop_in_confidence_before_labels(tmp_path, profile):
    """Probabilities near 0.5 are right about half the time, whatever the threshold says."""
    records, _ = _traffic(2, 400, seed=9)
    for record in records:
        record["output"]["probability"] = 0.55
        record["output"]["high_risk"] = True
    _write(tmp_path / "log" / "p.jsonl", records)
    document = check_drift(CONFIG, "production", {"1": profile}, tmp_path / "log", UNTIL, DAY)
    estimated = document["estimated"]["metrics"]["accuracy"]
    assert estimated["status"] == DRIFTED and estimated["value"] < 0.7
    assert "estimated:accuracy" in document["windows"][-1]["triggers"]
    assert document["prediction"]["status"] == DRIFTED  # all high-risk, against about half
    assert "prediction" in document["windows"][-1]["triggers"]


def test_a_miscalibrated_profile_maps_probabilities_through_its_bins(profile):
    changed = copy.deepcopy(profile)
    changed["calibration"]["calibrated"] = False
    for number, b in enumerate(changed["calibration"]["bins"]):
        b["positive_rate"] = None if number == 4 else number / 20
    reference = Reference(changed, CONFIG)
    mapped = reference.expected_positive(np.array([0.05, 0.45, 0.95, 1.0]))
    np.testing.assert_allclose(mapped, [0.0, 0.45, 9 / 20, 9 / 20])  # bin 4 was empty: as is
    assert Reference(profile, CONFIG).expected_positive(np.array([0.3]))[0] == 0.3


def test_a_tally_counts_nulls_ranges_unseen_categories_and_labels(profile):
    reference = Reference(profile, CONFIG)
    tally = Tally(reference)
    n = 5
    features = {name: np.full(n, 10.0) for name in CONFIG.features}
    features["code_changes"] = np.array([-1.0, 200_000.0, 0.0, np.nan, 7.0])  # min 0: in
    features["files_modified"] = np.array([5000.0, 5001.0, 1.0, 1.0, 9999.0])  # max 5000
    features["team"] = Coded.of(["payments", "ml-infra", None, "search", "ml-infra"])
    chunk = Chunk(
        features=features,
        probability=np.array([0.9, 0.2, 0.7, 0.1, 0.6]),
        high_risk=np.array([True, False, True, False, True]),
        release_id=np.array([f"R{i}" for i in range(n)], dtype=object),
        model_version=Coded.of(["1"] * n),
        timestamp=np.array([0] * n, dtype="datetime64[ms]"),
    )
    matched: set[str] = set()
    picked = np.array([True, True, True, True, False])
    labels = {"R0": True, "R1": True, "R2": False, "R3": True, "R9": True}
    tally.add(chunk, picked, labels, matched)
    assert (tally.rows, tally.high_risk) == (4, 2)
    assert tally.nulls["code_changes"] == 1 and tally.outside["code_changes"] == 2
    assert tally.outside["files_modified"] == 1 and tally.nulls["files_modified"] == 0
    assert tally.bins["code_changes"].sum() == 3 and tally.cells["code_changes"].sum() == 3
    assert tally.nulls["team"] == 1 and tally.outside["team"] == 1
    assert tally.bins["team"].tolist() == [1, 1, 0, 0, 0, 1]  # the last cell: unseen
    assert tally.confusion.tolist() == [1, 1, 2, 0]  # R0 tp, R2 fp, R1 and R3 fn
    assert matched == {"R0", "R1", "R2", "R3"}
    window = judge(tally, CONFIG.drift, labelled=True)
    team = window["features"]["team"]
    assert team["unseen"] == 1 and team["rows"] == 3
    reference_counts = profile["features"]["team"]["counts"]
    current = [1, 1, 0, 0, 0, 1]
    assert team["psi"] == psi([*reference_counts, 0], current)  # unseen: a cell of its own
    assert (team["statistic"], team["pvalue"]) == chi_square(reference_counts, current)
    assert team["pvalue"] < chi_square(reference_counts, current[:-1])[1]
    assert window["quality"]["out_of_range_rate"]["code_changes"]["value"] == 0.5
    assert window["quality"]["null_rate"]["team"]["value"] == 0.25
    assert window["status"] == INCONCLUSIVE  # 4 predictions


# --- delayed labels ---------------------------------------------------------------------------


def test_labels_from_a_directory_with_every_kind_of_bad_row(tmp_path):
    folder = tmp_path / "labels"
    (folder / "2026-11").mkdir(parents=True)
    (folder / "a.csv").write_text(
        "release_id,high_risk,labelled_at\n"
        "A,1,2026-11-01\nB,0,\nC,,\nD,1,2026-12-01T00:00:00Z\nE,true,\nF,1.0,\nG,1,\nG,0,\n"
        "L,1,2026-11-04T00:00:00Z\n"  # given at the window's end: not known within it
        "J,1,not a time\n"
    )
    _write(
        folder / "2026-11" / "b.jsonl",
        [
            {"release_id": "H", "high_risk": 1},
            "not json",
            {"high_risk": 1},
            ["a list"],
            {"release_id": "K", "high_risk": False, "labelled_at": "2026-11-03T23:59:59+00:00"},
        ],
    )
    (folder / "notes.txt").write_text("ignored")
    labels = read_labels(folder, "release_id", "high_risk", 1, UNTIL)
    assert labels.values == {"A": True, "B": False, "E": True, "F": True, "H": True, "K": False}
    assert labels.files == 2 and labels.rows == 15
    assert (labels.unlabelled, labels.later, labels.conflicting, labels.malformed) == (1, 2, 1, 4)
    assert labels.to_dict()["labels"] == 6
    with pytest.raises(DataError, match="no labels at"):
        read_labels(tmp_path / "missing", "release_id", "high_risk", 1, UNTIL)


# --- bad input: named, counted, never a crash or a silent pass ------------------------------


def test_bad_input_is_named_and_counted(tmp_path, profile):
    good, labels = _traffic(1, 300, seed=1)
    good += _traffic(2, 300, seed=2)[0]
    at = (UNTIL - timedelta(hours=3)).isoformat()
    lines = [
        *good,
        "{not json",
        '{"timestamp": "' + at + '", "model": "release-risk", "output": 3}',
        {**good[0], "model": "fraud-score"},
        {**good[1], "model_version": "7"},
        {**good[2], "release_id": f"{SMOKE_ID_PREFIX}1"},
        {**good[3], "environment": "staging"},
        {**good[4], "output": None, "error": "ValueError: broken"},
        {
            "timestamp": at,
            "environment": "production",
            "model": "release-risk",
            "log_stats": {"dropped": 5, "write_errors": 1},
        },
        _rejected("billing"),
    ]
    _write(tmp_path / "log" / "predictions.jsonl", lines)
    _write(tmp_path / "labels.jsonl", [*labels, {"release_id": "NOBODY", "high_risk": 1}])
    read = read_labels(tmp_path / "labels.jsonl", "release_id", "high_risk", 1, UNTIL)
    document = check_drift(CONFIG, "production", {"1": profile}, tmp_path / "log", UNTIL, DAY, read)
    records = document["records"]
    assert (records["malformed"], records["other_model"], records["other_version"]) == (2, 1, 1)
    assert (records["smoke"], records["rejected"], records["used"]) == (1, 1, 600)
    notes = "\n".join(document["notes"])
    assert "2 log lines could not be read" in notes
    assert "1 records of another environment than production" in notes
    assert "1 predictions failed in scoring" in notes
    assert "the service's log dropped 5 records" in notes and "1 writes of the service" in notes
    assert document["quality"]["dropped"] == 5
    assert "1 records of another model than release-risk" in notes
    assert "another model's log?" not in notes  # most of it is this model's
    assert "v1: no predictions from 2026-11-01T00:00:00Z to 2026-11-02T00:00:00Z" in notes
    assert "1 labels name release ids no prediction in the windows has" in notes
    assert "NOBODY" in notes and document["labels"]["unmatched_ids"] == ["NOBODY"]
    assert document["quality"]["rejected"] == {"team/enum": 1}
    assert document["windows"][0]["status"] == INCONCLUSIVE  # the empty window
    summary = render_markdown(document)
    assert "NOBODY" in summary and "| team | enum | 1 |" in summary


def test_a_log_of_another_model_only_is_inconclusive_and_says_so(tmp_path, profile):
    records, _ = _traffic(2, 300, seed=3)
    _write(tmp_path / "log" / "x.jsonl", [{**r, "model": "fraud-score"} for r in records])
    document = check_drift(CONFIG, "production", {"1": profile}, tmp_path / "log", UNTIL, DAY)
    assert document["status"] == INCONCLUSIVE
    assert any("is the source another model's log?" in n for n in document["notes"])


def _rejected(team: str) -> dict:
    record = rejection_record(
        Deployment("production", "release-risk", "1"),
        "release_id",
        400,
        json.dumps({"records": [{"release_id": "R-1", "team": team}]}).encode(),
        json.dumps({"detail": [{"loc": ["records", 0, "team"], "type": "literal_error"}]}).encode(),
    )
    return {**record, "timestamp": (UNTIL - timedelta(hours=2)).isoformat()}


# --- the reports ------------------------------------------------------------------------------


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def test_the_reports_are_rendered_from_the_json(tmp_path, profile):
    days = [{"rows": 400}, {"rows": 400, "shift": 3.0}, {"rows": 400, "shift": 3.0}]
    document = _check(tmp_path, profile, days, labels=[])
    paths = write_reports(document, tmp_path / "out")
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(document))
    markdown = paths["md"].read_text()
    assert markdown.startswith("## 🔴 Drift in production: release-risk v1 — drifted")
    assert markdown.count("```mermaid") == 2 and "| code_changes | 400 |" in markdown
    page = paths["html"].read_text()
    parsed = _Tags()
    parsed.feed(page)
    assert parsed.links == [] and "script" not in parsed.tags  # nothing fetched, nothing run
    assert parsed.tags.count("svg") == len(document["features"]) + 1 + 2  # + probability, time
    assert "code_changes: PSI" in page and "Accuracy per window" in page


# --- `slipway drift` against a real registry and the service's log ---------------------------


def _served(log: PredictionLog, config, model, rows: list[dict], day: int) -> None:
    """Score ``rows`` through the service's Scorer; its records go to the log stamped on
    day ``day`` (0: the first of the log's days, ending at UNTIL + 5 days)."""
    at = UNTIL - 3 * DAY + day * DAY + timedelta(hours=2)

    def stamped(records: list[dict]) -> None:
        log.append([{**r, "timestamp": at.isoformat(timespec="milliseconds")} for r in records])

    scorer = Scorer(config, Deployment("production", "release-risk", "1"), {"1": model}, stamped)
    for start in range(0, len(rows), 100):
        scorer.predict(rows[start : start + 100])


def _releases(frame: pd.DataFrame, day: int, shift: float = 1.0) -> list[dict]:
    rows = []
    for row in frame.drop(columns=["high_risk"]).to_dict("records"):
        features = _features(row)
        features["release_id"] = f"{row['release_id']}-d{day}"
        features["code_changes"] = min(round(features["code_changes"] * shift), 100_000)
        rows.append(features)
    return rows


def _drift(cfg: list[str], *extra: str) -> tuple[int, dict]:
    code = main(["drift", "production", *cfg, *extra])
    out = Path(cfg[cfg.index("--out") + 1])
    return code, json.loads((out / "drift.json").read_text())


@pytest.mark.slow
def test_slipway_drift_end_to_end(project, tracking_uri, registry, tmp_path, monkeypatch, s3):
    out = tmp_path / "out"
    cfg = ["--config", str(project), "--out", str(out)]
    assert main(["train", *cfg, "--param", "n_estimators=10"]) == 0
    assert main(["gate", *cfg]) == 0
    environments = tmp_path / "environments"
    shutil.copytree(REPO / "environments", environments)
    manifest = environments / "production.yaml"
    manifest.write_text(manifest.read_text().replace("version: null", "version: 1", 1))
    config = load_config(project)
    model = registry.load(registry.get("release-risk", "1"))
    logs = tmp_path / "logs"
    log = PredictionLog(logs, max_bytes=200_000, keep=1000)
    eval_frame = pd.read_csv(project.parent / "data" / "eval.csv")
    truth = dict(zip(eval_frame["release_id"].astype(str), eval_frame["high_risk"], strict=True))
    days = {
        0: (eval_frame.iloc[0:400], 1.0),
        1: (eval_frame.iloc[400:800], 1.0),
        2: (eval_frame.iloc[800:1200], 1.0),
        3: (eval_frame.iloc[0:400], 3.0),  # code_changes three times as large
        4: (eval_frame.iloc[400:800], 3.0),
        5: (eval_frame.iloc[1200:1250], 1.0),  # too few to tell
        6: (eval_frame.iloc[1250:1300], 1.0),
        7: (eval_frame.iloc[1300:1350], 1.0),
    }
    for day, (frame, shift) in days.items():
        _served(log, config, model, _releases(frame, day, shift), day)
    log.append([_rejected("billing")])
    assert log.flush()
    log.close()
    # Delayed labels: the truth on unchanged days; on the shifted days the world changed more
    # than the features show: only 55% of the decisions turn out right.
    labels = []
    for line in "".join(p.read_text() for p in sorted(logs.glob("*.jsonl"))).splitlines():
        record = json.loads(line)
        if "output" not in record:
            continue
        release, _, day = record["release_id"].rpartition("-d")
        if int(day) in (3, 4):
            right = _bucket(record["release_id"]) < 55
            label = record["output"]["high_risk"] == right
        else:
            label = bool(truth[release])
        known = datetime.fromisoformat(record["timestamp"]) + timedelta(hours=6)
        labels.append(
            {"release_id": record["release_id"], "high_risk": int(label),
             "labelled_at": known.isoformat()}
        )  # fmt: skip
    labels_dir = project.parent / "data" / "labels"
    _write(labels_dir / "labels.jsonl", labels)
    edit_config(project, **{"drift.labels": "data/labels", "drift.log": str(logs)})
    github_output, step_summary = tmp_path / "github_output", tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_OUTPUT", str(github_output))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    cfg += ["--environments", str(environments)]
    reference = json.loads((out / "profile.json").read_text())["metrics"]["accuracy"]

    def until(day: int) -> str:
        return (UNTIL - 3 * DAY + (day + 1) * DAY).isoformat()

    # Days 0-2, unchanged traffic: no drift, and the estimate agrees with the gate.
    code, document = _drift(cfg, "--until", until(2), "--labels", str(labels_dir))
    assert (code, document["status"]) == (0, NO_DRIFT), document["triggers"]
    assert [w["rows"] for w in document["windows"]] == [400, 400, 400]
    estimated = document["estimated"]["metrics"]["accuracy"]
    assert abs(estimated["value"] - reference) < 0.05 and not document["estimated"]["calibrated"]
    assert document["performance"]["metrics"]["accuracy"]["status"] == STABLE
    assert "status=no_drift" in github_output.read_text()
    # Days 2-4: shifted in two windows of three, and accuracy fell: drifted, exit 1.
    code, document = _drift(cfg, "--until", until(4))
    assert (code, document["status"]) == (1, DRIFTED)
    assert [w["status"] for w in document["windows"]] == [NO_DRIFT, DRIFTED, DRIFTED]
    assert "data:code_changes" in document["triggers"]
    assert "performance:accuracy" in document["triggers"]
    accuracy = document["performance"]["metrics"]["accuracy"]
    assert accuracy["value"] == pytest.approx(0.55, abs=0.08)
    assert accuracy["reference"] == pytest.approx(reference)
    assert document["quality"]["rejected"] == {"team/enum": 1}
    assert document["labels"]["unmatched"] > 0  # labels of other days, named
    assert "status=drifted" in github_output.read_text()
    assert "triggers=" in github_output.read_text()
    assert "Drift in production: release-risk v1 — drifted" in step_summary.read_text()
    assert (out / "drift.md").is_file() and (out / "drift.html").is_file()
    # The same log in an object store (a local S3-compatible server): the same verdict.
    store, _ = pafs.FileSystem.from_uri(f"s3://ml-logs?{s3}&allow_bucket_creation=true")
    store.create_dir("ml-logs")
    pafs.copy_files(str(logs), "ml-logs/release-risk/production", destination_filesystem=store)
    uploaded = _drift(cfg, "--until", until(4), "--log", f"s3://ml-logs/release-risk?{s3}")
    assert uploaded[0] == 1 and uploaded[1]["windows"] == document["windows"]
    assert uploaded[1]["records"]["files"] == document["records"]["files"] > 1
    # Days 3-5 by --since: the same rule over windows the caller sets.
    code, document = _drift(cfg, "--since", until(4), "--until", until(5))
    assert document["windows"][-1]["rows"] == 50 and document["current"] == INCONCLUSIVE
    assert (code, document["status"]) == (1, DRIFTED)
    # Days 5-7: too few predictions in every window: inconclusive, exit 0.
    code, document = _drift(cfg, "--until", until(7), "--days", "1")
    assert (code, document["status"]) == (0, INCONCLUSIVE)
    assert "status=inconclusive" in github_output.read_text()
    # A version without a reference profile: named, with the fix, and exit 2.
    registry._client.delete_model_version_tag("release-risk", "1", PROFILE_TAG)
    code, document = _drift(cfg, "--until", until(4))
    assert code == 2 and document["status"] == ERROR
    assert "slipway gate --version 1" in document["problems"]["1"]["fix"]
    assert "status=error" in github_output.read_text()
    assert "has no reference profile" in (out / "drift.md").read_text()


def _bucket(text: str) -> int:
    """A stable number 0-99 from ``text``: which of the shifted days' decisions were right."""
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % 100


# --- the command line without a registry -----------------------------------------------------


def _cli(tmp_path, *extra: str) -> int:
    return main(
        ["drift", "production", "--config", str(REPO / "model" / "slipway.yaml"), "--out",
         str(tmp_path), "--environments", str(REPO / "environments"), *extra]
    )  # fmt: skip


def test_nothing_deployed_is_inconclusive_and_says_so(tmp_path, capsys):
    assert _cli(tmp_path) == 0
    document = json.loads((tmp_path / "drift.json").read_text())
    assert document["status"] == INCONCLUSIVE and document["versions"] == []
    assert "names no version" in document["notes"][0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--since", "2026-11-03", "--days", "2"], "--since and --days both set the window"),
        (["--since", "2026-11-05", "--until", "2026-11-04"], "is not before --until"),
        (["--days", "0"], "is not a length of time"),
    ],
)
def test_windows_that_cannot_be_are_refused(tmp_path, capsys, extra, message):
    assert _cli(tmp_path, *extra) == 2
    assert message in capsys.readouterr().err


def test_a_time_that_is_not_iso_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        _cli(tmp_path, "--until", "yesterday")
    assert exited.value.code == 2
    assert "is not an ISO date or time" in capsys.readouterr().err


def test_documented_times_parse_with_a_zone(tmp_path):
    from slipway.arguments import moment

    assert moment("2026-11-04") == UNTIL
    assert moment("2026-11-04T02:00:00+02:00") == UNTIL
    assert re.fullmatch(r"2026-11-04T00:00:00\+00:00", moment("2026-11-04T00:00:00Z").isoformat())


# --- one version over its windows, on hand-made window results --------------------------------


def _judged(status: str, triggers: list[str], rows: int, psi: float) -> dict:
    """A window's result as :func:`judge` returns it, with only the figures the summary reads."""
    return {
        "status": status,
        "rows": rows,
        "triggers": triggers,
        "features": {"code_changes": {"psi": psi, "status": STABLE}},
        "prediction": {"high_risk_share": rows / 1000},
        "performance": {"labelled": rows // 2, "metrics": {"recall": {"value": psi / 2}}},
        "estimated": {"calibrated": True, "metrics": {"recall": {"value": psi / 4}}},
        "quality": {"null_rate": {}, "rows": rows},
    }


def test_a_version_over_its_windows_names_the_triggers_of_its_drifted_windows_once():
    from slipway.drift.check import version_result

    judged = [
        _judged(DRIFTED, ["data:team", "prediction"], 400, 0.5),
        _judged(INCONCLUSIVE, [], 100, 0.25),
        _judged(DRIFTED, ["prediction", "performance:recall"], 300, 0.75),
    ]
    bounds = window_bounds(UNTIL, DAY, 3)
    found = version_result("4", judged, bounds, CONFIG.drift)
    assert found["version"] == "4" and found["status"] == DRIFTED and found["current"] == DRIFTED
    assert found["triggers"] == ["data:team", "prediction", "performance:recall"]
    assert found["reason"] == (
        "2 of the last 3 windows drifted, 1 inconclusive (drifted needs 2); the current window "
        "is drifted; triggers: data:team, prediction, performance:recall"
    )
    assert found["persistence"] == {"k": 2, "n": 3, "drifted": 2, "inconclusive": 1}
    # The newest window's checks are the version's.
    for key in ("features", "prediction", "performance", "estimated", "quality"):
        assert found[key] == judged[-1][key]
    assert found["windows"] == [
        {
            "since": "2026-11-01T00:00:00Z",
            "until": "2026-11-02T00:00:00Z",
            "status": DRIFTED,
            "rows": 400,
            "labelled": 200,
            "triggers": ["data:team", "prediction"],
            "psi": {"code_changes": 0.5},
            "high_risk_share": 0.4,
            "performance": {"recall": 0.25},
            "estimated": {"recall": 0.125},
        },
        {
            "since": "2026-11-02T00:00:00Z",
            "until": "2026-11-03T00:00:00Z",
            "status": INCONCLUSIVE,
            "rows": 100,
            "labelled": 50,
            "triggers": [],
            "psi": {"code_changes": 0.25},
            "high_risk_share": 0.1,
            "performance": {"recall": 0.125},
            "estimated": {"recall": 0.0625},
        },
        {
            "since": "2026-11-03T00:00:00Z",
            "until": "2026-11-04T00:00:00Z",
            "status": DRIFTED,
            "rows": 300,
            "labelled": 150,
            "triggers": ["prediction", "performance:recall"],
            "psi": {"code_changes": 0.75},
            "high_risk_share": 0.3,
            "performance": {"recall": 0.375},
            "estimated": {"recall": 0.1875},
        },
    ]


def test_a_version_not_persistently_drifted_names_no_trigger():
    from slipway.drift.check import version_result

    judged = [
        _judged(NO_DRIFT, [], 400, 0.0),
        _judged(NO_DRIFT, [], 400, 0.0),
        _judged(DRIFTED, ["prediction"], 400, 0.5),
    ]
    found = version_result("4", judged, window_bounds(UNTIL, DAY, 3), CONFIG.drift)
    assert (found["status"], found["current"], found["triggers"]) == (NO_DRIFT, DRIFTED, [])
    assert found["reason"] == (
        "1 of the last 3 windows drifted, 0 inconclusive (drifted needs 2); the current window "
        "is drifted"
    )
    assert found["persistence"] == {"k": 2, "n": 3, "drifted": 1, "inconclusive": 0}


def test_a_check_that_judged_nothing_is_the_empty_document_with_its_notes():
    from slipway.drift.check import unjudged

    found = unjudged(
        CONFIG,
        "production",
        ["3"],
        datetime(2026, 11, 4, 2, 0),  # no zone: read as UTC
        timedelta(hours=12),
        ERROR,
        ["v3 has no profile", "run slipway gate"],
        {"3": "no profile"},
    )
    generated = found.pop("generated_at")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", generated)
    assert found == {
        "schema": SCHEMA,
        "environment": "production",
        "model": CONFIG.name,
        "versions": ["3"],
        "status": ERROR,
        "reason": "v3 has no profile; run slipway gate",
        "current": None,
        "triggers": [],
        "window": {"since": "2026-11-03T14:00:00Z", "until": "2026-11-04T02:00:00Z", "days": 0.5},
        "windows": [],
        "persistence": None,
        "features": {},
        "prediction": None,
        "performance": None,
        "estimated": None,
        "quality": None,
        "candidate": None,
        "records": None,
        "labels": None,
        "problems": {"3": "no profile"},
        "settings": CONFIG.drift.model_dump(mode="json"),
        "notes": ["v3 has no profile", "run slipway gate"],
    }
    # A time with another zone is the same moment in UTC.
    zoned = datetime(2026, 11, 4, 4, 0, tzinfo=timezone(timedelta(hours=2)))
    nothing = unjudged(CONFIG, "production", [], zoned, DAY, INCONCLUSIVE, [])
    assert (nothing["problems"], nothing["notes"], nothing["reason"]) == ({}, [], "")
    assert nothing["window"] == {
        "since": "2026-11-03T02:00:00Z",
        "until": "2026-11-04T02:00:00Z",
        "days": 1.0,
    }
