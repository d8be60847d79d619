"""The vectorised paired bootstrap agrees with scikit-learn, with a plain resampling loop and with
the truth it estimates, and is reproducible."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from slipway.propose.evaluation import (
    _CHUNK_CELLS as CHUNK_CELLS,
)
from slipway.propose.evaluation import (
    _POISSON,
    Scores,
    _Resampled,
    bootstrap,
    flipped,
    group_recall,
    interval,
    point_metrics,
    poisson_weights,
)


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    n = 3000
    y = (rng.random(n) < 0.3).astype(int)
    a = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1).round(2)
    b = np.clip(y * 0.2 + rng.random(n) * 0.8, 0, 1).round(3)
    groups = rng.choice(["x", "y", "z"], n)
    return y, Scores(a, (a > 0.4).astype(int)), Scores(b, (b > 0.4).astype(int)), groups


@pytest.mark.parametrize("positives_are", ["minority", "majority"])
@pytest.mark.parametrize("weighting", ["poisson", "multinomial"])
def test_resampled_metrics_equal_sklearn_with_sample_weight(data, positives_are, weighting):
    """Every series, for tied scores and either class the smaller, is scikit-learn's metric
    under the same row weights."""
    y, cand, champ, groups = data
    if positives_are == "majority":
        y = 1 - y
    resampled = _Resampled(y, {"cand": cand, "champ": champ}, groups)
    rng = np.random.default_rng(0)
    if weighting == "poisson":
        weights = rng.poisson(1.0, size=(5, len(y))).astype(np.float32)
    else:
        weights = np.stack(
            [np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y)) for _ in range(5)]
        ).astype(np.float32)
    got = resampled.compute(weights[:, resampled.rows])
    for i, w in enumerate(weights.astype(float)):
        for key, scores in (("cand", cand), ("champ", champ)):
            expected = {
                "roc_auc": skm.roc_auc_score(y, scores.proba, sample_weight=w),
                "recall": skm.recall_score(y, scores.pred, sample_weight=w),
                "precision": skm.precision_score(y, scores.pred, sample_weight=w),
                "f1": skm.f1_score(y, scores.pred, sample_weight=w),
                "accuracy": skm.accuracy_score(y, scores.pred, sample_weight=w),
                "log_loss": skm.log_loss(
                    y, np.clip(scores.proba, 1e-15, 1 - 1e-15), sample_weight=w
                ),
            }
            for metric, value in expected.items():
                # Counts are whole numbers, exact in float32; the log-loss column is a float32
                # sum whose rounding depends on the CPU's BLAS kernel.
                rel = 1e-5 if metric == "log_loss" else 1e-6
                assert got[f"{key}.{metric}"][i] == pytest.approx(value, rel=rel), (key, metric)
            recalls = [
                skm.recall_score(y[member], scores.pred[member], sample_weight=w[member])
                for member in (groups == g for g in np.unique(groups))
            ]
            assert got[f"{key}.recall_gap"][i] == pytest.approx(max(recalls) - min(recalls))
        flips = np.average(cand.pred != champ.pred, weights=w)
        assert got["flip_rate"][i] == pytest.approx(flips, rel=1e-6)
    negative = _Resampled(y, {"cand": cand, "champ": champ}, groups, negative_flips=True)
    got = negative.compute(weights[:, negative.rows])
    for i, w in enumerate(weights.astype(float)):
        harmful = (cand.pred != champ.pred) & (champ.pred == y)
        assert got["flip_rate"][i] == pytest.approx(np.average(harmful, weights=w), rel=1e-6)


def test_a_negative_flip_is_a_right_decision_made_wrong():
    y = np.array([1, 1, 0, 0, 1, 0])
    champion = np.array([1, 0, 0, 1, 1, 0])  # right, wrong, right, wrong, right, right
    candidate = np.array([0, 1, 1, 0, 1, 0])  # flips the first four
    assert flipped(y, candidate, champion, negative=False).tolist() == [1, 1, 1, 1, 0, 0]
    assert flipped(y, candidate, champion, negative=True).tolist() == [1, 0, 1, 0, 0, 0]


def test_poisson_weights_have_poisson_1_counts():
    counts = np.bincount(_POISSON.astype(int)) / len(_POISSON)
    exact = [math.exp(-1) / math.factorial(k) for k in range(len(counts))]
    assert np.abs(counts - exact).max() <= 2**-16
    assert float(_POISSON.mean()) == pytest.approx(1.0, abs=1e-4)
    assert float(_POISSON.var()) == pytest.approx(1.0, abs=1e-4)


def _auc(y, proba):
    """Mann-Whitney from average ranks: the textbook ROC AUC, ties counting half."""
    ranks = stats.rankdata(proba)
    positives = int(y.sum())
    negatives = len(y) - positives
    return (ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)


def _naive_bootstrap(y, cand, champ, resamples, seed):
    """The loop one would write by hand: draw n row indices with replacement, recompute."""
    rng = np.random.default_rng(seed)
    out = {"cand.roc_auc": [], "champ.roc_auc": [], "cand.recall": [], "cand.precision": []}
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        yes, hit = y[idx] == 1, cand.pred[idx] == 1
        out["cand.roc_auc"].append(_auc(y[idx], cand.proba[idx]))
        out["champ.roc_auc"].append(_auc(y[idx], champ.proba[idx]))
        out["cand.recall"].append((yes & hit).sum() / yes.sum())
        out["cand.precision"].append((yes & hit).sum() / hit.sum())
    return {key: np.asarray(values) for key, values in out.items()}


def test_intervals_agree_with_a_plain_resampling_loop(data):
    """Poisson weights stand in for drawing rows with replacement: same spread, same interval."""
    y, cand, champ, groups = data
    fast = bootstrap(y, cand, champ, groups, resamples=2000, seed=7)
    slow = _naive_bootstrap(y, cand, champ, resamples=1000, seed=8)
    fast["diff"] = fast["cand.roc_auc"] - fast["champ.roc_auc"]
    slow["diff"] = slow["cand.roc_auc"] - slow["champ.roc_auc"]
    for key in ("cand.roc_auc", "champ.roc_auc", "cand.recall", "cand.precision", "diff"):
        # A standard deviation from 1,000 resamples is within about 2 % of the truth.
        assert np.std(fast[key]) / np.std(slow[key]) == pytest.approx(1, abs=0.1), key
        low, high = interval(fast[key], 0.95)
        slow_low, slow_high = interval(slow[key], 0.95)
        width = slow_high - slow_low
        assert low == pytest.approx(slow_low, abs=0.15 * width), key
        assert high == pytest.approx(slow_high, abs=0.15 * width), key


def test_intervals_cover_the_population_value():
    """Over many eval sets drawn from a known population, the 90 % interval holds the true AUC
    and recall about 90 % of the time."""
    rng = np.random.default_rng(11)
    shift, threshold, rows, trials = 1.0, 0.5, 1000, 300
    # Binormal scores: positives N(1, 1), negatives N(0, 1).
    true_auc = stats.norm.cdf(shift / math.sqrt(2))
    true_recall = stats.norm.sf(threshold - shift)
    covered = {"roc_auc": 0, "recall": 0}
    for trial in range(trials):
        y = (rng.random(rows) < 0.3).astype(int)
        score = rng.normal(shift * y, 1.0)
        scores = Scores(score, (score > threshold).astype(int))
        samples = bootstrap(y, scores, resamples=400, seed=trial)
        for metric, truth in (("roc_auc", true_auc), ("recall", true_recall)):
            low, high = interval(samples[f"cand.{metric}"], 0.90)
            covered[metric] += low <= truth <= high
    for metric, hits in covered.items():  # 300 trials: a coverage rate within about 0.02
        assert 0.85 <= hits / trials <= 0.95, (metric, hits / trials)


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


# Six rows by hand: tp rows 0 and 4, fn row 1, fp rows 2 and 3, tn row 5.
SIX_Y = np.array([1, 1, 0, 0, 1, 0])
SIX = Scores(np.array([0.9, 0.4, 0.6, 0.7, 0.8, 0.1]), np.array([1, 0, 1, 1, 1, 0]))


def test_point_metrics_of_six_rows_by_hand():
    found = point_metrics(SIX_Y, SIX)
    assert found["confusion_matrix"] == [[1, 2], [1, 2]]  # [[tn, fp], [fn, tp]]
    assert found["accuracy"] == pytest.approx(3 / 6)
    assert found["precision"] == pytest.approx(2 / 4)
    assert found["recall"] == pytest.approx(2 / 3)
    assert found["f1"] == pytest.approx(4 / 7)  # 2 * (1/2 * 2/3) / (1/2 + 2/3)
    # Positive-over-negative pairs ranked right: 0.9 beats 3, 0.4 beats 1, 0.8 beats 3; of 9.
    assert found["roc_auc"] == pytest.approx(7 / 9)
    # Ranked by probability: P P N N P N; precision at each positive 1, 1, 3/5.
    assert found["pr_auc"] == pytest.approx((1 + 1 + 3 / 5) / 3)
    right = [0.9, 0.4, 1 - 0.6, 1 - 0.7, 0.8, 1 - 0.1]  # the probability of the true class
    assert found["log_loss"] == pytest.approx(-np.mean(np.log(right)))


def test_point_metrics_of_one_class_have_no_ranking_metrics_and_clip_certain_mistakes():
    found = point_metrics(np.array([0, 0]), Scores(np.array([0.0, 1.0]), np.array([0, 1])))
    assert math.isnan(found["roc_auc"]) and math.isnan(found["pr_auc"])
    assert found["confusion_matrix"] == [[1, 1], [0, 0]]
    assert (found["precision"], found["recall"], found["f1"]) == (0.0, 0.0, 0.0)
    assert math.isfinite(found["log_loss"]) and found["log_loss"] > 10  # a certain mistake


def test_group_recall_counts_each_teams_positives_and_hits():
    groups = np.array(["a", "a", "a", "b", "b", "c"])
    assert group_recall(SIX_Y, SIX.pred, groups) == {
        "a": {"rows": 3, "positives": 2, "recall": 0.5},  # rows 0 and 1: one caught
        "b": {"rows": 2, "positives": 1, "recall": 1.0},  # row 4, caught
        "c": {"rows": 1, "positives": 0, "recall": None},  # no positive: no recall
    }


def test_the_poisson_table_is_the_inverse_cdf_at_each_cells_midpoint():
    from slipway.propose.evaluation import _poisson_table

    # Poisson(1)'s CDF: .3679, .7358, .9197, .9810; the midpoints (u + .5) / 16 fall 6, 6, 3, 1.
    small = _poisson_table(bits=4)
    assert small.dtype == np.float32
    assert small.tolist() == [0.0] * 6 + [1.0] * 6 + [2.0] * 3 + [3.0]
    table = _poisson_table()
    assert len(table) == 2**16 and np.array_equal(table, _POISSON)
    assert abs(float(table.mean()) - 1) < 1e-4 and abs(float(table.var()) - 1) < 1e-4


def test_nothing_flagged_scores_zero_without_a_warning_and_keeps_a_two_by_two_matrix():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn warns when zero_division is left unset
        missed = point_metrics(np.array([1, 0, 0]), Scores(np.array([0.2, 0.1, 0.3]), np.zeros(3)))
        quiet = point_metrics(np.array([0, 0]), Scores(np.array([0.2, 0.1]), np.zeros(2)))
    # Nothing predicted positive: precision 0/0 is 0; recall 0/1; f1 0/(0 + 0 + 1).
    assert (missed["precision"], missed["recall"], missed["f1"]) == (0.0, 0.0, 0.0)
    # No positive at all, none predicted: f1's 0/0 is 0 too, and the matrix is still 2 x 2.
    assert (quiet["precision"], quiet["recall"], quiet["f1"]) == (0.0, 0.0, 0.0)
    assert quiet["confusion_matrix"] == [[2, 0], [0, 0]]


def test_log_loss_clips_certain_mistakes_at_one_in_a_quadrillion_on_both_sides():
    # A positive scored 0 and a negative scored 1: each is clipped 1e-15 from certainty (in
    # float64, 1 - (1 - 1e-15) is 9.992e-16), not scikit-learn's own epsilon (2.2e-16, 36.04
    # nats): about 34.539 nats each.
    found = point_metrics(np.array([1, 0]), Scores(np.array([0.0, 1.0]), np.array([0, 1])))
    expected = -(math.log(1e-15) + math.log(1 - (1 - 1e-15))) / 2
    assert found["log_loss"] == pytest.approx(expected, rel=1e-12)
    assert found["log_loss"] == pytest.approx(34.5392, abs=1e-4)


def test_group_recall_counts_hits_among_positives_only():
    # One team: positives rows 0 and 3, caught row 0; rows 1 and 2 are flagged negatives.
    found = group_recall(np.array([1, 0, 0, 1]), np.array([1, 1, 1, 0]), np.array(["a"] * 4))
    assert found == {"a": {"rows": 4, "positives": 2, "recall": 0.5}}


def test_bootstrap_defaults_are_2000_resamples_seed_0_and_groups_with_one_positive():
    groups = np.array(["a", "a", "a", "b", "b", "c"])  # positives: a 2, b 1, c 0
    default = bootstrap(SIX_Y, SIX, groups=groups)
    assert len(default["cand.recall"]) == 2000
    explicit = bootstrap(SIX_Y, SIX, groups=groups, resamples=2000, seed=0, min_positives=1)
    assert default.keys() == explicit.keys()
    for key in default:
        np.testing.assert_array_equal(default[key], explicit[key])
    # b's one positive is enough by default: a gap of a and b is resampled.
    assert "cand.recall_gap" in default
    assert "cand.recall_gap" not in bootstrap(SIX_Y, SIX, groups=groups, min_positives=2)
    other = bootstrap(SIX_Y, SIX, resamples=2000, seed=1)["cand.recall"]
    assert not np.array_equal(default["cand.recall"], other)


def test_bootstrap_counts_only_negative_flips_when_asked():
    # Row 0: production missed a positive the candidate catches: a flip, but not a negative one.
    y = np.array([1, 0])
    cand = Scores(np.array([0.9, 0.1]), np.array([1, 0]))
    champ = Scores(np.array([0.1, 0.1]), np.array([0, 0]))
    every = bootstrap(y, cand, champ, resamples=200, seed=4)["flip_rate"]
    negative = bootstrap(y, cand, champ, resamples=200, seed=4, negative_flips=True)["flip_rate"]
    drawn = ~np.isnan(negative)  # a resample that weighs both rows 0 has no rate
    assert np.array_equal(negative[drawn], np.zeros(drawn.sum()))
    assert (every[drawn] > 0).any()


@pytest.mark.parametrize(("rows", "resamples"), [(CHUNK_CELLS // 3 + 1, 5), (CHUNK_CELLS, 3)])
def test_bootstrap_draws_each_chunk_of_weights_from_its_own_seed_stream(rows, resamples):
    """A chunk holds as many resamples as fit in 250,000 weights (at least one), and chunk k
    draws from the k-th child of the seed: the same seed gives the same figures on any core
    count, and these rows are split 2 + 2 + 1 and 1 + 1 + 1."""
    rng = np.random.default_rng(2)
    y = (rng.random(rows) < 0.4).astype(int)
    proba = rng.random(rows)
    cand = Scores(proba, (proba > 0.5).astype(int))
    found = bootstrap(y, cand, resamples=resamples, seed=9)

    per_chunk = max(1, CHUNK_CELLS // rows)
    sizes = [min(per_chunk, resamples - start) for start in range(0, resamples, per_chunk)]
    assert sum(sizes) == resamples and len(sizes) == 3
    resampled = _Resampled(y, {"cand": cand})
    children = np.random.SeedSequence(9).spawn(len(sizes))
    parts = [
        resampled.compute(poisson_weights(np.random.default_rng(child), size, rows))
        for size, child in zip(sizes, children, strict=True)
    ]
    for key in found:
        np.testing.assert_array_equal(found[key], np.concatenate([p[key] for p in parts]))


def test_a_model_ranking_the_rows_in_reverse_gathers_them_into_its_own_order():
    """Production scores every row of each class in the candidate's reverse order (no two
    neighbours in order): its ROC AUC still equals scikit-learn's under the same weights, and
    a team with one positive is enough for a gap by default."""
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    proba = np.array([0.9, 0.7, 0.4, 0.1, 0.3, 0.6, 0.8, 0.5])
    cand = Scores(proba, (proba > 0.5).astype(int))
    champ = Scores(1 - proba, (proba < 0.5).astype(int))
    groups = np.array(["a", "a", "a", "b", "b", "b", "b", "b"])  # b has one positive
    resampled = _Resampled(y, {"cand": cand, "champ": champ}, groups)
    weights = np.array([[1, 2, 0, 1, 1, 3, 1, 2], [1] * 8], dtype=np.float32)

    got = resampled.compute(weights[:, resampled.rows])

    for i, w in enumerate(weights.astype(float)):
        for key, scores in (("cand", cand), ("champ", champ)):
            expected = skm.roc_auc_score(y, scores.proba, sample_weight=w)
            assert got[f"{key}.roc_auc"][i] == pytest.approx(expected, rel=1e-9), key
    assert got["champ.roc_auc"][1] == pytest.approx(1 - got["cand.roc_auc"][1])
    assert "cand.recall_gap" in got
