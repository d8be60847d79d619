"""`slipway canary-report ENV`: the intervals, every limit and verdict, the log, the CLI.

The intervals are pinned on small cases computed by hand or published (Newcombe 1998); the
limits on both sides of each boundary; the log is one written by PredictionLog from a Scorer;
the CLI runs on a real MLflow registry, and a pull request on the GitHub emulator.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from slipway.cli import main
from slipway.config import Canary, load_config
from slipway.errors import ConfigError, DataError, PromotionError
from slipway.intervals import (
    binomial_pmf,
    newcombe,
    order_ranks,
    quantile,
    quantile_interval,
    ratio_interval,
    wilson,
    z_value,
)
from slipway.manifests import Manifest, load_manifest, render_manifest
from slipway.promote import canary
from slipway.promote.canary import (
    ABORT,
    BROKEN,
    MET,
    PROMOTE,
    SKIPPED,
    UNDECIDED,
    WAIT,
    Estimate,
    Judgement,
    at_most,
    judge,
    limit_level,
    verdict,
    within,
)
from slipway.promote.rollout_log import Sample, read_labels, sample
from slipway.serve.prediction_log import PredictionLog
from slipway.serve.service import Deployment, Scorer, route

REPO = Path(__file__).resolve().parent.parent
CONFIG = load_config(REPO / "model" / "slipway.yaml")
DIGEST1, DIGEST2 = "sha256:" + "1a" * 32, "sha256:" + "2b" * 32
START = datetime(2026, 7, 1, 12, tzinfo=UTC)


# --- intervals, on cases computed by hand or published ------------------------------------


def test_the_normal_quantile_of_95_percent():
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        (5, 20, (0.1119, 0.4687)),  # p .25, z² 3.8415: centre .2903 ± .1784
        (81, 263, (0.2553, 0.3662)),  # Newcombe 1998, table I
        (0, 10, (0.0, 0.2775)),  # z² / (n + z²)
        (10, 10, (0.7225, 1.0)),
        (0, 0, (0.0, 1.0)),  # no sample: anything
    ],
)
def test_wilson_interval(successes, n, expected):
    low, high = wilson(successes, n, 0.95)
    assert (round(low, 4), round(high, 4)) == expected


def test_wilson_is_exactly_0_and_1_at_the_ends_and_narrows_with_confidence():
    assert wilson(0, 10, 0.95)[0] == 0.0 and wilson(10, 10, 0.95)[1] == 1.0
    assert wilson(5, 20, 0.90)[1] == pytest.approx(0.4322, abs=1e-4)  # .2798 + .1524


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((56, 70, 48, 80), (0.0524, 0.3339)),  # Newcombe 1998, table II, method 10
        ((5, 20, 10, 20), (-0.4936, 0.0468)),  # -.25 - hypot(.1381, .2007), + hypot(.2187, .2007)
        ((48, 80, 56, 70), (-0.3339, -0.0524)),  # swapped: the mirror image
    ],
)
def test_newcombe_difference_interval(counts, expected):
    low, high = newcombe(*counts, 0.95)
    assert (round(low, 4), round(high, 4)) == expected


@pytest.mark.parametrize("counts", [(0, 0, 3, 10), (3, 10, 0, 0)])
def test_newcombe_with_an_empty_sample_is_everything(counts):
    assert newcombe(*counts, 0.95) == (-1.0, 1.0)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        (list(range(1, 21)), 0.95, 19.05),  # position 18.05: 19 + .05 * (20 - 19)
        ([3.0, 1.0, 2.0], 0.5, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
        ([7.0], 0.95, 7.0),
        ([], 0.95, None),
    ],
)
def test_quantile_interpolates_like_numpy(values, q, expected):
    assert quantile(values, q) == (pytest.approx(expected) if expected is not None else None)


def test_binomial_pmf():
    assert binomial_pmf(2, 4, 0.5) == pytest.approx(0.375)
    assert binomial_pmf(20, 20, 0.95) == pytest.approx(0.95**20)
    assert binomial_pmf(0, 3, 0.0) == 1.0 and binomial_pmf(1, 3, 0.0) == 0.0
    assert binomial_pmf(3, 3, 1.0) == 1.0


@pytest.mark.parametrize(
    ("n", "ranks"),
    [
        # B(16; 20, .95) = 1 - P(17..20) = 1 - .0596 - .1887 - .3774 - .3585 = .0159 <= .025,
        # B(17) = .0755 > .025; B(19) = 1 - .95^20 = .6415 < .975: no upper rank.
        (20, (17, None)),
        (71, (63, None)),  # .95^71 = .0262 > .025: still no upper rank
        (72, (64, 72)),  # .95^72 = .0249: the largest value bounds the p95 from here
        (100, (90, 100)),
        (1000, (936, 964)),
    ],
)
def test_order_statistic_ranks_of_the_p95(n, ranks):
    assert order_ranks(n, 0.95, 0.95) == ranks


def test_order_statistic_ranks_count_a_cdf_exactly_at_the_tail_as_far_enough():
    # Binomial(2, 1/2): B(0) = 1/4, exactly the tail of a 50% interval.
    assert order_ranks(2, 0.5, 0.5)[0] == 1
    # Binomial(1, 1/2): B(0) = 1/2, exactly 1 - tail when the confidence is 0.
    assert order_ranks(1, 0.5, 0.0) == (1, 1)


def test_wilson_top_is_exactly_1_when_every_trial_succeeds():
    # Computed, 6 of 6 at 90% would be 0.9999999999999999.
    assert wilson(6, 6, 0.90) == (pytest.approx(0.6892, abs=1e-4), 1.0)


def test_order_statistic_ranks_agree_with_scipy():
    from scipy.stats import binom

    for n in (123, 400, 1000):
        low, high = order_ranks(n, 0.95, 0.99)
        assert binom.cdf(low - 1, n, 0.95) <= 0.005 < binom.cdf(low, n, 0.95)
        assert binom.cdf(high - 2, n, 0.95) < 0.995 <= binom.cdf(high - 1, n, 0.95)


def test_quantile_interval_takes_those_order_statistics():
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert quantile_interval(values, 0.95, 0.95) == (90.0, 100.0)
    assert quantile_interval(values[:20], 0.95, 0.95) == (97.0, None)  # 81..100: 17th is 97
    assert quantile_interval([], 0.95, 0.95) == (None, None)


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        ((2.0, 4.0), (1.0, 2.0), (1.0, 4.0)),
        ((None, 4.0), (1.0, 2.0), (0.0, 4.0)),
        ((2.0, None), (1.0, 2.0), (1.0, None)),
        ((2.0, 4.0), (1.0, None), (0.0, 4.0)),
        ((2.0, 4.0), (None, 2.0), (1.0, None)),
        ((2.0, 4.0), (0.0, 2.0), (1.0, None)),
    ],
)
def test_ratio_interval(numerator, denominator, expected):
    assert ratio_interval(numerator, denominator) == expected


# --- each limit, both sides of its boundary ----------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "status"),
    [
        (-0.02, 0.01, MET),  # the top on the limit is within it
        (-0.02, 0.0099, MET),
        (-0.02, 0.0101, UNDECIDED),
        (0.01, 0.05, UNDECIDED),  # the bottom on the limit is not beyond it
        (0.0101, 0.05, BROKEN),
        (None, 0.005, MET),
        (None, 0.05, UNDECIDED),
        (0.02, None, BROKEN),
        (-0.02, None, UNDECIDED),
    ],
)
def test_at_most(low, high, status):
    judged = at_most("max_error_rate_increase", "error rate", Estimate(0.0, low, high), 0.01, ".4f")
    assert judged.status == status
    assert judged.threshold == 0.01 and judged.limit == "max_error_rate_increase"


def test_at_most_says_why():
    estimate = Estimate(0.004, -0.002, 0.013)
    judged = at_most("max_error_rate_increase", "error rate change", estimate, 0.01, "+.4f")
    assert judged.reason == (
        "error rate change +0.0040 [-0.0020, +0.0130] straddles +0.0100: undecided"
    )
    judged = at_most("max_p95_ratio", "p95 ratio", Estimate(None, 0.0, None), 1.5, ".3f")
    assert judged.reason == "p95 ratio n/a [0.000, ∞] straddles 1.500: undecided"
    broken = at_most("x", "share", Estimate(0.5, 0.3, 0.7), 0.1, ".2f")
    assert broken.reason == "share 0.50 [0.30, 0.70] > 0.10"
    met = at_most("x", "error rate change", Estimate(0.001, None, 0.005), 0.01, "+.4f")
    assert met.reason == "error rate change +0.0010 [-∞, +0.0050] ≤ +0.0100"


@pytest.mark.parametrize(
    ("low", "high", "status"),
    [
        (-0.1, 0.1, MET),  # both ends on the band are within it
        (-0.05, 0.05, MET),
        (-0.1001, 0.05, UNDECIDED),
        (-0.05, 0.1001, UNDECIDED),
        (0.1, 0.3, UNDECIDED),  # on the band's edge: not beyond
        (0.1001, 0.3, BROKEN),
        (-0.3, -0.1, UNDECIDED),
        (-0.3, -0.1001, BROKEN),
        (-0.3, 0.3, UNDECIDED),
        (None, 0.05, UNDECIDED),
        (-0.05, None, UNDECIDED),
        (0.2, None, BROKEN),
        (None, -0.2, BROKEN),
    ],
)
def test_within(low, high, status):
    judged = within("max_high_risk_share_change", "share", Estimate(0.0, low, high), 0.1, "+.3f")
    assert judged.status == status
    assert judged.threshold == 0.1 and judged.limit == "max_high_risk_share_change"


def test_within_says_why():
    judged = within("m", "high-risk share change", Estimate(0.02, -0.03, 0.07), 0.1, "+.3f")
    assert judged.reason == "high-risk share change +0.020 [-0.030, +0.070] within ±0.100"
    judged = within("m", "change", Estimate(-0.3, -0.4, -0.2), 0.1, "+.3f")
    assert judged.reason == "change -0.300 [-0.400, -0.200] outside ±0.100"
    judged = within("m", "change", Estimate(0.1, None, 0.15), 0.1, "+.3f")
    assert judged.reason == "change +0.100 [-∞, +0.150] reaches past ±0.100: undecided"


# --- the verdict -------------------------------------------------------------------------


def _judged(status: str, name: str = "max_p95_ratio") -> Judgement:
    return Judgement(name, status, Estimate(1.0, 0.9, 1.1), 1.5, f"{name} is {status}")


ENOUGH = {"stable": 200, "canary": 200}


@pytest.mark.parametrize(
    ("predictions", "statuses", "expected"),
    [
        (ENOUGH, [MET, MET, MET, SKIPPED], PROMOTE),
        (ENOUGH, [MET, MET, MET, MET], PROMOTE),
        (ENOUGH, [MET, UNDECIDED, MET, SKIPPED], WAIT),
        (ENOUGH, [MET, BROKEN, MET, SKIPPED], ABORT),
        (ENOUGH, [UNDECIDED, BROKEN, UNDECIDED, UNDECIDED], ABORT),  # broken beats undecided
        ({"stable": 200, "canary": 199}, [MET, MET, MET, MET], WAIT),
        ({"stable": 199, "canary": 200}, [MET, MET, MET, MET], WAIT),
        ({"stable": 199, "canary": 20}, [BROKEN, MET, MET, MET], ABORT),  # broken: at once
        ({"stable": 5000, "canary": 0}, [UNDECIDED] * 4, WAIT),
    ],
)
def test_verdict_branches(predictions, statuses, expected):
    judgements = [_judged(status, f"limit{i}") for i, status in enumerate(statuses)]
    assert verdict(predictions, 200, judgements)[0] == expected


def test_wait_says_how_many_more_predictions_each_route_needs():
    decided, reasons = verdict({"stable": 250, "canary": 37}, 200, [_judged(UNDECIDED)])
    assert decided == WAIT
    assert reasons == ["canary has 37 of 200 predictions: 163 more needed"]
    _, reasons = verdict({"stable": 0, "canary": 1}, 200, [])
    assert reasons == [
        "stable has 0 of 200 predictions: 200 more needed",
        "canary has 1 of 200 predictions: 199 more needed",
    ]


def test_the_reasons_name_the_deciding_limits():
    judgements = [_judged(MET, "a"), _judged(UNDECIDED, "b"), _judged(BROKEN, "c")]
    assert verdict(ENOUGH, 200, judgements) == (ABORT, ["c: c is broken"])
    assert verdict(ENOUGH, 200, judgements[:2]) == (WAIT, ["b: b is undecided"])
    assert verdict(ENOUGH, 200, judgements[:1]) == (PROMOTE, ["a: a is met"])


# --- judge: the limits on two routes' samples --------------------------------------------


def _sample(
    batches: int = 0,
    failed: int = 0,
    latency: float = 5.0,
    latencies: list[float] | None = None,
    answered: int | None = None,
    high_risk: int = 0,
    positives: int = 0,
    caught: int = 0,
) -> Sample:
    """A route with ``batches`` answered batches (of ``latencies``) and ``failed`` failed ones."""
    times = latencies if latencies is not None else [latency] * batches
    found = Sample("1", answered=len(times) if answered is None else answered)
    found.high_risk, found.positives, found.caught = high_risk, positives, caught
    found.batches = {(f"ok{i}", value): False for i, value in enumerate(times)}
    found.batches |= {(f"failed{i}", 1.0): True for i in range(failed)}
    found.predictions = found.answered + failed
    return found


def _by_limit(stable: Sample, candidate: Sample, labelled: bool = False) -> dict[str, Judgement]:
    return {j.limit: j for j in judge(stable, candidate, Canary(), labelled)}


def test_limit_level_splits_the_confidence_over_the_limits_judged():
    assert limit_level(0.95, labelled=True) == pytest.approx(0.9875)
    assert limit_level(0.95, labelled=False) == pytest.approx(1 - 0.05 / 3)


@pytest.mark.parametrize(
    ("stable_failed", "canary_failed", "batches", "status"),
    [
        (0, 0, 2000, MET),  # upper bound of 0/2000 vs 0/2000 at 98.3%: .0029
        (0, 0, 200, UNDECIDED),  # .0279: too few to tell
        (0, 100, 400, BROKEN),  # +.25
        (100, 0, 400, MET),  # the candidate fails less: fine
    ],
)
def test_error_rate_limit(stable_failed, canary_failed, batches, status):
    stable = _sample(batches - stable_failed, stable_failed)
    candidate = _sample(batches - canary_failed, canary_failed)
    judged = _by_limit(stable, candidate)["max_error_rate_increase"]
    assert judged.status == status
    level = limit_level(0.95, False)
    expected = newcombe(canary_failed, batches, stable_failed, batches, level)
    assert (judged.estimate.low, judged.estimate.high) == pytest.approx(expected)
    assert judged.estimate.value == pytest.approx((canary_failed - stable_failed) / batches)


def test_error_rate_counts_batches_not_rows():
    stable = _sample(1000)
    candidate = _sample(999, failed=1)
    candidate.predictions += 999  # one failed batch of a thousand rows is still one failure
    judged = _by_limit(stable, candidate)["max_error_rate_increase"]
    assert judged.estimate.value == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("canary_scale", "n", "status"),
    [
        (1.0, 2000, MET),
        (1.4, 2000, MET),
        (1.6, 2000, BROKEN),
        (3.0, 500, BROKEN),
        (1.0, 20, UNDECIDED),  # no upper bound of either p95 from 20 batches
        (0.5, 2000, MET),
    ],
)
def test_p95_ratio_limit(canary_scale, n, status):
    base = [1.0 + i / n for i in range(n)]
    stable = _sample(latencies=base)
    candidate = _sample(latencies=[v * canary_scale for v in base])
    judged = _by_limit(stable, candidate)["max_p95_ratio"]
    assert judged.status == status
    assert judged.estimate.value == pytest.approx(canary_scale)


def test_p95_ratio_interval_is_the_two_quantile_intervals_split():
    stable = _sample(latencies=[float(v) for v in range(1, 1001)])
    candidate = _sample(latencies=[2.0 * v for v in range(1, 1001)])
    judged = _by_limit(stable, candidate)["max_p95_ratio"]
    each = 1 - (1 - limit_level(0.95, False)) / 2
    low, high = order_ranks(1000, 0.95, each)
    assert (judged.estimate.low, judged.estimate.high) == pytest.approx(
        (2 * low / high, 2 * high / low)
    )


@pytest.mark.parametrize(
    ("stable_high", "canary_high", "status"),
    [
        (300, 300, MET),
        (300, 330, MET),  # +.03 ± .03
        (100, 500, BROKEN),  # +.40
        (500, 100, BROKEN),  # -.40: the band has two sides
        (300, 400, UNDECIDED),  # +.10 straddles the edge
        (400, 300, UNDECIDED),
    ],
)
def test_high_risk_share_limit(stable_high, canary_high, status):
    stable = _sample(1000, high_risk=stable_high)
    candidate = _sample(1000, high_risk=canary_high)
    judged = _by_limit(stable, candidate)["max_high_risk_share_change"]
    assert judged.status == status
    assert judged.estimate.value == pytest.approx((canary_high - stable_high) / 1000)


@pytest.mark.parametrize(
    ("stable_caught", "canary_caught", "status"),
    [
        (800, 990, MET),  # the candidate catches more
        (900, 900, MET),
        (950, 900, UNDECIDED),  # a drop of .05, right on the limit
        (990, 800, BROKEN),
    ],
)
def test_recall_limit_applies_with_labels(stable_caught, canary_caught, status):
    stable = _sample(1000, positives=1000, caught=stable_caught)
    candidate = _sample(1000, positives=1000, caught=canary_caught)
    judged = _by_limit(stable, candidate, labelled=True)["max_recall_drop"]
    assert judged.status == status
    assert judged.estimate.value == pytest.approx((stable_caught - canary_caught) / 1000)
    assert _by_limit(stable, candidate)["max_recall_drop"].status == SKIPPED


def test_recall_without_labelled_positives_is_undecided():
    judged = _by_limit(_sample(1000), _sample(1000), labelled=True)["max_recall_drop"]
    assert judged.status == UNDECIDED and judged.estimate.value is None


def test_a_candidate_that_always_fails_is_broken_on_errors_and_undecided_elsewhere():
    found = _by_limit(_sample(500), _sample(0, failed=500))
    assert found["max_error_rate_increase"].status == BROKEN
    assert found["max_p95_ratio"].status == UNDECIDED
    assert found["max_high_risk_share_change"].status == UNDECIDED


def test_route_figures_on_a_small_hand_computed_route():
    found = _sample(latencies=[float(v) for v in range(1, 16)], failed=5, high_risk=5)
    found.answered, found.positives, found.caught = 20, 20, 5
    figures = canary.route_figures(found, 0.95, labelled=True)
    assert (figures["predictions"], figures["batches"], figures["failed_batches"]) == (20, 20, 5)
    for key in ("error_rate", "high_risk_share", "recall"):  # 5 of 20 each
        assert figures[key]["value"] == 0.25
        assert [round(b, 4) for b in figures[key]["interval"]] == [0.1119, 0.4687]
    assert figures["recall"]["labelled_positives"] == 20
    # p95 at position 13.3: 14 + .3; B(11; 15, .95) = .0055 <= .025 < B(12) = .0362: the 12th
    assert figures["p95_latency_ms"] == {"value": pytest.approx(14.3), "interval": [12.0, None]}
    assert canary.route_figures(found, 0.95, labelled=False)["recall"] is None


def test_judge_with_labels_splits_the_confidence_four_ways_and_names_each_figure():
    stable = _sample(1000, high_risk=300, positives=100, caught=90)
    candidate = _sample(1000, failed=10, high_risk=330, positives=100, caught=85)
    found = _by_limit(stable, candidate, labelled=True)
    level = limit_level(0.95, labelled=True)  # .9875
    pairs = {
        "max_error_rate_increase": newcombe(10, 1010, 0, 1000, level),
        "max_high_risk_share_change": newcombe(330, 1000, 300, 1000, level),
        "max_recall_drop": newcombe(90, 100, 85, 100, level),
    }
    for name, expected in pairs.items():
        estimate = found[name].estimate
        assert (estimate.low, estimate.high) == pytest.approx(expected)
    starts = {
        "max_error_rate_increase": "error rate change +0.0099 [",  # 10 / 1010
        "max_p95_ratio": "p95 latency ratio 1.000 [",
        "max_high_risk_share_change": "high-risk share change +0.0300 [",
        "max_recall_drop": "recall drop +0.0500 [",  # .90 - .85
    }
    for name, start in starts.items():
        assert found[name].reason.startswith(start), found[name].reason
    assert found["max_recall_drop"].threshold == 0.05


def test_route_figures_bound_the_p95_from_100_batches():
    figures = canary.route_figures(
        _sample(latencies=[float(v) for v in range(1, 101)]), 0.95, False
    )
    # position 94.05: 95 + .05; the 90th and 100th values bound it (as quantile_interval pins)
    assert figures["p95_latency_ms"] == {"value": pytest.approx(95.05), "interval": [90.0, 100.0]}


def test_route_figures_of_an_empty_route_say_nothing_is_known():
    figures = canary.route_figures(_sample(), 0.95, labelled=True)
    assert figures["error_rate"] == {"value": None, "interval": [0.0, 1.0]}
    assert figures["p95_latency_ms"] == {"value": None, "interval": [None, None]}
    assert figures["recall"]["value"] is None


# --- the prediction log, as the service writes it ----------------------------------------


class FixedModel:
    """Answers one probability for every row; raises while ``broken``."""

    broken = False

    def __init__(self, probability: float) -> None:
        self.probability = probability

    def predict_proba(self, frame):
        import numpy as np

        if self.broken:
            raise RuntimeError("out of memory")
        return np.tile([1 - self.probability, self.probability], (len(frame), 1))

    def predict(self, frame):
        import numpy as np

        return np.full(len(frame), self.probability >= 0.5)


VALID = {
    "release_id": "REL-1",
    "release_date": "2026-07-27",
    "team": "mobile",
    "code_changes": 123,
    "files_modified": 6,
    "past_defects": 13,
    "test_coverage": 63.7,
    "release_frequency": 3.7,
    "historical_failure_rate": 0.118,
}


def _releases(start: int, count: int) -> list[dict]:
    return [{**VALID, "release_id": f"REL-{i}"} for i in range(start, start + count)]


def _canary_manifest(directory: Path, percent: float = 50, mode: str = "canary") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        environment="staging",
        model="release-risk",
        version=1,
        digest=DIGEST1,
        rollout={
            "mode": mode,
            "candidate_version": 2 if mode != "none" else None,
            "canary_percent": percent if mode == "canary" else 0,
        },
    )
    path = directory / "staging.yaml"
    path.write_text(render_manifest(manifest))
    return path


@pytest.fixture
def served_log(tmp_path) -> Path:
    """A log written by PredictionLog (rotated) from Scorers: stable alone first, then a 50%
    canary whose candidate fails one batch, a shadow, another version, a torn line."""
    logs = tmp_path / "logs"
    log = PredictionLog(logs, max_bytes=30_000, keep=100)
    stable, candidate = FixedModel(0.2), FixedModel(0.9)
    models = {"1": stable, "2": candidate}
    alone = Scorer(CONFIG, Deployment("staging", "release-risk", "1"), models, log.append)
    alone.predict(_releases(10_000, 30))  # before the canary: left out
    time.sleep(0.01)
    deployment = Deployment("staging", "release-risk", "1", "canary", "2", 50)
    scorer = Scorer(CONFIG, deployment, models, log.append)
    for batch in range(30):
        scorer.predict(_releases(batch * 10, 10))
        time.sleep(0.002)
    candidate.broken = True
    with pytest.raises(RuntimeError):
        scorer.predict(_releases(300, 10))
    candidate.broken = False
    shadow = Deployment("staging", "release-risk", "1", "shadow", "2")
    Scorer(CONFIG, shadow, models, log.append).predict(_releases(400, 5))
    log.append([{**VALID, "route": "canary", "served": True, "model_version": "3"}])
    assert log.flush()
    log.close()
    assert len(list(logs.glob("predictions-*.jsonl"))) >= 2
    with (logs / "predictions.jsonl").open("a") as handle:
        handle.write('{"timestamp": "2026-07-01T12:00:00.000+00:00", "route": "can')
    return logs


def _expected_routes() -> dict[str, list[str]]:
    """The release ids each route answered in the canary's 30 batches (REL-0 … REL-299)."""
    ids = [f"REL-{i}" for i in range(300)]
    canary_ids = [i for i in ids if route(i, 50) == "canary"]
    return {"stable": [i for i in ids if i not in canary_ids], "canary": canary_ids}


