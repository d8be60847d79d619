"""The drift statistics on small cases computed by hand, and against SciPy on random ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from slipway.drift import statistics
from slipway.drift.statistics import (
    FEW_EDGES,
    benjamini_hochberg,
    bh_adjusted,
    bin_counts,
    bin_index,
    category_counts,
    chi_square,
    ks_pvalue,
    ks_statistic,
    per_category,
    psi,
    psi_interval,
    sorted_bin_counts,
    text_counts,
)

# --- bins --------------------------------------------------------------------------------------


def test_bins_hold_their_lower_edge_and_the_ends_take_what_is_outside():
    edges = [0.0, 1.0, 2.0, 4.0]
    values = np.array([-1.0, 0.0, 0.5, 1.0, 1.999, 2.0, 3.9, 4.0, 5.0])
    assert bin_index(edges, values).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert bin_counts(edges, values).tolist() == [3, 2, 4]


def test_one_bin_takes_everything_and_an_empty_sample_counts_zeros():
    assert bin_counts([3.0, 3.0], np.array([1.0, 3.0, 9.0])).tolist() == [3]
    assert bin_counts([0.0, 1.0, 2.0], np.array([])).tolist() == [0, 0]


def test_category_counts_keep_the_reference_order_and_count_the_unseen():
    assert category_counts(["a", "b", "c"], ["b", "a", "b", "z", "y"]) == ([1, 2, 0], 2)
    assert category_counts(["a", "b"], []) == ([0, 0], 0)
    assert category_counts([0, 1], [1, "1", 0, 2]) == ([1, 2], 1)  # compared as text


@pytest.mark.parametrize(
    "edges",
    [
        [0.0, 1.0, 2.0, 4.0],
        [-3.0, 0.0, 0.0, 2.5, 9.0],  # an empty bin between equal edges
        [3.0, 3.0],  # one bin
        [0.0, 10.0],
    ],
)
@pytest.mark.parametrize("seed", range(3))
def test_sorted_bin_counts_count_as_binning_each_value(edges, seed):
    rng = np.random.default_rng(seed)
    values = np.concatenate(
        [
            rng.integers(-6, 12, 400).astype(float),  # on the edges, and past both ends
            rng.normal(2, 4, 300),
            np.full(rng.integers(0, 20), np.nan),  # in the last bin, as bin_index puts them
        ]
    )
    rng.shuffle(values)
    assert sorted_bin_counts(edges, np.sort(values)).tolist() == bin_counts(edges, values).tolist()
    present = np.sort(values[~np.isnan(values)])
    assert sorted_bin_counts(edges, present).tolist() == bin_counts(edges, present).tolist()


@pytest.mark.parametrize("bins", [1, 3, FEW_EDGES + 1, FEW_EDGES + 2, 80])  # compared, searched
def test_bin_counts_count_as_binning_each_value(bins):
    rng = np.random.default_rng(bins)
    edges = np.sort(rng.integers(-5, 10, bins + 1)).astype(float).tolist()  # repeated edges too
    values = np.concatenate([rng.integers(-8, 13, 600).astype(float), [np.nan] * 7])
    expected = np.bincount(bin_index(edges, values), minlength=bins)
    assert bin_counts(edges, values).tolist() == expected.tolist()
    assert bin_counts(edges, values)[-1] >= 7  # NaN: the last bin, as bin_index puts it
    assert bin_counts(edges, values.astype(np.float32)).tolist() == expected.tolist()


def test_sorted_bin_counts_of_nothing():
    assert sorted_bin_counts([0.0, 1.0, 2.0], np.array([])).tolist() == [0, 0]


def _text_counts_one_by_one(values):
    counted = {}
    for value in values:
        text = None if value is None else str(value)
        counted[text] = counted.get(text, 0) + 1
    return counted


@pytest.mark.parametrize(
    "values",
    [
        ["b", "a", "b", None, "z", None],
        [1, "1", 1.0, True, 0, None, "None"],  # equal in Python, not as text
        np.array(["x", None, "y", "x"], dtype=object),
        ["a", math.nan, None, "a"],  # NaN is text here ("nan"); only None is a null
        [],
    ],
)
def test_text_counts_count_each_text_and_keep_none_apart(values):
    assert dict(text_counts(values)) == _text_counts_one_by_one(values)


@pytest.mark.parametrize("seed", range(3))
def test_category_counts_by_hashing_equal_those_by_sorting_the_text(seed):
    rng = np.random.default_rng(seed)
    pool = np.array(["alpha", "beta", "gamma", "new", None, "None"], dtype=object)
    values = pool[rng.integers(0, pool.size, 5000)].tolist()
    categories = ["gamma", "alpha", "beta", "None", "absent"]
    found, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
    by_name = dict(zip(found.tolist(), counts.tolist(), strict=True))
    known = [by_name.pop(category, 0) for category in categories]
    assert category_counts(categories, values) == (known, sum(by_name.values()))


def test_per_category_counts_a_repeated_category_once():
    assert per_category(["a", "a", "b"], {"a": 2, "b": 1, "c": 4}) == ([2, 0, 1], 4)


# --- Kolmogorov-Smirnov ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "current", "expected"),
    [
        ([1, 2, 3], [1, 2, 3], 0.0),
        ([1, 2, 3], [4, 5, 6], 1.0),
        ([1, 2, 3], [2.5, 3.5, 4.5], 2 / 3),  # at 2: F_ref 2/3, F_cur 0
        ([1, 1, 2], [1, 2, 2], 1 / 3),  # ties: at 1, 2/3 against 1/3; at 2 both 1
        ([1, 2, 3], [3, 2, 1], 0.0),  # the current sample need not be sorted
        ([1, 2, 3], [0], 1.0),  # one value below everything: F_cur is 1 from the start
        ([5], [5], 0.0),
    ],
)
def test_ks_distance_by_hand(reference, current, expected):
    d = ks_statistic(np.array(reference, dtype=float), np.array(current, dtype=float))
    assert d == pytest.approx(expected, abs=1e-12)


def _case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random samples: tiny or not, continuous or heavily tied, shifted or not."""
    rng = np.random.default_rng(seed)
    n, m = (int(k) for k in rng.integers(1, 8 if seed % 4 == 0 else 300, size=2))
    if seed % 2:
        return rng.integers(0, 4, n).astype(float), rng.integers(0, 5, m).astype(float)
    return rng.normal(0, 1, n), rng.normal(rng.uniform(0, 0.5), 1, m)


