"""Exact leaf values (lossdsl.boosting.leaves) and the training loops lossdsl.lightgbm.train and
lossdsl.xgboost.train: leaves against brute force, refitted models, gradients, evals."""

import math

import numpy as np
import pytest

lgb = pytest.importorskip("lightgbm")
xgb = pytest.importorskip("xgboost")
import lossdsl  # noqa: E402
import lossdsl.lightgbm as ll  # noqa: E402
import lossdsl.xgboost as lx  # noqa: E402
from lossdsl.boosting.leaves import solve_leaves, use_refit  # noqa: E402

ASYM = "asymmetric_l1(y, p, 4, 1)"
LGB_PARAMS = {"verbose": -1, "num_threads": 1, "num_leaves": 7, "learning_rate": 0.3,
              "deterministic": True, "min_data_in_leaf": 10, "seed": 0}
XGB_PARAMS = {"eta": 0.3, "max_depth": 3, "nthread": 1, "seed": 0}


def weighted_quantile(values, weights, alpha):
    """The smallest value whose cumulative weight reaches alpha of the total: the minimiser
    of sum w * (alpha * (v - c)^+ + (1 - alpha) * (c - v)^+) (unique for generic data)."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return values[order][np.searchsorted(cumulative, alpha * cumulative[-1])]


def only(history):
    """The one metric's values in {metric: values}."""
    (values,) = history.values()
    return values


def first_leaf_by_brute_force(y, w, under, init, rows):
    """The first tree's raw score on a leaf's rows (learning rate 0.3, from ``init``): the
    residual with the lowest weighted asymmetric_l1 cost over the leaf (the minimiser of a
    piecewise-linear cost sits on one of them)."""
    r = y[rows] - init
    totals = [np.sum(w[rows] * asym_cost(r - c, under[rows])) for c in r]
    return init + 0.3 * r[int(np.argmin(totals))]


def asym_cost(residual_minus_c, under):
    """asymmetric_l1 at prediction c for residual r = y - F: under*(r - c)^+ + (c - r)^+."""
    d = residual_minus_c
    return np.where(d > 0, under * d, -d)


@pytest.fixture(scope="module")
def asym():
    return ll.objective(ASYM)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    n = 600
    X = rng.normal(size=(n, 4))
    y = 10 * X[:, 0] - 5 * X[:, 1] + 3 * rng.standard_t(3, size=n) + 50
    # labels and weights the boosters store as float32 without rounding
    as32 = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731
    return {"X": X, "y": as32(y), "weight": as32(rng.uniform(0.2, 3.0, size=n))}


# ---------------------------------------------------------------------- the solver
def test_solver_asymmetric_l1_is_the_weighted_quantile(asym):
    rng = np.random.default_rng(0)
    n, leaves_count = 3000, 9
    y = rng.normal(size=n) * 1e3
    F = rng.normal(size=n) * 100
    leaves = rng.integers(0, leaves_count, n)
    w = rng.uniform(0.1, 3.0, n)
    for weight in (None, w):
        solution = solve_leaves(asym, y, F, leaves, leaves_count, weight)
        assert solution.solved.all()
        for j in range(leaves_count):
            rows = leaves == j
            ww = np.ones(rows.sum()) if weight is None else w[rows]
            expected = weighted_quantile(y[rows] - F[rows], ww, 0.8)
            assert solution.values[j] == pytest.approx(expected, rel=1e-12, abs=1e-9)


def kink_select(leaves, residual, g_low, g_high, candidates):
    """(c, settled) from lossdsl.boosting.leaves._kink_select over the buckets that
    _around_kinks gives the rows, with the per-leaf row counts and residual ranges they are
    given by solve_leaves."""
    from lossdsl.boosting.leaves import _around_kinks, _kink_select

    count = np.bincount(leaves, minlength=candidates.size)
    finite = np.where(np.isfinite(residual), residual, np.nan)
    smallest = np.array([np.nanmin(finite[leaves == j]) if count[j] else np.inf
                         for j in range(candidates.size)])
    largest = np.array([np.nanmax(finite[leaves == j]) if count[j] else -np.inf
                        for j in range(candidates.size)])
    scores = np.zeros(leaves.size)
    _, _, bucket, offset, usable = _around_kinks(scores, residual, leaves,
                                                 np.ones(candidates.size), 1e-6, candidates,
                                                 count, smallest, largest)
    c, settled = np.zeros(candidates.size), np.zeros(candidates.size, dtype=bool)
    _kink_select(residual, g_low, g_high, bucket, offset, usable, c, settled)
    return c, settled


