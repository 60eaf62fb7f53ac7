"""Demand forecasting with LightGBM and an asymmetric L1 loss written in lossdsl.

A store orders stock from the forecast. Each unit of demand it cannot serve (under-forecast)
costs 3 in lost margin; each unsold unit (over-forecast) costs 1 in waste. The stock
objective (regression, squared error) forecasts the mean demand; the lossdsl objective
``asymmetric_l1(y, p, under=3, over=1)`` is exactly the business cost, so it learns the
cost-minimising order (the 75% quantile of demand). Both are scored on a held-out split by
the business metric: the total cost of the orders.

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

    stock = lgb.train({**params, "objective": "regression"}, lgb.Dataset(X[train], y[train]),
                      rounds)
    stock_order = stock.predict(X[test])

    # The business cost as the loss. Its Hessian is 0 (piecewise linear): the objective's
    # default Hessian policy boosts first-order, and boosting starts from the loss's optimal
    # constant (the 75% quantile), which LightGBM does not store: add it back when predicting.
    objective = lossdsl.lightgbm.objective(f"asymmetric_l1(y, p, {UNDER_COST}, {OVER_COST})")
    start = objective.init_score(y[train])
    model = lgb.train({**params, "objective": objective},
                      lgb.Dataset(X[train], y[train], init_score=np.full(30_000, start)), rounds)
    order = model.predict(X[test], raw_score=True) + start

    demand = y[test]
    print(f"held-out store-days: {demand.size}, mean demand {demand.mean():.1f}")
    print(f"cost, order the overall 75% quantile:   "
          f"{business_cost(demand, np.full(demand.size, start)):10.0f}")
    print(f"cost, stock regression (mean forecast): {business_cost(demand, stock_order):10.0f}")
    print(f"cost, lossdsl asymmetric_l1:            {business_cost(demand, order):10.0f}")
    print(f"share of days with enough stock: stock {np.mean(stock_order >= demand):.0%}, "
          f"lossdsl {np.mean(order >= demand):.0%} (the cost-optimal share is 75%)")


if __name__ == "__main__":
    main()