def _batches_with(route_name: str, groups: range) -> int:
    """How many of the ten-release batches ``groups`` had a row on ``route_name``."""
    return sum(
        any(route(f"REL-{i}", 50) == route_name for i in range(g * 10, g * 10 + 10)) for g in groups
    )


SHADOW_ROWS = 5  # the shadow deployment's stable rows are the stable version's, served


def test_the_report_reads_the_rollout_from_a_real_log(served_log, tmp_path):
    manifest = load_manifest(_canary_manifest(tmp_path / "environments"))
    config = CONFIG.model_copy(update={"canary": Canary(min_predictions=100)})
    document = canary.canary_report("staging", config, manifest, served_log)
    expected = _expected_routes()
    failed_canary = sum(route(f"REL-{i}", 50) == "canary" for i in range(300, 310))
    stable, candidate = document["routes"]["stable"], document["routes"]["canary"]
    assert stable["predictions"] == len(expected["stable"]) + SHADOW_ROWS  # not the 30 before
    assert candidate["predictions"] == len(expected["canary"]) + failed_canary
    assert candidate["errors"] == failed_canary
    assert _batches_with("stable", range(30)) == 29  # batch 17 went to the canary whole
    assert (candidate["batches"], candidate["failed_batches"]) == (31, 1)
    assert (stable["batches"], stable["failed_batches"]) == (30, 0)  # 29 and the shadow's
    assert stable["high_risk_share"]["value"] == 0.0
    assert candidate["high_risk_share"]["value"] == 1.0
    assert document["records"]["unreadable"] == 1
    assert document["records"]["used"] == stable["predictions"] + candidate["predictions"]
    assert document["records"]["read"] == 30 + 300 + failed_canary + 10 + 1 + 1
    assert document["schema"] == "slipway.canary/1"
    assert document["verdict"] == ABORT  # the candidate calls every release high-risk
    [reason] = document["reasons"]
    assert reason.startswith("max_high_risk_share_change: high-risk share change +1.0000")
    # The p95 of the stable route's batch latencies as logged, one per batch (its rows share it):
    # the canary's batches and the shadow's, not the batch before the canary.
    stable_ids = {*expected["stable"], *(f"REL-{i}" for i in range(400, 400 + SHADOW_ROWS))}
    logged = [
        json.loads(line)
        for path in sorted(served_log.glob("predictions*.jsonl"))
        for line in path.read_text().splitlines()
        if line.endswith("}")
    ]
    batches = {
        (r["timestamp"], r["latency_ms"])
        for r in logged
        if r.get("route") == "stable" and r.get("release_id") in stable_ids
    }
    assert len(batches) == stable["batches"] == 30
    assert stable["p95_latency_ms"]["value"] == pytest.approx(
        float(np.percentile([latency for _at, latency in batches], 95)), rel=1e-12
    )
    assert stable["p95_latency_ms"]["interval"][1] is None  # 30 batches cannot bound a p95
    assert candidate["recall"] is None


