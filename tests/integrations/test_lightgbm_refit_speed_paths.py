"""lossdsl.lightgbm.train's fast paths: public LightGBM APIs only, ambiguous rows sent down
the tree by LightGBM's own decision rules (checked against ``predict(pred_leaf=True)``),
and refitted leaves that are the exact minimisers (checked against a NumPy brute force)."""

import inspect

import numpy as np
import pytest

lgb = pytest.importorskip("lightgbm")
import lossdsl.lightgbm as ll  # noqa: E402

PARAMS = {"verbose": -1, "num_threads": 1, "num_leaves": 7, "learning_rate": 0.3,
          "deterministic": True, "min_data_in_leaf": 10, "seed": 0}


def test_only_public_lightgbm_names():
    """No private attribute of LightGBM's wrapper (they change between versions)."""
    source = inspect.getsource(ll)
    for private in ("_Booster__", "__inner_predict", "._handle", "_safe_call", "_LIB"):
        assert private not in source


def awkward_features(rng, n):
    """Numbers where LightGBM's rules have corners: NaN, exact zeros, values within its
    1e-35 zero threshold, negatives, and a categorical column with NaN, negative, fractional
    and out-of-int-range values."""
    X = rng.normal(size=(n, 4))
    X[rng.random(n) < 0.15, 0] = np.nan
    X[rng.random(n) < 0.2, 1] = 0.0
    X[rng.random(n) < 0.05, 1] = 1e-40
    X[rng.random(n) < 0.05, 1] = -1e-40
    X[:, 2] = np.round(X[:, 2], 1)
    categories = rng.integers(0, 40, size=n).astype(float)
    categories[rng.random(n) < 0.05] = np.nan
    categories[rng.random(n) < 0.03] = -3.0
    categories[rng.random(n) < 0.03] = 2.5
    categories[rng.random(n) < 0.02] = 2.0 ** 33
    X[:, 3] = categories
    return X


@pytest.mark.parametrize("extra", [{}, {"zero_as_missing": True}, {"use_missing": False},
                                   {"categorical_feature": [3], "min_data_per_group": 5,
                                    "cat_smooth": 1.0}],
                         ids=["nan-missing", "zero-missing", "no-missing", "categorical"])
def test_routed_leaves_are_lightgbms_pred_leaf(extra):
    rng = np.random.default_rng(11)
    X = awkward_features(rng, 1500)
    y = np.nan_to_num(X[:, 0]) + (X[:, 1] == 0) + np.nan_to_num(X[:, 3] % 7) \
        + rng.normal(size=len(X))
    params = {**PARAMS, "objective": "regression", "num_leaves": 15, **extra}
    booster = lgb.train(params, lgb.Dataset(X, y), 6)
    routable = ll._routable(X)
    rows = np.arange(len(X))
    for iteration in range(6):
        (tree,) = ll._round_trees(booster, iteration)
        expected = booster.predict(X, pred_leaf=True, start_iteration=iteration,
                                   num_iteration=1).reshape(-1)
        leaves, unresolved = ll._route(routable, tree, rows)
        np.testing.assert_array_equal(leaves[~unresolved], expected[~unresolved])
        # only a categorical split meeting NaN or a value past the int range is left open
        if "categorical_feature" in extra:
            assert set(np.flatnonzero(unresolved)) <= set(
                np.flatnonzero(np.isnan(X[:, 3]) | (X[:, 3] >= 2.0 ** 31)))
        else:
            assert not unresolved.any()


def test_routable_reads_features_as_lightgbm_converts_them():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"count": rng.integers(0, 2 ** 26, size=400),
                          "level": rng.normal(size=400).astype(np.float32)})
    y = frame["count"].to_numpy() / 2 ** 20 + rng.normal(size=400)
    booster = lgb.train({**PARAMS, "objective": "regression"}, lgb.Dataset(frame, y), 3)
    routable = ll._routable(frame)
    assert routable.dtype == np.float64  # int64 columns: LightGBM's common type is float64
    for iteration in range(3):
        (tree,) = ll._round_trees(booster, iteration)
        leaves, unresolved = ll._route(routable, tree, np.arange(400))
        assert not unresolved.any()
        np.testing.assert_array_equal(
            leaves, booster.predict(frame, pred_leaf=True, start_iteration=iteration,
                                    num_iteration=1).reshape(-1))
    # integers alone: LightGBM converts them to float32 (2**24 + 1 is not one)
    assert ll._routable(np.array([[2 ** 24 + 1]])).dtype == np.float32
    assert ll._routable(frame.astype({"count": "category"})) is None
    assert ll._routable([[1.0, 2.0]]) is None


def asym_cost(residual, value):
    d = residual - value
    return np.where(d > 0, 4.0 * d, -d)


def test_refit_routes_ambiguous_rows_and_leaves_are_exact_minimisers(monkeypatch):
    """With a constant Hessian LightGBM's own leaf values are ratios of small integers and
    coincide, so some rows' leaves are ambiguous from the scores' change: they are routed
    (no ``pred_leaf`` prediction), and every leaf of every tree is a minimiser of the
    asymmetric cost over its rows (brute force over the candidate kinks)."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(500, 4))
    y = np.round(2 * X[:, 0] + X[:, 1] ** 2 + rng.normal(size=500))
    routed, predicted = [], []
    route, predict = getattr(ll, "_route", None), lgb.Booster.predict

    def counting_route(*args, **kwargs):
        routed.append(1)
        return route(*args, **kwargs)

    def counting_predict(self, *args, **kwargs):
        predicted.append(bool(kwargs.get("pred_leaf")))
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(ll, "_route", counting_route, raising=False)
    monkeypatch.setattr(lgb.Booster, "predict", counting_predict)
    rounds = 8
    booster = ll.train(ll.objective("asymmetric_l1(y, p, 4, 1)"), {**PARAMS, "num_leaves": 15},
                       lgb.Dataset(X, y), rounds)
    assert not any(predicted) and routed
    monkeypatch.undo()
    scores = np.full(len(y), booster.lossdsl_init_score)
    for k in range(rounds):
        leaves = booster.predict(X, pred_leaf=True, start_iteration=k,
                                 num_iteration=1).reshape(-1)
        for j in np.unique(leaves):
            rows = leaves == j
            residual = y[rows] - scores[rows]
            value = booster.get_leaf_output(k, int(j)) / 0.3
            if k == 0:  # the init score is folded into the first tree
                value -= booster.lossdsl_init_score / 0.3
            best = min(asym_cost(residual, c).sum() for c in residual)
            assert asym_cost(residual, value).sum() == pytest.approx(best, rel=1e-9,
                                                                     abs=1e-9)
        scores = booster.predict(X, raw_score=True, num_iteration=k + 1)
