"""lossdsl.decide against brute force: each cost written again by hand in NumPy, its expected
cost evaluated on a fine grid of decisions (with the points where it jumps), and the
refusals of inputs that would decide a row silently wrong (NaN shared values, rows with no
finite cost), naming the caller's row also with groups=."""

import numpy as np
import pytest

import lossdsl

FLAT_RESIDUALS = np.linspace(-5, 5, 11)


def brute_force(cost, outcomes, grid):
    """(best decision, its expected cost) over ``grid``: the mean of ``cost(y, d)`` over the
    equally likely outcomes, by hand."""
    expected = cost(outcomes[None, :], grid[:, None]).mean(axis=1)
    best = int(np.argmin(expected))
    return grid[best], expected[best]


def capacity_below(y, d, level):
    with np.errstate(invalid="ignore"):
        return np.where(d > 38, level, 2 * d - 10 * np.minimum(d, y))


def capacity_above(y, d):
    return np.where(d < 100, np.inf, 2 * d - 10 * np.minimum(d, y))


# A cost infinite (or one huge value) on the whole first grid over the outcomes' range
# (45..55, padded): the grid never widened and its first point came back, cost inf or 1e9.
@pytest.mark.parametrize("text, by_hand", [
    ("where(d > 38, inf, 2*d - 10*min(d, y))", lambda y, d: capacity_below(y, d, np.inf)),
    ("where(d > 38, 1e9, 2*d - 10*min(d, y))", lambda y, d: capacity_below(y, d, 1e9)),
    ("where(d < 100, inf, 2*d - 10*min(d, y))", capacity_above),
], ids=["inf-above-capacity", "huge-above-capacity", "inf-below-minimum"])
def test_a_first_grid_with_nothing_finite_or_lower_widens(text, by_hand):
    d, expected = lossdsl.decide(text, predictions=np.array([50.0]),
                                 residuals=FLAT_RESIDUALS, return_expected_cost=True)
    grid = np.concatenate([np.linspace(-300, 300, 60001), [38.0, 100.0]])
    best_d, best = brute_force(by_hand, 50.0 + FLAT_RESIDUALS, grid)
    assert np.isfinite(expected[0])
    assert expected[0] == pytest.approx(best, rel=1e-9)
    assert d[0] == pytest.approx(best_d, abs=1e-6)


def ordering(y, d, fixed):
    return (np.where(d > 0, fixed + 2 * d, 0.0) + 9 * np.maximum(0, y - d)
            + 0.5 * np.maximum(0, d - y))


@pytest.mark.parametrize("fixed", [250.0, 50.0])
def test_a_fixed_ordering_cost_finds_the_basin_at_zero(fixed):
    """Ordering anything costs ``fixed``: with 250, ordering nothing (d = 0, far below the
    outcomes 27..33) is best, a basin the search window never saw (it returned 31.4, at
    315.6 against 270); with 50 the basin among the outcomes still wins."""
    residuals = np.linspace(-3, 3, 61)
    d, expected = lossdsl.decide(
        "where(d > 0, K + 2*d, 0) + 9*max(0, y - d) + 0.5*max(0, d - y)",
        predictions=np.array([30.0]), residuals=residuals, K=fixed,
        return_expected_cost=True)
    grid = np.concatenate([np.linspace(-50, 100, 15001), [0.0]])
    best_d, best = brute_force(lambda y, d: ordering(y, d, fixed), 30.0 + residuals, grid)
    assert expected[0] <= best + 1e-9 * abs(best)
    assert expected[0] == pytest.approx(best, rel=1e-6)
    assert d[0] == pytest.approx(best_d, abs=1e-3)
    assert (d[0] == 0.0) == (fixed == 250.0)