@pytest.mark.parametrize("seed", range(40))
def test_ks_distance_and_pvalue_equal_scipy(seed):
    reference, current = _case(seed)
    expected = stats.ks_2samp(reference, current)
    d = ks_statistic(np.sort(reference), current)
    assert abs(d - expected.statistic) < 1e-9
    assert abs(ks_pvalue(d, reference.size, current.size) - expected.pvalue) < 1e-9


@pytest.mark.parametrize(("n", "m"), [(10_000, 40), (40, 10_000), (10_001, 40), (20_000, 600)])
def test_ks_pvalue_equals_scipy_on_both_sides_of_the_exact_limit(n, m):
    rng = np.random.default_rng(n + m)
    reference, current = rng.normal(0, 1, n), rng.normal(0.2, 1, m)
    expected = stats.ks_2samp(reference, current)
    d = ks_statistic(np.sort(reference), current)
    assert abs(ks_pvalue(d, n, m) - expected.pvalue) < 1e-9


def test_ks_pvalue_is_exact_up_to_the_limit_and_asymptotic_past_it():
    d = 0.2
    assert statistics.KS_EXACT_MAX_N == 10_000
    assert ks_pvalue(d, 10_000, 40) == statistics._ks_exact_pvalue(d, 10_000, 40)
    smirnov = stats.kstwo.sf(d, round(10_001 * 40 / 10_041))
    assert ks_pvalue(d, 10_001, 40) == pytest.approx(smirnov, abs=1e-15)
    assert ks_pvalue(d, 10_001, 40) != statistics._ks_exact_pvalue(d, 10_001, 40)


