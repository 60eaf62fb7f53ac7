"""pandas objects with different indexes are refused by every entry point that pairs rows.

lossdsl pairs rows by position; a pandas user expects alignment by index label. The core
call refused Series with different indexes, but the boosting objectives (``init_score``,
the scikit-learn-style ``obj(y_true, y_pred, sample_weight)`` call), ``lossdsl.jax``,
``lossdsl.scipy.linear_model`` and the estimators' ``y`` / ``sample_weight`` paired a
reordered weight Series by position without a word: ``init_score`` 0.1322 for 0.1002 (the
weighted mean of y by label), a summed JAX loss 7.347 for 6.220. Each case below holds the
same label-to-weight pairs in another row order, and must be refused with the advice.

Also: ``init_score`` with a NaN weight said the loss's gradient was not finite and blamed
the labels; it names the weight now.
"""

from __future__ import annotations

import numpy as np
import pytest

from lossdsl.errors import LossDomainError, LossShapeError

pd = pytest.importorskip("pandas")

ADVICE = "lossdsl pairs rows by position, not by index label"
N = 6


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(0)
    y, p, w = rng.normal(size=N), rng.normal(size=N), rng.uniform(0.1, 2.0, N)
    reversed_index = np.arange(N)[::-1]
    return {"y": pd.Series(y), "p": p, "w": w,
            # the same weight for each label, in the reverse row order
            "w_reordered": pd.Series(w[::-1], index=reversed_index)}


@pytest.mark.parametrize("library", ["xgboost", "lightgbm", "catboost"])
def test_init_score_refuses_reordered_weights(rows, library):
    module = pytest.importorskip(f"lossdsl.{library}")
    objective = module.objective("mse(y, p)")
    with pytest.raises(LossShapeError, match=ADVICE):
        objective.init_score(rows["y"], rows["w_reordered"])
    # aligned, or plain arrays: the weighted mean
    assert objective.init_score(rows["y"], pd.Series(rows["w"])) == pytest.approx(
        np.average(rows["y"], weights=rows["w"]))


def test_sklearn_style_objective_calls_refuse_reordered_weights(rows):
    xgboost = pytest.importorskip("lossdsl.xgboost")
    lightgbm = pytest.importorskip("lossdsl.lightgbm")
    with pytest.raises(LossShapeError, match=ADVICE):
        xgboost.objective("0.5*mse(y, p)")(rows["y"], rows["p"], sample_weight=rows["w_reordered"])
    with pytest.raises(LossShapeError, match=ADVICE):
        lightgbm.objective("0.5*mse(y, p)")(rows["y"], rows["p"], rows["w_reordered"])
    gradient, _ = xgboost.objective("0.5*mse(y, p)")(rows["y"], rows["p"],
                                                     sample_weight=pd.Series(rows["w"]))
    np.testing.assert_allclose(gradient, rows["w"] * (rows["p"] - rows["y"].to_numpy()))


def test_jax_refuses_reordered_weights(rows):
    pytest.importorskip("jax")
    import lossdsl.jax

    loss = lossdsl.jax.JaxLoss("mse(y, p)", reduction="sum")
    with pytest.raises(LossShapeError, match=ADVICE):
        loss(rows["y"], pd.Series(rows["p"]), sample_weight=rows["w_reordered"])


def test_scipy_linear_model_refuses_reordered_rows_and_empty_data(rows):
    pytest.importorskip("scipy")
    import lossdsl.scipy

    X = pd.DataFrame({"a": rows["p"]})
    with pytest.raises(LossShapeError, match=ADVICE):
        lossdsl.scipy.linear_model("mse(y, p)", X, rows["y"], sample_weight=rows["w_reordered"])
    with pytest.raises(LossShapeError, match=ADVICE):
        lossdsl.scipy.linear_model("mse(y, p)", X, rows["y"].set_axis(np.arange(N)[::-1]))
    # no rows: an error that says so (was NumPy's reshape ValueError from inside fun)
    with pytest.raises(LossShapeError, match="at least one row"):
        lossdsl.scipy.linear_model("mse(y, p)", np.zeros((0, 3)), np.zeros(0))


def test_estimators_refuse_reordered_y_and_weights(rows):
    pytest.importorskip("xgboost")
    from lossdsl.estimators import XGBLossRegressor
    from lossdsl.linear import LossRegressor

    X = pd.DataFrame({"a": rows["p"]})
    for model in (XGBLossRegressor("mse(y, p)", n_estimators=1, nthread=1),
                  LossRegressor("mse(y, p)")):
        with pytest.raises(LossShapeError, match=ADVICE):
            model.fit(X, rows["y"], sample_weight=rows["w_reordered"])
        with pytest.raises(LossShapeError, match=ADVICE):
            model.fit(X, rows["y"].set_axis(np.arange(N)[::-1]))


def test_init_score_names_a_nan_weight(rows):
    xgboost = pytest.importorskip("lossdsl.xgboost")
    weights = rows["w"].copy()
    weights[3] = np.nan
    with pytest.raises(LossDomainError, match="sample weight nan at index 3 is not finite"):
        xgboost.objective("mse(y, p)").init_score(rows["y"], weights)
