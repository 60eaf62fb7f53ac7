"""Several quantiles from one booster (XGBoost's ``quantile_alpha`` list, CatBoost's
``MultiQuantile``): ``quantile(y, p, classvec(a))`` with a vector of levels ``a`` is a loss per
score column, each column learning the row's label at its own level."""

from __future__ import annotations

import numpy as np
import pytest

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")

import lossdsl  # noqa: E402
import lossdsl.lightgbm  # noqa: E402
import lossdsl.xgboost  # noqa: E402

LEVELS = np.array([0.1, 0.5, 0.9])
LOSS = "quantile(y, p, classvec(a))"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 3))
    return x, x[:, 0] + rng.normal(size=3000)


def test_start_score_is_each_columns_own_quantile(data):
    _, y = data
    objective = lossdsl.xgboost.objective(LOSS, inputs={"a": LEVELS})
    assert objective.per_column and not objective.class_axis
    start = objective.init_score(y, num_class=3)
    for k, level in enumerate(LEVELS):  # a minimiser of the summed pinball loss
        assert np.mean(y < start[k]) <= level <= np.mean(y <= start[k])
    weights = np.random.default_rng(1).uniform(0.5, 2.0, y.size)
    weighted = objective.init_score(y, weights, num_class=3)

    def pinball(c, level):
        return np.sum(weights * np.maximum(level * (y - c), (level - 1) * (y - c)))

    for k, level in enumerate(LEVELS):  # no label does better (the minimum is at one)
        best = min(pinball(c, level) for c in y)
        assert pinball(weighted[k], level) <= best * (1 + 1e-9)


def test_one_booster_learns_every_level_as_xgboosts_quantile_alpha_list(data):
    x, y = data
    objective = lossdsl.xgboost.objective(LOSS, inputs={"a": LEVELS})
    params = {"max_depth": 3, "eta": 0.1}
    booster = lossdsl.xgboost.train(objective, {**params, "num_class": 3}, xgb.DMatrix(x, y),
                                    60)
    covered = [np.mean(y < booster.predict(xgb.DMatrix(x), output_margin=True)[:, k])
               for k in range(3)]
    built_in = xgb.train({**params, "objective": "reg:quantileerror", "quantile_alpha": LEVELS},
                         xgb.DMatrix(x, y), 60).predict(xgb.DMatrix(x))
    expected = [np.mean(y < built_in[:, k]) for k in range(3)]
    np.testing.assert_allclose(covered, expected, atol=0.01)
    np.testing.assert_allclose(covered, LEVELS, atol=0.01)
    # the library's own loop, first-order leaves: every level still learned, more slowly
    start = objective.base_margin(y, num_class=3)
    native = xgb.train({**params, "eta": 0.3, "num_class": 3, "disable_default_eval_metric": 1},
                       xgb.DMatrix(x, y, base_margin=start), 60, obj=objective)
    scores = native.predict(xgb.DMatrix(x, base_margin=start), output_margin=True)
    np.testing.assert_allclose([np.mean(y < scores[:, k]) for k in range(3)], LEVELS,
                               atol=0.03)


def test_lightgbm_train_refits_each_columns_leaves_to_its_quantile(data):
    x, y = data
    objective = lossdsl.lightgbm.objective(LOSS, inputs={"a": LEVELS})
    booster = lossdsl.lightgbm.train(objective, {"num_class": 3, "verbose": -1,
                                                 "learning_rate": 0.1},
                                     lgb.Dataset(x, y, free_raw_data=False), 30)
    scores = booster.predict(x, raw_score=True)
    covered = [np.mean(y < scores[:, k]) for k in range(3)]
    np.testing.assert_allclose(covered, LEVELS, atol=0.02)


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_training_without_num_class_says_how_many_columns(data, library):
    """Not the compiler's advice for a plain call (pass 'a' as a number): the booster's
    num_class, from the levels' count."""
    x, y = data
    if library == "xgboost":
        module, params, train_set = lossdsl.xgboost, {}, xgb.DMatrix(x[:200], y[:200])
    else:
        module, params = lossdsl.lightgbm, {"verbose": -1}
        train_set = lgb.Dataset(x[:200], y[:200], free_raw_data=False)
    objective = module.objective(LOSS, inputs={"a": LEVELS})
    for given in ({}, {"num_class": 2}):
        with pytest.raises(lossdsl.LossError, match=r"params\['num_class'\] = 3"):
            module.train(objective, {**params, **given}, train_set, 2)
    if library == "xgboost":  # the library's own loop: the objective says it
        with pytest.raises(lossdsl.LossError, match="num_class=3"):
            xgb.train({}, train_set, 2, obj=objective)
    # without num_class the start has a column per level, as the levels say
    start = objective.init_score(y)
    np.testing.assert_allclose(start, objective.init_score(y, num_class=3))


def test_the_estimators_say_where_several_levels_train(data):
    from lossdsl.estimators import LGBMLossRegressor, XGBLossRegressor

    x, y = data
    for estimator in (XGBLossRegressor, LGBMLossRegressor):
        with pytest.raises(lossdsl.LossError, match="regressor predicts one number per row.*"
                                                    "num_class=3"):
            estimator(LOSS, inputs={"a": LEVELS}, n_estimators=2).fit(x[:200], y[:200])
    # the compiler's own message for a plain call is unchanged
    with pytest.raises(lossdsl.LossShapeError, match="pass 'a' as a number"):
        lossdsl.compile(LOSS)(y=y, p=y, a=LEVELS)