def test_with_labels_recall_is_judged_per_release(served_log, tmp_path):
    manifest = load_manifest(_canary_manifest(tmp_path / "environments"))
    labels = tmp_path / "labels.csv"
    rows = ["release_id,high_risk"] + [f"REL-{i},{i % 2}" for i in range(500)]
    labels.write_text("\n".join([*rows, "REL-9999,"]) + "\n")  # an empty label: not yet known
    document = canary.canary_report("staging", CONFIG, manifest, served_log, labels)
    expected = _expected_routes()
    odd = {route: sum(int(i.split("-")[1]) % 2 for i in ids) for route, ids in expected.items()}
    stable, candidate = document["routes"]["stable"], document["routes"]["canary"]
    odd["stable"] += sum(i % 2 for i in range(400, 400 + SHADOW_ROWS))
    assert stable["recall"]["labelled_positives"] == odd["stable"]
    assert stable["recall"]["value"] == 0.0  # stable never says high-risk
    assert candidate["recall"]["labelled_positives"] == odd["canary"]
    assert candidate["recall"]["value"] == 1.0
    recall = next(j for j in document["judgements"] if j["limit"] == "max_recall_drop")
    assert recall["value"] == -1.0 and recall["status"] == MET
    assert document["limit_confidence"] == pytest.approx(0.9875)
    # Fewer than 200 predictions per route, but the candidate always says high-risk: the
    # share's whole interval is past its limit, and that is enough to abort at once.
    assert document["verdict"] == ABORT
    assert [r.split(":")[0] for r in document["reasons"]] == ["max_high_risk_share_change"]


