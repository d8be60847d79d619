"""Gate verdicts: pass, fail, inconclusive and skipped, each explained."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from slipway.config import Gates
from slipway.propose import gate_rules

RULES = Gates.model_validate(
    {
        "thresholds": {"recall": {"min": 0.8}, "log_loss": {"max": 0.6}},
        "regression": {"metrics": ["recall", "log_loss"], "tolerance": 0.02},
        "fairness": {"max_gap": 0.1},
        "stability": {"max_flip_rate": 0.1},
        "latency": {"p95_ms": 10},
    }
)
METRICS = {"recall": 0.85, "log_loss": 0.5}


def _samples(cand_recall_centre: float, champ_recall_centre: float, spread: float) -> dict:
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.03, 2000)
    noise = rng.normal(0, spread, 2000)
    return {
        "cand.recall": cand_recall_centre + shared + noise,
        "champ.recall": champ_recall_centre + shared,
        "cand.log_loss": 0.5 + shared,
        "champ.log_loss": 0.5 + shared,
    }


@pytest.mark.parametrize(
    ("cand", "champ", "spread", "status"),
    [
        (0.85, 0.85, 0.002, gate_rules.PASS),  # same model: clearly within tolerance
        (0.78, 0.85, 0.002, gate_rules.FAIL),  # clearly worse by more than 0.02
        (0.835, 0.85, 0.02, gate_rules.INCONCLUSIVE),  # worse by 0.015 ± noise: cannot tell
    ],
)
def test_regression_verdicts(cand, champ, spread, status):
    verdict = gate_rules.regression(
        RULES,
        {**METRICS, "recall": cand},
        {**METRICS, "recall": champ},
        _samples(cand, champ, spread),
    )[0]
    assert verdict.status == status
    assert verdict.baseline == champ
    assert verdict.delta == pytest.approx(cand - champ)
    assert verdict.interval[0] < verdict.interval[1]
    assert verdict.threshold == -0.02
    if status == gate_rules.INCONCLUSIVE:
        assert "straddles" in verdict.reason and "noise" in verdict.reason


def test_lower_is_better_metric_is_judged_the_right_way():
    samples = _samples(0.85, 0.85, 0.001)
    samples["cand.log_loss"] = samples["champ.log_loss"] + 0.1  # candidate clearly worse
    verdicts = gate_rules.regression(RULES, METRICS, METRICS, samples)
    assert verdicts[1].metric == "log_loss" and verdicts[1].status == gate_rules.FAIL


def test_regression_without_champion_is_skipped():
    verdicts = gate_rules.regression(RULES, METRICS, None, {})
    assert {v.status for v in verdicts} == {gate_rules.SKIPPED}
    assert "no production model" in verdicts[0].reason


@pytest.mark.parametrize(
    ("metrics", "failed"),
    [
        ({"recall": 0.85, "log_loss": 0.5}, []),
        ({"recall": 0.75, "log_loss": 0.5}, ["recall"]),
        ({"recall": 0.75, "log_loss": 0.7}, ["recall", "log_loss"]),
    ],
)
def test_thresholds(metrics, failed):
    verdicts = gate_rules.thresholds(RULES, metrics, None, {}, 0.95)
    assert [v.metric for v in verdicts if v.status == gate_rules.FAIL] == failed
    for v in verdicts:
        if v.status == gate_rules.FAIL:
            assert str(v.threshold) in v.reason


def test_fairness_stability_latency_and_overall():
    samples = {"cand.recall_gap": np.full(10, 0.2), "flip_rate": np.full(10, 0.05)}
    fair = gate_rules.fairness(RULES, 0.2, 0.05, samples, 0.95)
    assert fair.status == gate_rules.FAIL and fair.delta == pytest.approx(0.15)
    stable = gate_rules.stability(RULES, 0.05, samples, 0.95)
    assert stable.status == gate_rules.PASS
    fast = gate_rules.latency(RULES, np.full(100, 2.0), 3.0, seed=0)
    assert fast.status == gate_rules.PASS and fast.baseline == pytest.approx(3.0)
    slow = gate_rules.latency(RULES, np.full(100, 25.0), None, seed=0)
    assert slow.status == gate_rules.FAIL and "25.00 ms" in slow.reason
    assert gate_rules.overall([stable, fast], "warn") == gate_rules.PASS
    assert gate_rules.overall([stable, slow], "warn") == gate_rules.FAIL
    unsure = gate_rules.Verdict(
        "regression", "recall", gate_rules.INCONCLUSIVE, 0, 0, 0, 0, (0, 0), ""
    )
    assert gate_rules.overall([stable, unsure], "warn") == gate_rules.PASS
    assert gate_rules.overall([stable, unsure], "fail") == gate_rules.FAIL


@pytest.mark.parametrize("flips", ["negative", "all"])
def test_stability_passes_at_its_limit_fails_past_it_and_skips_with_no_production(flips):
    rules = RULES.model_copy(
        update={"stability": RULES.stability.model_copy(update={"flips": flips})}
    )
    samples = {"flip_rate": np.array([0.08, 0.1, 0.12])}
    at = gate_rules.stability(rules, 0.1, samples, 0.95)  # the limit is 0.1
    assert (at.status, at.value, at.threshold, at.delta) == (gate_rules.PASS, 0.1, 0.1, 0.1)
    assert at.baseline == 0.0 and at.interval == pytest.approx((0.081, 0.119))
    past = gate_rules.stability(rules, 0.1001, samples, 0.95)
    assert past.status == gate_rules.FAIL and "10.0% of decisions" in past.reason
    changes = "change from right to wrong" if flips == "negative" else "change vs"
    assert changes in at.reason and "≤ 10%" in at.reason and "> 10%" in past.reason
    skipped = gate_rules.stability(rules, None, samples, 0.95)
    assert skipped.status == gate_rules.SKIPPED and skipped.value is None
    assert "no production model" in skipped.reason


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.9])
def test_decisions_from_probabilities_equal_predict(threshold):
    """The gate derives a threshold classifier's decisions from its probabilities (one pass
    over the eval set): they must be what ``predict`` says, and other models ask ``predict``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import FixedThresholdClassifier

    from slipway.propose.gate import _decisions

    rng = np.random.default_rng(0)
    features = pd.DataFrame(rng.normal(size=(500, 3)), columns=["a", "b", "c"])
    target = (features["a"] + rng.normal(size=500) > 0).astype(int)
    for model in (
        FixedThresholdClassifier(LogisticRegression(), threshold=threshold),
        LogisticRegression(),
    ):
        model.fit(features, target)
        proba = model.predict_proba(features)[:, 1]
        np.testing.assert_array_equal(_decisions(model, features, proba), model.predict(features))


