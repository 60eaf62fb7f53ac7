"""What every gradient-boosting integration shares: roles, labels, Hessian policy, init score.

A GBDT asks a custom objective for the per-sample gradient and Hessian of the loss with
respect to the raw score (margin), each multiplied by the sample's weight. A lossdsl loss
compiled with ``reduction="sum"`` gives exactly that from one fused kernel call:
``d(sum_i w_i l_i)/dp_i = w_i dl_i/dp_i``. This module turns the library-specific calling
conventions into that call (``lossdsl.xgboost``, ``lossdsl.lightgbm`` and ``lossdsl.catboost``
are thin adapters around :class:`BoostingObjective`), and owns the parts users get wrong by
hand: which input is the label and which the prediction, integer versus one-hot labels for
multiclass losses, weights, the Hessian of flat or non-convex losses, and the optimal
constant score to start boosting from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .api import CompiledLoss, Loss, loss_from_text
from .errors import LossError, LossNameError, LossShapeError, did_you_mean
from .ir import is_constant

HESSIAN_POLICIES = ("auto", "exact", "clip", "floor", "constant")

# Names a label input usually has; anything else falls back to "the first of two inputs",
# the argument order every prelude loss follows (y, p).
# Input names taken to be the label (the target) when the caller does not say which it is.
LABEL_NAMES = ("y", "y_true", "label", "labels", "target", "t")

# XGBoost floors the Hessian of its logistic and softmax objectives at this value.
DEFAULT_HESSIAN_FLOOR = 1e-16


def as_loss(loss: str | Loss | CompiledLoss) -> tuple[Loss, dict[str, float], str | None]:
    """(the loss definition, its param overrides, its compile target) from any loss form.

    A :class:`CompiledLoss` is accepted for convenience; only its definition, params and
    target are kept, because integrations compile it again with the reduction they need.
    """
    if isinstance(loss, CompiledLoss):
        return loss.loss, dict(loss.params), loss.target
    if isinstance(loss, Loss):
        return loss, {}, None
    if isinstance(loss, str):
        return loss_from_text(loss), {}, None
    raise TypeError(f"expected loss text, a Loss or a CompiledLoss, not {type(loss).__name__}")


def default_roles(loss: Loss, wrt: str | None, label: str | None,
                  fixed: Mapping[str, Any]) -> tuple[str, str]:
    """(label input, prediction input) of a loss, filling in what the caller left out.

    The label is the input named like a label (``y``, ``target``, ...), else the first of the
    two inputs left once ``fixed`` inputs are set aside; the prediction is the other one.
    """
    inputs = loss.inputs
    for name, role in ((wrt, "wrt"), (label, "label")):
        if name is not None and name not in inputs:
            raise LossNameError(f"{role}={name!r} is not an input of this loss (inputs: "
                                f"{', '.join(inputs)})", None, did_you_mean(name, inputs))
    for name in fixed:
        if name not in inputs:
            raise LossNameError(f"inputs={{{name!r}: ...}} is not an input of this loss "
                                f"(inputs: {', '.join(inputs)})", None,
                                did_you_mean(name, inputs))
    free = [n for n in inputs if n not in fixed and n != wrt and n != label]
    if label is None:
        named = [n for n in free if n in LABEL_NAMES]
        if named:
            label = named[0]
        elif wrt is not None and len(free) == 1:
            label = free[0]
        elif wrt is None and len(free) == 2:
            label = free[0]
        else:
            raise LossError(f"cannot tell which input of ({', '.join(inputs)}) is the label; "
                            "pass label='...' (and wrt='...' for the prediction)")
        free.remove(label)
    if wrt is None:
        if len(free) != 1:
            raise LossError(f"cannot tell which input of ({', '.join(inputs)}) is the "
                            "prediction; pass wrt='...', and inputs={...} for the others")
        wrt = free[0]
    else:
        leftover = [n for n in free if n != wrt]
        if leftover:
            raise LossNameError(f"input '{leftover[0]}' has no value: pass it in "
                                f"inputs={{'{leftover[0]}': ...}} (a scalar or one value per "
                                "row)")
    if wrt == label:
        raise LossError(f"the label and the prediction cannot both be '{wrt}'")
    return label, wrt


def as_objective(loss: Any, wrt: str | None = None, label: str | None = None, *,
                 inputs: Mapping[str, Any] | None = None,
                 params: Mapping[str, float] | None = None,
                 target: str | None = None) -> BoostingObjective:
    """``loss`` itself when it is an objective already (its roles, inputs and params are
    reused), else an exact-Hessian objective for it: what metrics and init scores need."""
    if isinstance(loss, BoostingObjective):
        return loss
    return BoostingObjective(loss, wrt, label, inputs=inputs, params=params, hessian="exact",
                             target=target)


class BoostingObjective:
    """A compiled loss seen as a GBDT objective: per-sample gradient and Hessian of the raw score.

    Parameters (shared by the XGBoost, LightGBM and CatBoost adapters):

    ``loss``: loss text, a :class:`~lossdsl.Loss` or a :class:`~lossdsl.CompiledLoss`.
    ``wrt`` / ``label``: the prediction (raw margin) and label inputs; guessed when left out
    (the label is ``y``, or the first of two inputs).
    ``inputs``: values of any other inputs: scalars, or arrays with one value per training
    row (e.g. a per-transaction cost).
    ``params``: overrides of the loss's ``param`` values.
    ``hessian``: the Hessian policy, see :meth:`apply_hessian_policy`.
    ``hessian_floor``: the floor used by ``"floor"`` (and ``"auto"``), per unit of weight.
    ``hessian_constant``: the Hessian per unit of weight used by ``"constant"``.
    ``hessian_scale``: a factor applied to the Hessian last; built-in objectives use scaled
    Hessians that bound the true one (XGBoost ``multi:softprob``: 2; LightGBM multiclass:
    ``K/(K-1)``; Poisson in both: ``exp(max_delta_step) = exp(0.7)``), so pass the same factor
    to reproduce them exactly.
    ``target``: the kernel target, ``"cpu"`` (default) or ``"parallel"``. Serial is the
    default because the booster runs its own threads: a multi-threaded objective competes
    with them for the cores (measured: XGBoost at 10^6 rows on 2 cores trained 1.24x slower
    with a parallel objective, 1.06x with a serial one, relative to the built-in).
    """

    #: The dtype gradients and Hessians are stored in (None: the kernel's own dtype).
    gradient_dtype: np.dtype | None = None

    def __init__(self, loss: str | Loss | CompiledLoss, wrt: str | None = None,
                 label: str | None = None, *, inputs: Mapping[str, Any] | None = None,
                 params: Mapping[str, float] | None = None, hessian: str = "auto",
                 hessian_floor: float = DEFAULT_HESSIAN_FLOOR, hessian_constant: float = 1.0,
                 hessian_scale: float = 1.0, target: str | None = None):
        definition, compiled_params, compiled_target = as_loss(loss)
        if hessian not in HESSIAN_POLICIES:
            raise LossError(f"unknown hessian policy {hessian!r}; expected one of "
                            f"{', '.join(HESSIAN_POLICIES)}")
        if hessian_floor < 0 or hessian_constant <= 0 or hessian_scale <= 0:
            raise LossError("hessian_floor must be >= 0, hessian_constant and hessian_scale > 0")
        self.loss = definition
        self.inputs = dict(inputs or {})
        self.label, self.wrt = default_roles(definition, wrt, label, self.inputs)
        self.params = {**compiled_params, **dict(params or {})}
        self.hessian = hessian
        self.hessian_floor = float(hessian_floor)
        self.hessian_constant = float(hessian_constant)
        self.hessian_scale = float(hessian_scale)
        self.target = target or compiled_target or "cpu"
        if self.target == "cuda":
            raise LossError("GBDT objectives receive NumPy arrays; use target 'cpu' or "
                            "'parallel'")
        self._setup()

    # ------------------------------------------------------------------ compiled state
    def _setup(self) -> None:
        """Compile (kernels themselves are built lazily, on first use, and cached on disk)."""
        self._summed = self.loss.compile(self.target, "sum", self.params)
        self._mean: CompiledLoss | None = None
        ranks = self._summed.default_ranks()
        labels = self._summed.label_inputs()
        self.class_axis = ranks[self.wrt] == 2  # a loss over classes (softmax and friends)
        self.label_kind = ("index" if self.label in labels
                           else "matrix" if ranks[self.label] == 2 else "value")
        self.policy = self.hessian
        if self.hessian == "auto":
            # A piecewise-linear loss (MAE, quantile, asymmetric L1, hinge) has a Hessian that
            # is 0 almost everywhere: Newton leaves would be -G/0. Boost first-order instead.
            curvature = self._summed.derivative(self.wrt, order=2)
            flat = is_constant(curvature, 0.0)
            self.policy = "constant" if flat else "floor"
            if is_constant(curvature) and curvature.value >= self.hessian_floor:
                self.policy = "exact"  # a constant curvature above the floor: nothing to do

    def __getstate__(self) -> dict[str, Any]:
        # Compiled kernels hold locks and machine code: ship the definition, compile on arrival
        # (Dask and multiprocessing pickle objectives to send them to workers).
        state = dict(self.__dict__)
        for key in ("_summed", "_mean"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    @property
    def compiled(self) -> CompiledLoss:
        """The loss compiled with ``reduction="sum"``: per-sample, weighted derivatives."""
        return self._summed

    @property
    def mean_loss(self) -> CompiledLoss:
        """The loss compiled with ``reduction="weighted_mean"`` (``sum(w*l)/sum(w)``, the
        boosters' weighted metrics), for metrics."""
        if self._mean is None:
            self._mean = self.loss.compile(self.target, "weighted_mean", self.params)
        return self._mean

    # ------------------------------------------------------------------ data
    def label_array(self, label: Any, prediction_shape: tuple[int, ...]) -> np.ndarray:
        """The label as the loss wants it, for predictions of ``prediction_shape``.

        GBDTs hold one label per row (a class index for multiclass) or one per row and
        target. Losses over classes take either integer labels (``pick``) or a one-hot
        matrix; an elementwise loss on a (n, K) score gets a one-hot matrix (one-vs-rest).
        """
        y = np.asarray(label)
        if y.dtype.kind not in "fiub":
            raise LossShapeError(f"labels must be numeric, got dtype {y.dtype}")
        n = prediction_shape[0]
        if len(prediction_shape) == 1:
            if y.size != n:
                raise LossShapeError(f"{y.size} labels for {n} predictions")
            return y.reshape(n)
        num_class = prediction_shape[1]
        if self.label_kind == "index":
            if y.ndim == 2 and y.shape == tuple(prediction_shape):  # one-hot rows: take argmax
                return np.argmax(y, axis=1)
            if y.size != n:
                raise LossShapeError(f"{y.size} labels for predictions of shape "
                                     f"{prediction_shape}; expected one class index per row")
            return self._class_labels(y, num_class)
        if y.size == n * num_class:  # multi-target labels, or one-hot rows
            return y.reshape(prediction_shape)
        if y.size != n:
            raise LossShapeError(f"{y.size} labels for predictions of shape {prediction_shape}; "
                                 "expected one label per row or one per row and column")
        classes = self._class_labels(y, num_class)
        onehot = np.zeros(prediction_shape, dtype=y.dtype if y.dtype.kind == "f" else np.float64)
        onehot[np.arange(n), classes] = 1
        return onehot

    @staticmethod
    def _class_labels(y: np.ndarray, num_class: int) -> np.ndarray:
        flat = y.reshape(-1)
        classes = flat.astype(np.int64)
        if np.any(classes != flat) or np.any((classes < 0) | (classes >= num_class)):
            raise LossShapeError(f"multiclass labels must be integers in [0, {num_class})")
        return classes

    def _arguments(self, label: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
        arguments = dict(self.inputs)
        arguments[self.label] = label
        arguments[self.wrt] = prediction
        return arguments

    @staticmethod
    def weight_array(weight: Any, n: int) -> np.ndarray | None:
        """Sample weights as a vector, or None when absent (XGBoost gives an empty array)."""
        if weight is None:
            return None
        w = np.asarray(weight)
        if w.size == 0:
            return None
        if w.ndim != 1 or w.shape[0] != n:
            raise LossShapeError(f"sample weights have shape {w.shape}, expected ({n},)")
        return w

    # ------------------------------------------------------------------ derivatives
    def gradients(self, label: Any, prediction: np.ndarray,
                  weight: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(gradient, Hessian) of the weighted loss w.r.t. each raw score, shaped like it."""
        prediction = np.asarray(prediction)
        y = self.label_array(label, prediction.shape)
        w = self.weight_array(weight, prediction.shape[0])
        arguments = self._arguments(y, prediction)
        wrt = (self.wrt,)
        if self.policy == "constant":
            # the exact Hessian is not needed: ask the kernel for the gradient alone
            (gradient,) = self._summed._compute(False, wrt, (), arguments, w,
                                                self.gradient_dtype)
            hessian = self._constant_hessian(gradient, w)
        else:
            gradient, hessian = self._summed._compute(False, wrt, wrt, arguments, w,
                                                      self.gradient_dtype)
            self.apply_hessian_policy(hessian, w)
        if self.hessian_scale != 1.0:
            hessian *= hessian.dtype.type(self.hessian_scale)
        return gradient, hessian

    def _constant_hessian(self, gradient: np.ndarray, w: np.ndarray | None) -> np.ndarray:
        hessian = np.full(gradient.shape, self.hessian_constant, dtype=gradient.dtype)
        if w is not None:
            hessian *= (w if gradient.ndim == 1 else w[:, None]).astype(gradient.dtype,
                                                                          copy=False)
        return hessian

    def apply_hessian_policy(self, hessian: np.ndarray, w: np.ndarray | None) -> None:
        """Apply the Hessian policy in place to a weighted Hessian.

        * ``"exact"``: the loss's diagonal Hessian, unchanged (XGBoost clips negative values
          itself; LightGBM does not).
        * ``"clip"``: negative curvature (non-convex losses) set to 0.
        * ``"floor"``: curvature below ``hessian_floor`` per unit of weight raised to it, so a
          leaf's Newton step never divides by zero (XGBoost does this with 1e-16 for its
          logistic and softmax objectives).
        * ``"constant"``: ``hessian_constant`` per unit of weight: first-order boosting, each
          leaf moves by the mean negative gradient (what LightGBM does for L1 and quantile).
        * ``"auto"`` (default): ``"constant"`` when the loss's Hessian in the prediction is 0
          everywhere (piecewise-linear losses: MAE, quantile, asymmetric L1, hinge),
          otherwise ``"floor"`` at 1e-16: the exact Hessian of convex losses, which gives the
          same model as the libraries' built-in objectives. Losses that are flat only in
          part of their domain (Huber outside delta) train better with ``"constant"``.
        """
        if self.policy == "clip":
            np.maximum(hessian, 0, out=hessian)
        elif self.policy == "floor":
            if w is None:
                np.maximum(hessian, hessian.dtype.type(self.hessian_floor), out=hessian)
            else:
                floor = w.astype(hessian.dtype) * hessian.dtype.type(self.hessian_floor)
                np.maximum(hessian, floor if hessian.ndim == 1 else floor[:, None], out=hessian)
        elif self.policy == "constant":
            hessian[...] = self._constant_hessian(hessian, w)

    def value(self, label: Any, prediction: np.ndarray, weight: Any = None) -> float:
        """The (weighted) mean loss at raw scores ``prediction``: a metric."""
        prediction = np.asarray(prediction)
        y = self.label_array(label, prediction.shape)
        w = self.weight_array(weight, prediction.shape[0])
        return float(self.mean_loss(sample_weight=w, **self._arguments(y, prediction)))

    def base_margin(self, label: Any, sample_weight: Any = None,
                    num_class: int | None = None) -> np.ndarray:
        """The optimal constant raw score repeated for every row: (n,), or (n, K) for a loss
        over classes (XGBoost ``base_margin``, LightGBM ``init_score``, CatBoost
        ``baseline``)."""
        score = self.init_score(label, sample_weight, num_class)
        n = np.asarray(label).shape[0]
        return np.tile(score, (n, 1)) if np.ndim(score) else np.full(n, score)

    # ------------------------------------------------------------------ init score
    def init_score(self, label: Any, weight: Any = None, num_class: int | None = None, *,
                   max_iter: int = 200, xtol: float = 1e-10) -> float | np.ndarray:
        """The optimal constant raw score: ``argmin_c sum_i w_i l(y_i, c)``.

        A float, or a vector of ``num_class`` scores for losses over classes (and for
        one-vs-rest or multi-target labels given as an (n, K) matrix). Found by 1-D Newton
        steps on the summed loss, safeguarded by bisection (so piecewise-linear losses such as
        MAE and quantile, whose Hessian is 0, converge to the weighted median/quantile); for
        losses over classes by diagonal Newton steps with a backtracking line search.
        """
        y = np.asarray(label)
        n = y.shape[0]
        w = self.weight_array(weight, n)
        if num_class is None:
            if y.ndim == 2:
                num_class = y.shape[1]
            elif self.class_axis:
                num_class = int(np.max(y)) + 1 if y.size else 1
        if num_class is None:
            labels = self.label_array(y, (n,))
            return _newton_1d(self._summed_gradient(labels, w, (n,)), 0.0, max_iter, xtol)
        shape = (n, num_class)
        labels = self.label_array(y, shape)
        if not self.class_axis:  # elementwise over columns: each column is its own 1-D problem
            scores = np.empty(num_class)
            for k in range(num_class):
                column = np.ascontiguousarray(labels[:, k])
                scores[k] = _newton_1d(self._summed_gradient(column, w, (n,)), 0.0, max_iter,
                                       xtol)
            return scores
        return self._newton_classes(labels, w, shape, max_iter, xtol)

    def _summed_gradient(self, labels: np.ndarray, w: np.ndarray | None,
                         shape: tuple[int, ...]) -> Callable[[float], tuple[float, float]]:
        def totals(score: float) -> tuple[float, float]:
            prediction = np.full(shape, score, dtype=np.float64)
            gradient, hessian = self._summed.grad_and_hessian(
                self.wrt, sample_weight=w, **self._arguments(labels, prediction))
            return float(np.sum(gradient)), float(np.sum(hessian))
        return totals

    def _newton_classes(self, labels: np.ndarray, w: np.ndarray | None,
                        shape: tuple[int, int], max_iter: int, xtol: float) -> np.ndarray:
        scores = np.zeros(shape[1])

        def evaluate(c: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
            prediction = np.ascontiguousarray(np.broadcast_to(c, shape))
            arguments = self._arguments(labels, prediction)
            gradient, hessian = self._summed.grad_and_hessian(self.wrt, sample_weight=w,
                                                              **arguments)
            value = float(self._summed(sample_weight=w, **arguments))
            return value, gradient.sum(axis=0), hessian.sum(axis=0)

        value, gradient, hessian = evaluate(scores)
        scale = float(np.sum(w)) if w is not None else float(shape[0])
        for _ in range(max_iter):
            curvature = np.where(hessian > 0, hessian, max(scale, 1e-300))
            direction = -gradient / curvature
            slope = float(gradient @ direction)
            if slope >= 0 or not np.all(np.isfinite(direction)):
                break
            step = 1.0
            for _ in range(50):  # backtracking (Armijo) line search on the summed loss
                candidate = scores + step * direction
                new_value, new_gradient, new_hessian = evaluate(candidate)
                if new_value <= value + 1e-4 * step * slope:
                    break
                step *= 0.5
            else:
                break
            moved = np.max(np.abs(candidate - scores))
            scores, value, gradient, hessian = candidate, new_value, new_gradient, new_hessian
            if moved <= xtol * (1 + np.max(np.abs(scores))):
                break
        return scores


def _newton_1d(totals: Callable[[float], tuple[float, float]], start: float, max_iter: int,
               xtol: float) -> float:
    """Minimise a convex 1-D function given its derivative and curvature at a point.

    Newton steps while they stay inside the bracket of sign changes of the derivative;
    otherwise bisection, or (before a bracket is known) steps that double in length downhill.
    """
    score, low, high, reach = start, -math.inf, math.inf, 1.0
    for _ in range(max_iter):
        gradient, curvature = totals(score)
        if not math.isfinite(gradient):
            raise LossError(f"the loss's gradient is not finite at the constant score {score!r};"
                            " the labels may be outside the loss's domain")
        if gradient == 0:
            return score
        if gradient > 0:
            high = min(high, score)
        else:
            low = max(low, score)
        candidate = score - gradient / curvature if curvature > 0 else math.nan
        if not (low < candidate < high):
            if math.isfinite(low) and math.isfinite(high):
                candidate = 0.5 * (low + high)
            else:
                reach = max(2 * reach, abs(score))
                candidate = score - math.copysign(reach, gradient)
        if abs(candidate - score) <= xtol * (1 + abs(score)):
            return candidate
        score = candidate
    return score