def test_stable_records_before_the_canary_and_after_now_are_left_out(served_log, tmp_path):
    manifest = load_manifest(_canary_manifest(tmp_path / "environments"))
    past = datetime(2000, 1, 1, tzinfo=UTC)
    document = canary.canary_report("staging", CONFIG, manifest, served_log, now=past)
    assert document["records"]["used"] == 0 and document["records"]["since"] is None
    assert document["verdict"] == WAIT
    assert document["generated_at"] == "2000-01-01T00:00:00+00:00"


def test_read_rollout_keeps_only_the_served_records_of_this_rollout(tmp_path):
    from slipway.promote.rollout_log import read_rollout

    def record(**changes):
        base = {
            "timestamp": "2026-07-01T12:00:00.000+00:00",
            "environment": "staging",
            "model": "release-risk",
            "model_version": "2",
            "route": "canary",
            "served": True,
            "release_id": "kept",
        }
        return {**base, **changes}

    records = [
        record(),
        record(route="stable", model_version="1"),
        record(timestamp="2026-07-01T12:00:01"),  # no zone: UTC
        record(route="stable", model_version="1", timestamp="2026-07-01T11:59:59.999+00:00"),
        record(model_version="1"),  # the stable version on the canary route
        record(route="stable", model_version="2"),
        record(route="shadow"),
        record(served=False),
        record(served="true"),
        record(model="other-model"),
        record(environment="production"),
        record(timestamp="2026-07-01T12:00:03+00:00"),  # after now
        record(release_id="slipway-smoke:REL-1"),  # a deploy's smoke test, not traffic
    ]
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = [json.dumps(r) for r in records] + ["[1, 2]", "{torn", json.dumps(record(timestamp=7))]
    (logs / "predictions-20260701T000000000000Z-000001.jsonl").write_text(lines[0] + "\n")
    (logs / "predictions.jsonl").write_text("\n".join(lines[1:]) + "\n")
    manifest = load_manifest(_canary_manifest(tmp_path / "environments"))
    now = datetime(2026, 7, 1, 12, 0, 2, tzinfo=UTC)
    chosen, seen = read_rollout(logs, manifest, now)
    assert [r["timestamp"] for r in chosen["canary"]] == [
        "2026-07-01T12:00:00.000+00:00",
        "2026-07-01T12:00:01",
    ]
    assert [r["model_version"] for r in chosen["stable"]] == ["1"]  # not the one before
    assert seen == {
        "read": len(lines),
        "unreadable": 3,
        "used": 3,
        "since": "2026-07-01T12:00:00+00:00",
    }
    assert read_rollout(tmp_path / "nothing", manifest, now)[1]["read"] == 0
    # A server started at 12:00:01 runs this rollout: what was logged before is another's.
    started = datetime(2026, 7, 1, 12, 0, 1, tzinfo=UTC)
    chosen, seen = read_rollout(logs, manifest, now, started)
    assert [r["timestamp"] for r in chosen["canary"]] == ["2026-07-01T12:00:01"]
    assert chosen["stable"] == [] and seen["since"] == "2026-07-01T12:00:01+00:00"
    assert (
        read_rollout(logs, manifest, now, started.replace(second=0))[0]
        == read_rollout(logs, manifest, now)[0]
    )  # exactly at the start counts