def test_kink_selection_is_the_weighted_quantile_with_ties_and_heavy_tails():
    # the one-kink reading (lossdsl.boosting.leaves._kink_select): per leaf, the first
    # residual where sum(g_low) + the jumps (g_high - g_low) up to it turn >= 0
    rng = np.random.default_rng(7)
    for trial in range(12):
        n, count = int(rng.integers(50, 4000)), int(rng.integers(1, 40))
        leaves = rng.integers(0, count, n).astype(np.intp)
        # rounded: many equal residuals; Student t with 2 dof: a few far out
        residual = np.round(rng.standard_t(2, size=n) * 3, int(rng.integers(0, 4)))
        w = rng.uniform(0.1, 3.0, n)
        c, settled = kink_select(leaves, residual, -4 * w, w, np.ones(count, dtype=bool))
        for j in range(count):
            rows = leaves == j
            if not rows.any():
                assert not settled[j]
                continue
            assert settled[j]
            assert c[j] == weighted_quantile(residual[rows], w[rows], 0.8), (trial, j)


def test_kink_selection_leaves_open_what_it_cannot_read():
    leaves = np.repeat(np.arange(5), 4).astype(np.intp)
    residual = np.tile([1.0, 2.0, 3.0, 4.0], 5)
    g_low, g_high = np.full(20, -1.0), np.full(20, 1.0)
    g_high[4] = -2.0  # leaf 1: a jump down (not convex)
    g_low[9] = np.nan  # leaf 2: not finite
    g_low[12:16] = 0.5  # leaf 3: rising already at the far left (minimiser at -inf or flat)
    g_high[16:20] = -0.5  # leaf 4: still falling at the far right
    candidates = np.ones(5, dtype=bool)
    c, settled = kink_select(leaves, residual, g_low, g_high, candidates)
    assert settled.tolist() == [True, False, False, False, False]
    assert c[0] == 2.5  # derivative -4 + 2 + 2 = 0 from the second kink to the third
    candidates[0] = False  # not a candidate: untouched
    c, settled = kink_select(leaves, residual, g_low, g_high, candidates)
    assert not settled.any() and not c.any()
    residual[0] = np.nan  # leaf 0 with a residual that is not a number: left open
    candidates[0] = True
    c, settled = kink_select(leaves, residual, g_low, g_high, candidates)
    assert not settled.any()


def test_solver_flat_stretch_gives_its_middle(asym):
    # 5 rows of weight 1 at 0.8: the cost is flat between the 4th and the 5th residual
    # (derivative -4*5 + 5*4 = 0 there); leaf 1 (7 rows) has a single minimiser
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    leaves = np.array([0] * 5 + [1] * 7)
    solution = solve_leaves(asym, y, np.zeros(y.size), leaves, 2)
    assert solution.solved.all()
    assert solution.values.tolist() == [4.5, 6.0]


