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


# Exact verdicts on small hand-made cases. With confidence 0.9 and 21 values the interval is
# the 2nd and the 20th value in order (numpy's percentile ranks 0.05 * 20 = 1 and 0.95 * 20 = 19).
EXACT = Gates.model_validate(
    {
        "thresholds": {"recall": {"min": 0.75}, "log_loss": {"max": 0.5}},
        "regression": {"metrics": ["recall", "log_loss"], "tolerance": 0.25, "confidence": 0.9},
        "fairness": {"max_gap": 0.25, "min_positives": 3},
        "stability": {"max_flip_rate": 0.25},
        "latency": {"p95_ms": 10},
    }
)


def _spread(low: float, high: float) -> np.ndarray:
    """21 values whose 90% percentile interval is exactly (low, high)."""
    return np.array([low] * 2 + [(low + high) / 2] * 17 + [high] * 2)


@pytest.mark.parametrize(
    ("recall", "log_loss", "recall_status", "log_loss_status"),
    [
        (0.75, 0.5, "pass", "pass"),  # both exactly at their limit
        (0.7499, 0.5001, "fail", "fail"),  # both just past it
        (0.875, 0.25, "pass", "pass"),
    ],
)
def test_thresholds_verdicts_exactly_at_and_past_each_limit(
    recall, log_loss, recall_status, log_loss_status
):
    cand = {"recall": recall, "log_loss": log_loss}
    champ = {"recall": 0.5, "log_loss": 0.125}
    samples = {"cand.recall": _spread(0.625, 0.875)}
    found = gate_rules.thresholds(EXACT, cand, champ, samples, 0.9)
    below = f"recall {recall:.3f} is below the minimum 0.75"
    above = f"log_loss {log_loss:.3f} is above the maximum 0.5"
    assert found == [
        gate_rules.Verdict(
            "threshold",
            "recall",
            recall_status,
            recall,
            0.75,
            0.5,
            recall - 0.5,
            (0.625, 0.875),
            below if recall_status == "fail" else f"recall {recall:.3f} meets ≥ 0.75",
        ),
        gate_rules.Verdict(
            "threshold",
            "log_loss",
            log_loss_status,
            log_loss,
            0.5,
            0.125,
            log_loss - 0.125,
            None,  # no bootstrap values for it: no interval
            above if log_loss_status == "fail" else f"log_loss {log_loss:.3f} meets ≤ 0.5",
        ),
    ]


def test_a_threshold_with_both_limits_names_every_problem_and_no_champion_means_no_baseline():
    rules = Gates.model_validate({"thresholds": {"recall": {"min": 0.5, "max": 0.25}}})
    (verdict,) = gate_rules.thresholds(rules, {"recall": 0.375}, None, {}, 0.9)
    assert verdict == gate_rules.Verdict(
        "threshold",
        "recall",
        gate_rules.FAIL,
        0.375,
        0.5,
        None,
        None,
        None,
        "recall 0.375 is below the minimum 0.5; recall 0.375 is above the maximum 0.25",
    )


