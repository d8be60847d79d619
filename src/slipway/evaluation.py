"""Metrics on the frozen eval set, and a paired bootstrap that is fast enough to always run.

A bootstrap resample of n rows is a vector of row counts (weights) that sums to n. With the
weights of a chunk of resamples as a matrix ``W`` (resamples x rows), every confusion-matrix
metric is a handful of matrix-vector products, and ROC AUC is a weighted Mann-Whitney
statistic over rows sorted once. Candidate and champion share the same ``W``: the resamples
are paired, so the interval of their difference excludes the noise they have in common.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm
from threadpoolctl import threadpool_limits

HIGHER_IS_BETTER = {
    "accuracy": True,
    "precision": True,
    "recall": True,
    "f1": True,
    "roc_auc": True,
    "pr_auc": True,
    "log_loss": False,
}
_EPS = 1e-15
_CHUNK_CELLS = 250_000  # weights per chunk: stays in cache, bounds memory whatever the rows


@dataclass(frozen=True)
class Scores:
    """One model's output on the eval set."""

    proba: np.ndarray  # probability of the positive class
    pred: np.ndarray  # 0/1 decision at the model's threshold


def point_metrics(y: np.ndarray, scores: Scores) -> dict[str, Any]:
    """All headline metrics plus the confusion matrix ``[[tn, fp], [fn, tp]]``."""
    both = len(np.unique(y)) == 2
    return {
        "accuracy": float(skm.accuracy_score(y, scores.pred)),
        "precision": float(skm.precision_score(y, scores.pred, zero_division=0)),
        "recall": float(skm.recall_score(y, scores.pred, zero_division=0)),
        "f1": float(skm.f1_score(y, scores.pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y, scores.proba)) if both else float("nan"),
        "pr_auc": float(skm.average_precision_score(y, scores.proba)) if both else float("nan"),
        "log_loss": float(skm.log_loss(y, np.clip(scores.proba, _EPS, 1 - _EPS), labels=[0, 1])),
        "confusion_matrix": skm.confusion_matrix(y, scores.pred, labels=[0, 1]).tolist(),
    }