def test_solver_one_column_of_several_by_the_kink_reading():
    objective = ll.objective(ASYM, columns="same")
    rng = np.random.default_rng(8)
    n, count = 2000, 6
    y = rng.gamma(2.0, 10.0, n)
    F = rng.normal(size=(n, 2)) * 5
    w = rng.uniform(0.2, 2.0, n)
    leaves = rng.integers(0, count, n)
    solution = solve_leaves(objective, y, F, leaves, count, w, column=1)
    assert solution.solved.all()
    assert solution.evaluations == 4  # two readings at the kinks, two for the check
    for j in range(count):
        rows = leaves == j
        expected = weighted_quantile(y[rows] - F[rows, 1], w[rows], 0.8)
        assert solution.values[j] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_solver_per_row_input_against_brute_force():
    rng = np.random.default_rng(1)
    n, leaves_count = 800, 5
    y = rng.gamma(2.0, 50.0, n)
    F = np.full(n, 80.0)
    under = np.where(rng.random(n) < 0.3, 1.5, 4.0)
    w = rng.uniform(0.5, 2.0, n)
    objective = ll.objective("asymmetric_l1(y, p, under, 1)", inputs={"under": under}, rows=y)
    leaves = rng.integers(0, leaves_count, n)
    solution = solve_leaves(objective, y, F, leaves, leaves_count, w)
    for j in range(leaves_count):
        rows = leaves == j
        r = y[rows] - F[rows]
        # the minimiser of a piecewise-linear cost is at one of the residuals
        totals = [np.sum(w[rows] * asym_cost(r - c, under[rows])) for c in r]
        best = r[int(np.argmin(totals))]
        assert solution.values[j] == pytest.approx(best, rel=1e-12)
        found = np.sum(w[rows] * asym_cost(r - solution.values[j], under[rows]))
        assert found <= min(totals) * (1 + 1e-12)


def test_solver_smooth_loss_against_a_fine_grid():
    objective = ll.objective("pseudo_huber(y, p)")
    rng = np.random.default_rng(2)
    n, leaves_count = 1000, 4
    y = rng.standard_t(2, size=n) * 3
    F = rng.normal(size=n)
    w = rng.uniform(0.2, 2.0, n)
    leaves = rng.integers(0, leaves_count, n)
    solution = solve_leaves(objective, y, F, leaves, leaves_count, w)
    assert solution.solved.all()
    for j in range(leaves_count):
        rows = leaves == j
        r = y[rows] - F[rows]

        def total(c, r=r, ww=w[rows]):
            return np.sum(ww * (np.sqrt(1 + (c - r) ** 2) - 1))

        grid = np.linspace(-5, 5, 20001)
        best = grid[np.argmin([total(c) for c in grid])]
        assert abs(solution.values[j] - best) <= 1e-3  # the grid's spacing is 5e-4
        assert total(solution.values[j]) <= total(best) + 1e-9
        # stationary: the weighted gradient sums to ~0
        gradient = np.sum(w[rows] * (solution.values[j] - r)
                          / np.sqrt(1 + (solution.values[j] - r) ** 2))
        assert abs(gradient) <= 1e-6 * np.sum(w[rows])


def test_solver_kinks_away_from_the_residuals():
    # two kinks per row, at r and r - 2: the one-kink-at-the-residual shortcut fails its
    # check on all rows, and those leaves are searched in full
    objective = ll.objective("abs(y - p - 2) + 0.5*abs(y - p)")
    rng = np.random.default_rng(4)
    n, leaves_count = 600, 3
    y = rng.normal(size=n) * 3
    F = np.zeros(n)
    leaves = rng.integers(0, leaves_count, n)
    solution = solve_leaves(objective, y, F, leaves, leaves_count)
    assert solution.solved.all()
    for j in range(leaves_count):
        r = y[leaves == j]

        def total(c, r=r):
            return np.sum(np.abs(r - c - 2) + 0.5 * np.abs(r - c))

        kinks = np.concatenate([r, r - 2])
        costs = np.array([total(k) for k in kinks])
        # a minimiser (there may be a flat stretch of them), to the search's tolerance
        assert total(solution.values[j]) <= costs.min() * (1 + 1e-7)


def test_solver_keeps_the_fallback_without_a_finite_minimiser():
    objective = ll.objective("bce_logits(y, p)")
    # leaf 0: all positive (the loss falls towards +inf); leaf 1: mixed; leaf 2: no rows;
    # leaf 3: zero weight
    y = np.array([1.0] * 20 + [1.0] * 6 + [0.0] * 14 + [1.0, 0.0])
    leaves = np.array([0] * 20 + [1] * 20 + [3, 3])
    w = np.ones(y.size)
    w[-2:] = 0
    F = np.zeros(y.size)
    fallback = np.array([0.5, -7.0, 0.25, -0.125])
    solution = solve_leaves(objective, y, F, leaves, 4, w, fallback=fallback)
    assert solution.solved.tolist() == [False, True, False, False]
    assert solution.values[0] == 0.5 and solution.values[2] == 0.25
    assert solution.values[3] == -0.125
    assert solution.values[1] == pytest.approx(math.log(6 / 14), abs=1e-6)


