"""Demand forecasting with LightGBM and an asymmetric L1 loss written in lossdsl.

A store orders stock from the forecast. Each unit of demand it cannot serve (under-forecast)
costs 3 in lost margin; each unsold unit (over-forecast) costs 1 in waste. The cost-minimising
order is the 75% quantile of demand (the critical ratio 3 / (3 + 1)). Three models, the same
trees, rounds and learning rate, scored on held-out days by the business cost:

* the stock regression (squared error): the mean demand, ordered as is;
* LightGBM's built-in quantile objective at alpha = 0.75: what a competent user trains for
  this cost (LightGBM refits its leaves to exact quantiles);
* ``lossdsl.lightgbm.train`` on ``asymmetric_l1(y, p, 3, 1)``: the business cost itself, with
  each leaf refitted to the exact minimiser of the cost over its rows.

With a constant cost ratio the built-in quantile IS the business cost, so lossdsl can only tie
it here (its edge is the costs the built-ins cannot express: per-row prices and costs, tiers,
see benchmarks/bench_business.py); the example shows it matches the built-in round for round.

    python examples/train_demand_lightgbm.py
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

import lossdsl.lightgbm

UNDER_COST = 3.0  # per unit of unserved demand
OVER_COST = 1.0   # per unsold unit


def make_sales(rows: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic daily sales: weekday, price, promotion and store effects, overdispersed."""
    rng = np.random.default_rng(seed)
    weekday = rng.integers(0, 7, rows)
    price = rng.uniform(1.0, 5.0, rows)
    promotion = rng.random(rows) < 0.2
    store_size = rng.choice([0.5, 1.0, 2.0], rows)
    mean = store_size * np.exp(3.2 + 0.25 * (weekday >= 5) - 0.3 * price + 0.6 * promotion)
    demand = rng.negative_binomial(3, 3 / (3 + mean))  # variance well above the mean
    features = np.column_stack([weekday, price, promotion, store_size,
                                rng.normal(size=(rows, 2))])  # two noise columns
    return features, demand.astype(np.float64)


def business_cost(demand: np.ndarray, order: np.ndarray) -> float:
    """Total cost of the orders: unserved demand and unsold units."""
    return float(np.sum(UNDER_COST * np.maximum(demand - order, 0)
                        + OVER_COST * np.maximum(order - demand, 0)))


def main() -> None:
    X, y = make_sales(40_000)
    train, test = slice(0, 30_000), slice(30_000, None)
    params = {"num_leaves": 31, "learning_rate": 0.1, "num_threads": 2, "verbose": -1}
    rounds = 300
    alpha = UNDER_COST / (UNDER_COST + OVER_COST)

    stock = lgb.train({**params, "objective": "regression"}, lgb.Dataset(X[train], y[train]),
                      rounds)
    quantile = lgb.train({**params, "objective": "quantile", "alpha": alpha},
                         lgb.Dataset(X[train], y[train]), rounds)

    # The business cost as the loss. Its Hessian is 0 (piecewise linear), so train() refits
    # every leaf to the cost's exact minimiser over its rows, and starts from the cost's
    # optimal constant (the 75% quantile), stored in the model.
    objective = lossdsl.lightgbm.objective(f"asymmetric_l1(y, p, {UNDER_COST}, {OVER_COST})")
    model = lossdsl.lightgbm.train(objective, params,
                                   lgb.Dataset(X[train], y[train], free_raw_data=False), rounds)

    demand = y[test]
    start = objective.init_score(y[train])
    print(f"held-out store-days: {demand.size}, mean demand {demand.mean():.1f}")
    print(f"cost, order the overall 75% quantile:      "
          f"{business_cost(demand, np.full(demand.size, start)):10.0f}")
    print(f"cost, stock regression (mean forecast):    "
          f"{business_cost(demand, stock.predict(X[test])):10.0f}")
    for shown in (25, rounds):
        built_in = quantile.predict(X[test], num_iteration=shown)
        ours = model.predict(X[test], raw_score=True, num_iteration=shown)
        print(f"after {shown:3d} rounds: built-in quantile {business_cost(demand, built_in):10.0f}"
              f", lossdsl asymmetric_l1 {business_cost(demand, ours):10.0f}")
    order = model.predict(X[test], raw_score=True)
    print(f"share of days with enough stock: lossdsl {np.mean(order >= demand):.0%} "
          "(the cost-optimal share is 75%)")


if __name__ == "__main__":
    main()
