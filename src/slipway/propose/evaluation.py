"""Metrics on the frozen eval set, and a paired bootstrap that is fast enough to always run.

The bootstrap is a Poisson bootstrap: each resample gives every row an independent
Poisson(1) weight instead of drawing n rows with replacement (a multinomial count vector).
The two agree as n grows (each multinomial count is Binomial(n, 1/n), which tends to
Poisson(1)); at the eval-set sizes a gate needs the difference is far below the Monte Carlo
noise, and independent weights are cheap to draw and need no gather. With the weights of a
chunk of resamples as a matrix ``W`` (resamples x rows), every confusion-matrix metric is one
matrix product, and ROC AUC is a weighted Mann-Whitney statistic: each positive counts the
negative weight scored below it, read from a prefix sum over the negatives sorted once.
Candidate and champion share the same ``W``: the resamples are paired, so the interval of
their difference excludes the noise they have in common.
"""

from __future__ import annotations

import math
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


def _poisson_table(bits: int = 16) -> np.ndarray:
    """Poisson(1) by inverse CDF: entry ``u`` is the count for the uniform ``(u + 0.5) / 2**bits``.

    With 16 bits every count's probability is within 2**-16 of Poisson(1)'s (counts above 8,
    one row in a million, never occur); mean and variance stay within 1e-4 of 1.
    """
    counts = np.arange(20)
    cdf = np.cumsum([math.exp(-1) / math.factorial(k) for k in counts])
    uniforms = (np.arange(2**bits) + 0.5) / 2**bits
    return np.searchsorted(cdf, uniforms, side="right").astype(np.float32)


_POISSON = _poisson_table()