def test_refit_auto_follows_the_hessian_policy(asym):
    assert use_refit("auto", asym) is True
    assert use_refit("auto", ll.objective("pseudo_huber(y, p)")) is False
    assert use_refit(False, asym) is False
    with pytest.raises(lossdsl.LossError):
        use_refit("yes", asym)


# ---------------------------------------------------------------------- LightGBM
class Recording(ll.LightGBMObjective):
    """Remembers the scores each gradient call was made at."""

    def gradients(self, label, prediction, weight=None, *, container=None):
        self.__dict__.setdefault("seen", []).append(np.array(prediction, dtype=np.float64))
        return super().gradients(label, prediction, weight, container=container)


@pytest.fixture(scope="module")
def lgb_model(data):
    X, y, w = data["X"], data["y"], data["weight"]
    train_rows, valid_rows = slice(0, 450), slice(450, None)
    objective = Recording(ASYM)
    valid_objective = ll.objective(ASYM)
    train_set = lgb.Dataset(X[train_rows], y[train_rows], weight=w[train_rows])
    valid_set = lgb.Dataset(X[valid_rows], y[valid_rows], weight=w[valid_rows])
    history = {}
    booster = ll.train(objective, LGB_PARAMS, train_set, 6, evals=[("valid", valid_set,
                                                                      valid_objective)],
                       evals_result=history)
    return {"booster": booster, "objective": objective, "history": history,
            "X": X[train_rows], "y": y[train_rows], "w": w[train_rows],
            "Xv": X[valid_rows], "yv": y[valid_rows], "wv": w[valid_rows]}


def test_lightgbm_first_tree_leaves_are_weighted_quantiles(lgb_model):
    booster, X, y, w = lgb_model["booster"], lgb_model["X"], lgb_model["y"], lgb_model["w"]
    init = weighted_quantile(y, w, 0.8)
    assert lgb_model["objective"].init_score(y, w) == pytest.approx(init, rel=1e-9)
    leaves = booster.predict(X, pred_leaf=True, num_iteration=1).reshape(-1)
    assert len(np.unique(leaves)) > 2
    for j in np.unique(leaves):
        rows = leaves == j
        expected = init + 0.3 * weighted_quantile(y[rows] - init, w[rows], 0.8)
        assert booster.get_leaf_output(0, int(j)) == pytest.approx(expected, rel=1e-9)


def test_lightgbm_gradients_and_predictions_are_the_refitted_model(lgb_model):
    booster, X = lgb_model["booster"], lgb_model["X"]
    seen = lgb_model["objective"].seen
    assert len(seen) == 6
    np.testing.assert_allclose(seen[0], lgb_model["objective"].init_score(lgb_model["y"],
                                                                          lgb_model["w"]))
    for k in range(1, 6):  # round k's gradients are taken at the model of k trees
        np.testing.assert_allclose(seen[k], booster.predict(X, raw_score=True, num_iteration=k),
                                   rtol=1e-12, atol=1e-9)
    history = only(lgb_model["history"]["valid"])
    assert only(booster.lossdsl_evals["valid"]) == history
    assert len(history) == 6
    for k in range(1, 7):
        raw = booster.predict(lgb_model["Xv"], raw_score=True, num_iteration=k)
        cost = asym_cost(lgb_model["yv"] - raw, 4.0)
        assert history[k - 1] == pytest.approx(np.average(cost, weights=lgb_model["wv"]),
                                               rel=1e-9)
    assert history[-1] < history[0]


