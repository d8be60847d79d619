"""Quality gates: each verdict explains itself with value, threshold, baseline, delta, interval.

Statuses: ``pass``, ``fail``, ``inconclusive`` (the bootstrap interval straddles the limit,
so the eval set cannot tell signal from noise) and ``skipped`` (nothing to compare with).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from slipway.config import Gates
from slipway.propose.evaluation import HIGHER_IS_BETTER, interval

PASS, FAIL, INCONCLUSIVE, SKIPPED = "pass", "fail", "inconclusive", "skipped"


@dataclass(frozen=True)
class Verdict:
    gate: str
    metric: str
    status: str
    value: float | None
    threshold: float | None
    baseline: float | None
    delta: float | None
    interval: tuple[float, float] | None
    reason: str


def _delta(value: float | None, baseline: float | None) -> float | None:
    return None if value is None or baseline is None else value - baseline


def thresholds(
    gates: Gates, cand: dict, champ: dict | None, samples: dict, confidence: float
) -> list[Verdict]:
    """Absolute limits on the candidate's metrics (point estimates; interval shown)."""
    found = []
    for metric, limit in gates.thresholds.items():
        value = cand[metric]
        baseline = champ[metric] if champ else None
        ci = (
            interval(samples[f"cand.{metric}"], confidence) if f"cand.{metric}" in samples else None
        )
        problems = []
        if limit.min is not None and not value >= limit.min:
            problems.append(f"{metric} {value:.3f} is below the minimum {limit.min}")
        if limit.max is not None and not value <= limit.max:
            problems.append(f"{metric} {value:.3f} is above the maximum {limit.max}")
        bound = limit.min if limit.min is not None else limit.max
        wording = f"≥ {limit.min}" if limit.min is not None else f"≤ {limit.max}"
        reason = "; ".join(problems) or f"{metric} {value:.3f} meets {wording}"
        status = FAIL if problems else PASS
        found.append(
            Verdict(
                "threshold",
                metric,
                status,
                value,
                bound,
                baseline,
                _delta(value, baseline),
                ci,
                reason,
            )
        )
    return found


def regression(gates: Gates, cand: dict, champ: dict | None, samples: dict) -> list[Verdict]:
    """Paired bootstrap of candidate minus champion: fail only when the whole interval is
    worse than the tolerance, pass only when the whole interval is within it."""
    rules = gates.regression
    found = []
    for metric in rules.metrics:
        if champ is None:
            found.append(
                Verdict(
                    "regression",
                    metric,
                    SKIPPED,
                    cand[metric],
                    -rules.tolerance,
                    None,
                    None,
                    None,
                    "no production model yet: nothing to compare with",
                )
            )
            continue
        sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
        diffs = sign * (samples[f"cand.{metric}"] - samples[f"champ.{metric}"])
        low, high = interval(diffs, rules.confidence)
        delta = cand[metric] - champ[metric]
        level = f"{rules.confidence:.0%}"
        if low >= -rules.tolerance:
            status = PASS
            reason = f"no worse than production by more than {rules.tolerance} ({level} interval)"
        elif high < -rules.tolerance:
            status = FAIL
            reason = f"worse than production by more than {rules.tolerance} ({level} interval)"
        else:
            status = INCONCLUSIVE
            reason = (
                f"the {level} interval of the change [{low:+.3f}, {high:+.3f}] straddles "
                f"-{rules.tolerance}: the eval set cannot tell a regression from noise"
            )
        found.append(
            Verdict(
                "regression",
                metric,
                status,
                cand[metric],
                -rules.tolerance,
                champ[metric],
                delta,
                (sign * low, sign * high),
                reason,
            )
        )
    return found