def group_recall(y: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> dict[str, dict]:
    """Recall and support per group (team)."""
    table = {}
    for name in sorted(np.unique(groups).tolist()):
        member = groups == name
        positives = int((y[member] == 1).sum())
        hits = int(((y == 1) & (pred == 1) & member).sum())
        table[str(name)] = {
            "rows": int(member.sum()),
            "positives": positives,
            "recall": hits / positives if positives else None,
        }
    return table


def ranking(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Row order by score, positives first among tied scores."""
    return np.lexsort((y != 1, proba))


_BLOCK = 16  # measured: a 16-wide GEMM is the fastest here, and it releases the GIL
_UPPER = np.triu(np.ones((_BLOCK, _BLOCK), dtype=np.float32))  # [k, l] = 1 where k <= l


def _prefix_sum(values: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum along rows, as a blocked scan: within blocks of 16 it is a
    matrix product (BLAS, which releases the GIL, unlike ``np.cumsum``), then each block adds
    the running total of the blocks before it. Exact for integer counts below 2**24."""
    rows, n = values.shape
    padded = -n % _BLOCK
    if padded:
        values = np.pad(values, ((0, 0), (0, padded)))
    blocks = (values.reshape(-1, _BLOCK) @ _UPPER).reshape(rows, -1, _BLOCK)  # one 2-D GEMM
    totals = blocks[:, :, -1]
    blocks += (np.cumsum(totals, axis=1) - totals)[:, :, None]
    return blocks.reshape(rows, -1)[:, :n]


class _Weighted:
    """Metrics of one model under a chunk of bootstrap weights."""

    def __init__(self, y: np.ndarray, scores: Scores) -> None:
        yes, pred = y == 1, scores.pred == 1
        proba = np.clip(scores.proba, _EPS, 1 - _EPS)
        loss = -(y * np.log(proba) + (1 - y) * np.log(1 - proba))
        self.cells = np.stack([yes & pred, ~yes & pred, yes & ~pred, ~yes & ~pred, loss]).T
        self.cells = self.cells.astype(np.float32)
        order = ranking(y, scores.proba)
        # Rows arrive in the candidate's ranking; only other models need a gather.
        self.order = None if (np.diff(order) == 1).all() else order
        sorted_scores = scores.proba[order]
        self.positive_sorted = yes[order].astype(np.float32)
        # First and last position of every group of two or more rows with the same score.
        starts = np.flatnonzero(np.r_[True, np.diff(sorted_scores) != 0])
        ends = np.r_[starts[1:], len(sorted_scores)] - 1
        self.tie_first, self.tie_last = starts[ends > starts], ends[ends > starts]

    def compute(self, weights: np.ndarray, n: int) -> dict[str, np.ndarray]:
        tp, fp, fn, tn, loss = (weights @ self.cells).astype(np.float64).T
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {
                "accuracy": (tp + tn) / n,
                "precision": tp / (tp + fp),
                "recall": tp / (tp + fn),
                "f1": 2 * tp / (2 * tp + fp + fn),
                "log_loss": loss / n,
            }
            ordered = weights if self.order is None else np.take(weights, self.order, axis=1)
            # Weighted Mann-Whitney: each positive row counts the negative weight below its
            # score, plus half the negative weight tied with it. Sums of integer counts stay
            # exact in float32.
            pos = ordered * self.positive_sorted
            neg = ordered - pos
            cum = _prefix_sum(neg)
            # Within a tie group positives come first, so cum - neg counts only the negatives
            # strictly below; each group then adds half of (its positives x its negatives).
            below = cum - neg
            wins = np.einsum("ij,ij->i", pos, below, dtype=np.float64)
            if self.tie_first.size:  # group totals are differences of the prefix sums
                cum_pos = _prefix_sum(pos)
                first, last = self.tie_first, self.tie_last
                tied_neg = np.take(cum, last, axis=1) - np.take(below, first, axis=1)
                tied_pos = np.take(cum_pos, last, axis=1) - np.take(cum_pos - pos, first, axis=1)
                wins += 0.5 * np.einsum("ij,ij->i", tied_pos, tied_neg, dtype=np.float64)
            # Positive weight is tp + fn from the products above: no second pass over the rows.
            out["roc_auc"] = wins / ((tp + fn) * cum[:, -1].astype(np.float64))
        return out


def bootstrap(
    y: np.ndarray,
    candidate: Scores,
    champion: Scores | None = None,
    groups: np.ndarray | None = None,
    *,
    resamples: int = 2000,
    seed: int = 0,
    min_positives: int = 1,
) -> dict[str, np.ndarray]:
    """Per-resample values: ``cand.<metric>``, ``champ.<metric>``, ``flip_rate`` and
    ``cand.recall_gap`` / ``champ.recall_gap`` (max minus min recall over groups)."""
    n = len(y)
    # Resampling does not care about row order: put rows in the candidate's ranking once.
    order = ranking(y, candidate.proba)
    y = y[order]
    candidate = Scores(candidate.proba[order], candidate.pred[order])
    if champion is not None:
        champion = Scores(champion.proba[order], champion.pred[order])
    if groups is not None:
        groups = groups[order]
    models = {"cand": _Weighted(y, candidate)}
    if champion is not None:
        models["champ"] = _Weighted(y, champion)
    group_hits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    eligible = []
    if groups is not None:
        eligible = [
            g for g in np.unique(groups) if ((groups == g) & (y == 1)).sum() >= min_positives
        ]
    if len(eligible) >= 2:  # a gap needs two groups with enough positives
        member_pos = np.stack([(groups == g) & (y == 1) for g in eligible]).T
        member_pos = member_pos.astype(np.float32)
        for key, scores in (("cand", candidate), ("champ", champion)):
            if scores is not None:
                group_hits[key] = (
                    member_pos * (scores.pred == 1)[:, None].astype(np.float32),
                    member_pos,
                )
    flips = (candidate.pred != champion.pred).astype(np.float32) if champion is not None else None
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    offsets = np.arange(chunk)[:, None] * n

    def run(task: tuple[int, np.random.SeedSequence]) -> dict[str, np.ndarray]:
        size, seed_sequence = task
        rng = np.random.default_rng(seed_sequence)
        idx = rng.integers(0, n, size=(size, n)) + offsets[:size]
        counts = np.bincount(idx.ravel(), minlength=size * n).reshape(size, n)
        weights = counts.astype(np.float32)  # counts ≤ n < 2**24 are exact in float32
        out = {}
        for key, model in models.items():
            for metric, values in model.compute(weights, n).items():
                out[f"{key}.{metric}"] = values
        for key, (hits, members) in group_hits.items():
            with np.errstate(invalid="ignore", divide="ignore"):
                recalls = (weights @ hits) / (weights @ members)
            out[f"{key}.recall_gap"] = np.nanmax(recalls, axis=1) - np.nanmin(recalls, axis=1)
        if flips is not None:
            out["flip_rate"] = (weights @ flips).astype(np.float64) / n
        return out

    # Each chunk has its own seed stream, so results do not depend on thread scheduling;
    # NumPy releases the GIL in the heavy calls, so chunks run in parallel on every core.
    sizes = [min(chunk, resamples - start) for start in range(0, resamples, chunk)]
    seeds = np.random.SeedSequence(seed).spawn(len(sizes))
    # One BLAS thread per worker: the products are small and oversubscription costs more.
    with threadpool_limits(limits=1), ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        results = list(pool.map(run, zip(sizes, seeds, strict=True)))
    return {key: np.concatenate([part[key] for part in results]) for key in results[0]}


def interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of bootstrap values (NaN resamples ignored)."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)