def test_lightgbm_early_stopping_and_errors(data, asym):
    X, y = data["X"], data["y"]
    # validation labels all at the start score: every tree moves away from them, so the
    # first round is the best and training stops 3 rounds later
    target = np.full(200, asym.init_score(y))
    valid = lgb.Dataset(X[:200], target)
    booster = ll.train(asym, LGB_PARAMS, lgb.Dataset(X, y), 50, evals=[("v", valid)],
                       early_stopping_rounds=3)
    history = only(booster.lossdsl_evals["v"])
    assert booster.best_iteration == 1 and len(history) == 4
    assert history[0] == min(history)
    raw = booster.predict(X[:200], raw_score=True)  # predict uses best_iteration
    assert np.mean(asym_cost(target - raw, 4.0)) == pytest.approx(history[0], rel=1e-6)

    constructed = lgb.Dataset(X, y)
    constructed.construct()
    with pytest.raises(lossdsl.LossError, match="free_raw_data=False"):
        ll.train(asym, LGB_PARAMS, constructed, 2)
    with pytest.raises(lossdsl.LossError, match="conflicts"):
        ll.train(asym, {**LGB_PARAMS, "objective": "quantile"}, lgb.Dataset(X, y), 2)
    with pytest.raises(lossdsl.LossError, match="init_score"):
        ll.train(asym, LGB_PARAMS, lgb.Dataset(X, y, init_score=np.zeros(len(y))), 2)
    # too few rows for any split under min_data_in_leaf: LightGBM's fatal check, explained
    with pytest.raises(lossdsl.LossError, match="min_data_in_leaf"):
        ll.train(asym, {**LGB_PARAMS, "min_data_in_leaf": 20}, lgb.Dataset(X[:10], y[:10]), 2)


def test_lightgbm_round_count_and_early_stopping_in_params_are_obeyed(data, asym):
    """lgb.train obeys num_iterations and early_stopping_round in params; train() ignored
    both without a word (20 rounds for num_iterations=5, no early stopping)."""
    X, y = data["X"], data["y"]
    for name in ("num_iterations", "n_estimators"):
        booster = ll.train(asym, {**LGB_PARAMS, name: 5}, lgb.Dataset(X, y), 20)
        assert booster.current_iteration() == 5
    valid = lgb.Dataset(X[:200], np.full(200, asym.init_score(y)))
    booster = ll.train(asym, {**LGB_PARAMS, "early_stopping_round": 3}, lgb.Dataset(X, y), 50,
                       evals=[("v", valid)])
    assert booster.best_iteration == 1 and len(only(booster.lossdsl_evals["v"])) == 4
    with pytest.raises(lossdsl.LossError, match="different patience"):
        ll.train(asym, {**LGB_PARAMS, "early_stopping_round": 3}, lgb.Dataset(X, y), 50,
                 evals=[("v", valid)], early_stopping_rounds=5)
    with pytest.raises(lossdsl.LossError, match="number of rounds twice"):
        ll.train(asym, {**LGB_PARAMS, "num_iterations": 5, "num_trees": 6}, lgb.Dataset(X, y))


def test_lightgbm_leaf_without_finite_minimiser_stays_finite(data):
    X = data["X"]
    # positives wherever x0 > 0.5: leaves there hold one class only, whose exact value is
    # +inf; they keep LightGBM's (finite) value
    label = ((X[:, 0] > 0.5) | (X[:, 1] > 1.0)).astype(float)
    objective = ll.objective("bce_logits(y, p)")
    booster = ll.train(objective, LGB_PARAMS, lgb.Dataset(X, label), 4, refit=True)
    raw = booster.predict(X, raw_score=True)
    assert np.all(np.isfinite(raw))
    assert np.mean((raw > 0) == (label > 0)) > 0.9
    with pytest.raises(lossdsl.LossError, match="no finite optimal constant"):
        ll.train(objective, LGB_PARAMS, lgb.Dataset(X, np.ones(len(X))), 2)


def test_lightgbm_per_row_inputs(data):
    X, y, w = data["X"], data["y"], data["weight"]
    under = np.where(X[:, 2] > 0, 1.5, 4.0)
    train_set = lgb.Dataset(X, y, weight=w)
    objective = ll.objective("asymmetric_l1(y, p, under, 1)", inputs={"under": under},
                             rows=train_set)
    booster = ll.train(objective, LGB_PARAMS, train_set, 2)
    init = objective.init_score(y, w)
    leaves = booster.predict(X, pred_leaf=True, num_iteration=1).reshape(-1)
    for j in np.unique(leaves):
        expected = first_leaf_by_brute_force(y, w, under, init, leaves == j)
        assert booster.get_leaf_output(0, int(j)) == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------------- XGBoost
