"""One window's counts for one version, kept chunk by chunk, and the figures made from them.

A window is never held in memory: :class:`Tally` adds each chunk of the log to counts on the
reference profile's bins (PSI), on its distinct training values (the exact KS distance,
:func:`ks_from_cells`), per category, of nulls and out-of-range values, of high-risk
predictions, the labelled confusion matrix and the sums of the label-free estimate (CBPE,
:func:`expected_metrics`). Its memory is that of the profile, whatever the window's size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from slipway.config import Drift, Impute, ModelConfig
from slipway.drift.chunks import Chunk
from slipway.drift.statistics import (
    bin_counts,
    bin_index,
    chi_square,
    ks_pvalue,
    per_category,
    psi,
    psi_interval,
    sorted_bin_counts,
)
from slipway.intervals import wilson, z_value

METRICS = ("accuracy", "precision", "recall")

# --- statistics on counts -------------------------------------------------------------------


def ks_cells(unique: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the ``2 m + 1`` cells of ``m`` sorted distinct reference
    values: cell ``2 j`` holds those between ``unique[j-1]`` and ``unique[j]`` (cell 0 those
    below the first, cell ``2 m`` those above the last), cell ``2 j + 1`` those equal to
    ``unique[j]``. Counts add up over chunks."""
    m = unique.size
    below = np.searchsorted(unique, values, side="left")
    equal = unique[np.minimum(below, m - 1)] == values  # past the last value: never equal
    return np.bincount(2 * below + equal, minlength=2 * m + 1)