def test_the_report_document_names_the_rollout_and_counts_from_the_server_start(tmp_path):
    logs = tmp_path / "logs"
    _write_log(logs, {"stable": 5, "canary": 4}, failed=1, share=0.4)  # one a millisecond
    labels = tmp_path / "labels.csv"
    labels.write_text("release_id,high_risk\nstable-2,1\nstable-3,1\ncanary-2,1\ncanary-3,0\n")
    manifest = load_manifest(_canary_manifest(tmp_path / "environments", percent=25))
    now, started = START + timedelta(hours=1), START + timedelta(milliseconds=2)
    document = canary.canary_report("staging", CONFIG, manifest, logs, labels, now, started)
    assert {key: document[key] for key in list(document)[:10]} == {
        "schema": "slipway.canary/1",
        "environment": "staging",
        "model": "release-risk",
        "stable_version": "1",
        "candidate_version": "2",
        "canary_percent": 25.0,
        "log_dir": str(logs),
        "labels": str(labels),
        # stable-0, -1 and canary-0, -1 (the failed one) came before the server started
        "records": {
            "read": 9,
            "unreadable": 0,
            "used": 5,
            "since": "2026-07-01T12:00:00.002000+00:00",
        },
        "limits": CONFIG.canary.model_dump(),
    }
    assert document["limit_confidence"] == pytest.approx(0.9875)
    stable, candidate = document["routes"]["stable"], document["routes"]["canary"]
    assert (stable["predictions"], candidate["predictions"], candidate["errors"]) == (3, 2, 0)
    assert stable["recall"]["labelled_positives"] == 2 and candidate["recall"]["value"] == 1.0
    assert [j["limit"] for j in document["judgements"]] == [
        "max_error_rate_increase",
        "max_p95_ratio",
        "max_high_risk_share_change",
        "max_recall_drop",
    ]
    assert document["verdict"] == WAIT
    assert document["reasons"] == [
        "stable has 3 of 200 predictions: 197 more needed",
        "canary has 2 of 200 predictions: 198 more needed",
    ]
    assert document["generated_at"] == "2026-07-01T13:00:00+00:00"
    unlabelled = canary.canary_report("staging", CONFIG, manifest, logs, now=now)
    assert unlabelled["labels"] is None and unlabelled["records"]["used"] == 9
    assert unlabelled["limit_confidence"] == pytest.approx(1 - 0.05 / 3)
    assert unlabelled["routes"]["canary"]["recall"] is None


def test_write_report_writes_canary_json(tmp_path):
    document = {"schema": "slipway.canary/1", "verdict": WAIT, "reasons": ["±0.1000"]}
    path = canary.write_report(document, tmp_path)
    assert path == tmp_path / "canary.json"
    assert json.loads(path.read_text(encoding="utf-8")) == document


def test_a_report_on_no_canary_says_how_to_start_one(tmp_path):
    manifest = load_manifest(_canary_manifest(tmp_path / "environments", mode="none"))
    with pytest.raises(ConfigError) as raised:
        canary.canary_report("staging", CONFIG, manifest, tmp_path / "logs")
    assert raised.value.message == "staging runs no canary (rollout mode none)"
    assert raised.value.hint == (
        "set rollout.mode: canary with a candidate_version in environments/staging.yaml, "
        "or report on an environment that runs one"
    )


def test_a_manifest_without_a_canary_is_a_config_error(served_log, tmp_path):
    for mode in ("none", "shadow"):
        manifest = load_manifest(_canary_manifest(tmp_path / mode, mode=mode))
        with pytest.raises(ConfigError, match=f"runs no canary \\(rollout mode {mode}\\)"):
            canary.canary_report("staging", CONFIG, manifest, served_log)


def test_sample_counts_each_labelled_release_once_by_its_last_answer():
    def record(release, high_risk, at):
        return {
            "timestamp": at,
            "release_id": release,
            "latency_ms": 1.0,
            "output": {"high_risk": high_risk, "probability": 0.5},
        }

    records = [record("A", False, "t1"), record("A", True, "t2"), record("B", True, "t2")]
    found = sample("2", records, {"A": True, "B": False})
    assert (found.predictions, found.answered, found.high_risk) == (3, 3, 2)
    assert (found.positives, found.caught) == (1, 1)
    assert len(found.batches) == 2 and found.latencies() == [1.0, 1.0]