@pytest.mark.parametrize(
    ("d", "expected"),
    [
        # n = m = 3: 20 orders of the pooled sample. D >= 1 only for the 2 orders with all of
        # one sample first; D < 2/3 for the 8 orders that never lead by two.
        (1.0, 2 / 20),
        (2 / 3, 1 - 8 / 20),
        (1 / 3, 1.0),  # the first step already puts one ECDF a third ahead
        (0.0, 1.0),
    ],
)
def test_ks_exact_pvalue_of_three_against_three_by_hand(d, expected):
    assert ks_pvalue(d, 3, 3) == pytest.approx(expected, abs=1e-12)


def test_ks_refuses_empty_samples():
    with pytest.raises(ValueError, match="non-empty"):
        ks_statistic(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError, match="non-empty"):
        ks_statistic(np.array([1.0]), np.array([]))
    with pytest.raises(ValueError, match="non-empty"):
        ks_pvalue(0.5, 0, 3)


# --- chi-square ----------------------------------------------------------------------------------


def test_chi_square_two_by_two_by_hand():
    # Expected 20 in each cell: 4 * 10² / 20 = 20 on one degree of freedom, p = erfc(sqrt(10)).
    statistic, pvalue = chi_square([30, 10], [10, 30])
    assert statistic == pytest.approx(20.0, abs=1e-12)
    assert pvalue == pytest.approx(math.erfc(math.sqrt(10)), rel=1e-9)


def test_chi_square_counts_unseen_categories_as_their_own_cell():
    # Table [[5, 5, 0], [5, 5, 10]]: expected 10/3 per cell in the first row and 20/3 in the
    # second; 2 (5/3)²/(10/3) + (10/3)²/(10/3) + 2 (5/3)²/(20/3) + (10/3)²/(20/3) = 7.5 on two
    # degrees of freedom, p = exp(-7.5 / 2).
    statistic, pvalue = chi_square([5, 5], [5, 5, 10])
    assert statistic == pytest.approx(7.5, abs=1e-12)
    assert pvalue == pytest.approx(math.exp(-3.75), rel=1e-9)


def test_chi_square_without_unseen_values_equals_scipy():
    rng = np.random.default_rng(3)
    reference, current = rng.integers(5, 200, 6), rng.integers(5, 200, 6)
    expected = stats.chi2_contingency(np.stack([reference, current]), correction=False)
    statistic, pvalue = chi_square(reference.tolist(), current.tolist())
    assert statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert pvalue == pytest.approx(expected.pvalue, rel=1e-9)


@pytest.mark.parametrize(
    ("reference", "current", "expected"),
    [
        ([10, 20, 30], [10, 20, 30], (0.0, 1.0)),  # the same shares
        ([10, 20, 30], [1, 2, 3], (0.0, 1.0)),  # the same shares, another size
        ([5, 0, 5], [5, 0, 5, 0], (0.0, 1.0)),  # empty categories are left out
        ([10, 0], [7, 0], (0.0, 1.0)),  # one category left: nothing to test
        ([10, 20], [0, 0], (0.0, 1.0)),  # no current values
    ],
)
def test_chi_square_with_nothing_to_tell(reference, current, expected):
    statistic, pvalue = chi_square(reference, current)
    assert (statistic, pvalue) == pytest.approx(expected, abs=1e-12)