def sorted_ks_cells(unique: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """:func:`ks_cells` of ``ordered``, values sorted ascending (NaN last, as ``np.sort``
    leaves them): each reference value is searched in the values, not each value in the
    reference, and a cell's count is the difference of its ends' positions."""
    below = np.searchsorted(ordered, unique, side="left")
    through = np.searchsorted(ordered, unique, side="right")
    ends = np.column_stack([below, through]).ravel()  # where cells 2 j and 2 j + 1 end
    return np.diff(ends, prepend=0, append=len(ordered))


def distinct_ecdf(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``sample`` (no NaN) ascending, and its ECDF at each: the share
    of the sample at or below it. A sorted sample (the profile keeps it so) is not sorted
    again."""
    if sample.size == 0:
        return sample, sample
    if np.any(sample[1:] < sample[:-1]):
        sample = np.sort(sample)
    first = np.empty(sample.size, dtype=bool)
    first[0] = True
    np.not_equal(sample[1:], sample[:-1], out=first[1:])
    starts = np.flatnonzero(first)  # where each distinct value's run begins
    return sample[starts], np.append(starts[1:], sample.size) / sample.size


def outside_count(ordered: np.ndarray, low: float | None, high: float | None) -> int:
    """How many of ``ordered`` (sorted ascending, no NaN) are below ``low`` or above
    ``high`` (None: no bound)."""
    below = 0 if low is None else int(np.searchsorted(ordered, low, side="left"))
    above = 0 if high is None else len(ordered) - int(np.searchsorted(ordered, high, side="right"))
    return below + above


def ks_from_cells(reference_cdf: np.ndarray, cells: np.ndarray) -> float:
    """The exact two-sample KS distance from :func:`ks_cells` counts of the current sample
    and the reference ECDF at its distinct values, without the current values.

    Between two reference values the reference ECDF is flat and the current one rises, so
    the largest gap there is at either end: at a reference value ``u_j`` (both ECDFs at it)
    or just below it (the reference's ECDF at ``u_(j-1)``, the current's below ``u_j``).
    """
    cdf = np.cumsum(cells) / cells.sum()
    at = np.abs(reference_cdf - cdf[1::2])
    before = np.abs(np.concatenate([[0.0], reference_cdf[:-1]]) - cdf[0:-1:2])
    return float(max(at.max(), before.max()))


def expected_metrics(sums: Sequence[float], rows: int, confidence: float) -> dict[str, Any]:
    """Accuracy, precision and recall expected from calibrated probabilities (CBPE).

    ``sums`` are ``(predicted positive, Σq and Σq(1-q) over them, Σq and Σq(1-q) over the
    predicted negative)`` with ``q`` each prediction's calibrated probability: the expected
    confusion matrix is ``TP = Σq`` and ``FN = Σq`` over the predicted positive and
    negative. Each interval is a normal one for the figure the labels will show, were the
    calibration right (each outcome an independent Bernoulli(q)).
    """
    positive, tp, var_tp, fn, var_fn = (float(s) for s in sums)
    found: dict[str, tuple[float, float] | None] = dict.fromkeys(METRICS)
    if rows:
        found["accuracy"] = ((rows - positive - fn + tp) / rows, math.sqrt(var_tp + var_fn) / rows)
    if positive:
        found["precision"] = (tp / positive, math.sqrt(var_tp) / positive)
    if tp + fn > 0:
        spread = math.sqrt(fn**2 * var_tp + tp**2 * var_fn) / (tp + fn) ** 2
        found["recall"] = (tp / (tp + fn), spread)
    z = z_value(confidence)
    return {name: _normal(pair, z) for name, pair in found.items()}


def _normal(pair: tuple[float, float] | None, z: float) -> dict[str, Any]:
    if pair is None:
        return {"value": None, "interval": [None, None]}
    value, spread = pair
    return {
        "value": value,
        "interval": [max(0.0, value - z * spread), min(1.0, value + z * spread)],
    }


def realised_metrics(confusion: Sequence[int], confidence: float) -> dict[str, Any]:
    """Accuracy, precision and recall of labelled predictions ``(tp, fp, fn, tn)``, each with
    its Wilson interval."""
    tp, fp, fn, tn = (int(c) for c in confusion)
    parts = {
        "accuracy": (tp + tn, tp + fp + fn + tn),
        "precision": (tp, tp + fp),
        "recall": (tp, tp + fn),
    }
    return {
        name: {
            "value": k / n if n else None,
            "interval": list(wilson(k, n, confidence)) if n else [None, None],
            "n": n,
        }
        for name, (k, n) in parts.items()
    }


# --- one version's reference, and one window's counts ---------------------------------------


class Reference:
    """What a version's profile gives the counting: each feature's bins, its distinct training
    values with their ECDF (for the KS test), the contract's ranges, and the calibration map."""

    def __init__(self, profile: dict[str, Any], config: ModelConfig) -> None:
        self.profile = profile
        self.features: dict[str, dict[str, Any]] = profile["features"]
        self.numeric = [n for n, f in self.features.items() if f["kind"] == "numeric"]
        self.unique: dict[str, np.ndarray] = {}
        self.cdf: dict[str, np.ndarray] = {}
        for name in self.numeric:
            sample = self.features[name]["sample"]
            self.unique[name], self.cdf[name] = distinct_ecdf(
                np.fromiter(sample, np.float64, len(sample))
            )
        columns = config.columns
        self.bounds = {
            n: (columns[n].min, columns[n].max) if n in columns else (None, None)
            for n in self.numeric
        }
        self.imputed = [
            n for n in self.features if n in columns and isinstance(columns[n].nulls, Impute)
        ]
        calibration = profile["calibration"]
        bins = calibration["bins"]
        self.calibrated = bool(calibration.get("calibrated"))
        self.calibration_edges = [b["low"] for b in bins] + [bins[-1]["high"]]
        self.positive_rate = np.array(
            [np.nan if b["positive_rate"] is None else b["positive_rate"] for b in bins]
        )

    def expected_positive(self, probability: np.ndarray) -> np.ndarray:
        """Each probability as the chance the release is high-risk: itself for a calibrated
        model, else its reliability bin's positive rate (itself where the bin was empty)."""
        if self.calibrated:
            return probability
        rate = self.positive_rate[bin_index(self.calibration_edges, probability)]
        return np.where(np.isnan(rate), probability, rate)


class Tally:
    """One window's counts for one version, added chunk by chunk."""

    def __init__(self, reference: Reference) -> None:
        self.reference = reference
        self.rows = self.high_risk = 0
        edges = reference.profile["prediction"]["probability_edges"]
        self.probability = np.zeros(len(edges) - 1, dtype=np.int64)
        self.bins: dict[str, np.ndarray] = {}
        self.cells = {n: np.zeros(2 * u.size + 1, np.int64) for n, u in reference.unique.items()}
        for name, spec in reference.features.items():
            size = len(spec["counts"]) + (spec["kind"] == "categorical")  # + unseen
            self.bins[name] = np.zeros(size, dtype=np.int64)
        self.nulls = dict.fromkeys(reference.features, 0)
        self.outside = dict.fromkeys(reference.features, 0)
        self.expected = np.zeros(5)  # predicted positive, Σq, Σq(1-q), then over the negative
        self.confusion = np.zeros(4, dtype=np.int64)  # tp, fp, fn, tn

    def add(
        self, chunk: Chunk, picked: np.ndarray, labels: Mapping[str, bool] | None, matched: set
    ) -> None:
        """Count the ``picked`` rows of ``chunk``; with ``labels`` (release id → positive),
        the labelled ones, whose ids go into ``matched``."""
        reference = self.reference
        every = bool(picked.all())  # one version in one window: no row to leave out
        decision = chunk.high_risk if every else chunk.high_risk[picked]
        probability = chunk.probability if every else chunk.probability[picked]
        self.rows += decision.size
        self.high_risk += int(np.count_nonzero(decision))
        edges = reference.profile["prediction"]["probability_edges"]
        self.probability += bin_counts(edges, probability)
        for name, spec in reference.features.items():
            column = chunk.features[name]
            if spec["kind"] == "numeric":
                values = column if every else column[picked]
                ordered = np.sort(values)  # once: then a search per reference value and edge
                present = ordered[: np.searchsorted(ordered, np.nan)]  # NaN sorts last
                low, high = reference.bounds[name]
                self.outside[name] += outside_count(present, low, high)
                if spec["edges"]:
                    self.bins[name] += sorted_bin_counts(spec["edges"], present)
                    self.cells[name] += sorted_ks_cells(reference.unique[name], present)
                self.nulls[name] += values.size - present.size
            else:
                counted = (column if every else column.take(picked)).counts()
                self.nulls[name] += counted.pop(None, 0)
                known, unseen = per_category(spec["categories"], counted)
                self.bins[name] += np.array([*known, unseen], dtype=np.int64)
                self.outside[name] += unseen
        q = reference.expected_positive(probability)
        spread, flagged = q * (1 - q), decision.astype(np.float64)
        unflagged = 1 - flagged  # sums over either side as dot products: no row copied
        self.expected += [
            int(np.count_nonzero(decision)),
            q @ flagged,
            spread @ flagged,
            q @ unflagged,
            spread @ unflagged,
        ]
        if labels is not None:
            ids = chunk.release_id[picked]
            known = np.array([labels.get(i) for i in ids], dtype=object)
            has = np.not_equal(known, None)
            matched.update(ids[has].tolist())
            y, d = known[has].astype(bool), decision[has]
            self.confusion += [(d & y).sum(), (d & ~y).sum(), (~d & y).sum(), (~d & ~y).sum()]


# --- a window's figures -----------------------------------------------------------------------


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def feature_figures(tally: Tally, name: str, drift: Drift) -> dict[str, Any]:
    """One feature's PSI with its interval and its test, before the correction."""
    spec = tally.reference.features[name]
    current = tally.bins[name]
    reference = list(spec["counts"])
    categorical = spec["kind"] == "categorical"
    if categorical:
        reference.append(0)  # unseen: the reference has none
    rows = int(current.sum())
    entry: dict[str, Any] = {
        "kind": spec["kind"],
        "test": "chi2" if categorical else "ks",
        "rows": rows,
        "psi": None,
        "psi_interval": [None, None],
        "tolerance": drift.psi_tolerance,
        "statistic": None,
        "pvalue": None,
        "adjusted_pvalue": None,
        "unseen": int(current[-1]) if categorical else 0,
        "bins": {"reference": reference, "current": current.tolist()},
    }
    if categorical:
        entry["bins"]["categories"] = [*spec["categories"], "(unseen)"]
    else:
        entry["bins"]["edges"] = spec["edges"]
    if rows == 0 or sum(reference) == 0:
        return entry
    entry["psi"] = _number(psi(reference, current))
    entry["psi_interval"] = [_number(v) for v in psi_interval(reference, current, drift.confidence)]
    if categorical:
        statistic, pvalue = chi_square(spec["counts"], current)
    else:
        statistic = ks_from_cells(tally.reference.cdf[name], tally.cells[name])
        pvalue = ks_pvalue(statistic, len(spec["sample"]), rows)
    entry["statistic"], entry["pvalue"] = _number(statistic), _number(pvalue)
    return entry