def test_a_record_without_latency_counts_but_is_not_timed():
    records = [{"timestamp": "t", "release_id": "A", "output": {"high_risk": True}}]
    found = sample("1", records, {})
    assert found.answered == 1 and found.latencies() == []


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_labels_from_csv_or_json_lines(tmp_path, suffix):
    path = tmp_path / f"labels{suffix}"
    if suffix == ".csv":
        path.write_text("release_id,high_risk,team\nA,1,x\nB,0,y\nC,,z\nA,1,x\n")
    else:
        lines = [
            {"release_id": "A", "high_risk": True},
            {"release_id": "B", "high_risk": 0},
            {"release_id": "C", "high_risk": None},
        ]
        path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    assert read_labels(path, "release_id", "high_risk", 1) == {"A": True, "B": False}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("release_id,high_risk\nA,1\nA,0\n", "labels A both ways"),
        ("release_id,label\nA,1\n", "row 1 lacks `release_id` or `high_risk`"),
    ],
)
def test_labels_that_cannot_be_used_are_data_errors(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_labels(path, "release_id", "high_risk", 1)
    with pytest.raises(DataError, match="no labels file"):
        read_labels(tmp_path / "missing.csv", "release_id", "high_risk", 1)
    bad = tmp_path / "labels.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(DataError, match="is not JSON lines"):
        read_labels(bad, "release_id", "high_risk", 1)


def test_render_shows_the_figures_the_limits_and_the_verdict(served_log, tmp_path):
    manifest = load_manifest(_canary_manifest(tmp_path / "environments"))
    lines = canary.render(canary.canary_report("staging", CONFIG, manifest, served_log))
    stable = len(_expected_routes()["stable"]) + SHADOW_ROWS
    assert lines[0].startswith(f"stable v1: {stable} predictions, 0 errors in 0 of 30 batches;")
    assert "high-risk share 0.000 [0.000, 0.0" in lines[0] and " ms, " in lines[0]
    assert lines[1].startswith("canary v2: ") and "errors in 1 of 31 batches" in lines[1]
    assert "   skipped  max_recall_drop: no labels given (--labels): not judged" in lines
    assert "verdict: abort" in lines
    [reason] = [line for line in lines if line.startswith("  - ")]
    assert reason.startswith("  - max_high_risk_share_change: ") and "outside ±0.1000" in reason


def test_render_lines_of_a_hand_written_document():
    document = {
        "routes": {
            "stable": {
                "version": "1",
                "predictions": 20,
                "errors": 6,
                "batches": 20,
                "failed_batches": 5,
                "error_rate": {"value": 0.25, "interval": [0.11186, 0.46868]},
                "p95_latency_ms": {"value": 14.3, "interval": [12.0, None]},
                "high_risk_share": {"value": 0.2, "interval": [0.11186, 0.46868]},
                "recall": {"value": 0.6, "interval": [0.4, 0.75], "labelled_positives": 15},
            },
            "canary": {
                "version": "2",
                "predictions": 0,
                "errors": 0,
                "batches": 0,
                "failed_batches": 0,
                "error_rate": {"value": None, "interval": [0.0, 1.0]},
                "p95_latency_ms": {"value": None, "interval": [None, None]},
                "high_risk_share": {"value": None, "interval": [0.0, 1.0]},
                "recall": None,
            },
        },
        "judgements": [
            {"status": MET, "limit": "max_p95_ratio", "reason": "fine"},
            {"status": UNDECIDED, "limit": "max_recall_drop", "reason": "unsure"},
        ],
        "verdict": WAIT,
        "reasons": ["canary has 0 of 200 predictions: 200 more needed", "second"],
    }
    assert canary.render(document) == [
        "stable v1: 20 predictions, 6 errors in 5 of 20 batches; error rate 0.2500 "
        "[0.1119, 0.4687], p95 14.30 [12.00, ∞] ms, high-risk share 0.200 [0.112, 0.469]",
        "  recall 0.600 [0.400, 0.750] on 15 labelled positives",
        "canary v2: 0 predictions, 0 errors in 0 of 0 batches; error rate n/a [0.0000, 1.0000], "
        "p95 n/a [-∞, ∞] ms, high-risk share n/a [0.000, 1.000]",
        "       met  max_p95_ratio: fine",
        " undecided  max_recall_drop: unsure",
        "verdict: wait",
        "  - canary has 0 of 200 predictions: 200 more needed",
        "  - second",
    ]


# --- finishing and aborting: the manifest rewrites ---------------------------------------


def _changed(before: str, after: str) -> list[str]:
    return [b for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]


def test_finish_makes_the_candidate_stable_and_ends_the_rollout(tmp_path, versions, registry):
    versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST1})
    versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST2})
    path = _canary_manifest(tmp_path / "environments", percent=10)
    before = path.read_text()
    done = canary.finish(path, registry)
    after = path.read_text()
    assert [line.split("#")[0].strip() for line in _changed(before, after)] == [
        "version: 2",
        f"digest: {DIGEST2}",
        "mode: none",
        "candidate_version: null",
        "canary_percent: 0",
    ]
    assert all("  # " in line for line in _changed(before, after))  # comments kept
    assert done["title"] == "Finish the canary: release-risk v2 to staging"
    assert (done["from_version"], done["version"], done["digest"]) == (1, 2, DIGEST2)
    assert done["manifest"].rollout.mode == "canary" and done["path"] == str(path)
    assert done["tags"]["slipway.digest"] == DIGEST2 and done["run_id"]
    assert len(done["diff"]) == 5 and done["environment"] == "staging"


@pytest.mark.parametrize(
    ("tags", "reason"),
    [
        ({"slipway.digest": DIGEST2}, "v2 was never gated"),
        ({"slipway.gate": "fail", "slipway.digest": DIGEST2}, "v2's gate verdict is fail"),
        ({"slipway.gate": "pass"}, "v2 has no Bento; run `slipway package`"),
    ],
)
def test_finish_refuses_a_candidate_not_gated_or_packaged(
    tmp_path, versions, registry, tags, reason
):
    versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST1})
    versions(**tags)
    path = _canary_manifest(tmp_path / "environments")
    before = path.read_bytes()
    with pytest.raises(PromotionError, match=reason):
        canary.finish(path, registry)
    assert path.read_bytes() == before


def test_abort_ends_the_rollout_and_keeps_the_stable_version(tmp_path, versions, registry):
    versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST1, "slipway.owners": "alice"})
    path = _canary_manifest(tmp_path / "environments", percent=25)
    before = path.read_text()
    done = canary.abort(path)
    assert [line.split("#")[0].strip() for line in _changed(before, path.read_text())] == [
        "mode: none",
        "candidate_version: null",
        "canary_percent: 0",
    ]
    assert done["title"] == "Abort the canary of release-risk v2 in staging"
    assert (done["from_version"], done["version"], done["digest"]) == (1, 1, DIGEST1)
    assert (done["tags"], done["run_id"]) == ({}, None)
    path = _canary_manifest(tmp_path / "again")
    assert canary.abort(path, registry)["tags"]["slipway.owners"] == "alice"


def test_finish_of_a_candidate_neither_gated_nor_packaged_gives_both_reasons(
    tmp_path, versions, registry
):
    versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST1})
    versions()
    path = _canary_manifest(tmp_path / "environments")
    before = path.read_bytes()
    with pytest.raises(PromotionError) as raised:
        canary.finish(path, registry)
    assert raised.value.message == (
        "the canary is not finished: v2 was never gated; run `slipway gate`; "
        "v2 has no Bento; run `slipway package`"
    )
    assert raised.value.hint == "gate and package the candidate first, or abort the canary"
    assert path.read_bytes() == before