@pytest.mark.parametrize("seed", [17, 21])
def test_an_oscillating_cost_is_searched_in_its_lowest_basin(seed):
    """Local minima about one first-grid step apart (the first grid aliases them): the
    search settled in a basin above the lowest one (seed 21: -0.7470 against -0.7513)."""
    residuals = np.random.default_rng(seed).normal(0, 8, 100)
    d, expected = lossdsl.decide("(y - d)^2/200 + cos(6*d)", predictions=np.array([44.0]),
                                 residuals=residuals, return_expected_cost=True)
    y = 44.0 + residuals
    # the mean of (y - d)^2 over the outcomes is (mean(y) - d)^2 + var(y)
    grid = np.linspace(0, 100, 200001)
    by_hand = ((y.mean() - grid) ** 2 + y.var()) / 200 + np.cos(6 * grid)
    best_d, best = grid[np.argmin(by_hand)], by_hand.min()
    assert expected[0] <= best + 1e-9
    assert d[0] == pytest.approx(best_d, abs=1e-3)


CREDIT = "where(d == 1, where(y == 0, margin*amount, 0), where(y == 1, 0.5*amount, 0))"


# NaN in a value every row shares: the NaN outcomes counted as never chosen, so the rows
# were decided from the other outcomes alone (every loan approved; decision 0; 55)
@pytest.mark.parametrize("call, message", [
    (dict(cost=CREDIT, probabilities=np.array([0.05, 0.9]), amount=np.array([1e3, 1e3]),
          margin=np.nan), r"input 'margin' is NaN"),
    (dict(cost="pick(rowof(C, y), d)", probabilities=np.array([0.9]),
          C=np.array([[0, np.nan], [5.0, 0]])), r"table 'C' is NaN at entry \(0, 1\)"),
    (dict(cost="asymmetric_l1(y, d, u, 1)", predictions=np.array([50.0]),
          residuals=FLAT_RESIDUALS, u=np.nan), r"input 'u' is NaN"),
    (dict(cost="param u = 3.0\nloss c = asymmetric_l1(y, d, u, 1)",
          predictions=np.array([50.0]), residuals=FLAT_RESIDUALS, u=np.nan),
     r"param 'u' is NaN"),
], ids=["scalar", "table-entry", "scalar-regression", "param"])
def test_a_nan_shared_value_is_refused_by_name(call, message):
    with pytest.raises(lossdsl.LossDomainError, match=message):
        lossdsl.decide(call.pop("cost"), **call)


# An infinite per-row value made every candidate's cost infinite (or NaN): the row came
# back decided (d = 42.23, or the first candidate) at an expected cost of inf
@pytest.mark.parametrize("call", [
    dict(cost="amount*abs(y - d)", predictions=np.array([50.0, 50.0]),
         residuals=FLAT_RESIDUALS),
    dict(cost="amount*abs(y - d)", predictions=np.array([50.0, 50.0]),
         residuals=FLAT_RESIDUALS, decisions=[40.0, 50.0]),
    dict(cost="where(d == 1, 2*amount, y*amount)", probabilities=np.array([0.3, 0.3])),
], ids=["continuous", "candidates", "classification"])
def test_a_row_with_no_finite_cost_is_refused_naming_it(call):
    with pytest.raises(lossdsl.LossDomainError,
                       match=r"row 1 \(amount=inf\) .*infinite|infinite.* row 1 \(amount=inf\)"):
        lossdsl.decide(call.pop("cost"), amount=np.array([1.0, np.inf]), **call)


def test_errors_with_groups_name_the_callers_row():
    """Each group is decided on its own: its errors named the row's place in its group
    (row 3 of the odd rows), not in the caller's data (row 7)."""
    groups = np.arange(10) % 2
    residual_groups = np.arange(11) % 2
    with pytest.raises(lossdsl.LossDomainError, match=r"the first row 7\b"):
        lossdsl.decide("asymmetric_l1(y, d, u, 1)", predictions=np.arange(10.0),
                       residuals=FLAT_RESIDUALS, groups=groups,
                       residual_groups=residual_groups, u=np.r_[np.ones(7), np.nan, 1, 1])
    with pytest.raises(lossdsl.LossDomainError, match=r"row 9 \(amount=inf\)"):
        lossdsl.decide("amount*abs(y - d)", predictions=np.arange(10.0),
                       residuals=FLAT_RESIDUALS, groups=groups,
                       residual_groups=residual_groups, amount=np.r_[np.ones(9), np.inf])
