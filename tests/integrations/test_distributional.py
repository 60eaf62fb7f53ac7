"""Two score columns that the loss reads itself (``pick(z, 0)``, ``pick(z, 1)``) with one real
label per row, trained with ``num_class=2``: a mean and a log standard deviation
(``gaussian_nll_scores``, CatBoost's ``RMSEWithUncertainty``), a log mean and a log
dispersion of counts (``negative_binomial_scores``). Held out, each beats what XGBoost and
LightGBM users have without it: the built-in mean with a constant spread."""

from __future__ import annotations

import numpy as np
import pytest

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")

import lossdsl  # noqa: E402
import lossdsl.lightgbm  # noqa: E402
import lossdsl.xgboost  # noqa: E402

LOSS = "gaussian_nll_scores(y, z)"
ROUNDS = 60


@pytest.fixture(scope="module")
def data():
    """Heteroscedastic rows: the mean follows x0, the spread exp(0.6 x1)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4000, 3))
    y = 2.0 * x[:, 0] + np.exp(0.6 * x[:, 1]) * rng.normal(size=4000)
    return x[:3000], y[:3000], x[3000:], y[3000:]


def nll(y: np.ndarray, scores: np.ndarray) -> float:
    return float(lossdsl.compile(LOSS)(y=y, z=scores))


def constant_spread_baseline(mean_train, y_train, mean_test) -> np.ndarray:
    """The squared-error model's means, with the training residuals' standard deviation."""
    log_scale = np.log(np.std(y_train - mean_train))
    return np.column_stack([mean_test, np.full(mean_test.size, log_scale)])


def test_one_label_per_row_with_two_score_columns_and_a_start_per_column(data):
    _, y, _, _ = data
    objective = lossdsl.xgboost.objective(LOSS)
    assert objective.class_axis and objective.label_kind == "value"
    np.testing.assert_array_equal(objective.label_array(y, (y.size, 2)), y)
    start = objective.init_score(y, num_class=2)  # the Gaussian fit: mean, log std
    np.testing.assert_allclose(start, [np.mean(y), np.log(np.std(y))], rtol=1e-6, atol=1e-8)
    with pytest.raises(lossdsl.LossShapeError, match="one label per row"):
        objective.label_array(y[:-1], (y.size, 2))


def test_xgboost_learns_the_spread_and_beats_a_constant_one(data):
    x, y, x_test, y_test = data
    params = {"max_depth": 3, "eta": 0.1, "num_class": 2}
    booster = lossdsl.xgboost.train(lossdsl.xgboost.objective(LOSS), params,
                                    xgb.DMatrix(x, y), ROUNDS)
    scores = booster.predict(xgb.DMatrix(x_test), output_margin=True)
    assert np.corrcoef(scores[:, 1], 0.6 * x_test[:, 1])[0, 1] > 0.8
    mse = xgb.train({"max_depth": 3, "eta": 0.1}, xgb.DMatrix(x, y), ROUNDS)
    baseline = constant_spread_baseline(mse.predict(xgb.DMatrix(x)), y,
                                        mse.predict(xgb.DMatrix(x_test)))
    assert nll(y_test, scores) < nll(y_test, baseline) - 0.1


def test_lightgbm_learns_the_spread_and_beats_a_constant_one(data):
    x, y, x_test, y_test = data
    params = {"num_class": 2, "learning_rate": 0.1, "num_leaves": 8, "verbose": -1}
    booster = lossdsl.lightgbm.train(lossdsl.lightgbm.objective(LOSS), params,
                                     lgb.Dataset(x, y, free_raw_data=False), ROUNDS)
    scores = booster.predict(x_test, raw_score=True)
    assert np.corrcoef(scores[:, 1], 0.6 * x_test[:, 1])[0, 1] > 0.8
    mse = lgb.train({"learning_rate": 0.1, "num_leaves": 8, "verbose": -1},
                    lgb.Dataset(x, y), ROUNDS)
    baseline = constant_spread_baseline(mse.predict(x), y, mse.predict(x_test))
    assert nll(y_test, scores) < nll(y_test, baseline) - 0.1


def test_the_estimators_say_where_a_two_column_loss_trains(data):
    from lossdsl.estimators import XGBLossRegressor

    x, y, _, _ = data
    with pytest.raises(lossdsl.LossError, match="several score columns per row"):
        XGBLossRegressor(loss=LOSS, n_estimators=2).fit(x, y)


def test_xgboost_learns_each_rows_overdispersion(data):
    """negative_binomial_scores: the log mean and the log dispersion of counts, one model;
    held out it beats XGBoost's count:poisson with the best constant dispersion."""
    x, _, x_test, _ = data
    rng = np.random.default_rng(8)
    counts = []
    for features in (x, x_test):
        mean, alpha = np.exp(0.5 + 0.5 * features[:, 0]), np.exp(features[:, 1])
        counts.append(rng.negative_binomial(1 / alpha, 1 / (1 + alpha * mean)).astype(float))
    y, y_test = counts
    loss = "negative_binomial_scores(y, z)"
    params = {"max_depth": 3, "eta": 0.1, "num_class": 2}
    booster = lossdsl.xgboost.train(lossdsl.xgboost.objective(loss), params,
                                    xgb.DMatrix(x, y), ROUNDS)
    scores = booster.predict(xgb.DMatrix(x_test), output_margin=True)
    assert np.corrcoef(scores[:, 1], x_test[:, 1])[0, 1] > 0.6
    poisson = xgb.train({"max_depth": 3, "eta": 0.1, "objective": "count:poisson"},
                        xgb.DMatrix(x, y), ROUNDS)
    log_mean = np.log(poisson.predict(xgb.DMatrix(x)))
    nb = lossdsl.compile(loss)
    grid = np.linspace(-4.0, 3.0, 141)  # the best constant log dispersion on training rows
    best = grid[np.argmin([nb(y=y, z=np.column_stack([log_mean, np.full(y.size, s)]))
                           for s in grid])]
    baseline = np.column_stack([np.log(poisson.predict(xgb.DMatrix(x_test))),
                                np.full(y_test.size, best)])
    assert nb(y=y_test, z=scores) < nb(y=y_test, z=baseline) - 0.02


