"""Compiled losses as ``scipy.optimize.minimize`` objectives: ``fun``, ``jac``, ``hessp``.

    from scipy.optimize import minimize
    import lossdsl.scipy

    # fit a linear model p = X @ coef + intercept under a business-cost loss
    model = lossdsl.scipy.linear_model("where(p < y, 3*(y - p), p - y)", X, y)
    result = minimize(model.fun, model.x0, jac=model.jac, method="L-BFGS-B")
    coef, intercept = model.unpack(result.x)

    # or optimise an input of the loss directly
    problem = lossdsl.scipy.objective("huber(y, p) + 0.1*l2(p)", "p", y=y)
    result = minimize(problem.fun, problem.x0, jac=problem.jac, hessp=problem.hessp,
                      method="trust-ncg")

Value and gradient come from one fused kernel call per point (``fun`` and ``jac`` at the
same ``x`` share it; ``fun_and_jac`` is the ``jac=True`` form). The Hessian is the loss's
diagonal Hessian: ``hessp`` is exact for losses whose Hessian in the optimised input is
diagonal (elementwise losses and regularisers), and for linear models it is the exact
``X^T diag(h) X v``; for losses that couple entries (a softmax over classes) it is the
diagonal approximation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .api import CompiledLoss, Loss
from .binding import check_aligned, coerce_loss, numeric_array, reduction_of
from .boosting.objective import default_roles
from .errors import LossError, LossShapeError

__all__ = ["LinearModelObjective", "LossObjective", "linear_model", "objective"]


class _PointCache:
    """Remembers the last point's value, gradient and Hessian: scipy asks for them apart."""

    def __init__(self):
        self.x: np.ndarray | None = None
        self.value_and_grad: tuple[float, np.ndarray] | None = None
        self.hessian: np.ndarray | None = None

    def at(self, x: np.ndarray) -> None:
        if self.x is None or self.x.shape != x.shape or not np.array_equal(self.x, x):
            self.x = np.array(x, dtype=np.float64, copy=True)
            self.value_and_grad = None
            self.hessian = None


def _parameter_vector(x: Any, size: int, what: str) -> np.ndarray:
    """``x`` as a float vector of ``size`` entries; any other length is a
    :class:`~lossdsl.LossShapeError` (a longer vector's extra entries would be dropped
    unseen, a shorter one fail deep inside NumPy)."""
    vector = np.asarray(x, dtype=np.float64)
    if vector.size != size:
        raise LossShapeError(f"{what} has {vector.size} entr{'y' if vector.size == 1 else 'ies'}"
                             f" (shape {vector.shape}), but this objective takes {size}: start "
                             "from x0 and give every point and direction its length")
    return vector.reshape(-1)