def test_finish_and_abort_carry_the_registry_versions_tags_and_runs(tmp_path, versions, registry):
    stable_tags = {"slipway.gate": "pass", "slipway.digest": DIGEST1, "slipway.owners": "alice"}
    candidate_tags = {"slipway.gate": "pass", "slipway.digest": DIGEST2}
    versions(**stable_tags)
    versions(**candidate_tags)
    runs = {v: registry.get("release-risk", v).run_id for v in ("1", "2")}
    assert None not in runs.values() and runs["1"] != runs["2"]
    aborted = canary.abort(_canary_manifest(tmp_path / "aborted"), registry)
    assert (aborted["tags"], aborted["run_id"]) == (stable_tags, runs["1"])
    finished = canary.finish(_canary_manifest(tmp_path / "finished"), registry)
    assert (finished["tags"], finished["run_id"]) == (candidate_tags, runs["2"])
    pairs = [entry.split("\n") for entry in finished["diff"]]
    assert [(old.split("#")[0].strip(), new.split("#")[0].strip()) for old, new in pairs] == [
        ("-version: 1", "+version: 2"),
        (f"-digest: {DIGEST1}", f"+digest: {DIGEST2}"),
        ("-  mode: canary", "+  mode: none"),
        ("-  candidate_version: 2", "+  candidate_version: null"),
        ("-  canary_percent: 50.0", "+  canary_percent: 0"),
    ]


def test_finishing_or_aborting_no_canary_is_a_config_error(tmp_path, registry):
    path = _canary_manifest(tmp_path / "environments", mode="shadow")
    for act in (lambda: canary.finish(path, registry), lambda: canary.abort(path)):
        with pytest.raises(ConfigError, match="runs no canary"):
            act()


# --- the command line --------------------------------------------------------------------


def _write_log(
    directory: Path, batches: dict[str, int], failed: int = 0, share=0.3, candidate: str = "2"
) -> None:
    """Single-record batches on both routes, the same latencies and high-risk share; the
    candidate fails ``failed`` of its batches."""
    log = PredictionLog(directory)
    for route_name, count in batches.items():
        version = "1" if route_name == "stable" else candidate
        records = []
        for i in range(count):
            at = (START + timedelta(milliseconds=i)).isoformat(timespec="milliseconds")
            record = {
                "timestamp": at,
                "environment": "staging",
                "model": "release-risk",
                "model_version": version,
                "route": route_name,
                "served": True,
                "request_id": f"{route_name}-{i}",
                "release_id": f"{route_name}-{i}",
                "features": {},
                "imputed": [],
                "output": {"high_risk": i % 10 < share * 10, "probability": 0.5},
                "latency_ms": 4.0 + (i % 50) / 10,
            }
            if route_name == "canary" and i < failed:
                record = {**record, "output": None, "error": "RuntimeError: boom"}
            records.append(record)
        log.append(records)
    assert log.flush()
    log.close()


def _git(cwd: Path, *args: str) -> None:
    identity = ["-c", "user.name=Slipway Tests", "-c", "user.email=tests@example.com"]
    subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def cli(tmp_path, project, tracking_uri, versions, monkeypatch):
    """A repository with a canary manifest (v1 stable, v2 at 50%), both versions gated and
    packaged, and SLIPWAY_LOG_DIR pointing at an empty log."""
    for name in ("GITHUB_TOKEN", "GH_TOKEN", "GITHUB_REPOSITORY"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "repo"
    shutil.copytree(REPO / "environments", root / "environments")
    _canary_manifest(root / "environments")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "canary")
    versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST1})
    versions(**{"slipway.gate": "pass", "slipway.digest": DIGEST2, "slipway.owners": "alice"})
    logs = tmp_path / "logs"
    monkeypatch.setenv("SLIPWAY_LOG_DIR", str(logs))
    output = tmp_path / "github-output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    out = tmp_path / "out"
    args = [
        "--config",
        str(project),
        "--out",
        str(out),
        "--environments",
        str(root / "environments"),
    ]

    return SimpleNamespace(
        root=root,
        logs=logs,
        output=output,
        out=out,
        args=args,
        manifest=root / "environments" / "staging.yaml",
    )


def test_cli_report_prints_writes_the_json_and_the_verdict_output(cli, capsys):
    _write_log(cli.logs, {"stable": 300, "canary": 300}, failed=60)
    assert main(["canary-report", "staging", *cli.args]) == 0
    out = capsys.readouterr().out
    assert "stable v1: 300 predictions" in out and "canary v2: 300 predictions" in out
    assert "verdict: abort" in out and "max_error_rate_increase: error rate change +0.2000" in out
    document = json.loads((cli.out / "canary.json").read_text())
    assert document["schema"] == "slipway.canary/1" and document["verdict"] == ABORT
    assert "verdict=abort\n" in cli.output.read_text()
    assert document["routes"]["canary"]["errors"] == 60