@pytest.mark.parametrize("kind", ["forest", "logistic"])
def test_measure_latency_times_each_call_through_the_serving_path(kind):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from slipway.propose.gate_rules import measure_latency

    rng = np.random.default_rng(3)
    features = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd"))
    target = (features["a"] + rng.normal(size=300) > 0).astype(int)
    model = (
        RandomForestClassifier(n_estimators=5, random_state=0)
        if kind == "forest"
        else LogisticRegression()
    ).fit(features, target)
    durations = [0.5, 0.25, 0.125, 2.0, 0.0625, 1.0, 0.75]  # seconds each call takes
    ticks = iter(t for i, d in enumerate(durations) for t in (10.0 * i, 10.0 * i + d))
    reads: list[float] = []

    def clock() -> float:
        reads.append(next(ticks))
        return reads[-1]

    timings = measure_latency(model, features, calls=7, clock=clock)
    # Each call's own start-to-end time, in milliseconds; the warm-up call is not timed.
    assert timings.tolist() == [d * 1000 for d in durations]
    assert len(reads) == 2 * 7


def test_measure_latency_times_one_single_row_scoring_between_its_clock_reads():
    from sklearn.linear_model import LogisticRegression

    from slipway.propose.gate_rules import measure_latency

    class Counting:
        """The model, counting the rows of each scoring call it gets."""

        def __init__(self, model) -> None:
            self.model, self.rows = model, []

        def predict_proba(self, frame):
            self.rows.append(len(frame))
            return self.model.predict_proba(frame)

    rng = np.random.default_rng(4)
    features = pd.DataFrame(rng.normal(size=(50, 3)), columns=list("abc"))
    model = Counting(LogisticRegression().fit(features, features["a"] > 0))
    seen: list[int] = []  # how many calls were made at each clock read

    def clock() -> float:
        seen.append(len(model.rows))
        return float(len(seen))

    measure_latency(model, features, calls=4, clock=clock)
    assert model.rows == [1] * 5  # a warm-up, then four single-row calls
    assert seen == [1, 2, 2, 3, 3, 4, 4, 5]  # each timed span holds exactly one of them


def test_the_latency_gate_judges_the_95th_percentile_of_the_timings():
    # 90 calls of 1 ms and 10 of 50 ms: mean 5.9 and median 1 are within 10 ms, the p95 is not.
    slow_tail = gate_rules.latency(RULES, np.array([1.0] * 90 + [50.0] * 10), 4.0, seed=0)
    assert (slow_tail.status, slow_tail.value) == (gate_rules.FAIL, 50.0)
    assert slow_tail.delta == 46.0 and slow_tail.reason.endswith("50.00 ms (> 10.0 ms)")
    # 96 of 1 ms and 4 of 50 ms: the max is over the limit, the p95 (1 ms) is within it.
    rare = gate_rules.latency(RULES, np.array([1.0] * 96 + [50.0] * 4), None, seed=0)
    assert (rare.status, rare.value) == (gate_rules.PASS, 1.0)
    # Between two order statistics the p95 interpolates: rank 0.95 * 19 = 18.05 of 1..20 ms.
    spread = gate_rules.latency(RULES, np.arange(1.0, 21.0), None, seed=0)
    assert spread.value == pytest.approx(19.05) and spread.status == gate_rules.FAIL
