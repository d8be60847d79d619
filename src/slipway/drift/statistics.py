"""The drift statistics: each a small pure function of counts or samples, pinned in tests.

- binning on a reference profile's bins: :func:`bin_counts` (:func:`sorted_bin_counts` for
  values already sorted: a search per edge, not per value), :func:`category_counts`;
- numeric features: the exact two-sample Kolmogorov-Smirnov distance :func:`ks_statistic`
  (against the profile's sorted training values) and its p-value :func:`ks_pvalue`;
- categorical features: :func:`chi_square`, a test of homogeneity with unseen categories as
  their own cell;
- an effect size on the bins: :func:`psi` (population stability index) and its interval
  :func:`psi_interval`;
- many features at once: :func:`bh_adjusted` and :func:`benjamini_hochberg` (false discovery
  rate).

Intervals for proportions (null rates, the high-risk share) are :mod:`slipway.intervals`.
Only the p-values use SciPy (``scipy.special``; ``scipy.stats`` for the asymptotic KS
distribution), imported when called: importing ``scipy.stats`` costs about a second.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

PSI_EPS = 1e-4  # a bin's share is floored at this before its log is taken (0 has none)
PSI_RESAMPLES = 1000
PSI_SEED = 0
FEW_EDGES = 32  # inner edges up to which :func:`bin_counts` compares rather than searches
KS_EXACT_MAX_N = 10_000  # as scipy.stats.ks_2samp's `auto`: exact while both samples are <=


def bin_index(edges: Sequence[float], values: np.ndarray) -> np.ndarray:
    """The bin of each value on ``edges`` ``[e0, ..., ek]`` (``k`` bins): bin ``i`` holds
    ``e_i <= x < e_(i+1)``, the last bin also its upper edge; values below ``e0`` fall in
    the first bin and values above ``ek`` in the last."""
    inner = np.asarray(edges, dtype=np.float64)[1:-1]
    return np.searchsorted(inner, values, side="right")


def bin_counts(edges: Sequence[float], values: np.ndarray) -> np.ndarray:
    """How many of ``values`` fall in each bin of ``edges`` (see :func:`bin_index`; NaN in
    the last bin, as there). On a few edges by counting the values below each inner edge, a
    pass of comparisons each, which is faster than a search per value or a sort."""
    inner = np.asarray(edges, dtype=np.float64)[1:-1]
    if inner.size > FEW_EDGES:
        return np.bincount(bin_index(edges, values), minlength=len(edges) - 1)
    values = np.asarray(values, dtype=np.float64)
    below = [np.count_nonzero(values < edge) for edge in inner.tolist()]
    return np.diff(np.array(below, dtype=np.int64), prepend=0, append=values.size)


def sorted_bin_counts(edges: Sequence[float], ordered: np.ndarray) -> np.ndarray:
    """:func:`bin_counts` of ``ordered``, values sorted ascending (NaN last, as ``np.sort``
    leaves them): each inner edge is searched in the values, and a bin's count is the
    difference of its edges' positions."""
    inner = np.asarray(edges, dtype=np.float64)[1:-1]
    below = np.searchsorted(ordered, inner, side="left")  # values below each inner edge
    return np.diff(below, prepend=0, append=len(ordered))


def category_counts(categories: Sequence[str], values: Sequence[object]) -> tuple[list[int], int]:
    """Counts of ``values`` per category, in ``categories``' order, and how many values are
    none of them (unseen). Values and categories are compared as text (``str``)."""
    counted = text_counts(values)
    if None in counted:
        counted["None"] = counted.get("None", 0) + counted.pop(None)  # as text, None is "None"
    return per_category(categories, counted)


def text_counts(values: Sequence[object] | np.ndarray) -> dict[str | None, int]:
    """How many of ``values`` read as each text (``str``), None (a null) kept as None.

    By hashing (``pandas.factorize``), with no conversion and no sort, while every value is
    text or None, as the log's categories are; any other value (NaN, or 1, 1.0 and True,
    which hash alike but read differently) makes it count each value's text instead.
    """
    from pandas import factorize  # deferred, as pandas costs a moment to import

    values = np.asarray(values, dtype=object)
    codes, uniques = factorize(values)  # code -1: None or NaN
    counts = np.bincount(codes + 1, minlength=len(uniques) + 1).tolist()
    nulls = values[codes < 0] if counts[0] else values[:0]
    if all(isinstance(value, str) for value in uniques) and all(v is None for v in nulls):
        counted: dict[str | None, int] = dict(zip(uniques.tolist(), counts[1:], strict=True))
        if counts[0]:
            counted[None] = counts[0]
        return counted
    return dict(Counter(None if value is None else str(value) for value in values))