def test_the_number_of_score_columns_comes_from_the_loss_not_the_labels():
    """Real labels say nothing of K: the columns the loss picks do (2 here), whatever the
    labels' values (labels up to 9 once gave 10 columns, negative ones a raw ValueError)."""
    y = np.random.default_rng(0).normal(size=500)
    objective = lossdsl.xgboost.objective(LOSS)
    for labels in (3 + 2 * y, y - 20):
        expected = [np.mean(labels), np.log(np.std(labels))]
        np.testing.assert_allclose(objective.init_score(labels), expected, rtol=1e-6)
        np.testing.assert_allclose(lossdsl.xgboost.init_score(LOSS, labels), expected,
                                   rtol=1e-6)
        np.testing.assert_allclose(lossdsl.lightgbm.init_score(LOSS, labels), expected,
                                   rtol=1e-6)
        assert objective.base_margin(labels).shape == (500, 2)
    assert objective.score_columns == 2
    # columns read some other way than pick at a constant index: K must be given
    reading_all = lossdsl.xgboost.objective("0.5*(y - pick(z, 0))^2 + 0.5*rowsum(z^2)",
                                            wrt="z", label="y")
    assert reading_all.reads_score_columns and reading_all.score_columns is None
    with pytest.raises(lossdsl.LossError, match="pass num_class=K"):
        reading_all.init_score(y)
    np.testing.assert_allclose(reading_all.init_score(y, num_class=3),
                               [np.mean(y) / 2, 0, 0], atol=1e-9)
    # a num_class the loss contradicts: a start with a dead third column, and xgb.train
    # trained that column too
    with pytest.raises(lossdsl.LossError, match=r"set to train 3: set params\['num_class'\] = 2"):
        lossdsl.xgboost.init_score(LOSS, y, num_class=3)
    with pytest.raises(lossdsl.LossError, match=r"params\['num_class'\] = 2"):
        xgb.train({"num_class": 3, "base_score": 0.0}, xgb.DMatrix(y[:50, None], y[:50]), 1,
                  obj=lossdsl.xgboost.objective(LOSS))
    onehot = lossdsl.xgboost.objective("bce_logits(y, z)", columns="onehot")
    with pytest.raises(lossdsl.LossError, match="pass num_class=K"):
        onehot.init_score(np.array([0.0, 1, 2, 2]))  # it said 'y' must be in [0, 1]
    np.testing.assert_allclose(onehot.init_score(np.array([0.0, 1, 2, 2]), num_class=3),
                               np.log([1 / 3, 1 / 3, 1.0]), atol=1e-9)


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_training_without_num_class_says_how_many_columns(data, library):
    x, y, _, _ = data
    if library == "xgboost":
        module, params, train_set = lossdsl.xgboost, {}, xgb.DMatrix(x[:200], y[:200])
    else:
        module, params = lossdsl.lightgbm, {"verbose": -1}
        train_set = lgb.Dataset(x[:200], y[:200], free_raw_data=False)
    with pytest.raises(lossdsl.LossError, match=r"params\['num_class'\] = 2"):
        module.train(module.objective(LOSS), params, train_set, 2)


def test_underdispersed_counts_have_no_finite_start():
    """Counts whose variance is below their mean: the NB likelihood keeps rising as the
    dispersion goes to 0 (the Poisson limit), so no finite start exists. The far probe's
    0/0 (1/alpha overflowing) was once taken for a rise, and a start of -34.7 returned."""
    counts = np.random.default_rng(5).binomial(6, 0.3, 500).astype(float)
    assert np.var(counts) < np.mean(counts)
    loss = "negative_binomial_scores(y, z)"
    objective = lossdsl.xgboost.objective(loss)
    with pytest.raises(lossdsl.LossError, match="score column 1 goes to -inf.*init_score=False"):
        objective.init_score(counts, num_class=2)
    x = np.random.default_rng(6).normal(size=(500, 2))
    with pytest.raises(lossdsl.LossError, match="poisson_log"):
        lossdsl.xgboost.train(objective, {"num_class": 2}, xgb.DMatrix(x, counts), 2)
    booster = lossdsl.xgboost.train(objective, {"num_class": 2}, xgb.DMatrix(x, counts), 2,
                                    init_score=False)  # what the message says works
    assert np.all(np.isfinite(booster.predict(xgb.DMatrix(x), output_margin=True)))
    # overdispersed counts still get the finite fit: the log mean and the log dispersion
    over = np.random.default_rng(1).negative_binomial(2, 0.3, 4000).astype(float)
    start = objective.init_score(over, num_class=2)
    assert abs(start[0] - np.log(np.mean(over))) < 1e-6
    assert abs(start[1] - np.log(0.5)) < 0.15  # alpha = 1/n = 0.5