def test_cli_json_prints_the_document(cli, capsys):
    _write_log(cli.logs, {"stable": 10, "canary": 10})
    assert main(["canary-report", "staging", *cli.args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == WAIT


def test_cli_apply_on_wait_changes_nothing(cli):
    _write_log(cli.logs, {"stable": 150, "canary": 10})
    before = cli.manifest.read_bytes()
    assert main(["canary-report", "staging", *cli.args, "--apply"]) == 0
    assert cli.manifest.read_bytes() == before
    assert not (cli.out / "canary-pr.md").exists()


def test_cli_apply_on_promote_finishes_the_canary_for_a_pull_request(cli, capsys):
    _write_log(cli.logs, {"stable": 800, "canary": 800})
    assert main(["canary-report", "staging", *cli.args, "--apply"]) == 0
    captured = capsys.readouterr()
    assert "verdict: promote" in captured.out
    assert "Finish the canary: release-risk v2 to staging" in captured.out
    manifest = load_manifest(cli.manifest)
    assert (manifest.version, manifest.digest, manifest.rollout.mode) == (2, DIGEST2, "none")
    text = (cli.out / "canary-pr.md").read_text()
    assert text.startswith("# Finish the canary: release-risk v2 to staging")
    lead = text.split("\n")[2]
    assert lead.startswith("Finishes the canary in **staging**: **v2** met every limit")
    assert "### Canary report" in text and "Promotes" not in text
    changes = text.split("### What changes")[1].split("###")[0]
    assert f"`digest` → `{DIGEST2}`" in changes and "the rollout ends" in changes
    assert "verdict=promote\n" in cli.output.read_text()


def test_cli_apply_on_promote_refuses_an_ungated_candidate(cli, versions, capsys):
    _write_log(cli.logs, {"stable": 800, "canary": 800}, candidate="3")
    versions(**{"slipway.digest": DIGEST2})  # v3, never gated
    cli.manifest.write_text(
        cli.manifest.read_text().replace("candidate_version: 2", "candidate_version: 3")
    )
    before = cli.manifest.read_bytes()
    assert main(["canary-report", "staging", *cli.args, "--apply"]) == 1
    assert "the canary is not finished: v3 was never gated" in capsys.readouterr().err
    assert cli.manifest.read_bytes() == before


def test_cli_apply_on_abort_rewrites_deploys_stable_then_opens_the_pull_request(
    cli, monkeypatch, capsys
):
    import slipway.commands.promote

    _write_log(cli.logs, {"stable": 300, "canary": 300}, failed=60)
    deployed = []

    def deploy(args):
        manifest = load_manifest(args.environments / f"{args.environment}.yaml")
        deployed.append((args.environment, manifest.version, manifest.rollout.mode, args.rows))
        assert not (cli.out / "canary-pr.md").exists()  # the deploy comes first
        return 0

    monkeypatch.setattr(slipway.commands.promote, "cmd_deploy", deploy)
    assert main(["canary-report", "staging", *cli.args, "--apply", "--rows", "7"]) == 0
    assert deployed == [("staging", 1, "none", 7)]
    manifest = load_manifest(cli.manifest)
    assert (manifest.version, manifest.digest, manifest.rollout.candidate_version) == (
        1,
        DIGEST1,
        None,
    )
    text = (cli.out / "canary-pr.md").read_text()
    assert text.startswith("# Abort the canary of release-risk v2 in staging")
    assert text.split("\n")[2].startswith("Aborts the canary of **v2** in **staging**")
    assert "already applied (v1 alone takes the traffic)" in text and "Promotes" not in text
    assert "the rollout ends (`mode` → none" in text and "`version` and `digest` stay" in text
    assert "### Gate" not in text and "rollback" not in text.split("### On merge")[1]
    assert "Abort the canary of release-risk v2 in staging" in capsys.readouterr().out


@pytest.mark.parametrize(("outcome", "code"), [(1, 1), (None, 2)])
def test_cli_abort_whose_redeploy_fails_is_not_applied_and_opens_nothing(
    cli, monkeypatch, capsys, outcome, code
):
    import slipway.commands.promote
    from slipway.errors import ServingError

    _write_log(cli.logs, {"stable": 300, "canary": 300}, failed=60)

    def deploy(_args):
        if outcome is None:
            raise ServingError("no Bento", "package it")
        return outcome

    monkeypatch.setattr(slipway.commands.promote, "cmd_deploy", deploy)
    before = cli.manifest.read_bytes()
    assert main(["canary-report", "staging", *cli.args, "--apply"]) == code
    # The canary still serves, as the manifest still says: no PR claims an abort.
    assert not (cli.out / "canary-pr.md").exists()
    assert cli.manifest.read_bytes() == before
    if outcome == 1:
        assert "the abort is NOT applied" in capsys.readouterr().err


def test_cli_bad_input_is_exit_2(cli, capsys, tmp_path):
    _write_log(cli.logs, {"stable": 10, "canary": 10})
    assert main(["canary-report", "staging", *cli.args, "--labels", str(tmp_path / "no.csv")]) == 2
    assert "no labels file" in capsys.readouterr().err


def test_cli_without_a_canary_says_so_and_exits_0(cli, capsys):
    # The schedule runs it whether a canary runs or not: no canary is nothing to decide.
    _canary_manifest(cli.manifest.parent, mode="none")
    before = cli.manifest.read_bytes()
    assert main(["canary-report", "staging", *cli.args, "--apply"]) == 0
    assert (
        "staging runs no canary (rollout mode none): nothing to decide" in capsys.readouterr().err
    )
    assert "verdict=none\n" in cli.output.read_text()
    assert cli.manifest.read_bytes() == before and not (cli.out / "canary.json").exists()


def test_cli_finish_opens_the_pull_request_on_the_canary_branch(cli, github):
    _write_log(cli.logs, {"stable": 800, "canary": 800})
    assert main(["canary-report", "staging", *cli.args, "--apply"]) == 0
    [pull] = [p for p in github.pulls.values() if p["head"]["ref"] == "slipway/canary-staging"]
    assert pull["title"] == "Finish the canary: release-risk v2 to staging"
    assert pull["state"] == "open" and pull["base"]["ref"] == "main"
    text = github.file("slipway/canary-staging", "environments/staging.yaml")
    assert text == cli.manifest.read_text() and "mode: none" in text


def test_cli_counts_only_what_the_running_rollout_logged(cli, capsys, monkeypatch, tmp_path):
    from slipway.fsutil import write_json
    from slipway.serve.server import server_state

    monkeypatch.setenv("SLIPWAY_HOME", str(tmp_path / "state"))
    _write_log(cli.logs, {"stable": 300, "canary": 300}, failed=60)  # a broken earlier canary
    rollout = load_manifest(cli.manifest).rollout.model_dump()
    later = (START + timedelta(hours=1)).isoformat()
    running = {"pid": 1, "url": "http://127.0.0.1:9", "version": "1", "rollout": rollout}
    write_json(server_state("staging"), {**running, "started_at": later})
    assert main(["canary-report", "staging", *cli.args, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["verdict"] == "wait" and document["records"]["used"] == 0
    # The server of another rollout (a different candidate) says nothing about this one.
    other = {**rollout, "candidate_version": 7}
    write_json(server_state("staging"), {**running, "rollout": other, "started_at": later})
    assert main(["canary-report", "staging", *cli.args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "abort"


def test_abort_without_a_registry_rewrites_only_the_rollout_and_describes_the_change(tmp_path):
    path = _canary_manifest(tmp_path / "environments", percent=25)
    before = path.read_text()
    done = canary.abort(path)
    after = path.read_text()
    rollout = load_manifest(path).rollout
    assert (rollout.mode, rollout.candidate_version, rollout.canary_percent) == ("none", None, 0)
    assert done["environment"] == "staging" and done["path"] == str(path)
    assert done["title"] == "Abort the canary of release-risk v2 in staging"
    assert (done["from_version"], done["version"], done["digest"]) == (1, 1, DIGEST1)
    assert (done["tags"], done["run_id"], done["before"]) == ({}, None, before)
    assert done["manifest"].rollout.mode == "canary"  # the manifest as it was
    pairs = [entry.split("\n") for entry in done["diff"]]  # "-old\n+new", one per changed line
    assert [(old.split("#")[0].strip(), new.split("#")[0].strip()) for old, new in pairs] == [
        ("-  mode: canary", "+  mode: none"),
        ("-  candidate_version: 2", "+  candidate_version: null"),
        ("-  canary_percent: 25.0", "+  canary_percent: 0"),
    ]
    assert len(after.splitlines()) == len(before.splitlines())


def test_abort_of_an_environment_without_a_canary_is_refused_and_writes_nothing(tmp_path):
    path = _canary_manifest(tmp_path / "environments", mode="shadow")
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="runs no canary") as raised:
        canary.abort(path)
    assert str(raised.value).startswith(f"{path} runs no canary (rollout mode shadow)")
    assert raised.value.hint == (
        "nothing to finish or abort; start a canary with rollout.mode: canary"
    )
    assert path.read_bytes() == before


def test_estimate_and_judgement_as_documents():
    estimate = Estimate(0.25, None, 0.5)
    assert estimate.to_dict() == {"value": 0.25, "interval": [None, 0.5]}
    judged = Judgement("max_p95_ratio", MET, estimate, 1.5, "why")
    assert judged.to_dict() == {
        "limit": "max_p95_ratio",
        "status": MET,
        "value": 0.25,
        "interval": [None, 0.5],
        "threshold": 1.5,
        "reason": "why",
    }
    assert canary.skipped("max_recall_drop", "no labels") == Judgement(
        "max_recall_drop", SKIPPED, Estimate(None, None, None), 0.0, "no labels"
    )