def test_xgboost_refitted_model(data):
    X, y, w = data["X"], data["y"], data["weight"]
    class RecordingX(lx.XGBoostObjective):
        def gradients(self, label, prediction, weight=None, *, container=None):
            self.__dict__.setdefault("seen", []).append(np.array(prediction))
            return super().gradients(label, prediction, weight, container=container)

    objective = RecordingX(ASYM)
    train, valid = xgb.DMatrix(X[:450], y[:450], weight=w[:450]), xgb.DMatrix(X[450:], y[450:])
    booster = lx.train(objective, XGB_PARAMS, train, 5, evals=[("valid", valid)])
    init = weighted_quantile(y[:450], w[:450], 0.8)
    # first tree: every leaf at init + eta * the weighted 0.8 quantile of its residuals
    first = booster[0:1].predict(train, output_margin=True)
    leaves = booster[0:1].predict(train, pred_leaf=True)
    for j in np.unique(leaves):
        rows = leaves == j
        expected = init + 0.3 * weighted_quantile(y[:450][rows] - init, w[:450][rows], 0.8)
        np.testing.assert_allclose(first[rows], expected, rtol=2e-7)
    seen = objective.seen
    assert len(seen) == 5
    for k in range(1, 5):
        np.testing.assert_allclose(seen[k], booster.predict(train, output_margin=True,
                                                            iteration_range=(0, k)),
                                   rtol=1e-6, atol=1e-4)
    history = only(booster.lossdsl_evals["valid"])
    for k in range(1, 6):
        raw = booster.predict(valid, output_margin=True, iteration_range=(0, k))
        assert history[k - 1] == pytest.approx(np.mean(asym_cost(y[450:] - raw, 4.0)),
                                               rel=1e-6)


def test_xgboost_early_stopping_cuts_the_model(data, asym):
    X, y = data["X"], data["y"]
    objective = lx.objective(ASYM)
    target = np.full(200, objective.init_score(y))
    valid = xgb.DMatrix(X[:200], target)
    booster = lx.train(objective, XGB_PARAMS, xgb.DMatrix(X, y), 50,
                       evals=[("v", valid)], early_stopping_rounds=3)
    history = only(booster.lossdsl_evals["v"])
    assert booster.best_iteration == 0 and len(history) == 4
    assert booster.num_boosted_rounds() == 1
    raw = booster.predict(valid, output_margin=True)
    assert np.mean(asym_cost(target - raw, 4.0)) == pytest.approx(history[0], rel=1e-6)
    with pytest.raises(lossdsl.LossError, match="base_score"):
        lx.train(objective, {**XGB_PARAMS, "base_score": 1.0}, xgb.DMatrix(X, y), 2)
    with pytest.raises(lossdsl.LossError, match="conflicts"):
        lx.train(objective, {**XGB_PARAMS, "objective": "reg:quantileerror"},
                 xgb.DMatrix(X, y), 2)
    with pytest.raises(lossdsl.LossError, match="num_parallel_tree"):
        lx.train(objective, {**XGB_PARAMS, "num_parallel_tree": 3}, xgb.DMatrix(X, y), 2)


def test_xgboost_per_row_inputs(data):
    X, y, w = data["X"], data["y"], data["weight"]
    under = np.where(X[:, 2] > 0, 1.5, 4.0)
    dtrain = xgb.DMatrix(X, y, weight=w)
    objective = lx.objective("asymmetric_l1(y, p, under, 1)", inputs={"under": under},
                             rows=dtrain)
    booster = lx.train(objective, XGB_PARAMS, dtrain, 2)
    init = objective.init_score(y, w)
    first = booster[0:1].predict(dtrain, output_margin=True)
    leaves = booster[0:1].predict(dtrain, pred_leaf=True)
    for j in np.unique(leaves):
        rows = leaves == j
        expected = first_leaf_by_brute_force(y, w, under, init, rows)
        np.testing.assert_allclose(first[rows], expected, rtol=2e-7)
    with pytest.raises(lossdsl.LossError):  # the objective belongs to dtrain's rows
        lx.train(objective, XGB_PARAMS, xgb.DMatrix(X[::-1], y[::-1], weight=w[::-1]), 1)