class LossObjective:
    """``fun``/``jac``/``hessp`` of a loss over one of its inputs, flattened to a vector.

    The other inputs are fixed at construction. ``shape`` is the input's shape (``x`` is
    its flattening); ``x0`` a starting point of zeros.
    """

    def __init__(self, compiled: CompiledLoss, wrt: str, shape: tuple[int, ...],
                 fixed: Mapping[str, Any], sample_weight: Any = None):
        self.compiled = compiled
        self.wrt = wrt
        self.shape = tuple(shape)
        self.fixed = dict(fixed)
        self.sample_weight = sample_weight
        self._cache = _PointCache()

    @property
    def x0(self) -> np.ndarray:
        """A starting point: zeros."""
        return np.zeros(int(np.prod(self.shape)))

    def _inputs(self, x: np.ndarray) -> dict[str, Any]:
        values = _parameter_vector(x, int(np.prod(self.shape)), f"the point x (of {self.wrt!r},"
                                   f" shape {self.shape})")
        return {**self.fixed, self.wrt: values.reshape(self.shape)}

    def fun_and_jac(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``(value, gradient)`` from one kernel call (``minimize(..., jac=True)``)."""
        self._cache.at(x)
        if self._cache.value_and_grad is None:
            value, gradient = self.compiled.value_and_grad(
                self.wrt, sample_weight=self.sample_weight, **self._inputs(x))
            self._cache.value_and_grad = (float(value), np.asarray(gradient).reshape(-1))
        return self._cache.value_and_grad

    def fun(self, x: np.ndarray) -> float:
        """The loss value at ``x``."""
        return self.fun_and_jac(x)[0]

    def jac(self, x: np.ndarray) -> np.ndarray:
        """The gradient at ``x`` (flattened)."""
        return self.fun_and_jac(x)[1]

    def hess_diag(self, x: np.ndarray) -> np.ndarray:
        """The diagonal of the Hessian at ``x`` (flattened)."""
        self._cache.at(x)
        if self._cache.hessian is None:
            hessian = self.compiled.hessian(self.wrt, sample_weight=self.sample_weight,
                                            **self._inputs(x))
            self._cache.hessian = np.asarray(hessian).reshape(-1)
        return self._cache.hessian

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Hessian-vector product with the diagonal Hessian at ``x``."""
        diagonal = self.hess_diag(x)
        return diagonal * _parameter_vector(v, diagonal.size, "the direction v")

    def hess(self, x: np.ndarray) -> np.ndarray:
        """The (diagonal) Hessian at ``x`` as a dense matrix, for small problems."""
        return np.diag(self.hess_diag(x))


class LinearModelObjective:
    """A linear model ``p = X @ coef (+ intercept)`` fitted under a loss; parameters flattened.

    For K outputs (a loss over classes, or multi-target labels) ``coef`` is (d, K) and the
    intercept (K,). ``l2`` adds ``0.5 * l2 * ||coef||^2`` (not on the intercept). The chain
    rule through ``X`` is applied here: ``jac = X^T dL/dp``, ``hessp(v) = X^T (h * (X v))``.
    """

    def __init__(self, compiled: CompiledLoss, X: np.ndarray, wrt: str, label: str,
                 y: Any, outputs: int | None, fixed: Mapping[str, Any], sample_weight: Any,
                 fit_intercept: bool, l2: float):
        self.compiled = compiled
        if hasattr(X, "tocsr"):  # a scipy.sparse matrix: np.asarray makes an object array
            raise LossShapeError(
                "X is a scipy.sparse matrix, which linear_model's dense Hessian products do "
                "not take: pass X.toarray(), or fit with lossdsl.linear.LossRegressor / "
                "LossClassifier, which take sparse X")
        self.X = numeric_array("X", X).astype(np.float64)
        if self.X.ndim != 2:
            raise LossShapeError(f"X must be a matrix (n_samples, n_features), got shape "
                                 f"{self.X.shape}")
        self.wrt, self.label = wrt, label
        self.y = np.asarray(y)
        if self.y.shape[0] != self.X.shape[0]:
            raise LossShapeError(f"X has {self.X.shape[0]} rows but y has {self.y.shape[0]}")
        self.outputs = outputs
        self.fixed = dict(fixed)
        self.sample_weight = sample_weight
        self.fit_intercept = fit_intercept
        try:
            self.l2 = float(l2)
        except (TypeError, ValueError):
            self.l2 = math.nan
        if not self.l2 >= 0 or math.isinf(self.l2):
            raise LossError(f"l2={l2!r}: expected a finite number >= 0 (the weight of "
                            "0.5 * ||coef||^2)")
        self._cache = _PointCache()
        # The gradient in p (one value per row and output) only feeds X^T dp: one array,
        # written by every evaluation, saves allocating and faulting in n*K values each time.
        self._row_gradient: np.ndarray | None = None

    @property
    def n_params(self) -> int:
        """Length of the parameter vector."""
        rows = self.X.shape[1] + (1 if self.fit_intercept else 0)
        return rows * (self.outputs or 1)

    @property
    def x0(self) -> np.ndarray:
        """A starting point: zeros."""
        return np.zeros(self.n_params)

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | float]:
        """``(coef, intercept)`` from a parameter vector (intercept 0 without one)."""
        d = self.X.shape[1]
        matrix = _parameter_vector(x, self.n_params, "the parameter vector").reshape(
            -1, self.outputs or 1)
        coef, intercept = matrix[:d], matrix[d] if self.fit_intercept else np.zeros(matrix.shape[1])
        if self.outputs is None:
            return coef[:, 0], float(intercept[0])
        return coef, intercept

    def predict(self, x: np.ndarray, X: np.ndarray | None = None) -> np.ndarray:
        """The linear predictor ``p`` for parameters ``x`` (on the training ``X`` by default)."""
        coef, intercept = self.unpack(x)
        features = np.asarray(self.X if X is None else X, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.X.shape[1]:
            raise LossShapeError(f"X must be a (rows, {self.X.shape[1]}) matrix, one column per "
                                 f"feature the model was built on, got shape {features.shape}")
        return features @ coef + intercept

    def _inputs(self, p: np.ndarray) -> dict[str, Any]:
        return {**self.fixed, self.label: self.y, self.wrt: p}

    def _chain(self, dp: np.ndarray) -> np.ndarray:
        """Parameters' gradient from the gradient in ``p``: ``X^T dp`` (and ``sum dp``)."""
        dp2 = dp.reshape(self.X.shape[0], -1)
        rows = [self.X.T @ dp2]
        if self.fit_intercept:
            rows.append(dp2.sum(axis=0, keepdims=True))
        return np.vstack(rows).reshape(-1)

    def _penalty_mask(self) -> np.ndarray:
        mask = np.ones((self.X.shape[1] + (1 if self.fit_intercept else 0), self.outputs or 1))
        if self.fit_intercept:
            mask[-1] = 0
        return mask.reshape(-1)

    def fun_and_jac(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``(value, gradient)`` from one kernel call (``minimize(..., jac=True)``)."""
        self._cache.at(x)
        if self._cache.value_and_grad is None:
            p = self.predict(x)
            value, gradient = self.compiled.value_and_grad(
                self.wrt, sample_weight=self.sample_weight, out=self._row_gradient_for(p),
                **self._inputs(p))
            if self.compiled.target != "cuda" and isinstance(gradient, np.ndarray) \
                    and gradient.shape == p.shape:
                self._row_gradient = gradient
            jacobian = self._chain(np.asarray(gradient))
            if self.l2:
                penalized = self._penalty_mask() * x
                value += 0.5 * self.l2 * float(penalized @ penalized)
                jacobian = jacobian + self.l2 * penalized
            self._cache.value_and_grad = (float(value), jacobian)
        return self._cache.value_and_grad

    def _row_gradient_for(self, p: np.ndarray) -> np.ndarray | None:
        """The array the last evaluation wrote the gradient in ``p`` into, when it fits the
        next one (the same shape and dtype; never for target="cuda", whose results the
        kernel makes where it runs)."""
        given = self._row_gradient
        if given is None or given.shape != p.shape or given.dtype != p.dtype:
            return None
        return given

    def fun(self, x: np.ndarray) -> float:
        """The loss of the linear model with parameters ``x``."""
        return self.fun_and_jac(x)[0]

    def jac(self, x: np.ndarray) -> np.ndarray:
        """The gradient with respect to the parameters."""
        return self.fun_and_jac(x)[1]

    def _hessian_p(self, x: np.ndarray) -> np.ndarray:
        self._cache.at(x)
        if self._cache.hessian is None:
            self._cache.hessian = np.asarray(self.compiled.hessian(
                self.wrt, sample_weight=self.sample_weight, **self._inputs(self.predict(x))))
        return self._cache.hessian

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``H v = X^T (h * (X v)) + l2 v`` with ``h`` the loss's diagonal Hessian in ``p``:
        the exact product where each sample's loss reads its own prediction alone, and a
        Gauss-Newton-like approximation where samples are coupled (groups, pairs, risk sets,
        as in ``cox_ph``: the cross terms between samples are left out), which Newton-type
        methods still converge with, more slowly."""
        h = self._hessian_p(x).reshape(self.X.shape[0], -1)
        v = _parameter_vector(v, self.n_params, "the direction v")
        direction = self.predict(v) if self.fit_intercept else \
            self.X @ v.reshape(self.X.shape[1], -1)
        product = self._chain(h * direction.reshape(h.shape))
        return product + self.l2 * self._penalty_mask() * v

    def hess(self, x: np.ndarray) -> np.ndarray:
        """The dense Hessian ``X1^T diag(h) X1`` (one output; ``X1`` = X with a ones column)."""
        if self.outputs is not None:
            raise LossError("hess() is for single-output models; use hessp for K outputs")
        h = self._hessian_p(x)
        design = np.hstack([self.X, np.ones((self.X.shape[0], 1))]) if self.fit_intercept \
            else self.X
        return design.T @ (h[:, None] * design) + np.diag(self.l2 * self._penalty_mask())


#: The keywords of :func:`objective` itself: inputs of these names go in ``inputs=``.
OBJECTIVE_KEYWORDS = ("loss", "wrt", "shape", "reduction", "sample_weight", "params", "target",
                      "inputs")


def objective(loss: str | Loss | CompiledLoss, wrt: str, *, shape: tuple[int, ...] | None = None,
              reduction: str | None = None, sample_weight: Any = None,
              params: Mapping[str, float] | None = None, target: str | None = None,
              inputs: Mapping[str, Any] | None = None, **keyword_inputs: Any) -> LossObjective:
    """Minimise a loss over its input ``wrt``; the other inputs are given as keywords, or in
    ``inputs`` (needed for an input named like one of this function's keywords, such as
    ``target`` or ``shape``: :data:`OBJECTIVE_KEYWORDS`).

    ``shape`` is ``wrt``'s shape (default: the shape of the label-like input given, i.e. of
    the first array among the inputs; a vector of that many rows; a per-class input needs
    ``shape=(N, K)``). ``reduction``: ``"mean"`` by default, or that of a
    :class:`~lossdsl.CompiledLoss` given.
    """
    definition, compiled_params, compiled_target = coerce_loss(loss)
    given = dict(inputs or {})
    both = sorted(set(given) & set(keyword_inputs))
    if both:
        raise LossError(f"input {both[0]!r} is given twice, as a keyword and in inputs=")
    given.update(keyword_inputs)
    clashing = [name for name in definition.inputs if name in OBJECTIVE_KEYWORDS
                and name != wrt and name not in given]
    if clashing:
        name = clashing[0]
        raise LossError(f"the loss has an input named {name!r}, which is also a keyword of "
                        f"lossdsl.scipy.objective ({name}= is not read as the input): pass "
                        f"its values as inputs={{{name!r}: ...}}")
    compiled = definition.compile(target or compiled_target or "cpu",
                                  reduction_of(loss, reduction),
                                  {**compiled_params, **dict(params or {})})
    if shape is None:
        arrays = [np.shape(v) for v in given.values() if np.ndim(v) > 0]
        if not arrays:
            raise LossError("pass shape=... (the shape of the input being optimised)")
        shape = arrays[0]
        if len(shape) == 1 and compiled.default_ranks().get(wrt) == 2:
            raise LossError(f"{wrt!r} is a per-class matrix for this loss (one row of K "
                            f"scores per sample): pass shape=({shape[0]}, K) with K the "
                            "number of classes")
    return LossObjective(compiled, wrt, shape, given, sample_weight)


def linear_model(loss: str | Loss | CompiledLoss, X: Any, y: Any, *, wrt: str | None = None,
                 label: str | None = None, fit_intercept: bool = True, l2: float = 0.0,
                 outputs: int | None = None, reduction: str | None = None,
                 sample_weight: Any = None, inputs: Mapping[str, Any] | None = None,
                 params: Mapping[str, float] | None = None,
                 target: str | None = None) -> LinearModelObjective:
    """Fit ``p = X @ coef + intercept`` under a loss with ``scipy.optimize.minimize``.

    ``wrt``/``label`` are the prediction and label inputs (guessed as for GBDTs: label ``y`` or
    the first of two). ``outputs`` is K for K scores per row (a loss over classes: default
    1 + max label for integer labels, or the label matrix's width). ``inputs`` sets the
    loss's other inputs (scalars or per-row arrays). ``reduction``: ``"mean"`` by default,
    or that of a :class:`~lossdsl.CompiledLoss` given.
    """
    check_aligned([("X", X), ("y", y), ("sample_weight", sample_weight),
                   *dict(inputs or {}).items()])
    definition, compiled_params, compiled_target = coerce_loss(loss)
    label, wrt = default_roles(definition, wrt, label, dict(inputs or {}))
    compiled = definition.compile(target or compiled_target or "cpu",
                                  reduction_of(loss, reduction),
                                  {**compiled_params, **dict(params or {})})
    y_array = np.asarray(y)
    if y_array.ndim == 0 or y_array.shape[0] == 0:
        raise LossShapeError(f"linear_model needs at least one row to fit; y has shape "
                             f"{y_array.shape}")
    if outputs is None:
        ranks = compiled.default_ranks()
        if ranks[wrt] == 2:  # a loss over classes
            if y_array.ndim != 2 and (y_array.dtype.kind not in "biuf" or y_array.size == 0):
                raise LossError(
                    f"the labels of a loss over classes are class indices 0..K-1 (or a label "
                    f"matrix), not {y_array.dtype} values: encode them first (sklearn's "
                    "LabelEncoder, or lossdsl.linear.LossClassifier, which does), or give "
                    "outputs=K")
            outputs = y_array.shape[1] if y_array.ndim == 2 else int(np.max(y_array)) + 1
        elif y_array.ndim == 2:
            outputs = y_array.shape[1]
    return LinearModelObjective(compiled, X, wrt, label, y_array, outputs,
                                inputs or {}, sample_weight, fit_intercept, l2)
