"""The exact leaf search (lossdsl.boosting.leaves.solve_leaves) on the shapes of data its fused
passes special-case: leaves of very unequal size (as LightGBM grows them), weighted rows with
per-row prices and tied residuals, kinks beside the residuals, one-row and zero-weight leaves,
labels of other dtypes, bad leaf indices. Every answer is checked against brute force: the
loss written out in NumPy, evaluated at every kink of the leaf's rows."""

import numpy as np
import pytest

pytest.importorskip("lightgbm")
import lossdsl  # noqa: E402
import lossdsl.lightgbm as ll  # noqa: E402
from lossdsl.boosting.leaves import solve_leaves  # noqa: E402


def asym_cost(y, p, under, weight):
    """Weighted asymmetric_l1: under per unit short, 1 per unit over, summed."""
    d = y - p
    return float(np.sum(weight * np.where(d > 0, under * d, -d)))


def tube_cost(y, p, epsilon, weight):
    """Weighted epsilon_insensitive: max(0, |p - y| - epsilon), summed."""
    return float(np.sum(weight * np.maximum(0.0, np.abs(p - y) - epsilon)))


def best_at_kinks(cost, kinks):
    """The lowest value of a piecewise-linear convex cost: it is reached at one of its kinks."""
    return min(cost(k) for k in np.unique(kinks))


def skewed_leaves(rng, n, count):
    """Leaf ids as a LightGBM tree leaves them: two leaves with most rows, many small ones,
    some of a single row (ids 0..count-1, each reached)."""
    sizes = np.maximum(1, (rng.pareto(1.2, count) * 20).astype(int))
    sizes[:3] = 1  # one-row leaves
    sizes[3:5] = (n - sizes[5:].sum() - 3) // 2
    sizes[5] += n - sizes.sum()
    leaves = np.repeat(np.arange(count), sizes)
    return rng.permutation(leaves)


@pytest.fixture(scope="module")
def asym():
    return ll.objective("asymmetric_l1(y, p, 4, 1)")


@pytest.mark.parametrize("weighted", [False, True])
def test_skewed_leaves_with_per_row_prices_and_ties_against_brute_force(weighted):
    rng = np.random.default_rng(11)
    n, count = 4000, 40
    leaves = skewed_leaves(rng, n, count)
    assert leaves.size == n and np.bincount(leaves).min() == 1
    y = np.round(rng.gamma(2.0, 10.0, n))  # rounded: many tied residuals
    F = np.round(rng.normal(size=n) * 3, 1)
    under = np.where(rng.random(n) < 0.4, 2.0, 5.0)
    w = rng.uniform(0.2, 3.0, n) if weighted else None
    ww = np.ones(n) if w is None else w
    objective = ll.objective("asymmetric_l1(y, p, under, 1)", inputs={"under": under}, rows=y)
    solution = solve_leaves(objective, y, F, leaves, count, w)
    assert solution.solved.all()
    for j in range(count):
        rows = leaves == j
        r = y[rows] - F[rows]

        def cost(c, rows=rows):
            return asym_cost(y[rows], F[rows] + c, under[rows], ww[rows])

        best = best_at_kinks(cost, r)
        assert cost(solution.values[j]) <= best * (1 + 1e-12) + 1e-12, j
        if rows.sum() == 1:  # a one-row leaf sits exactly on its row's residual
            assert solution.values[j] == r[0]


def test_kinks_beside_the_residuals_against_brute_force():
    # epsilon_insensitive has its kinks at r - 0.5 and r + 0.5, none at the residual: the
    # kink reading's answers fail their check and those leaves are searched
    objective = ll.objective("epsilon_insensitive(y, p, 0.5)")
    rng = np.random.default_rng(12)
    n, count = 1500, 12
    leaves = skewed_leaves(rng, n, count)
    y = rng.standard_t(3, size=n) * 2
    F = rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, n)
    solution = solve_leaves(objective, y, F, leaves, count, w)
    assert solution.solved.all()
    assert solution.evaluations > 4  # searched beyond the reading and its check
    for j in range(count):
        rows = leaves == j
        r = y[rows] - F[rows]

        def cost(c, rows=rows):
            return tube_cost(y[rows], F[rows] + c, 0.5, w[rows])

        best = best_at_kinks(cost, np.concatenate([r - 0.5, r + 0.5]))
        # a minimiser to the search's tolerance (1e-6 of the leaf's spread, slope <= sum w)
        assert cost(solution.values[j]) <= best + 1e-5 * np.sum(w[rows]), j


def test_degenerate_leaves_keep_their_fallback_or_sit_on_their_rows(asym):
    # leaf 0: one row; leaf 1: zero weight; leaf 2: no rows; leaf 3: all rows one residual;
    # leaf 4: two rows (0.8 quantile: the larger residual)
    y = np.array([3.5, 1.0, 2.0, 7.0, 7.0, 7.0, 1.0, 2.0])
    leaves = np.array([0, 1, 1, 3, 3, 3, 4, 4])
    w = np.array([2.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    fallback = np.array([-1.0, -2.0, -3.0, -4.0, -5.0])
    solution = solve_leaves(asym, y, np.zeros(y.size), leaves, 5, w, fallback=fallback)
    assert solution.solved.tolist() == [True, False, False, True, True]
    assert solution.values.tolist() == [3.5, -2.0, -3.0, 7.0, 2.0]
    assert np.all(np.isfinite(solution.values))


def test_labels_of_other_dtypes_give_the_same_leaves(asym):
    rng = np.random.default_rng(13)
    n, count = 1200, 9
    leaves = skewed_leaves(rng, n, count)
    labels = rng.integers(0, 50, n)
    F = rng.normal(size=n)
    reference = solve_leaves(asym, labels.astype(np.float64), F, leaves, count)
    for given in (labels, labels.astype(np.int32), labels.astype(np.float32)):
        solution = solve_leaves(asym, given, F, leaves, count)
        np.testing.assert_array_equal(solution.values, reference.values)
    for j in range(count):
        rows = leaves == j
        r = labels[rows] - F[rows]

        def cost(c, rows=rows):
            return asym_cost(labels[rows], F[rows] + c, 4.0, 1.0)

        assert cost(reference.values[j]) <= best_at_kinks(cost, r) * (1 + 1e-12)


def test_float32_labels_on_one_column_of_several():
    # LightGBM hands float32 labels; a tree adds to one column of (n, K) scores
    objective = ll.objective("asymmetric_l1(y, p, 4, 1)", columns="same")
    rng = np.random.default_rng(14)
    n, count = 1000, 7
    leaves = skewed_leaves(rng, n, count)
    y = rng.gamma(2.0, 10.0, n).astype(np.float32)
    F = rng.normal(size=(n, 3)) * 4
    w = rng.uniform(0.2, 2.0, n)
    solution = solve_leaves(objective, y, F, leaves, count, w, column=2)
    assert solution.solved.all()
    for j in range(count):
        rows = leaves == j
        r = y[rows].astype(np.float64) - F[rows, 2]

        def cost(c, rows=rows):
            return asym_cost(y[rows].astype(np.float64), F[rows, 2] + c, 4.0, w[rows])

        assert cost(solution.values[j]) <= best_at_kinks(cost, r) * (1 + 1e-12)


@pytest.mark.parametrize("bad", [-1, 5])
def test_a_leaf_index_out_of_range_is_an_error(asym, bad):
    leaves = np.array([0, 1, 2, bad, 4])
    with pytest.raises(lossdsl.LossError, match=r"leaf indices must be in \[0, 5\)"):
        solve_leaves(asym, np.arange(5.0), np.zeros(5), leaves, 5)