def test_without_refit_the_model_is_the_library_leaves_plus_init(data, asym):
    X, y = data["X"], data["y"]
    objective = Recording(ASYM)
    booster = ll.train(objective, LGB_PARAMS, lgb.Dataset(X, y), 3, refit=False,
                       evals=[("train", lgb.Dataset(X, y))])
    init = objective.init_score(y)
    for k in range(1, 3):  # the gradients are taken at the model's scores, init included
        np.testing.assert_allclose(objective.seen[k],
                                   booster.predict(X, raw_score=True, num_iteration=k),
                                   rtol=1e-12, atol=1e-9)
    # LightGBM's own first-order leaves: the first tree moves every row from the init score
    # by learning_rate * (mean gradient with a constant Hessian), here 0.3 * (4 or -1)
    first = booster.predict(X, raw_score=True, num_iteration=1) - init
    assert np.all(np.abs(first) <= 0.3 * 4 + 1e-9) and np.ptp(first) > 0
    history = only(booster.lossdsl_evals["train"])
    assert history[-1] == pytest.approx(np.mean(asym_cost(y - booster.predict(
        X, raw_score=True), 4.0)), rel=1e-9)

    xobjective = lx.objective(ASYM)
    dtrain = xgb.DMatrix(X, y)
    xbooster = lx.train(xobjective, XGB_PARAMS, dtrain, 3, refit=False,
                        evals=[("train", dtrain)])
    xhistory = only(xbooster.lossdsl_evals["train"])
    for k in range(1, 4):
        raw = xbooster.predict(dtrain, output_margin=True, iteration_range=(0, k))
        assert xhistory[k - 1] == pytest.approx(np.mean(asym_cost(y - raw, 4.0)), rel=1e-6)


def test_lightgbm_classes_refitted_one_after_another(data):
    X = data["X"]
    classes = np.digitize(X[:, 0] + 0.5 * np.random.default_rng(5).normal(size=len(X)),
                          [-0.5, 0.5]).astype(float)
    objective = ll.objective("cce_logits(y, z)")
    params = {**LGB_PARAMS, "num_class": 3}
    history = {}
    for refit in (False, True):
        booster = ll.train(objective, params, lgb.Dataset(X, classes), 4, refit=refit,
                           evals=[("train", lgb.Dataset(X, classes))])
        raw = booster.predict(X, raw_score=True)
        assert raw.shape == (len(X), 3)
        shifted = raw - raw.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        values = only(booster.lossdsl_evals["train"])
        assert values[-1] == pytest.approx(-np.mean(log_p[np.arange(len(X)),
                                                           classes.astype(int)]), rel=1e-9)
        assert all(b < a for a, b in zip(values, values[1:]))  # each round lowers the loss
        history[refit] = values
    assert history[True][-1] < history[False][-1]  # exact leaves fit faster


@pytest.mark.parametrize("case", ["regression", "classes"])
def test_xgboost_leaves_from_cached_margins_match_pred_leaf(data, monkeypatch, case):
    # large training sets take each row's leaf from the change of XGBoost's cached margins
    # (float32, leaves with equal values resolved by pred_leaf): the same model as
    # pred_leaf on every row
    X, y, w = data["X"], data["y"], data["weight"]
    if case == "regression":  # unweighted: some leaves share a value (pred_leaf resolves)
        objective, params, labels, w = lx.objective(ASYM), XGB_PARAMS, y, None
    else:
        objective = lx.objective("cce_logits(y, z)")
        params = {**XGB_PARAMS, "num_class": 3}
        labels = np.digitize(X[:, 0], [-0.5, 0.5]).astype(float)
    models = []
    for margin_rows in (10 ** 9, 0):
        monkeypatch.setattr(lx, "_MARGIN_ROWS", margin_rows)
        booster = lx.train(objective, params, xgb.DMatrix(X, labels, weight=w), 6,
                           refit=True)
        models.append(booster.predict(xgb.DMatrix(X), output_margin=True))
    np.testing.assert_array_equal(models[0], models[1])