def poisson_weights(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """``size`` x ``n`` independent Poisson(1) weights as float32, from 16 random bits each."""
    words = rng.bit_generator.random_raw(-(-size * n // 4))  # four 16-bit draws per word
    return np.take(_POISSON, words.view(np.uint16)[: size * n]).reshape(size, n)


_BLOCK = 16  # measured: a 16-wide GEMM is the fastest here, and it releases the GIL
_UPPER = np.triu(np.ones((_BLOCK, _BLOCK), dtype=np.float32))  # [k, l] = 1 where k <= l


def _prefix_sum(values: np.ndarray) -> np.ndarray:
    """Exclusive cumulative sum along rows: column ``k`` holds the sum of the first ``k``
    values (column 0 is 0; columns past ``n`` repeat the total). A blocked scan: within blocks
    of 16 it is a matrix product (BLAS, which releases the GIL, unlike ``np.cumsum``), then
    each block adds the running total of the blocks before it. Exact for integer weights
    whose sum stays below 2**24."""
    rows, n = values.shape
    padded = np.zeros((rows, -(-(n + 1) // _BLOCK) * _BLOCK), dtype=np.float32)
    padded[:, 1 : n + 1] = values
    blocks = (padded.reshape(-1, _BLOCK) @ _UPPER).reshape(rows, -1, _BLOCK)  # one 2-D GEMM
    totals = blocks[:, :, -1]
    blocks += (np.cumsum(totals, axis=1) - totals)[:, :, None]
    return blocks.reshape(rows, -1)


class _Ranking:
    """Where each row of one class falls among the other class's scores, for one model.

    Prefix sums run over the smaller class (fewer columns to scan); each row of the larger
    class reads the smaller class's weight scored below it and tied with it. Columns of the
    weights are positives then negatives, each class in the candidate's score order, so only
    another model needs a gather into its own order.
    """

    def __init__(self, positive_scores: np.ndarray, negative_scores: np.ndarray) -> None:
        self.over_positives = len(positive_scores) < len(negative_scores)
        summed, looked_up = (
            (positive_scores, negative_scores)
            if self.over_positives
            else (negative_scores, positive_scores)
        )
        order = np.argsort(summed, kind="stable")
        self.order = None if (np.diff(order) == 1).all() else order
        ranked = summed[order]
        # Rows of the summed class strictly below each looked-up row, and below or tied.
        self.below = np.searchsorted(ranked, looked_up, side="left")
        upto = np.searchsorted(ranked, looked_up, side="right")
        self.tied = np.flatnonzero(upto > self.below)
        self.tied_below, self.tied_upto = self.below[self.tied], upto[self.tied]

    def roc_auc(self, positive: np.ndarray, negative: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """Weighted Mann-Whitney statistic per resample: the share of (positive, negative)
        weight pairs ordered correctly, ties counting half; ``pairs`` is the product of the
        two classes' total weights."""
        summed, looked_up = (positive, negative) if self.over_positives else (negative, positive)
        if self.order is not None:
            summed = np.take(summed, self.order, axis=1)
        cum = _prefix_sum(summed)
        # Integer weights: each product is exact in float32; the sum accumulates in float64.
        below = np.einsum("ij,ij->i", looked_up, np.take(cum, self.below, axis=1), dtype=np.float64)
        if self.tied.size:
            tied = np.take(cum, self.tied_upto, axis=1) - np.take(cum, self.tied_below, axis=1)
            below += 0.5 * np.einsum(
                "ij,ij->i", np.take(looked_up, self.tied, axis=1), tied, dtype=np.float64
            )
        # Summed over positives, ``below`` counts the pairs each negative wins: the complement.
        return 1 - below / pairs if self.over_positives else below / pairs


class _Resampled:
    """Every bootstrap series of one or two models under a chunk of weights.

    ``rows`` puts the eval rows in column order: positives then negatives, each by the first
    model's score. A matrix product per class gives all weighted counts; ROC AUC adds one
    prefix sum per model.
    """

    def __init__(
        self,
        y: np.ndarray,
        models: dict[str, Scores],
        groups: np.ndarray | None = None,
        min_positives: int = 1,
        negative_flips: bool = False,
    ) -> None:
        first = next(iter(models.values()))
        self.rows = np.lexsort((first.proba, y != 1))
        y = y[self.rows]
        models = {key: Scores(s.proba[self.rows], s.pred[self.rows]) for key, s in models.items()}
        yes = y == 1
        self.positives = int(yes.sum())
        columns = {"weight": np.ones(len(y)), "positive": yes}
        self.rankings = {}
        for key, scores in models.items():
            pred = scores.pred == 1
            proba = np.clip(scores.proba, _EPS, 1 - _EPS)
            columns[f"{key}.tp"] = yes & pred
            columns[f"{key}.fp"] = ~yes & pred
            columns[f"{key}.loss"] = -(y * np.log(proba) + (1 - y) * np.log(1 - proba))
            split = self.positives
            self.rankings[key] = _Ranking(scores.proba[:split], scores.proba[split:])
        if len(models) == 2:
            cand, champ = models.values()
            columns["flips"] = flipped(y, cand.pred, champ.pred, negative_flips)
        self.groups: list[str] = []
        if groups is not None:
            groups = groups[self.rows]
            self.groups = [
                g for g in np.unique(groups) if ((groups == g) & yes).sum() >= min_positives
            ]
        if len(self.groups) < 2:  # a gap needs two groups with enough positives
            self.groups = []
        for i, name in enumerate(self.groups):
            member = yes & (groups == name)
            columns[f"member.{i}"] = member
            for key, scores in models.items():
                columns[f"{key}.hit.{i}"] = member & (scores.pred == 1)
        cells = np.stack(list(columns.values()), axis=1).astype(np.float32)
        # Each class multiplies only the columns that are not all zero in it: true positives
        # and group columns concern positives, false positives negatives.
        names = np.array(list(columns))
        self.parts = []
        for rows in (slice(0, self.positives), slice(self.positives, len(y))):
            used = cells[rows].any(axis=0)
            self.parts.append((rows, names[used].tolist(), np.ascontiguousarray(cells[rows, used])))
        self.names = list(columns)

    def compute(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Series per model (``<key>.<metric>``), ``flip_rate`` and ``<key>.recall_gap`` for
        weights in column order (resamples x rows)."""
        sums = dict.fromkeys(self.names, np.zeros(len(weights)))
        for rows, names, cells in self.parts:
            for name, column in zip(names, (weights[:, rows] @ cells).T, strict=True):
                sums[name] = sums[name] + column
        total, pos = sums["weight"], sums["positive"]
        neg = total - pos
        positive, negative = weights[:, : self.positives], weights[:, self.positives :]
        out = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            for key, ranking in self.rankings.items():
                tp, fp = sums[f"{key}.tp"], sums[f"{key}.fp"]
                fn, tn = pos - tp, neg - fp
                out[f"{key}.accuracy"] = (tp + tn) / total
                out[f"{key}.precision"] = tp / (tp + fp)
                out[f"{key}.recall"] = tp / pos
                out[f"{key}.f1"] = 2 * tp / (2 * tp + fp + fn)
                out[f"{key}.log_loss"] = sums[f"{key}.loss"] / total
                out[f"{key}.roc_auc"] = ranking.roc_auc(positive, negative, pos * neg)
                if self.groups:
                    recalls = np.stack(
                        [
                            sums[f"{key}.hit.{i}"] / sums[f"member.{i}"]
                            for i in range(len(self.groups))
                        ],
                        axis=1,
                    )
                    # NaN-ignoring max and min; a resample with no positive in any group
                    # has no gap (NaN), and no warning either.
                    gap = np.fmax.reduce(recalls, axis=1) - np.fmin.reduce(recalls, axis=1)
                    out[f"{key}.recall_gap"] = gap
            if "flips" in sums:
                out["flip_rate"] = sums["flips"] / total
        return out


def flipped(
    y: np.ndarray, candidate: np.ndarray, champion: np.ndarray, negative: bool
) -> np.ndarray:
    """The rows whose decision the candidate changes: all of them, or with ``negative`` only
    those where the champion decided right and the candidate decides wrong."""
    changed = np.asarray(candidate) != np.asarray(champion)
    return changed & (np.asarray(champion) == np.asarray(y)) if negative else changed


def bootstrap(
    y: np.ndarray,
    candidate: Scores,
    champion: Scores | None = None,
    groups: np.ndarray | None = None,
    *,
    resamples: int = 2000,
    seed: int = 0,
    min_positives: int = 1,
    negative_flips: bool = False,
) -> dict[str, np.ndarray]:
    """Per-resample values: ``cand.<metric>``, ``champ.<metric>``, ``flip_rate`` (see
    :func:`flipped`) and ``cand.recall_gap`` / ``champ.recall_gap`` (max minus min recall
    over groups)."""
    models = {"cand": candidate} | ({"champ": champion} if champion is not None else {})
    resampled = _Resampled(y, models, groups, min_positives, negative_flips)
    n = len(y)
    chunk = max(1, _CHUNK_CELLS // max(n, 1))

    def run(task: tuple[int, np.random.SeedSequence]) -> dict[str, np.ndarray]:
        size, seed_sequence = task
        weights = poisson_weights(np.random.default_rng(seed_sequence), size, n)
        return resampled.compute(weights)

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
