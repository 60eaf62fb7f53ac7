"""CatBoost custom objectives and metrics from lossdsl losses.

    from catboost import CatBoostRegressor
    import lossdsl.catboost

    obj = lossdsl.catboost.objective("pseudo_huber(y, p)")
    model = CatBoostRegressor(loss_function=obj, eval_metric="RMSE")
    model.fit(X, y, sample_weight=w, baseline=obj.base_margin(y, w))

CatBoost's convention differs from XGBoost's and LightGBM's: ``calc_ders_range`` returns the
first and second derivatives of the NEGATED loss, ``(-dl/da, -d2l/da2)``, and it leaves the
weights to the objective. This object does both, from one fused kernel call per batch, and
applies the same Hessian policy as the other GBDT integrations (so flat and non-convex losses
still give usable Newton leaves). Multiclass objectives implement ``calc_ders_multi``, which
CatBoost calls once per row: it is correct but bound by Python call overhead, and it returns
the diagonal Hessian (a diagonal matrix) that lossdsl computes.

CatBoost tries to JIT-compile Python objectives with Numba; lossdsl's objectives already run
compiled kernels, and CatBoost falls back to calling them as Python methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._boost import DEFAULT_HESSIAN_FLOOR, BoostingObjective, as_objective
from .api import CompiledLoss, Loss

__all__ = ["CatBoostMetric", "CatBoostObjective", "init_score", "metric", "objective"]


class CatBoostObjective(BoostingObjective):
    """A CatBoost objective; see :func:`objective` and :class:`lossdsl._boost.BoostingObjective`."""

    # CatBoost calls calc_ders_range on batches of rows (1000, then 500 at a time) and, with
    # ordered boosting, on permutations of them, without saying which rows: per-row inputs
    # cannot be matched to their rows, so they are refused at construction.
    rows_supported = False
    library = "CatBoost"

    def calc_ders_range(self, approxes: Sequence[float], targets: Sequence[float],
                        weights: Sequence[float] | None) -> list[tuple[float, float]]:
        """``[(-dl/da, -d2l/da2), ...]`` for one batch of rows, weights applied."""
        scores = np.asarray(approxes, dtype=np.float64)
        gradient, hessian = self.gradients(np.asarray(targets, dtype=np.float64), scores,
                                           None if weights is None else np.asarray(weights))
        return list(zip((-gradient).tolist(), (-hessian).tolist()))

    def calc_ders_multi(self, approx: Sequence[float], target: float,
                        weight: float) -> tuple[list[float], list[list[float]]]:
        """``(-gradient, -Hessian)`` for one row of K scores (the Hessian as a diagonal matrix)."""
        scores = np.asarray(approx, dtype=np.float64)[None, :]
        gradient, hessian = self.gradients(np.asarray([target], dtype=np.float64), scores,
                                           None if weight is None else np.array([weight]))
        return (-gradient[0]).tolist(), np.diag(-hessian[0]).tolist()


def objective(loss: str | Loss | CompiledLoss, wrt: str | None = None,
              label: str | None = None, *, hessian: str = "auto",
              hessian_floor: float = DEFAULT_HESSIAN_FLOOR, hessian_constant: float = 1.0,
              hessian_scale: float = 1.0, inputs: Mapping[str, Any] | None = None,
              params: Mapping[str, float] | None = None,
              target: str | None = None) -> CatBoostObjective:
    """A CatBoost custom objective (``CatBoostRegressor(loss_function=...)``).

    Options as :func:`lossdsl.xgboost.objective`, except that ``inputs`` must be scalars:
    CatBoost calls objectives on batches and permutations of the rows without saying which,
    so per-row arrays are refused (a :class:`~lossdsl.LossError`); pass a per-row value that
    scales a row's whole loss as ``sample_weight``.
    """
    return CatBoostObjective(loss, wrt, label, inputs=inputs, params=params, hessian=hessian,
                             hessian_floor=hessian_floor, hessian_constant=hessian_constant,
                             hessian_scale=hessian_scale, target=target)


class CatBoostMetric:
    """A CatBoost metric object: the weighted mean loss at the raw scores, lower is better."""

    def __init__(self, objective: BoostingObjective):
        self.objective = objective

    def is_max_optimal(self) -> bool:
        """Lower loss is better."""
        return False

    def evaluate(self, approxes: Sequence[Sequence[float]], target: Sequence[float],
                 weight: Sequence[float] | None) -> tuple[float, float]:
        """``(weighted loss sum, weight sum)`` over the rows given."""
        scores = np.asarray(approxes, dtype=np.float64)
        scores = scores[0] if scores.shape[0] == 1 else scores.T  # (n,) or (n, K)
        labels = np.asarray(target, dtype=np.float64)
        weights = None if weight is None else np.asarray(weight, dtype=np.float64)
        total = self.objective.value(labels, scores, weights)
        weight_sum = float(np.sum(weights)) if weights is not None else float(len(labels))
        return total * weight_sum, weight_sum

    def get_final_error(self, error: float, weight: float) -> float:
        """The weighted mean loss."""
        return error / weight if weight else 0.0


def metric(loss: str | Loss | CompiledLoss | BoostingObjective, wrt: str | None = None,
           label: str | None = None, *, inputs: Mapping[str, Any] | None = None,
           params: Mapping[str, float] | None = None,
           target: str | None = None) -> CatBoostMetric:
    """A CatBoost ``eval_metric`` object computing the mean loss (scalar ``inputs`` only, as
    for :func:`objective`: CatBoost evaluates metrics on batches of rows too)."""
    if isinstance(loss, BoostingObjective):
        source = loss
        if source._row_inputs():  # an XGBoost/LightGBM objective's per-row inputs: refused
            CatBoostObjective(source.loss, source.wrt, source.label, inputs=source.inputs,
                              params=source.params, hessian="exact", target=source.target)
    else:
        source = CatBoostObjective(loss, wrt, label, inputs=inputs, params=params,
                                   hessian="exact", target=target)
    return CatBoostMetric(source)


def init_score(loss: str | Loss | CompiledLoss | BoostingObjective, y: Any,
               sample_weight: Any = None, *, wrt: str | None = None, label: str | None = None,
               num_class: int | None = None, inputs: Mapping[str, Any] | None = None,
               params: Mapping[str, float] | None = None) -> float | np.ndarray:
    """The optimal constant raw score for labels ``y``, for CatBoost's ``baseline`` (per-row
    ``inputs`` belong to the rows of ``y``; see :func:`lossdsl.xgboost.init_score`)."""
    objective = as_objective(loss, wrt, label, inputs=inputs, params=params, target="cpu",
                             rows=y)
    return objective.init_score(y, sample_weight, num_class)
