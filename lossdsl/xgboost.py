"""XGBoost custom objectives and metrics from lossdsl losses.

    import xgboost as xgb
    import lossdsl.xgboost

    obj = lossdsl.xgboost.objective("40*y*softplus(-p) + (1 - y)*softplus(p)")
    dtrain = xgb.DMatrix(X, y, weight=w)
    booster = xgb.train({"base_score": obj.init_score(y, w)}, dtrain, 100, obj=obj,
                        custom_metric=lossdsl.xgboost.metric(obj))

    model = xgb.XGBRegressor(objective=lossdsl.xgboost.objective("pseudo_huber(y, p)"))
    model.fit(X, y, sample_weight=w)

One object serves both APIs: called as ``obj(predt, dtrain)`` (native ``xgb.train``) it reads
the labels and weights from the DMatrix; called as ``obj(y_true, y_pred, sample_weight=...)``
(the scikit-learn wrapper passes ``sample_weight`` because the signature names it) it uses
what it is given. Either way the weights are applied (XGBoost leaves that to custom
objectives), the predictions are raw margins, and multiclass or multi-target gradients are
returned as ``(n_samples, n_classes)`` arrays (XGBoost >= 2.1; older versions' flat arrays
are accepted too). Gradient and Hessian come from one fused, multi-threaded kernel call.

Starting score: XGBoost does not estimate an intercept for a custom objective (it uses
``base_score=0.5`` as a margin). ``init_score`` gives the optimal constant margin; pass it as
``params["base_score"]`` with ``xgb.train`` (stored in the model) or as ``base_margin`` for
vectors (multiclass) and the scikit-learn classes (and again at prediction time).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xgboost as xgb

from ._boost import DEFAULT_HESSIAN_FLOOR, BoostingObjective, as_objective
from .api import CompiledLoss, Loss

__all__ = ["XGBoostMetric", "XGBoostObjective", "init_score", "metric", "objective"]


class XGBoostObjective(BoostingObjective):
    """An XGBoost objective; see :func:`objective` and :class:`lossdsl._boost.BoostingObjective`."""

    def __call__(self, first: Any, second: Any, *,
                 sample_weight: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(grad, hess)``: native ``obj(predt, dtrain)`` or sklearn ``obj(y_true, y_pred)``."""
        if isinstance(second, xgb.DMatrix):
            return self._native(first, second)
        prediction = np.asarray(second)
        return self.gradients(first, prediction, sample_weight)

    def _native(self, predt: np.ndarray, dtrain: xgb.DMatrix) -> tuple[np.ndarray, np.ndarray]:
        n = dtrain.num_row()
        flat = predt.ndim == 1 and predt.shape[0] != n  # XGBoost < 2.1: flat (n*K,) margins
        prediction = predt.reshape(n, -1) if flat else predt
        gradient, hessian = self.gradients(dtrain.get_label(), prediction, dtrain.get_weight())
        if flat:
            return gradient.reshape(-1), hessian.reshape(-1)
        return gradient, hessian


def objective(loss: str | Loss | CompiledLoss, wrt: str | None = None,
              label: str | None = None, *, hessian: str = "auto",
              hessian_floor: float = DEFAULT_HESSIAN_FLOOR, hessian_constant: float = 1.0,
              hessian_scale: float = 1.0, inputs: Mapping[str, Any] | None = None,
              params: Mapping[str, float] | None = None,
              target: str | None = None) -> XGBoostObjective:
    """An XGBoost custom objective (``xgb.train(obj=...)`` or ``XGBRegressor(objective=...)``).

    ``wrt``/``label`` name the margin and label inputs (guessed: label ``y`` or the first of
    two inputs). ``hessian`` is the Hessian policy: ``"auto"`` (default: exact, floored at
    1e-16; constant 1 per unit weight for piecewise-linear losses such as MAE or quantile),
    ``"exact"``, ``"clip"`` (negatives to 0), ``"floor"`` (at ``hessian_floor``) or
    ``"constant"`` (``hessian_constant``). ``hessian_scale`` multiplies the Hessian (use 2 to
    reproduce ``multi:softprob``, ``exp(0.7)`` for ``count:poisson``). ``inputs`` gives the
    loss's other inputs (scalars or one value per row), ``params`` overrides its params,
    ``target`` is "cpu" (default; XGBoost's own threads keep the cores busy) or "parallel".
    """
    return XGBoostObjective(loss, wrt, label, inputs=inputs, params=params, hessian=hessian,
                            hessian_floor=hessian_floor, hessian_constant=hessian_constant,
                            hessian_scale=hessian_scale, target=target)


class XGBoostMetric:
    """An evaluation metric: the (weighted) mean loss at the raw margins.

    Native: ``xgb.train(custom_metric=m)`` calls ``m(predt, dmatrix) -> (name, value)``.
    scikit-learn: ``XGBRegressor(eval_metric=m)`` calls ``m(y_true, y_pred, sample_weight=)``.
    With a custom objective XGBoost passes raw margins, which is what the loss expects; with a
    built-in objective it passes transformed predictions (probabilities), so write the loss
    on those.
    """

    def __init__(self, objective: BoostingObjective, name: str):
        self.objective = objective
        self.__name__ = name  # XGBoost's scikit-learn wrapper names the metric after __name__

    def __call__(self, first: Any, second: Any, *,
                 sample_weight: Any = None) -> tuple[str, float] | float:
        """``(name, value)`` for the native API, the value alone for the sklearn API."""
        if isinstance(second, xgb.DMatrix):
            n = second.num_row()
            prediction = first.reshape(n, -1) if first.ndim == 1 and first.shape[0] != n \
                else first
            value = self.objective.value(second.get_label(), prediction, second.get_weight())
            return self.__name__, value
        return self.objective.value(first, np.asarray(second), sample_weight)


def metric(loss: str | Loss | CompiledLoss | BoostingObjective, wrt: str | None = None,
           label: str | None = None, *, name: str | None = None,
           inputs: Mapping[str, Any] | None = None,
           params: Mapping[str, float] | None = None,
           target: str | None = None) -> XGBoostMetric:
    """An XGBoost evaluation metric computing the mean loss (lower is better).

    ``loss`` may be an objective made by :func:`objective`, whose roles, inputs and params it
    reuses. ``name`` defaults to the loss's name (or "lossdsl").
    """
    source = as_objective(loss, wrt, label, inputs=inputs, params=params, target=target)
    return XGBoostMetric(source, name or source.loss.name or "lossdsl")


def init_score(loss: str | Loss | CompiledLoss | BoostingObjective, y: Any,
               sample_weight: Any = None, *, wrt: str | None = None, label: str | None = None,
               num_class: int | None = None, inputs: Mapping[str, Any] | None = None,
               params: Mapping[str, float] | None = None) -> float | np.ndarray:
    """The optimal constant margin (``base_score`` / ``base_margin``) for labels ``y``.

    1-D Newton on the summed, weighted loss (bisection-safeguarded, so MAE and quantile reach
    the weighted median/quantile); a vector of ``num_class`` margins for losses over classes.
    """
    objective = as_objective(loss, wrt, label, inputs=inputs, params=params, target="cpu")
    return objective.init_score(y, sample_weight, num_class)