def per_category(categories: Sequence[str], counted: Mapping[str, int]) -> tuple[list[int], int]:
    """``counted`` (text → count) per category, in ``categories``' order, and the rest's total
    (unseen)."""
    rest = dict(counted)
    known = [int(rest.pop(str(category), 0)) for category in categories]
    return known, int(sum(rest.values()))


def ks_statistic(reference_sorted: np.ndarray, current: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov distance: the largest gap between the two empirical
    CDFs over all values (right-continuous, so ties are exact).

    ``reference_sorted`` must be sorted ascending (the profile stores it so); neither sample
    may be empty or hold NaN.
    """
    reference = np.asarray(reference_sorted, dtype=np.float64)
    ordered = np.sort(np.asarray(current, dtype=np.float64))
    if reference.size == 0 or ordered.size == 0:
        raise ValueError("the KS distance needs two non-empty samples")
    # Between two distinct reference values the reference ECDF is flat, so the largest gap
    # is at a reference value or just below it: a search per reference value, not per value.
    unique = np.unique(reference)
    cdf_reference = np.searchsorted(reference, unique, side="right") / reference.size
    at = np.searchsorted(ordered, unique, side="right") / ordered.size
    below = np.searchsorted(ordered, unique, side="left") / ordered.size
    before = np.concatenate([[0.0], cdf_reference[:-1]])
    return float(max(np.abs(cdf_reference - at).max(), np.abs(before - below).max()))


def ks_pvalue(d: float, n: int, m: int) -> float:
    """P(D >= d) for samples of ``n`` and ``m`` values from one continuous distribution.

    As ``scipy.stats.ks_2samp`` (method ``auto``, two-sided): exact while both samples have
    at most :data:`KS_EXACT_MAX_N` values (:func:`_ks_exact_pvalue`), else the exact
    one-sample distribution at the effective size ``n m / (n + m)`` (Smirnov's limit). Ties
    make it conservative.
    """
    if n < 1 or m < 1:
        raise ValueError("the KS p-value needs two non-empty samples")
    if max(n, m) <= KS_EXACT_MAX_N:
        return _ks_exact_pvalue(d, n, m)
    from scipy.stats import distributions  # deferred: scipy.stats costs about a second

    effective = round(n * m / (n + m))
    return float(np.clip(distributions.kstwo.sf(d, effective), 0.0, 1.0))


def _ks_exact_pvalue(d: float, n: int, m: int) -> float:
    """Exact P(D >= d) by counting lattice paths.

    The two ECDFs are a path from (0, 0) to (n, m) taking one step per value of the pooled
    sample, all C(n + m, n) orders equally likely. With ``L = lcm(n, m)``, ``d`` is read as
    ``h / L`` (h rounded, as SciPy does) and the path stays inside while
    ``|i m - j n| < h gcd(n, m)``. Inside points of one row are a run of columns, so each row
    is the running sum of the row before over that run; rows are rescaled as they go, and
    the probability of leaving is ``-expm1(log(inside paths) - log C(n + m, n))``.
    """
    if m > n:
        n, m = m, n  # rows over the smaller sample: fewer steps, each a longer vector sum
    g = math.gcd(n, m)
    h = round(d * (n // g) * m)
    if h <= 0:
        return 1.0
    limit = h * g

    def run(i: int) -> tuple[int, int]:  # the inside columns of row i, j in [low, high]
        low = max(0, (i * n - limit) // m + 1)
        high = min(n, -(-(i * n + limit) // m) - 1)
        return low, high

    # Rows are i = 0..m (the smaller sample), columns j = 0..n: inside while |i n - j m| < hg.
    row = np.zeros(n + 1)
    low, high = run(0)
    row[low : high + 1] = 1.0
    log_scale = 0.0
    for i in range(1, m + 1):
        low, high = run(i)
        following = np.zeros(n + 1)
        if low <= high:
            following[low : high + 1] = np.cumsum(row[low : high + 1])
        top = following.max()
        if top == 0.0:
            return 1.0  # no path stays inside: D >= d always
        row = following / top
        log_scale += math.log(top)
    if row[n] == 0.0:
        return 1.0
    log_paths = math.lgamma(n + m + 1) - math.lgamma(n + 1) - math.lgamma(m + 1)
    inside = math.log(row[n]) + log_scale - log_paths
    return float(min(1.0, max(0.0, -math.expm1(inside))))


def chi_square(
    reference_counts: Sequence[int], current_counts: Sequence[int]
) -> tuple[float, float]:
    """Pearson's chi-square test that both samples come from one categorical distribution.

    ``current_counts`` has one count per reference category, optionally followed by one more:
    the values of categories the reference never saw, a cell the reference counts 0 in.
    Categories empty in both samples are left out; ``(0, 1)`` when fewer than two are left.
    """
    reference = np.asarray(reference_counts, dtype=np.float64)
    current = np.asarray(current_counts, dtype=np.float64)
    if current.size not in (reference.size, reference.size + 1):
        raise ValueError("current_counts needs one count per reference category (+ unseen)")
    reference = np.append(reference, np.zeros(current.size - reference.size))
    used = (reference + current) > 0
    table = np.stack([reference[used], current[used]])
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    from scipy.special import chdtrc  # deferred: only p-values need SciPy

    return statistic, float(chdtrc(table.shape[1] - 1, statistic))


def _psi_rows(reference: np.ndarray, current: np.ndarray, eps: float) -> np.ndarray:
    """PSI of each row of ``current`` counts against each row of ``reference`` counts."""
    r = np.maximum(reference / reference.sum(axis=-1, keepdims=True), eps)
    c = np.maximum(current / current.sum(axis=-1, keepdims=True), eps)
    return ((c - r) * np.log(c / r)).sum(axis=-1)


def psi(
    reference_counts: Sequence[int], current_counts: Sequence[int], eps: float = PSI_EPS
) -> float:
    """Population stability index ``sum((c - r) ln(c / r))`` over the bins, with ``r`` and
    ``c`` each sample's share of a bin, floored at ``eps`` (an empty bin has no log).

    Both samples need at least one value and the same bins. PSI is 0 for identical shares;
    it grows with the shift (0.1 and 0.25 are the customary "some" and "major" shift).
    """
    reference, current = _counts_pair(reference_counts, current_counts)
    return float(_psi_rows(reference, current, eps))


def psi_interval(
    reference_counts: Sequence[int],
    current_counts: Sequence[int],
    confidence: float = 0.95,
    resamples: int = PSI_RESAMPLES,
    seed: int = PSI_SEED,
    eps: float = PSI_EPS,
) -> tuple[float, float]:
    """Percentile interval of :func:`psi` by a parametric bootstrap.

    Each resample draws both samples' bin counts again, as multinomials of their own sizes
    with their observed shares (the reference's sampling noise counts too, not only the
    window's), and computes PSI; the seed is fixed, so the interval is reproducible. Bins
    that are empty in a sample stay empty in its resamples. PSI is biased upwards on small
    samples (about ``(bins - 1) (1/n + 1/m)`` with no shift), and so is this interval: read it
    as the effect's size; the tests on p-values decide.
    """
    reference, current = _counts_pair(reference_counts, current_counts)
    rng = np.random.default_rng(seed)
    drawn_reference = rng.multinomial(int(reference.sum()), reference / reference.sum(), resamples)
    drawn_current = rng.multinomial(int(current.sum()), current / current.sum(), resamples)
    values = _psi_rows(drawn_reference.astype(np.float64), drawn_current.astype(np.float64), eps)
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def _counts_pair(
    reference_counts: Sequence[int], current_counts: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference_counts, dtype=np.float64)
    current = np.asarray(current_counts, dtype=np.float64)
    if reference.shape != current.shape or reference.ndim != 1:
        raise ValueError("PSI needs the same bins on both sides")
    if reference.sum() <= 0 or current.sum() <= 0:
        raise ValueError("PSI needs at least one value on each side")
    return reference, current


def bh_adjusted(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Benjamini-Hochberg adjusted p-values: for the ``k``-th smallest of ``m``, the least
    ``p_(i) m / i`` over ``i >= k``, at most 1. A feature is a discovery at false discovery
    rate ``q`` when its adjusted p-value is at most ``q``."""
    names = sorted(pvalues, key=lambda name: (pvalues[name], name))
    m = len(names)
    adjusted: dict[str, float] = {}
    running = 1.0
    for rank in range(m, 0, -1):  # from the largest p-value down
        name = names[rank - 1]
        running = min(running, pvalues[name] * m / rank)
        adjusted[name] = running
    return {name: adjusted[name] for name in pvalues}


def benjamini_hochberg(pvalues: Mapping[str, float], q: float) -> dict[str, bool]:
    """Which features drifted with the false discovery rate held at ``q`` (BH step-up): the
    ``k`` smallest p-values are discoveries for the largest ``k`` with ``p_(k) <= k q / m``."""
    return {name: value <= q for name, value in bh_adjusted(pvalues).items()}
