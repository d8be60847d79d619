"""Confidence intervals for proportions and quantiles, exact enough to pin in tests.

Shared by the canary's verdict (``promote/canary.py``) and the drift check (``drift/``).

- :func:`wilson`: a proportion (Wilson score interval);
- :func:`newcombe`: a difference of two independent proportions (Newcombe's hybrid score
  interval, method 10 of Newcombe 1998);
- :func:`quantile` and :func:`quantile_interval`: a quantile and its distribution-free
  order-statistic interval (the count of observations below the true quantile is binomial);
- :func:`ratio_interval`: a ratio of two positive quantities from their own intervals.

A bound of ``None`` is unbounded: the sample cannot rule anything out on that side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

Interval = tuple[float | None, float | None]


def z_value(confidence: float) -> float:
    """The two-sided normal quantile: 1.959964 for 0.95."""
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def wilson(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of ``successes / n``; ``(0, 1)`` when ``n`` is 0."""
    if n == 0:
        return 0.0, 1.0
    z = z_value(confidence)
    p = successes / n
    scale = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z / scale * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def newcombe(k1: int, n1: int, k2: int, n2: int, confidence: float) -> tuple[float, float]:
    """Interval of ``k1/n1 - k2/n2`` from the two Wilson intervals (Newcombe's hybrid score);
    ``(-1, 1)`` when either sample is empty."""
    if n1 == 0 or n2 == 0:
        return -1.0, 1.0
    p1, p2 = k1 / n1, k2 / n2
    low1, high1 = wilson(k1, n1, confidence)
    low2, high2 = wilson(k2, n2, confidence)
    difference = p1 - p2
    return (
        difference - math.hypot(p1 - low1, high2 - p2),
        difference + math.hypot(high1 - p1, p2 - low2),
    )


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile, linearly interpolated between order statistics (numpy's default,
    as the gate's and the smoke test's p95); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


def binomial_pmf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) = k), computed in logs so large ``n`` neither overflows nor underflows."""
    if p in (0.0, 1.0):
        return float(k == round(n * p))
    log = (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )
    return math.exp(log)


def order_ranks(n: int, q: float, confidence: float) -> tuple[int | None, int | None]:
    """1-based ranks ``(l, u)`` with P(X(l) <= quantile_q <= X(u)) >= ``confidence``.

    With B the CDF of Binomial(n, q): ``l`` is the largest rank with B(l-1) <= tail and ``u``
    the smallest with B(u-1) >= 1 - tail, tail = (1 - confidence) / 2; None when no rank of
    ``n`` observations is far enough out.
    """
    tail = (1 - confidence) / 2
    low = high = None
    cdf = 0.0
    for k in range(n):  # cdf = B(k)
        cdf += binomial_pmf(k, n, q)
        if cdf <= tail:
            low = k + 1
        if cdf >= 1 - tail:
            high = k + 1
            break
    return low, high


def quantile_interval(values: Sequence[float], q: float, confidence: float) -> Interval:
    """Distribution-free interval of the ``q`` quantile: the order statistics of
    :func:`order_ranks`; a side is None when the sample is too small to bound it."""
    ordered = sorted(values)
    low, high = order_ranks(len(ordered), q, confidence)
    return (
        ordered[low - 1] if low is not None else None,
        ordered[high - 1] if high is not None else None,
    )


def ratio_interval(numerator: Interval, denominator: Interval) -> Interval:
    """Interval of ``a / b`` for positive ``a`` and ``b`` given their intervals.

    When each interval holds with probability 1 - e/2, this one holds with at least 1 - e
    (Bonferroni), whatever the dependence. A missing lower bound counts as 0.
    """
    num_low, num_high = numerator
    den_low, den_high = denominator
    low = 0.0 if not num_low or den_high is None else num_low / den_high
    high = None if num_high is None or not den_low else num_high / den_low
    return low, high