def _paired(metric_diffs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Bootstrap values whose candidate-minus-champion differences are exactly the given ones."""
    samples = {}
    for metric, diffs in metric_diffs.items():
        samples[f"champ.{metric}"] = np.full(len(diffs), 0.5)
        samples[f"cand.{metric}"] = 0.5 + diffs
    return samples


@pytest.mark.parametrize(
    ("low", "high", "status"),
    [
        (-0.25, 0.0, gate_rules.PASS),  # the interval's low end exactly at -tolerance: passes
        (-0.375, -0.25, gate_rules.INCONCLUSIVE),  # high end exactly at -tolerance: cannot tell
        (-0.5, -0.375, gate_rules.FAIL),  # the whole interval below -tolerance
        (-0.5, 0.125, gate_rules.INCONCLUSIVE),  # straddles -tolerance, reaches above +tolerance-
        (-0.5, 0.0, gate_rules.INCONCLUSIVE),
    ],
)
def test_regression_verdict_on_each_side_of_the_tolerance(low, high, status):
    cand = {"recall": 0.625, "log_loss": 0.375}
    champ = {"recall": 0.5, "log_loss": 0.5}
    samples = _paired({"recall": _spread(low, high), "log_loss": -_spread(0.0, 0.125)})
    recall, log_loss = gate_rules.regression(EXACT, cand, champ, samples)
    reason = {
        gate_rules.PASS: "no worse than production by more than 0.25 (90% interval)",
        gate_rules.FAIL: "worse than production by more than 0.25 (90% interval)",
        gate_rules.INCONCLUSIVE: (
            f"the 90% interval of the change [{low:+.3f}, {high:+.3f}] straddles -0.25: "
            "the eval set cannot tell a regression from noise"
        ),
    }[status]
    assert recall == gate_rules.Verdict(
        "regression", "recall", status, 0.625, -0.25, 0.5, 0.125, (low, high), reason
    )
    # log-loss is lower-is-better: candidate minus champion of -0.125..0 is an improvement of
    # 0..0.125; the interval is reported back in log-loss terms, sign restored.
    assert log_loss == gate_rules.Verdict(
        "regression",
        "log_loss",
        gate_rules.PASS,
        0.375,
        -0.25,
        0.5,
        -0.125,
        (0.0, -0.125),
        "no worse than production by more than 0.25 (90% interval)",
    )


@pytest.mark.parametrize("metric", ["accuracy", "precision", "f1", "roc_auc", "log_loss"])
def test_regression_direction_of_every_other_metric(metric):
    """A metric that got worse by 0.5 fails, one that got better by 0.5 passes, whichever way
    round its scale goes (only log-loss is lower-is-better)."""
    rules = EXACT.model_copy(
        update={"regression": EXACT.regression.model_copy(update={"metrics": [metric]})}
    )
    lower_is_better = metric == "log_loss"
    for change, status in ((0.5, gate_rules.PASS), (-0.5, gate_rules.FAIL)):
        raw = -change if lower_is_better else change  # candidate minus champion on its own scale
        samples = _paired({metric: np.full(21, raw)})
        (verdict,) = gate_rules.regression(rules, {metric: 0.5 + raw}, {metric: 0.5}, samples)
        assert (verdict.status, verdict.interval) == (status, (raw, raw))


def test_regression_without_champion_skips_every_metric_with_the_tolerance_shown():
    found = gate_rules.regression(EXACT, {"recall": 0.625, "log_loss": 0.375}, None, {})
    skipped = "no production model yet: nothing to compare with"
    assert found == [
        gate_rules.Verdict("regression", "recall", "skipped", 0.625, -0.25, *[None] * 3, skipped),
        gate_rules.Verdict("regression", "log_loss", "skipped", 0.375, -0.25, *[None] * 3, skipped),
    ]


@pytest.mark.parametrize(
    ("gap", "status", "mark"),
    [(0.25, gate_rules.PASS, "≤"), (0.2501, gate_rules.FAIL, ">"), (0.125, gate_rules.PASS, "≤")],
)
def test_fairness_passes_at_its_limit_and_fails_past_it_exactly(gap, status, mark):
    samples = {"cand.recall_gap": _spread(0.0625, 0.375)}
    verdict = gate_rules.fairness(EXACT, gap, 0.0625, samples, 0.9)
    assert verdict == gate_rules.Verdict(
        "fairness",
        "recall_gap",
        status,
        gap,
        0.25,
        0.0625,
        gap - 0.0625,
        (0.0625, 0.375),
        f"recall differs by {gap:.3f} across teams ({mark} 0.25)",
    )
    # Without bootstrap values of the gap, no interval; without a champion, no baseline.
    bare = gate_rules.fairness(EXACT, gap, None, {}, 0.9)
    assert (bare.status, bare.interval, bare.baseline, bare.delta) == (status, None, None, None)


def test_fairness_is_skipped_with_fewer_than_two_groups_with_enough_positives():
    verdict = gate_rules.fairness(EXACT, None, 0.125, {"cand.recall_gap": np.ones(3)}, 0.9)
    assert verdict == gate_rules.Verdict(
        "fairness",
        "recall_gap",
        gate_rules.SKIPPED,
        None,
        0.25,
        None,
        None,
        None,
        "fewer than two groups with 3+ positives",
    )


@pytest.mark.parametrize(
    ("flips", "words"), [("negative", "change from right to wrong"), ("all", "change")]
)
def test_stability_verdicts_exactly(flips, words):
    rules = EXACT.model_copy(
        update={"stability": EXACT.stability.model_copy(update={"flips": flips})}
    )
    samples = {"flip_rate": _spread(0.125, 0.375)}
    at = gate_rules.stability(rules, 0.25, samples, 0.9)
    assert at == gate_rules.Verdict(
        "stability",
        "flip_rate",
        gate_rules.PASS,
        0.25,
        0.25,
        0.0,
        0.25,
        (0.125, 0.375),
        f"25.0% of decisions {words} vs production (≤ 25%)",
    )
    past = gate_rules.stability(rules, 0.375, samples, 0.9)
    assert (past.status, past.reason) == (
        gate_rules.FAIL,
        f"37.5% of decisions {words} vs production (> 25%)",
    )
    assert gate_rules.stability(rules, None, samples, 0.9) == gate_rules.Verdict(
        "stability",
        "flip_rate",
        gate_rules.SKIPPED,
        None,
        0.25,
        None,
        None,
        None,
        "no production model yet: nothing to compare with",
    )


def test_latency_verdict_at_the_limit_and_its_interval_of_resampled_p95s():
    at = gate_rules.latency(EXACT, np.full(40, 10.0), 8.0, seed=0)
    assert at == gate_rules.Verdict(
        "latency",
        "p95_ms",
        gate_rules.PASS,
        10.0,
        10.0,
        8.0,
        2.0,
        (10.0, 10.0),
        "p95 single-row predict 10.00 ms (≤ 10.0 ms)",
    )
    # The interval: the 2.5th and 97.5th percentiles of 500 resampled p95s, each the p95 of
    # len(timings) draws with replacement from the seed's generator.
    timings = np.random.default_rng(1).uniform(1.0, 20.0, 40)

    def resampled_interval(seed: int, resamples: int) -> tuple[float, float]:
        draws = np.random.default_rng(seed).choice(timings, size=(resamples, 40))
        return tuple(np.percentile(np.percentile(draws, 95, axis=1), [2.5, 97.5]))

    spread = gate_rules.latency(EXACT, timings, None, seed=4)
    assert spread.interval == pytest.approx(resampled_interval(4, 500), rel=1e-12)
    assert resampled_interval(4, 500) != resampled_interval(4, 501)  # the count shows
    assert spread.value == float(np.percentile(timings, 95))


def test_measure_latency_warms_up_on_the_first_row_and_cycles_through_the_rows():
    from sklearn.linear_model import LogisticRegression

    from slipway.propose.gate_rules import measure_latency

    class Recording:
        """The model, recording which eval rows each scoring call gets."""

        def __init__(self, model) -> None:
            self.model, self.seen = model, []

        def predict_proba(self, frame):
            self.seen.append(frame["row"].tolist())
            return self.model.predict_proba(frame)

    features = pd.DataFrame({"row": [0.0, 1.0, 2.0], "x": [0.0, 1.0, 0.5]})
    model = Recording(LogisticRegression().fit(features, [0, 1, 1]))
    timings = measure_latency(model, features, calls=5, clock=iter(range(10)).__next__)
    assert model.seen == [[0.0], [0.0], [1.0], [2.0], [0.0], [1.0]]  # warm-up, then 0 1 2 0 1
    assert timings.tolist() == [1000.0] * 5


def test_to_dict_lists_the_interval_and_keeps_every_field():
    verdict = gate_rules.Verdict(
        "latency", "p95_ms", "pass", 1.0, 10.0, None, None, (0.5, 2.0), "r"
    )
    assert gate_rules.to_dict(verdict) == {
        "gate": "latency",
        "metric": "p95_ms",
        "status": "pass",
        "value": 1.0,
        "threshold": 10.0,
        "baseline": None,
        "delta": None,
        "interval": [0.5, 2.0],
        "reason": "r",
    }
    bare = gate_rules.Verdict("fairness", "recall_gap", "skipped", *[None] * 5, "r")
    assert gate_rules.to_dict(bare)["interval"] is None


# --- the gate step on the example model's eval set, with no registry ---------------------------


def _gate_config():
    from pathlib import Path

    from slipway.config import load_config

    config = load_config(Path(__file__).resolve().parent.parent / "model" / "slipway.yaml")
    gates = config.gates.model_copy(
        update={
            "regression": config.gates.regression.model_copy(update={"resamples": 100}),
            "latency": config.gates.latency.model_copy(update={"calls": 20}),
        }
    )
    return config.model_copy(update={"gates": gates})


def test_the_gate_step_judges_a_candidate_alone_and_against_itself_as_production():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import FixedThresholdClassifier

    from slipway.propose import gate
    from slipway.propose.contract import prepare, read_dataset
    from slipway.propose.datasets import split_paths
    from slipway.propose.evaluation import Scores, group_recall, point_metrics
    from slipway.registry import ModelRef

    config = _gate_config()
    frame = read_dataset(split_paths(config)["eval"])
    features, y = prepare(frame, config)
    model = FixedThresholdClassifier(
        LogisticRegression(max_iter=500), threshold=0.3, response_method="predict_proba"
    )
    model.fit(features, y)
    proba = model.predict_proba(features)[:, 1]
    scores = Scores(proba, (proba >= 0.3).astype(int))
    teams = group_recall(y, scores.pred, frame["team"].astype("string").to_numpy(dtype=object))

    alone = gate.judge(config, model, lambda: None, {"eval": "abc"})
    assert alone.metrics == point_metrics(y, scores) and alone.teams == teams
    assert alone.eval == {"rows": len(y), "positives": int(y.sum()), "sha256": "abc"}
    assert (alone.champion, alone.champion_metrics, alone.champion_teams) == (None, None, {})
    assert alone.threshold == 0.3 and np.array_equal(alone.labels, y)
    np.testing.assert_array_equal(alone.probabilities, proba)
    by_gate = {(v.gate, v.metric): v for v in alone.verdicts}
    assert [k for k in by_gate if k[0] == "threshold"] == [
        ("threshold", m) for m in config.gates.thresholds
    ]
    assert [by_gate["regression", m].status for m in config.gates.regression.metrics] == [
        gate_rules.SKIPPED
    ] * len(config.gates.regression.metrics)
    assert by_gate["stability", "flip_rate"].status == gate_rules.SKIPPED
    recalls = [t["recall"] for t in teams.values() if t["positives"] >= 20]
    fairness = by_gate["fairness", "recall_gap"]
    assert fairness.value == pytest.approx(max(recalls) - min(recalls))
    assert fairness.baseline is None and fairness.interval is not None
    latency = by_gate["latency", "p95_ms"]
    assert latency.value == alone.p95_ms and latency.baseline is None
    assert alone.status == gate_rules.overall(alone.verdicts, "warn")

    steps: list[str] = []
    production = gate.Champion(ModelRef("release-risk", "3", "run", {gate.P95_TAG: "7.5"}), model)
    same = gate.judge(config, model, lambda: production, {"eval": "abc"}, steps.append)
    assert same.champion is production and same.champion_metrics == same.metrics
    assert same.champion_teams == same.teams
    by_gate = {(v.gate, v.metric): v for v in same.verdicts}
    for metric in config.gates.regression.metrics:  # every resample's difference is 0
        verdict = by_gate["regression", metric]
        assert (verdict.status, verdict.delta, verdict.interval) == (gate_rules.PASS, 0, (0, 0))
    stable = by_gate["stability", "flip_rate"]
    assert (stable.status, stable.value) == (gate_rules.PASS, 0.0)
    assert by_gate["fairness", "recall_gap"].delta == 0
    assert by_gate["latency", "p95_ms"].baseline == 7.5
    assert steps == [
        f"scoring release-risk on {len(y)} eval rows",
        "scoring production v3 on the same rows",
        "paired bootstrap: 100 resamples",
        "timing 20 single-row predictions",
    ]


def test_the_fairness_gap_counts_only_teams_with_enough_positives():
    from slipway.propose.gate import _gap

    table = {
        "a": {"recall": 0.5, "positives": 20},
        "b": {"recall": 0.875, "positives": 21},
        "c": {"recall": 0.0, "positives": 19},  # one short: left out
    }
    assert _gap(table, 20) == 0.375
    assert _gap(table, 19) == 0.875
    assert _gap(table, 21) is None  # one team is no comparison
    assert _gap({}, 1) is None


def test_the_version_to_gate_is_the_one_given_else_the_one_just_trained(tmp_path):
    from slipway.errors import ConfigError
    from slipway.propose.gate import candidate_version

    assert candidate_version(tmp_path, "4") == "4"
    with pytest.raises(ConfigError, match="no --version given and no") as raised:
        candidate_version(tmp_path, None)
    assert raised.value.hint == "run `slipway train` first or pass --version N"
    (tmp_path / "train.json").write_text('{"version": 6}')
    assert candidate_version(tmp_path, None) == "6"
