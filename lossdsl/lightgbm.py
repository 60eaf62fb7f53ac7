"""LightGBM custom objectives and metrics from lossdsl losses.

    import lightgbm as lgb
    import lossdsl.lightgbm

    obj = lossdsl.lightgbm.objective("asymmetric_l1(y, p, 3.0, 1.0)")
    train = lgb.Dataset(X, y, weight=w, init_score=obj.base_margin(y, w))
    booster = lgb.train({"objective": obj}, train, 100,
                        feval=lossdsl.lightgbm.metric(obj))
    raw = booster.predict(X_test, raw_score=True) + obj.init_score(y, w)

    model = lgb.LGBMRegressor(objective=lossdsl.lightgbm.objective("pseudo_huber(y, p)"))
    model.fit(X, y, sample_weight=w)

One object serves both APIs: ``obj(preds, train_set)`` (``params["objective"]=obj`` in
``lgb.train``, LightGBM 4.x) reads labels and weights from the Dataset; ``obj(y_true,
y_pred, weight)`` (the scikit-learn wrapper passes the weight because the callable takes
three arguments) uses what it is given. LightGBM passes weights to custom objectives but
does not apply them; this objective does. Multiclass scores arrive as (n, K) in LightGBM
>= 4.0 and are answered in the same shape (LightGBM flattens them class-major itself);
older versions' flat class-major arrays are reshaped and answered class-major.

Starting score: with a custom objective LightGBM starts every row at 0 and ignores
``boost_from_average``; ``init_score`` gives the optimal constant raw score, to pass as the
Dataset's ``init_score`` (``base_margin`` builds the per-row array). LightGBM does not store
it in the model: add it to ``predict(..., raw_score=True)``. It raises a ``LossError`` when
no finite score is optimal (a non-convex expected cost, labels all in one class).

Per-row inputs (a value per training row that is not the label) need ``rows=y`` (or the
training Dataset): the objective then refuses a cross-validation fold or a shuffled copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightgbm as lgb
import numpy as np

from ._boost import DEFAULT_HESSIAN_FLOOR, BoostingObjective, as_objective
from .api import CompiledLoss, Loss

__all__ = ["LightGBMMetric", "LightGBMObjective", "init_score", "metric", "objective"]


def _scores(preds: np.ndarray, n: int) -> tuple[np.ndarray, bool]:
    """(scores as (n,) or (n, K), whether they came flat and class-major)."""
    preds = np.asarray(preds)
    if preds.ndim == 1 and preds.shape[0] != n:  # LightGBM < 4.0 multiclass: class-major
        return preds.reshape(-1, n).T, True
    return preds, False


class LightGBMObjective(BoostingObjective):
    """A LightGBM objective; see :func:`objective` and :class:`lossdsl._boost.BoostingObjective`."""

    # LightGBM keeps gradients in float32 and copies float64 ones over each round: the kernel
    # computes in float64 from the float64 scores and rounds as it stores.
    gradient_dtype = np.dtype(np.float32)

    def __call__(self, first: Any, second: Any,
                 weight: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(grad, hess)``: native ``obj(preds, train_set)`` or sklearn ``obj(y_true, y_pred,
        weight)``."""
        container = None
        if isinstance(second, lgb.Dataset):
            label, weight = second.get_label(), second.get_weight()
            scores, class_major = _scores(first, second.num_data())
            container = second
        else:
            label = first
            scores, class_major = _scores(second, np.asarray(first).shape[0])
        gradient, hessian = self.gradients(label, scores, weight, container=container)
        if class_major:
            return gradient.T.reshape(-1), hessian.T.reshape(-1)
        if gradient.ndim == 2:
            # LightGBM ravels (n, K) in Fortran order: hand it Fortran-ordered arrays so that
            # ravel is a view rather than a copy.
            return np.asfortranarray(gradient), np.asfortranarray(hessian)
        return gradient, hessian


def objective(loss: str | Loss | CompiledLoss, wrt: str | None = None,
              label: str | None = None, *, hessian: str = "auto",
              hessian_floor: float = DEFAULT_HESSIAN_FLOOR, hessian_constant: float = 1.0,
              hessian_scale: float = 1.0, inputs: Mapping[str, Any] | None = None,
              params: Mapping[str, float] | None = None,
              target: str | None = None, rows: Any = None) -> LightGBMObjective:
    """A LightGBM custom objective: ``params["objective"]=obj`` or ``LGBMRegressor(objective=obj)``.

    Options as :func:`lossdsl.xgboost.objective` (per-row ``inputs`` need ``rows``: the
    training labels in order, or the training ``lgb.Dataset``). To reproduce LightGBM's
    built-in ``multiclass`` pass ``hessian_scale=K/(K-1)``; for ``poisson``, ``exp(0.7)``.
    """
    return LightGBMObjective(loss, wrt, label, inputs=inputs, params=params, hessian=hessian,
                             hessian_floor=hessian_floor, hessian_constant=hessian_constant,
                             hessian_scale=hessian_scale, target=target, rows=rows)


class LightGBMMetric:
    """An evaluation metric: the (weighted) mean loss at the raw scores, lower is better.

    Native ``lgb.train(feval=m)``: ``m(preds, eval_data) -> (name, value, False)``;
    scikit-learn ``fit(eval_metric=m)``: ``m(y_true, y_pred, weight)`` likewise. With a custom
    objective LightGBM passes raw scores.
    """

    def __init__(self, objective: BoostingObjective, name: str):
        self.objective = objective
        self.name = name

    def __call__(self, first: Any, second: Any, weight: Any = None) -> tuple[str, float, bool]:
        """``(name, mean loss, is_higher_better=False)``."""
        if isinstance(second, lgb.Dataset):
            scores, _ = _scores(first, second.num_data())
            value = self.objective.value(second.get_label(), scores, second.get_weight(),
                                         container=second)
        else:
            scores, _ = _scores(second, np.asarray(first).shape[0])
            value = self.objective.value(first, scores, weight)
        return self.name, value, False


def metric(loss: str | Loss | CompiledLoss | BoostingObjective, wrt: str | None = None,
           label: str | None = None, *, name: str | None = None,
           inputs: Mapping[str, Any] | None = None,
           params: Mapping[str, float] | None = None,
           target: str | None = None, rows: Any = None) -> LightGBMMetric:
    """A LightGBM evaluation metric computing the mean loss (reuses an objective's settings,
    ``rows`` included: per-row inputs are evaluated only on the rows they belong to)."""
    source = as_objective(loss, wrt, label, inputs=inputs, params=params, target=target,
                          rows=rows)
    return LightGBMMetric(source, name or source.loss.name or "lossdsl")


def init_score(loss: str | Loss | CompiledLoss | BoostingObjective, y: Any,
               sample_weight: Any = None, *, wrt: str | None = None, label: str | None = None,
               num_class: int | None = None, inputs: Mapping[str, Any] | None = None,
               params: Mapping[str, float] | None = None) -> float | np.ndarray:
    """The optimal constant raw score for labels ``y`` (see :func:`lossdsl.xgboost.init_score`)."""
    objective = as_objective(loss, wrt, label, inputs=inputs, params=params, target="cpu",
                             rows=y)
    return objective.init_score(y, sample_weight, num_class)