def fairness(
    gates: Gates, cand_gap: float | None, champ_gap: float | None, samples: dict, confidence: float
) -> Verdict:
    """Largest recall difference between teams with enough positives."""
    rules = gates.fairness
    if cand_gap is None:
        return Verdict(
            "fairness",
            "recall_gap",
            SKIPPED,
            None,
            rules.max_gap,
            None,
            None,
            None,
            f"fewer than two groups with {rules.min_positives}+ positives",
        )
    ci = interval(samples["cand.recall_gap"], confidence) if "cand.recall_gap" in samples else None
    ok = cand_gap <= rules.max_gap
    reason = f"recall differs by {cand_gap:.3f} across teams ({'≤' if ok else '>'} {rules.max_gap})"
    return Verdict(
        "fairness",
        "recall_gap",
        PASS if ok else FAIL,
        cand_gap,
        rules.max_gap,
        champ_gap,
        _delta(cand_gap, champ_gap),
        ci,
        reason,
    )


def stability(gates: Gates, flip_rate: float | None, samples: dict, confidence: float) -> Verdict:
    """Share of eval rows whose decision differs from production's: every change, or with
    ``flips: negative`` only a right decision made wrong."""
    limit = gates.stability.max_flip_rate
    if flip_rate is None:
        return Verdict(
            "stability",
            "flip_rate",
            SKIPPED,
            None,
            limit,
            None,
            None,
            None,
            "no production model yet: nothing to compare with",
        )
    ci = interval(samples["flip_rate"], confidence)
    ok = flip_rate <= limit
    changes = "change from right to wrong" if gates.stability.flips == "negative" else "change"
    mark = "≤" if ok else ">"
    reason = f"{flip_rate:.1%} of decisions {changes} vs production ({mark} {limit:.0%})"
    return Verdict(
        "stability", "flip_rate", PASS if ok else FAIL, flip_rate, limit, 0.0, flip_rate, ci, reason
    )


def measure_latency(
    model: Any, features: pd.DataFrame, calls: int, clock: Callable[[], float] = time.perf_counter
) -> np.ndarray:
    """Milliseconds of ``calls`` single-row scorings of eval rows, the way the service scores.

    The service scores through :func:`slipway.probabilities.probability_function` (a forest's trees
    summed directly when that gives exactly ``predict_proba``'s answers), so that is what is timed.
    ``clock`` (seconds) is a seam for tests.
    """
    from slipway.probabilities import probability_function

    score = probability_function(model, features.head(200))
    rows = [features.iloc[[i % len(features)]] for i in range(calls)]
    score(rows[0])  # warm-up
    timings = np.empty(calls)
    for i, row in enumerate(rows):
        start = clock()
        score(row)
        timings[i] = (clock() - start) * 1000
    return timings


def latency(gates: Gates, cand_ms: np.ndarray, baseline: float | None, seed: int) -> Verdict:
    """p95 single-row latency with a bootstrap interval of the p95 itself; ``baseline`` is
    production's p95 as recorded when it was gated."""
    limit = gates.latency.p95_ms
    p95 = float(np.percentile(cand_ms, 95))
    rng = np.random.default_rng(seed)
    resampled = np.percentile(rng.choice(cand_ms, size=(500, len(cand_ms))), 95, axis=1)
    ci = interval(resampled, 0.95)
    ok = p95 <= limit
    reason = f"p95 single-row predict {p95:.2f} ms ({'≤' if ok else '>'} {limit} ms)"
    return Verdict(
        "latency",
        "p95_ms",
        PASS if ok else FAIL,
        p95,
        limit,
        baseline,
        _delta(p95, baseline),
        ci,
        reason,
    )


def overall(verdicts: list[Verdict], on_inconclusive: str) -> str:
    """``fail`` when any gate fails (or is inconclusive under ``on_inconclusive: fail``)."""
    statuses = {v.status for v in verdicts}
    if FAIL in statuses or (INCONCLUSIVE in statuses and on_inconclusive == "fail"):
        return FAIL
    return PASS


def to_dict(verdict: Verdict) -> dict[str, Any]:
    document = asdict(verdict)
    document["interval"] = list(verdict.interval) if verdict.interval else None
    return document
