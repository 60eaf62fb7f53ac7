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
vectors (multiclass) and the scikit-learn classes (and again at prediction time). It raises
a ``LossError`` when no finite margin is optimal (a non-convex expected cost, labels all in
one class) rather than returning a huge one.

Per-row inputs (a value per training row that is not the label): build the objective with
``inputs={"clv": clv}, rows=y`` (or ``rows=dtrain``); it checks on every call that it runs on
those rows, in that order, and refuses a cross-validation fold or a shuffled copy.
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
        gradient, hessian = self.gradients(dtrain.get_label(), prediction, dtrain.get_weight(),
                                           container=dtrain)
        if flat:
            return gradient.reshape(-1), hessian.reshape(-1)
        return gradient, hessian


def objective(loss: str | Loss | CompiledLoss, wrt: str | None = None,
              label: str | None = None, *, hessian: str = "auto",
              hessian_floor: float = DEFAULT_HESSIAN_FLOOR, hessian_constant: float = 1.0,
              hessian_scale: float = 1.0, inputs: Mapping[str, Any] | None = None,
              params: Mapping[str, float] | None = None,
              target: str | None = None, rows: Any = None) -> XGBoostObjective:
    """An XGBoost custom objective (``xgb.train(obj=...)`` or ``XGBRegressor(objective=...)``).

    ``wrt``/``label`` name the margin and label inputs (guessed: label ``y`` or the first of
    two inputs). ``hessian`` is the Hessian policy: ``"auto"`` (default: exact, floored at
    1e-16; constant 1 per unit weight for losses whose Hessian is 0 everywhere, such as MAE
    or quantile, or on a whole region, such as Huber outside its quadratic zone),
    ``"exact"``, ``"clip"`` (negatives to 0), ``"floor"`` (at ``hessian_floor``) or
    ``"constant"`` (``hessian_constant``). ``hessian_scale`` multiplies the Hessian (use 2 to
    reproduce ``multi:softprob``, ``exp(0.7)`` for ``count:poisson``). ``inputs`` gives the
    loss's other inputs (scalars or one value per row), ``params`` overrides its params,
    ``target`` is "cpu" (default; XGBoost's own threads keep the cores busy) or "parallel".

    Per-row ``inputs`` (one value per training row, e.g. a customer's value) need ``rows``:
    the training labels in the same order, or the training ``DMatrix``. The objective then
    refuses other rows: a fold of ``xgb.cv`` or ``cross_val_score`` (a
    :class:`~lossdsl.LossShapeError` naming the input), or a shuffled ``X, y`` (a
    :class:`~lossdsl.LossError`), instead of pairing the values with the wrong rows.
    """
    return XGBoostObjective(loss, wrt, label, inputs=inputs, params=params, hessian=hessian,
                            hessian_floor=hessian_floor, hessian_constant=hessian_constant,
                            hessian_scale=hessian_scale, target=target, rows=rows)


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
            value = self.objective.value(second.get_label(), prediction, second.get_weight(),
                                         container=second)
            return self.__name__, value
        return self.objective.value(first, np.asarray(second), sample_weight)


def metric(loss: str | Loss | CompiledLoss | BoostingObjective, wrt: str | None = None,
           label: str | None = None, *, name: str | None = None,
           inputs: Mapping[str, Any] | None = None,
           params: Mapping[str, float] | None = None,
           target: str | None = None, rows: Any = None) -> XGBoostMetric:
    """An XGBoost evaluation metric computing the mean loss (lower is better).

    ``loss`` may be an objective made by :func:`objective`, whose roles, inputs, params and
    ``rows`` it reuses (a metric with per-row inputs evaluates only the rows they belong
    to). ``name`` defaults to the loss's name (or "lossdsl").
    """
    source = as_objective(loss, wrt, label, inputs=inputs, params=params, target=target,
                          rows=rows)
    return XGBoostMetric(source, name or source.loss.name or "lossdsl")


def init_score(loss: str | Loss | CompiledLoss | BoostingObjective, y: Any,
               sample_weight: Any = None, *, wrt: str | None = None, label: str | None = None,
               num_class: int | None = None, inputs: Mapping[str, Any] | None = None,
               params: Mapping[str, float] | None = None) -> float | np.ndarray:
    """The optimal constant margin (``base_score`` / ``base_margin``) for labels ``y``.

    1-D Newton on the summed, weighted loss (bisection-safeguarded, so MAE and quantile reach
    the weighted median/quantile); a vector of ``num_class`` margins for losses over classes.
    Per-row ``inputs`` belong to the rows of ``y``. Raises :class:`~lossdsl.LossError` when
    no finite margin is optimal (a non-convex expected cost, labels all in one class): see
    :meth:`lossdsl._boost.BoostingObjective.init_score`.
    """
    objective = as_objective(loss, wrt, label, inputs=inputs, params=params, target="cpu",
                             rows=y)
    return objective.init_score(y, sample_weight, num_class)