def test_chi_square_refuses_counts_that_do_not_line_up():
    with pytest.raises(ValueError, match="one count per reference category"):
        chi_square([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="one count per reference category"):
        chi_square([1, 2], [1, 2, 3, 4])


# --- PSI ---------------------------------------------------------------------------------------


def test_psi_of_two_three_bin_distributions_by_hand():
    # Shares .5 .3 .2 against .3 .4 .3: .2 ln(5/3) + .1 ln(4/3) + .1 ln(3/2) = 0.171480.
    assert round(psi([50, 30, 20], [30, 40, 30]), 6) == 0.171480
    assert round(psi([5, 3, 2], [30, 40, 30]), 6) == 0.171480  # shares, not counts


def test_psi_floors_an_empty_bin_at_eps():
    # Shares .5 .5 0 against .5 .25 .25, the 0 read as 1e-4:
    # .25 ln 2 + (.25 - 1e-4) ln(.25 / 1e-4) = 2.128516.
    assert round(psi([50, 50, 0], [50, 25, 25]), 6) == 2.128516
    assert round(psi([50, 50, 0], [50, 25, 25], eps=1e-3), 6) == round(
        0.25 * math.log(2) + (0.25 - 1e-3) * math.log(0.25 / 1e-3), 6
    )


def test_psi_is_zero_for_the_same_shares_and_symmetric():
    assert psi([10, 20, 30], [20, 40, 60]) == pytest.approx(0.0, abs=1e-15)
    assert psi([50, 30, 20], [30, 40, 30]) == pytest.approx(psi([30, 40, 30], [50, 30, 20]))


def test_psi_refuses_other_bins_or_an_empty_side():
    with pytest.raises(ValueError, match="same bins"):
        psi([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least one value"):
        psi([0, 0], [1, 2])
    with pytest.raises(ValueError, match="at least one value"):
        psi_interval([1, 2], [0, 0])


def test_psi_interval_is_reproducible_and_holds_the_estimate():
    reference, current = [500, 300, 200], [300, 400, 300]
    low, high = psi_interval(reference, current)
    assert (low, high) == psi_interval(reference, current)  # fixed seed
    assert (low, high) != psi_interval(reference, current, seed=1)
    assert low < psi(reference, current) < high
    assert low > 0.1 and high < 0.3


def test_psi_interval_narrows_with_the_sample_and_the_confidence():
    wide = psi_interval([50, 30, 20], [30, 40, 30])
    narrow = psi_interval([5000, 3000, 2000], [3000, 4000, 3000])
    assert wide[1] - wide[0] > 3 * (narrow[1] - narrow[0])
    half = psi_interval([50, 30, 20], [30, 40, 30], confidence=0.5)
    assert wide[0] < half[0] < half[1] < wide[1]


def test_psi_interval_without_a_shift_stays_near_zero():
    low, high = psi_interval([2500, 2500, 2500, 2500], [2500, 2500, 2500, 2500])
    assert 0 <= low < high < 0.005


# --- Benjamini-Hochberg ------------------------------------------------------------------------

FIVE = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": 0.5}


def test_bh_adjusted_pvalues_of_five_by_hand():
    # Sorted: d .005, a .01, c .03, b .04, e .5; p m / k: .025 .025 .05 .05 .5, then the
    # running minimum from the largest down.
    adjusted = bh_adjusted(FIVE)
    assert list(adjusted) == list(FIVE)  # the caller's order
    assert adjusted == pytest.approx({"a": 0.025, "b": 0.05, "c": 0.05, "d": 0.025, "e": 0.5})


@pytest.mark.parametrize(
    ("q", "discoveries"),
    [
        (0.05, {"a", "b", "c", "d"}),  # b: .04 <= 4 * .05 / 5, so it and all below it
        (0.0499, {"a", "d"}),  # c and b just miss 3q/5 and 4q/5
        (0.025, {"a", "d"}),
        (0.0249, set()),  # d .005 > .0249 / 5 and a .01 > 2 * .0249 / 5
        (0.5, set(FIVE)),
    ],
)
def test_benjamini_hochberg_on_both_sides_of_each_threshold(q, discoveries):
    decided = benjamini_hochberg(FIVE, q)
    assert {name for name, drifted in decided.items() if drifted} == discoveries
    assert set(decided) == set(FIVE)


def test_benjamini_hochberg_steps_up():
    # .04 > 1 * .05 / 2 alone, but .045 <= 2 * .05 / 2 takes it along.
    assert benjamini_hochberg({"x": 0.04, "y": 0.045}, 0.05) == {"x": True, "y": True}
    assert benjamini_hochberg({"x": 0.04, "y": 0.06}, 0.05) == {"x": False, "y": False}


def test_benjamini_hochberg_of_nothing_is_nothing():
    assert benjamini_hochberg({}, 0.05) == {}
    assert bh_adjusted({"only": 0.03}) == {"only": 0.03}