def test_leaves_from_changes_resolves_only_clear_matches():
    from lossdsl.boosting.leaves import leaves_from_changes

    values = np.array([0.5, -0.25, 0.125, 0.125 + 1e-18, 3.0])  # leaves 2 and 3: one value
    delta = np.array([0.5, -0.25, 3.0, 0.125, 0.3, np.nan, np.inf, -np.inf, 1e300, -1e300,
                      3.0 + 1e-15])
    leaves, unresolved = leaves_from_changes(delta, values, 10.0)
    assert unresolved.tolist() == [False, False, False, True, True, True, True, True, True,
                                   True, False]
    assert leaves[[0, 1, 2, 10]].tolist() == [0, 1, 4, 4]
    # float32 margins (XGBoost): a change off by float32 rounding still matches
    leaves, unresolved = leaves_from_changes(np.array([0.5 + 1e-7, 0.5 + 1e-4]), values, 10.0,
                                             np.float32)
    assert unresolved.tolist() == [False, True] and leaves[0] == 0


def test_a_nan_validation_loss_is_an_error_not_a_best_round():
    """NaN compares False, so a validation loss of NaN (here a NaN per-row cost among the
    validation rows) never improved on round 1: early stopping silently kept one tree."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 2))
    y = X[:, 0] + rng.normal(size=300)
    cost = rng.uniform(1.0, 2.0, size=300)
    cost[250] = np.nan
    train, valid = xgb.DMatrix(X[:200], y[:200]), xgb.DMatrix(X[200:], y[200:])
    text = "cost*abs(y - p)"
    objective = lx.objective(text, inputs={"cost": cost[:200]}, rows=train)
    scorer = lx.objective(text, inputs={"cost": cost[200:]}, rows=valid)
    with pytest.raises(lossdsl.LossError, match="evaluation set 'valid' is NaN after round 1"):
        lx.train(objective, XGB_PARAMS, train, 10, evals=[("valid", valid, scorer)],
                 early_stopping_rounds=3)


def test_lightgbm_round_reads_match_the_library(data, asym):
    """The round's leaf values (from its model text) equal get_leaf_output leaf by leaf,
    and each training row's leaf from the change of the cached scores equals pred_leaf, in
    every round."""
    X, y = data["X"], data["y"]
    for params, labels in ((LGB_PARAMS, y),
                           ({**LGB_PARAMS, "objective": "multiclass", "num_class": 3},
                            np.digitize(X[:, 0], [-0.5, 0.5]).astype(float))):
        train_set = lgb.Dataset(X, labels, free_raw_data=False)
        booster = lgb.Booster(params=params, train_set=train_set)
        per_round = params.get("num_class", 1)
        shape = (len(X),) if per_round == 1 else (len(X), per_round)
        cached = ll._Cached(booster, shape)
        cached.before()
        for iteration in range(5):
            booster.update()
            values = ll._round_leaf_values(booster, iteration)
            assert len(values) == per_round
            for t, tree_values in enumerate(values):
                expected = [booster.get_leaf_output(iteration * per_round + t, j)
                            for j in range(tree_values.size)]
                assert tree_values.tolist() == expected
            leaves = ll._round_leaves(booster, X, iteration, values, cached, {})
            np.testing.assert_array_equal(
                leaves, booster.predict(X, pred_leaf=True, start_iteration=iteration,
                                        num_iteration=1).reshape(len(X), -1))


def test_score_changes_in_one_pass():
    from lossdsl.boosting.leaves import score_changes

    before = np.array([[1.0, 2.0], [3.0, -4.0]])
    after = np.array([[1.5, 2.0], [2.0, -7.0]])
    delta, largest = score_changes(before, after)
    np.testing.assert_array_equal(delta, after - before)
    assert largest == 7.0 and delta.shape == (2, 2)
    delta, largest = score_changes(np.zeros(3), np.array([1.0, np.nan, -2.0]))
    assert math.isnan(largest) and delta.shape == (3, 1)
