"""The vectorised paired bootstrap agrees with scikit-learn and is reproducible."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from slipway.evaluation import Scores, _Weighted, bootstrap, group_recall, interval, point_metrics


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    n = 3000
    y = (rng.random(n) < 0.3).astype(int)
    a = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1).round(2)
    b = np.clip(y * 0.2 + rng.random(n) * 0.8, 0, 1).round(3)
    groups = rng.choice(["x", "y", "z"], n)
    return y, Scores(a, (a > 0.4).astype(int)), Scores(b, (b > 0.4).astype(int)), groups


def test_weighted_metrics_equal_sklearn_with_sample_weight(data):
    y, cand, _, _ = data
    rng = np.random.default_rng(0)
    weights = np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y)).astype(np.float32)
    got = _Weighted(y, cand).compute(weights[None, :], len(y))
    w = weights.astype(float)
    assert got["roc_auc"][0] == pytest.approx(skm.roc_auc_score(y, cand.proba, sample_weight=w))
    assert got["recall"][0] == pytest.approx(skm.recall_score(y, cand.pred, sample_weight=w))
    assert got["precision"][0] == pytest.approx(skm.precision_score(y, cand.pred, sample_weight=w))
    assert got["f1"][0] == pytest.approx(skm.f1_score(y, cand.pred, sample_weight=w))
    assert got["accuracy"][0] == pytest.approx(skm.accuracy_score(y, cand.pred, sample_weight=w))


def test_bootstrap_centres_on_point_values_and_is_reproducible(data):
    y, cand, champ, groups = data
    samples = bootstrap(y, cand, champ, groups, resamples=400, seed=1)
    again = bootstrap(y, cand, champ, groups, resamples=400, seed=1)
    other = bootstrap(y, cand, champ, groups, resamples=400, seed=2)
    assert all(np.array_equal(samples[k], again[k]) for k in samples)
    assert not np.array_equal(samples["cand.recall"], other["cand.recall"])
    assert len(samples["cand.roc_auc"]) == 400
    point = point_metrics(y, cand)
    for metric in ("recall", "roc_auc", "f1"):
        low, high = interval(samples[f"cand.{metric}"], 0.95)
        assert low < point[metric] < high
    flips = np.mean(cand.pred != champ.pred)
    assert np.mean(samples["flip_rate"]) == pytest.approx(flips, abs=0.01)
    table = group_recall(y, cand.pred, groups)
    recalls = [row["recall"] for row in table.values()]
    assert np.median(samples["cand.recall_gap"]) == pytest.approx(
        max(recalls) - min(recalls), abs=0.03
    )


def test_paired_interval_is_narrower_than_unpaired(data):
    """Pairing removes the noise the two models share: the point of a paired bootstrap."""
    y, cand, _, _ = data
    rng = np.random.default_rng(9)
    noisy = np.clip(cand.proba + rng.normal(0, 0.02, len(y)), 0, 1)
    close = Scores(noisy, (noisy > 0.4).astype(int))
    paired = bootstrap(y, cand, close, resamples=500, seed=4)
    independent = bootstrap(y, close, resamples=500, seed=5)
    paired_width = np.subtract(*interval(paired["cand.roc_auc"] - paired["champ.roc_auc"], 0.95))
    unpaired = paired["cand.roc_auc"] - independent["cand.roc_auc"]
    assert abs(paired_width) < abs(np.subtract(*interval(unpaired, 0.95))) / 3


def test_point_metrics_confusion_matrix(data):
    y, cand, _, _ = data
    (tn, fp), (fn, tp) = point_metrics(y, cand)["confusion_matrix"]
    assert tn + fp + fn + tp == len(y)
    assert tp == int(((y == 1) & (cand.pred == 1)).sum())


def test_groups_without_enough_positives_give_no_gap(data):
    y, cand, champ, groups = data
    samples = bootstrap(y, cand, champ, groups, resamples=100, min_positives=10_000)
    assert "cand.recall_gap" not in samples
    assert len(samples["cand.recall"]) == 100
