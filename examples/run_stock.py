"""End to end: load a business-cost loss from a .loss file, fit a stocking policy with it.

Demand y depends on a feature x (say, a promotion index). We choose stock levels
p = a + b*x by gradient descent on the stock-out vs over-stock cost of examples/stock.loss,
then compare the cost with the usual "forecast the mean" policy fitted by least squares.

    python examples/run_stock.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import lossdsl

HERE = Path(__file__).resolve().parent


def fit_linear_policy(loss: lossdsl.CompiledLoss, x: np.ndarray, y: np.ndarray,
                      steps: int = 300, rate: float = 0.5) -> np.ndarray:
    """Minimise mean cost(y, a + b*x) over (a, b) with gradient descent (chain rule by hand)."""
    coefficients = np.array([y.mean(), 0.0])
    for _ in range(steps):
        p = coefficients[0] + coefficients[1] * x
        gradient_p = loss.grad("p", y=y, p=p)  # d mean-cost / d p_i, one fused pass
        coefficients -= rate * np.array([gradient_p.sum(), (gradient_p * x).sum()])
    return coefficients


def main() -> None:
    rng = np.random.default_rng(7)
    x = rng.uniform(0.0, 2.0, size=200_000)
    y = rng.gamma(shape=4.0, scale=1.0 + x)  # skewed demand that grows with x

    library = lossdsl.load(HERE / "stock.loss")
    stock = library.stock_smooth.compile(target="parallel", params={"under": 5.0, "over": 1.0})
    cost = library.stock.compile(params={"under": 5.0, "over": 1.0})
    print(f"loaded {library}; inputs {stock.inputs}, params {stock.params}")
    print("gradient of the smoothed cost w.r.t. p:", stock.derivative("p"))

    mean_policy = np.polyfit(x, y, 1)[::-1]  # least squares: the 'forecast the mean' policy
    cost_policy = fit_linear_policy(stock, x, y)
    for name, (a, b) in (("least squares", mean_policy), ("lossdsl stock cost", cost_policy)):
        p = a + b * x
        print(f"{name:>20}: stock = {a:6.3f} + {b:6.3f}*x   mean cost per day = "
              f"{cost(y=y, p=p):.4f}   stock-outs = {np.mean(p < y):.1%}")
    print("optimal stock-out rate for these costs: over/(under+over) =", f"{1 / 6:.1%}")


if __name__ == "__main__":
    main()
