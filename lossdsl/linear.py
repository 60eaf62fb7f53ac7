"""Linear models (GLMs) fitted under any lossdsl loss, as scikit-learn estimators.

    from lossdsl.linear import LossClassifier, LossRegressor, make_scorer

    model = LossRegressor("quantile(y, p, 0.8)", alpha=0).fit(X, y)   # exact LP optimum
    model.coef_, model.intercept_
    LossClassifier("bce_logits", alpha=1e-3).fit(X, labels).predict_proba(X)
    cross_val_score(model, X, y, scoring=make_scorer("quantile(y, p, 0.8)"))

The model is a linear score ``p = X @ coef_ + intercept_`` (one column per class for a loss
over classes) and ``fit`` minimises, as scikit-learn's ``ElasticNet`` and ``SGD*`` do::

    sum_i w_i * loss(y_i, p_i) / sum_i w_i
        + alpha * (l1_ratio * ||coef||_1 + 0.5 * (1 - l1_ratio) * ||coef||_2^2)

(``w``: ``sample_weight``; the intercept is not penalised). Value, gradient and diagonal
Hessian of the loss in ``p`` come from one compiled lossdsl kernel; the chain rule through
``X`` is applied here (``X^T g``, and ``X^T diag(h) X v`` for Hessian-vector products).

Solvers (``solver=``):

* ``"lbfgs"``: L-BFGS-B on the exact gradient. With an l1 part (``l1_ratio > 0``) the
  coefficients are split into positive and negative parts, ``coef = c+ - c-`` with
  ``c+, c- >= 0``, and the l1 norm becomes the linear ``sum(c+ + c-)``: a smooth
  bound-constrained problem whose solution has exact zeros.
* ``"newton-cg"`` / ``"trust-ncg"``: SciPy's line-search and trust-region Newton-CG on exact
  Hessian-vector products ``X^T diag(h) X v + alpha (1 - l1_ratio) v``. Exact only when the
  loss's Hessian in the score is diagonal (one score per row), so losses over classes and
  l1 penalties are refused with a :class:`~lossdsl.LossError`.
* ``"highs"``: for losses that are convex and piecewise linear in the score (``quantile``,
  ``mae``, ``asymmetric_l1``, ``hinge``, ...) with an l1 penalty or none: each row's loss is
  recovered exactly as the maximum of its tangent lines (found from the compiled loss's
  values and slopes), written as its first line plus a hinge at each kink, and the problem
  is solved as a linear program by HiGHS (interior point, then crossover to an optimal
  vertex), the program ``QuantileRegressor(solver="highs")`` solves for the quantile loss.
  The result is accepted only if the true loss at the solution equals the LP's optimum.
* ``"auto"`` (default): ``"highs"`` when the loss is piecewise linear and there is no l2 part,
  else ``"lbfgs"``. A piecewise-linear loss with an l2 part is fitted by L-BFGS-B, which
  approaches the optimum of a non-smooth problem without a certificate (a
  :class:`~sklearn.exceptions.ConvergenceWarning` says so when its line search stalls).

The smooth solvers run on standardised features (centred where there is an intercept and X
is dense, divided by each column's root mean square; the penalty rescaled to stay on the
original coefficients), and their result's gradient is always checked: a smooth loss with
one score per row and no l1 part is finished by trust-ncg where a solver stopped short, and
a fit still not stationary gives a ConvergenceWarning.

``score`` is the *negative* mean loss (greater is better, as scikit-learn's ``neg_*``
scorers), not scikit-learn's default R^2 or accuracy: the loss is what the model was fitted
to make small, so model selection (``GridSearchCV``, ``cross_val_score``) on it ranks models by
the loss itself. Pass ``scoring="r2"`` or ``"accuracy"`` for the usual scores.

scikit-learn is needed by this module only (``lossdsl`` itself does not import it).
"""

from __future__ import annotations

import functools
import numbers
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.optimize
import scipy.sparse
import scipy.sparse.linalg
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from .api import CompiledLoss, Loss
from .binding import check_aligned, coerce_loss
from .boosting.objective import default_roles
from .errors import LossError, LossShapeError
from .estimators import class_values_hint, fit_classes
from .implied import (
    class_probabilities,
    is_identity,
    label_bounds,
    label_scale,
    probabilities_move,
    score_grid,
)

__all__ = ["LossClassifier", "LossMetric", "LossRegressor", "LossScorer", "make_scorer",
           "metric"]

SOLVERS = ("auto", "lbfgs", "newton-cg", "trust-ncg", "highs")

LossLike = str | Loss | CompiledLoss

# Piecewise-linear detection: at most this many tangent lines per row ...
_MAX_LINES = 16
# ... found within this many rounds of the sandwich search.
_MAX_ROUNDS = 40
# Interior points where a piece with equal slopes at its ends is checked to be a line
_PROBES = 7
# Half-width of the score interval the tangent lines describe, relative to 1 + max |label|.
_BRACKET = 1e4


# ---------------------------------------------------------------------------- the loss
class _BoundLoss:
    """A loss with its roles decided: label and score inputs, fixed other inputs, and the
    two compiled forms the models use (weighted mean, per row)."""

    def __init__(self, loss: Any, wrt: str | None, label: str | None, inputs: Any,
                 params: Any):
        if not isinstance(loss, (str, Loss, CompiledLoss)):
            raise LossError(f"loss must be loss text, a lossdsl.Loss (e.g. an entry of "
                            f"lossdsl.load(path)) or a CompiledLoss, not {type(loss).__name__}")
        definition, compiled_params, target = coerce_loss(loss)
        if params is not None and not isinstance(params, Mapping):
            raise LossError(f"params= must be a dict of param name -> value, not "
                            f"{type(params).__name__}")
        params = {**compiled_params, **dict(params or {})}
        target = target if target in ("cpu", "parallel") else "cpu"
        self.definition = definition
        self.text = loss if isinstance(loss, str) else None
        self.mean = definition.compile(target, "weighted_mean", params)
        self.rows = definition.compile(target, "none", params)
        self.fixed = _fixed_inputs(inputs, self.mean.table_inputs())
        self.label, self.wrt = default_roles(definition, wrt, label, self.fixed)
        ranks = self.mean.default_ranks()
        self.class_axis = ranks[self.wrt] == 2
        self.label_kind = ("index" if self.label in self.mean.label_inputs()
                           else "matrix" if ranks[self.label] == 2 else "value")

    @property
    def name(self) -> str:
        """The loss's name or text, for messages."""
        if self.definition.name:
            return self.definition.name
        return f"the loss {self.text!r}" if self.text else "the loss"

    def arguments(self, labels: Any, scores: np.ndarray) -> dict[str, Any]:
        """The kernel's keyword arguments."""
        return {**self.fixed, self.label: labels, self.wrt: scores}

    def mean_value(self, labels: Any, scores: np.ndarray, weight: Any = None) -> float:
        """The weighted mean loss."""
        with np.errstate(all="ignore"):
            return float(self.mean(sample_weight=weight, **self.arguments(labels, scores)))

    def row_values_and_slopes(self, labels: Any,
                              scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-row loss values and their derivatives in the score."""
        with np.errstate(all="ignore"):
            value, slope = self.rows.value_and_grad(self.wrt, **self.arguments(labels, scores))
        return np.asarray(value, dtype=np.float64), np.asarray(slope, dtype=np.float64)

    def row_gradient(self, labels: Any, scores: np.ndarray) -> np.ndarray:
        """Per-row derivative of the loss in the score: (n,) or (n, K)."""
        with np.errstate(all="ignore"):
            return np.asarray(self.rows.grad(self.wrt, **self.arguments(labels, scores)),
                              dtype=np.float64)

    def label_scale(self, scores: np.ndarray, label_range: tuple[float, float]) -> np.ndarray:
        """The labels y* with dl(y*, z)/dz = 0 for each score (``label_range``: where the
        search starts, :func:`lossdsl.implied.label_scale`)."""
        def at(labels: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
            return self.row_gradient(labels, scores if rows is None else scores[rows])

        bounds = label_bounds(self.rows.input_domains().get(self.label, ()))
        return label_scale(at, scores.shape[0], label_range, self.name, bounds)

    def scores_labels(self, labels: np.ndarray) -> bool:
        """Whether the score is a label-scale prediction (the identity link) over the range
        of ``labels``: mse's and pinball's are, poisson_log's (a log mean) is not."""
        labels = np.asarray(labels, dtype=np.float64)
        finite = labels[np.isfinite(labels)]
        if self.class_axis or finite.size == 0:
            return False
        # inside the labels' range: a score there is a label the loss accepts either side
        label_range = (float(finite.min()), float(finite.max()))
        grid = np.linspace(*label_range, 43)[1:-1]
        if label_range[0] == label_range[1]:
            grid = finite[:1]
        return is_identity([(grid, functools.partial(self.row_gradient, scores=grid),
                             functools.partial(self.label_scale, grid, label_range))])


def _fixed_inputs(given: Any, tables: frozenset[str]) -> dict[str, Any]:
    """The loss's other inputs: numbers (and tables of ``rowof``); per-row arrays refused."""
    if given is not None and not isinstance(given, Mapping):
        raise LossError(f"inputs= must be a dict of input name -> number, not "
                        f"{type(given).__name__}")
    fixed: dict[str, Any] = {}
    for name, value in dict(given or {}).items():
        if name in tables:
            fixed[name] = np.asarray(value, dtype=np.float64)
        elif (np.ndim(value) == 0 and not isinstance(value, (bool, str))
              and isinstance(np.asarray(value).item(), numbers.Real)):
            fixed[name] = float(value)
        else:
            raise LossError(
                f"inputs={{{name!r}: {type(value).__name__}}}: the linear models take numbers "
                "for the loss's other inputs (per-row arrays given to the constructor would "
                "be frozen to one set of rows, which a cross-validation fold would pair "
                "with other rows); use lossdsl.scipy.linear_model for per-row inputs")
    return fixed


# ---------------------------------------------------------------------------- objective
def _sparse_centred_squares(X: Any, v: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``v @ (X - m)^2`` per column of a sparse ``X`` without densifying it: the stored
    entries' squared deviations plus ``m^2`` times the weight of the rows a column does not
    store. (``v @ X^2 - m^2`` cancels: a constant column of 3 kept a spread of 3e-8.)"""
    columns = scipy.sparse.csc_matrix(X)
    stored = np.diff(columns.indptr)
    column_of = np.repeat(np.arange(columns.shape[1]), stored)
    row_weight = v[columns.indices]
    deviations = np.bincount(column_of, weights=row_weight * (columns.data - m[column_of]) ** 2,
                             minlength=columns.shape[1])
    stored_weight = np.bincount(column_of, weights=row_weight, minlength=columns.shape[1])
    unstored_weight = np.where(stored == columns.shape[0], 0.0,
                               np.maximum(1.0 - stored_weight, 0.0))
    return deviations + m * m * unstored_weight


class _LinearObjective:
    """The penalised mean loss of ``P = X @ W + b`` as a function of a flat parameter
    vector: ``[W]`` (or ``[W+, W-]`` with an l1 part) then ``[b]``.

    ``l2`` and ``l1``: the penalties' strengths, numbers or (d, 1) arrays of one per feature
    (:meth:`scaled`: a penalty on the original coefficients, seen from scaled columns);
    ``centre``: (d,) subtracted from every row of X, without forming ``X - centre`` (which
    would fill a sparse X): ``P = X @ W - centre @ W + b``."""

    def __init__(self, loss: _BoundLoss, X: Any, labels: Any, weight: np.ndarray,
                 width: int | None, fit_intercept: bool, l2: Any, l1: Any,
                 centre: np.ndarray | None = None):
        self.loss, self.X, self.labels, self.weight = loss, X, labels, weight
        self.centre = np.zeros(X.shape[1]) if centre is None else centre
        self.width = width  # None: one score per row
        self.fit_intercept = fit_intercept
        self.l2 = np.asarray(l2, dtype=np.float64)
        self.l1 = np.asarray(l1, dtype=np.float64)
        self.split = bool(np.any(self.l1 > 0))
        self.d = X.shape[1]
        self.k = width or 1
        self._x: np.ndarray | None = None
        self._value_and_grad: tuple[float, np.ndarray] | None = None
        self._hessian: np.ndarray | None = None

    def scaled(self) -> tuple[_LinearObjective, np.ndarray, np.ndarray]:
        """The same problem on standardised columns ``(X - m) / s``, and ``(s, m)`` (d,):
        coefficients ``U = s W`` and intercept ``b + m @ W`` give the same scores, and the
        penalty, which is on ``W``, becomes ``l2 / s^2`` and ``l1 / s`` per feature.

        A solver's stopping tests (gradient, step, objective change) and the precision
        floor of :func:`_stationary` treat every coordinate alike, which is only right when
        the columns are of one scale: a column of scale 1e-3 next to one of 1e4 left
        L-BFGS-B stopped with its coefficient 250 times too small. Centring (with an
        intercept only: it is then an exact change of variables) removes the coupling of a
        column's offset with the intercept."""
        X = self.X
        # weighted moments, so that a weight of 2 is a repeated row here too
        v = self.weight / float(np.sum(self.weight))
        m = np.asarray(v @ X).ravel() if self.fit_intercept else np.zeros(self.d)
        if scipy.sparse.issparse(X):
            square = _sparse_centred_squares(X, v, m)
            rms = np.sqrt(np.asarray(v @ X.multiply(X)).ravel())
        else:
            square = v @ np.square(X - m)
            rms = np.sqrt(v @ np.square(X))
        s = np.sqrt(np.maximum(square, 0.0))
        # A constant column keeps its scale: the rounding of its mean leaves it a spread of
        # about 1e-16 of its size (not 0), and dividing by that made its penalty 1e32 times
        # too large and the problem too ill-conditioned for any solver to finish.
        s = np.where(np.isfinite(s) & (s > 1e-10 * rms), s, 1.0)
        if scipy.sparse.issparse(X):
            X = (X @ scipy.sparse.diags(1.0 / s)).tocsr()
        else:
            X = X / s
        column = s[:, None]
        return _LinearObjective(self.loss, X, self.labels, self.weight, self.width,
                                self.fit_intercept, self.l2 / column ** 2,
                                self.l1 / column, m / s), s, m

    @property
    def size(self) -> int:
        """Length of the parameter vector."""
        blocks = 2 if self.split else 1
        return blocks * self.d * self.k + (self.k if self.fit_intercept else 0)

    @property
    def bounds(self) -> list[tuple[float | None, float | None]] | None:
        """L-BFGS-B bounds: the split coefficients are >= 0."""
        if not self.split:
            return None
        return ([(0.0, None)] * (2 * self.d * self.k)
                + [(None, None)] * (self.k if self.fit_intercept else 0))

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(W (d, K), b (K,))`` from a parameter vector."""
        dk = self.d * self.k
        if self.split:
            W = (x[:dk] - x[dk:2 * dk]).reshape(self.d, self.k)
            rest = x[2 * dk:]
        else:
            W = x[:dk].reshape(self.d, self.k)
            rest = x[dk:]
        b = rest if self.fit_intercept else np.zeros(self.k)
        return W, b

    def pack(self, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The parameter vector of ``W, b`` (split into positive and negative parts)."""
        flat = [np.maximum(W, 0).ravel(), np.maximum(-W, 0).ravel()] if self.split \
            else [W.ravel()]
        if self.fit_intercept:
            flat.append(np.asarray(b, dtype=np.float64).ravel())
        return np.concatenate(flat)

    def scores(self, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The loss's score input: (n,) or (n, K)."""
        P = np.asarray(self.X @ W) + (b - self.centre @ W)
        return P[:, 0] if self.width is None else P

    def _at(self, x: np.ndarray) -> None:
        if self._x is None or not np.array_equal(self._x, x):
            self._x = np.array(x, dtype=np.float64, copy=True)
            self._value_and_grad = None
            self._hessian = None

    def _chain(self, G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        G = G.reshape(self.X.shape[0], self.k)
        total = G.sum(axis=0)
        return np.asarray(self.X.T @ G) - np.outer(self.centre, total), total

    def fun_and_jac(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Value and gradient from one kernel call."""
        self._at(x)
        if self._value_and_grad is None:
            W, b = self.unpack(x)
            with np.errstate(all="ignore"):
                value, G = self.loss.mean.value_and_grad(
                    self.loss.wrt, sample_weight=self.weight,
                    **self.loss.arguments(self.labels, self.scores(W, b)))
            gW, gb = self._chain(np.asarray(G, dtype=np.float64))
            value = float(value) + 0.5 * float(np.sum(self.l2 * W * W))
            gW = gW + self.l2 * W
            parts = [gW.ravel()]
            if self.split:
                l1 = np.broadcast_to(self.l1, W.shape).ravel()
                dk = self.d * self.k
                value += float(np.sum(l1 * (x[:dk] + x[dk:2 * dk])))
                parts = [gW.ravel() + l1, -gW.ravel() + l1]
            if self.fit_intercept:
                parts.append(gb)
            self._value_and_grad = (value, np.concatenate(parts))
        return self._value_and_grad

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``X1^T diag(h) X1 v + l2 v`` (``X1``: X with the intercept's column of ones),
        ``h`` the loss's exact diagonal Hessian in the score (one score per row)."""
        self._at(x)
        if self._hessian is None:
            W, b = self.unpack(x)
            with np.errstate(all="ignore"):
                self._hessian = np.asarray(self.loss.mean.hessian(
                    self.loss.wrt, sample_weight=self.weight,
                    **self.loss.arguments(self.labels, self.scores(W, b))),
                    dtype=np.float64).reshape(-1, self.k)
        V, vb = self.unpack(np.asarray(v, dtype=np.float64))
        direction = np.asarray(self.X @ V) + (vb - self.centre @ V)
        hW, hb = self._chain(self._hessian * direction)
        parts = [(hW + self.l2 * V).ravel()]
        if self.fit_intercept:
            parts.append(hb)
        return np.concatenate(parts)


def _largest_gradient(objective: _LinearObjective, x: np.ndarray) -> float:
    """The largest entry of the (projected, with an l1 part) gradient at ``x``."""
    gradient = objective.fun_and_jac(x)[1]
    if objective.split:  # at a bound, a gradient pointing out of the box is stationary
        size = 2 * objective.d * objective.k
        gradient = gradient.copy()
        at_bound = (x[:size] <= 0) & (gradient[:size] > 0)
        gradient[:size][at_bound] = 0.0
    return float(np.max(np.abs(gradient), initial=0.0))


def _stationary(objective: _LinearObjective, x: np.ndarray, tol: float) -> bool:
    """Whether ``x`` is a stationary point to the tolerance, or to the precision floor
    (``sqrt(eps)`` relative to the gradient at the start, zero coefficients) where a
    solver's own test gave up on rounding ("a bad approximation caused failure to predict
    improvement")."""
    start = np.max(np.abs(objective.fun_and_jac(np.zeros(objective.size))[1]), initial=0.0)
    value = objective.fun_and_jac(x)[0]
    floor = np.sqrt(np.finfo(np.float64).eps) * max(1.0, start)
    return bool(np.isfinite(value) and _largest_gradient(objective, x) <= max(tol, floor))


def _start(objective: _LinearObjective) -> np.ndarray:
    """The solvers' start: zero coefficients and intercept, unless the loss's gradient is 0
    for every row there while a constant score does better (msle, ``max(p, eps)``: flat for
    scores below 0), where a gradient method would stop at once; then the best of a few
    constant scores around the labels (the intercept, or coefficients giving about that
    score without one)."""
    x0 = np.zeros(objective.size)
    if objective.width is not None:
        return x0
    value, gradient = objective.fun_and_jac(x0)
    if np.any(gradient != 0):
        return x0
    labels = np.asarray(objective.labels, dtype=np.float64)
    n = labels.shape[0]
    candidates = np.unique(np.append(np.quantile(labels, [0.1, 0.25, 0.5, 0.75, 0.9]),
                                     np.average(labels, weights=objective.weight)))
    losses = [objective.loss.mean_value(labels, np.full(n, c), objective.weight)
              for c in candidates]
    losses = np.where(np.isfinite(losses), losses, np.inf)
    best = int(np.argmin(losses))
    if not (np.isfinite(value) and losses[best] < value):
        return x0  # no constant does better: the start may well be the optimum
    c = float(candidates[best])
    if objective.fit_intercept:
        return objective.pack(np.zeros((objective.d, 1)), np.array([c]))
    if scipy.sparse.issparse(objective.X):
        W = scipy.sparse.linalg.lsqr(objective.X, np.full(n, c))[0]
    else:
        W = np.linalg.lstsq(objective.X, np.full(n, c), rcond=None)[0]
    return objective.pack(W.reshape(-1, 1), np.zeros(1))


# ---------------------------------------------------------------------------- LP path
def _tangent_lines(loss: _BoundLoss, labels: np.ndarray,
                   center: float, half_width: float) -> tuple[np.ndarray, ...] | None:
    """Each row's loss on ``[center - half_width, center + half_width]`` as the maximum of
    its tangent lines: ``(rows, slopes, intercepts)``, or None when some row's loss is not
    convex and piecewise linear there (with at most ``_MAX_LINES`` pieces).

    The sandwich search: on an interval whose end slopes differ, the two tangent lines
    meet at ``m``; if the loss at ``m`` lies on them the interval holds exactly one kink,
    else the tangent at ``m`` is a new line and both halves are searched again.
    """
    n = labels.shape[0]
    lo, hi = center - half_width, center + half_width
    f_lo, g_lo = loss.row_values_and_slopes(labels, np.full(n, lo))
    f_hi, g_hi = loss.row_values_and_slopes(labels, np.full(n, hi))
    if not (np.all(np.isfinite(f_lo)) and np.all(np.isfinite(f_hi))
            and np.all(np.isfinite(g_lo)) and np.all(np.isfinite(g_hi))):
        return None
    rows_all = np.arange(n)
    lines = [(rows_all, g_lo, f_lo - g_lo * lo), (rows_all, g_hi, f_hi - g_hi * hi)]
    count = np.full(n, 2)
    rows, a, b = rows_all, np.full(n, lo), np.full(n, hi)
    fa, fb, ga, gb = f_lo, f_hi, g_lo, g_hi
    for _ in range(_MAX_ROUNDS):
        if rows.size == 0:
            break
        scale = np.maximum.reduce([np.ones_like(fa), np.abs(fa), np.abs(fb)])
        slope_scale = np.maximum.reduce([np.ones_like(ga), np.abs(ga), np.abs(gb)])
        if np.any(ga > gb + 1e-12 * slope_scale):
            return None  # slopes fall: not convex
        # a convex loss lies between its tangents at the ends: f(b) - f(a) is between
        # ga (b - a) and gb (b - a) (a ramp, flat at both ends, is not)
        rise, chord_tolerance = fb - fa, 1e-10 * scale
        if np.any((rise < ga * (b - a) - chord_tolerance)
                  | (rise > gb * (b - a) + chord_tolerance)):
            return None
        open_ = gb - ga > 1e-12 * slope_scale
        if not _linear_between(loss, labels, rows[~open_], a[~open_], b[~open_], fa[~open_],
                               ga[~open_], scale[~open_]):
            return None  # equal slopes at both ends, not a line between: a ramp's dip
        rows, a, b, fa, fb, ga, gb, scale = (v[open_] for v in (rows, a, b, fa, fb, ga, gb,
                                                                scale))
        if rows.size == 0:
            break
        with np.errstate(all="ignore"):
            m = (fb - fa + ga * a - gb * b) / (ga - gb)
        m = np.clip(m, a, b)
        subset = labels[rows]
        fm, gm = loss.row_values_and_slopes(subset, m)
        if not (np.all(np.isfinite(fm)) and np.all(np.isfinite(gm))):
            return None
        on_lines = fa + ga * (m - a)
        tolerance = 1e-10 * np.maximum(scale, np.abs(fm))
        if np.any(fm < on_lines - tolerance):
            return None  # below a tangent: not convex
        more = fm > on_lines + tolerance
        rows, a, b, fa, fb, ga, gb, m, fm, gm = (v[more] for v in (rows, a, b, fa, fb, ga, gb,
                                                                   m, fm, gm))
        lines.append((rows, gm, fm - gm * m))
        np.add.at(count, rows, 1)
        if np.any(count > _MAX_LINES):
            return None
        rows = np.concatenate([rows, rows])
        a, b = np.concatenate([a, m]), np.concatenate([m, b])
        fa, fb = np.concatenate([fa, fm]), np.concatenate([fm, fb])
        ga, gb = np.concatenate([ga, gm]), np.concatenate([gm, gb])
    else:
        return None
    if rows.size:
        return None
    return tuple(np.concatenate(parts) for parts in zip(*lines))


def _linear_between(loss: _BoundLoss, labels: np.ndarray, rows: np.ndarray, a: np.ndarray,
                    b: np.ndarray, fa: np.ndarray, ga: np.ndarray, scale: np.ndarray) -> bool:
    """Whether each row's loss is the line through ``(a, fa)`` of slope ``ga`` on ``[a, b]``,
    probed at the row's label and at evenly spaced points: a convex loss with equal slopes
    at both ends is that line, and a ramp (``min(1, abs(p - y))``, flat at both ends and
    equal there) dips between them."""
    if rows.size == 0:
        return True
    fractions = np.linspace(0.0, 1.0, _PROBES + 2)[1:-1]
    points = [a + t * (b - a) for t in fractions]
    label = labels[rows]
    if label.ndim == 1:
        points.append(np.clip(label, a, b))
    for at in points:
        found, _ = loss.row_values_and_slopes(label, at)
        expected = fa + ga * (at - a)
        if not np.all(np.abs(found - expected) <= 1e-10 * np.maximum(scale, np.abs(found))):
            return False
    return True


def _looks_piecewise_linear(loss: _BoundLoss, labels: np.ndarray) -> bool:
    """A quick test before the tangent search: one score per row, and a Hessian that is 0
    at scores around every label."""
    if loss.class_axis or loss.label_kind != "value":
        return False
    spread = 1.0 + float(np.max(np.abs(labels))) if labels.size else 1.0
    for offset in (-1.3, -0.1, 0.07, 0.9):
        with np.errstate(all="ignore"):
            h = np.asarray(loss.rows.hessian(loss.wrt, **loss.arguments(
                labels, labels + offset * spread)))
        if not np.all(h == 0):
            return False
    return True


def _facets(lines: tuple[np.ndarray, np.ndarray, np.ndarray],
            n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each row's loss ``max_j (s_j p + c_j)`` in kink form: ``s1 p + c1 + sum_k
    jump_k * max(0, p - at_k)``, the lines sorted by slope and those that are nowhere the
    maximum dropped. Returns ``(s1 (n,), c1 (n,), kink rows, kink positions, jumps > 0)``."""
    rows, slopes, intercepts = lines
    order = np.lexsort((intercepts, slopes, rows))
    rows, slopes, intercepts = rows[order], slopes[order], intercepts[order]
    # of lines with the same slope in a row, the highest (the last) is the one that counts
    last = np.ones(rows.size, dtype=bool)
    last[:-1] = (rows[1:] != rows[:-1]) | (slopes[1:] != slopes[:-1])
    rows, slopes, intercepts = rows[last], slopes[last], intercepts[last]
    starts = np.searchsorted(rows, np.arange(n))
    counts = np.diff(np.append(starts, rows.size))
    first_slope, first_intercept = slopes[starts], intercepts[starts]
    # two lines of different slopes are both facets: one kink where they meet
    two = np.flatnonzero(counts == 2)
    s1, c1 = slopes[starts[two]], intercepts[starts[two]]
    s2, c2 = slopes[starts[two] + 1], intercepts[starts[two] + 1]
    kink_rows, kink_at, jumps = [two], [(c1 - c2) / (s2 - s1)], [s2 - s1]
    for row in np.flatnonzero(counts > 2):  # more pieces: the upper envelope
        hull: list[tuple[float, float]] = []
        for slope, intercept in zip(slopes[starts[row]:starts[row] + counts[row]],
                                    intercepts[starts[row]:starts[row] + counts[row]]):
            while len(hull) >= 2:
                (sa, ca), (sb, cb) = hull[-2], hull[-1]
                # b is nowhere the maximum if the new line overtakes a before b does
                if (ca - intercept) / (slope - sa) <= (ca - cb) / (sb - sa):
                    hull.pop()
                else:
                    break
            hull.append((float(slope), float(intercept)))
        first_slope[row], first_intercept[row] = hull[0]
        for (sa, ca), (sb, cb) in zip(hull, hull[1:]):
            kink_rows.append(np.array([row]))
            kink_at.append(np.array([(ca - cb) / (sb - sa)]))
            jumps.append(np.array([sb - sa]))
    return (first_slope, first_intercept, np.concatenate(kink_rows),
            np.concatenate(kink_at), np.concatenate(jumps))


def _solve_lp(objective: _LinearObjective,
              lines: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[Any, float]:
    """The piecewise-linear problem as a linear program, each row's loss in kink form
    (:func:`_facets`): minimise ``sum_i v_i (s1_i p_i + sum_k jump_k u_k) + l1 sum(c+ + c-)``
    over ``u_k >= p_i - at_k``, ``u_k >= 0`` (``v = w / sum w``; the quantile loss gives
    QuantileRegressor's program with one slack per row). Returns (HiGHS's result, the
    constant ``sum_i v_i c1_i`` left out of its objective)."""
    X, n, d = objective.X, objective.X.shape[0], objective.d
    v = objective.weight / float(np.sum(objective.weight))
    s1, c1, kink_rows, kink_at, jumps = _facets(lines, n)
    linear = np.asarray(X.T @ (v * s1)).ravel()
    design = scipy.sparse.csr_matrix(X)[kink_rows]
    blocks = [design, -design] if objective.split else [design]
    cost = [linear + objective.l1, -linear + objective.l1] if objective.split else [linear]
    bounds = [(0, None)] * (2 * d) if objective.split else [(None, None)] * d
    if objective.fit_intercept:
        blocks.append(scipy.sparse.csr_matrix(np.ones((kink_rows.size, 1))))
        cost.append(np.array([float(np.sum(v * s1))]))
        bounds.append((None, None))
    blocks.append(-scipy.sparse.identity(kink_rows.size, format="csr"))
    cost.append(v[kink_rows] * jumps)
    bounds += [(0, None)] * kink_rows.size
    A = scipy.sparse.hstack(blocks, format="csc")
    result = scipy.optimize.linprog(np.concatenate(cost), A_ub=A, b_ub=kink_at,
                                    bounds=bounds, method="highs-ipm")
    return result, float(np.sum(v * c1))


# ---------------------------------------------------------------------------- estimators
class _LinearLossModel(BaseEstimator):
    """What :class:`LossRegressor` and :class:`LossClassifier` share.

    Parameters
    ----------
    loss:
        The loss: text (``"quantile(y, p, 0.8)"``, or a library name such as ``"huber"``), a
        :class:`~lossdsl.Loss` (an entry of ``lossdsl.load(path)``) or a
        :class:`~lossdsl.CompiledLoss`. ``None``: ``half_mse`` for the regressor,
        ``bce_logits`` (two classes) or ``sparse_cce_logits`` (more) for the classifier.
    alpha:
        Strength of the penalty (0: none; default 1e-4, as scikit-learn's ``SGDRegressor``).
    l1_ratio:
        The penalty's l1 share: 0 (default) ridge, 1 lasso, in between elastic net.
    fit_intercept:
        Fit an unpenalised intercept.
    solver:
        ``"auto"``, ``"lbfgs"``, ``"newton-cg"``, ``"trust-ncg"`` or ``"highs"`` (see the
        module docstring).
    max_iter:
        The solver's iteration limit.
    tol:
        The solvers' tolerance: L-BFGS-B's and trust-ncg's on the (projected) gradient,
        Newton-CG's on the step, all on the standardised features.
    wrt, label:
        The loss's score and label inputs; guessed when left out (the label is ``y`` or the
        first of two inputs).
    inputs:
        The loss's other inputs by name, as numbers (or the tables of ``rowof``).
    params:
        Overrides of the loss's ``param`` values.
    """

    def __init__(self, loss: LossLike | None = None, *, alpha: float = 1e-4,
                 l1_ratio: float = 0.0, fit_intercept: bool = True, solver: str = "auto",
                 max_iter: int = 1000, tol: float = 1e-6, wrt: str | None = None,
                 label: str | None = None, inputs: Mapping[str, Any] | None = None,
                 params: Mapping[str, float] | None = None):
        self.loss = loss
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.wrt = wrt
        self.label = label
        self.inputs = inputs
        self.params = params

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # ------------------------------------------------------------------ checks
    def _check_options(self) -> None:
        alpha, ratio = self.alpha, self.l1_ratio
        if not (isinstance(alpha, numbers.Real) and np.isfinite(alpha) and alpha >= 0):
            raise LossError(f"alpha must be a number >= 0, not {alpha!r}")
        if not (isinstance(ratio, numbers.Real) and 0 <= ratio <= 1):
            raise LossError(f"l1_ratio must be a number in [0, 1], not {ratio!r}")
        if self.solver not in SOLVERS:
            raise LossError(f"unknown solver {self.solver!r}; expected one of "
                            f"{', '.join(map(repr, SOLVERS))}")
        if not (isinstance(self.max_iter, numbers.Integral) and self.max_iter >= 1):
            raise LossError(f"max_iter must be a positive integer, not {self.max_iter!r}")
        if not (isinstance(self.tol, numbers.Real) and self.tol > 0):
            raise LossError(f"tol must be a positive number, not {self.tol!r}")

    def _bind_loss(self, n_classes: int | None) -> _BoundLoss:
        loss = self._default_loss(n_classes) if self.loss is None else self.loss
        return _BoundLoss(loss, self.wrt, self.label, self.inputs, self.params)

    def _default_loss(self, n_classes: int | None) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------------ fitting
    def _fit(self, X: Any, labels: Any, sample_weight: Any, width: int | None) -> None:
        """Minimise the penalised loss: sets ``_W`` (d, K), ``_b`` (K,), ``solver_``,
        ``n_iter_`` and ``objective_``."""
        loss = self._loss
        weight = _check_sample_weight(sample_weight, X, dtype=np.float64,
                                      ensure_non_negative=True)
        if not np.sum(weight) > 0:
            raise ValueError("the sample weights sum to 0: nothing to fit")
        l1 = float(self.alpha) * float(self.l1_ratio)
        l2 = float(self.alpha) * (1.0 - float(self.l1_ratio))
        objective = _LinearObjective(loss, X, labels, weight, width, self.fit_intercept,
                                     l2, l1)
        solver = self._choose_solver(loss, labels, l2)
        self.solver_ = solver
        if solver == "highs":
            W, b = self._fit_lp(objective, labels)
        else:
            W, b = self._fit_smooth(objective, solver)
        self._W, self._b = W, b
        value = objective.fun_and_jac(objective.pack(W, b))[0]
        if not np.isfinite(value):
            raise LossError(f"{loss.name} is not finite at the fitted coefficients (value "
                            f"{value!r}): are the labels in the loss's domain? The linear "
                            "score X w + b takes any real value; a loss defined only for some "
                            "scores (poisson(y, p) needs p > 0) needs its link form "
                            "(poisson_log(y, z): the mean exp(z))")
        self.objective_ = value

    def _choose_solver(self, loss: _BoundLoss, labels: Any, l2: float) -> str:
        solver = self.solver
        if solver in ("newton-cg", "trust-ncg"):
            if loss.class_axis:
                raise LossError(
                    f"solver={solver!r} needs exact Hessian-vector products, and {loss.name} "
                    "couples the classes of a row (lossdsl's Hessian is its diagonal): use "
                    "solver='lbfgs'")
            if self.alpha * self.l1_ratio > 0:
                raise LossError(f"solver={solver!r} does not handle an l1 penalty "
                                "(l1_ratio > 0): use solver='lbfgs' or 'highs'")
            return solver
        if solver == "lbfgs":
            return solver
        candidate = _looks_piecewise_linear(loss, labels)
        if solver == "highs":
            if not candidate:
                raise LossError(
                    f"solver='highs' solves losses that are piecewise linear in the score "
                    f"(one score per row), and {loss.name} is not (its Hessian is not 0): use "
                    "solver='lbfgs'")
            if l2 > 0:
                raise LossError("solver='highs' solves linear programs: the penalty must be "
                                "l1 (l1_ratio=1) or none (alpha=0), not an l2 part")
            return solver
        return "highs" if candidate and l2 == 0 else "lbfgs"

    def _fit_smooth(self, objective: _LinearObjective,
                    solver: str) -> tuple[np.ndarray, np.ndarray]:
        # solved on columns of one scale (see _LinearObjective.scaled); the coefficients are
        # mapped back at the end, the scores (and so every check on them) are the same
        objective, scale, offset = objective.scaled()
        result = self._minimise(objective, solver, _start(objective))
        self.n_iter_ = int(result.nit)
        # L-BFGS-B's objective-change stop (ftol) comes at a gradient of about sqrt(ftol)
        # of the scale of the problem, short of a tight tol on an ill-conditioned one;
        # a restart (a fresh curvature memory) goes on from there while it still gains
        for _ in range(3):
            gradient = _largest_gradient(objective, result.x)
            if not (solver == "lbfgs" and np.isfinite(result.x).all() and gradient > self.tol):
                break
            again = self._minimise(objective, solver, result.x)
            self.n_iter_ += int(again.nit)
            if not (np.all(np.isfinite(again.x)) and objective.fun_and_jac(again.x)[0]
                    <= objective.fun_and_jac(result.x)[0]
                    and _largest_gradient(objective, again.x) < gradient):
                break
            result = again
        unbounded = (f"{self._loss.name} has no finite minimum over linear models on these "
                     "data: the loss keeps falling as the scores grow; add a penalty "
                     "(alpha > 0), or check that the loss is bounded below")
        if not np.all(np.isfinite(result.x)):
            raise LossError(f"{solver} produced non-finite coefficients. {unbounded}")
        scores = objective.scores(*objective.unpack(result.x))
        labels = np.asarray(objective.labels, dtype=np.float64)
        spread = 1.0 + float(np.max(np.abs(labels), initial=0.0))
        if (np.max(np.abs(scores), initial=0.0) > _BRACKET * spread
                and not _stationary(objective, result.x, self.tol)):
            raise LossError(f"{solver} ended at scores up to "
                            f"{np.max(np.abs(scores)):.3g}, far from stationary. {unbounded}")
        x = result.x
        # A solver's "success" is not a certificate: L-BFGS-B also stops when the objective
        # stops falling (ftol) and Newton-CG when its step is small (xtol), both of which
        # happen far from the optimum on ill-conditioned problems. So the gradient is
        # always checked, and where the loss is smooth a trust-region Newton run (exact
        # Hessian-vector products) finishes the job; a piecewise-linear loss has no
        # gradient at its optimum's kinks, so there only a failed run is reported.
        if not _stationary(objective, x, self.tol):
            smooth = not _looks_piecewise_linear(self._loss, objective.labels)
            if (smooth and solver != "trust-ncg" and objective.width is None
                    and not objective.split):
                polished = self._minimise(objective, "trust-ncg", x)
                if (np.all(np.isfinite(polished.x)) and objective.fun_and_jac(polished.x)[0]
                        <= objective.fun_and_jac(x)[0]):
                    x = polished.x
                    self.n_iter_ += int(polished.nit)
            if (smooth or not result.success) and not _stationary(objective, x, self.tol):
                gradient = _largest_gradient(objective, x)
                warnings.warn(f"{type(self).__name__}: solver {solver!r} stopped before "
                              f"converging after {result.nit} iterations ({result.message}; "
                              f"largest gradient {gradient:.3g} on standardised features); "
                              "raise max_iter, or loosen tol", ConvergenceWarning,
                              stacklevel=3)
        U, b = objective.unpack(x)
        W = U / scale[:, None]
        return W, b - offset @ W

    def _minimise(self, objective: _LinearObjective, solver: str, x0: np.ndarray) -> Any:
        """SciPy's run of ``solver`` from ``x0``."""
        if solver == "lbfgs":
            options = {"maxiter": self.max_iter, "maxfun": 4 * self.max_iter + 100,
                       "gtol": self.tol, "ftol": 64 * np.finfo(np.float64).eps, "maxls": 50}
            return scipy.optimize.minimize(objective.fun_and_jac, x0, jac=True,
                                           method="L-BFGS-B", bounds=objective.bounds,
                                           options=options)
        if solver == "newton-cg":
            return scipy.optimize.minimize(objective.fun_and_jac, x0, jac=True,
                                           hessp=objective.hessp, method="Newton-CG",
                                           options={"maxiter": self.max_iter,
                                                    "xtol": self.tol})
        return scipy.optimize.minimize(objective.fun_and_jac, x0, jac=True,
                                       hessp=objective.hessp, method="trust-ncg",
                                       options={"maxiter": self.max_iter, "gtol": self.tol})

    def _fit_lp(self, objective: _LinearObjective,
                labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        loss = self._loss
        spread = 1.0 + float(np.max(np.abs(labels)))
        half_width = _BRACKET * spread
        lines = _tangent_lines(loss, labels, 0.0, half_width)
        if lines is None:
            if self.solver == "highs":
                raise LossError(f"solver='highs': {loss.name} is not convex and piecewise "
                                f"linear in the score on [-{half_width:g}, {half_width:g}] "
                                f"(found with at most {_MAX_LINES} pieces per row): use "
                                "solver='lbfgs'")
            self.solver_ = "lbfgs"
            return self._fit_smooth(objective, "lbfgs")
        result, constant = _solve_lp(objective, lines)
        if result.status == 3:
            raise LossError(f"{loss.name} has no minimum over linear models on these data "
                            "(the linear program is unbounded): add an l1 penalty (alpha > 0), "
                            "or check that the loss is bounded below")
        if result.status != 0:
            raise LossError(f"HiGHS did not solve the linear program: {result.message}")
        self.n_iter_ = int(result.nit)
        d, k = objective.d, 1
        x = result.x
        coefficients = x[:d] - x[d:2 * d] if objective.split else x[:d]
        offset = 2 * d if objective.split else d
        b = np.array([x[offset]]) if objective.fit_intercept else np.zeros(1)
        W = coefficients.reshape(d, k)
        scores = objective.scores(W, b)
        if np.any(np.abs(scores) > half_width):
            raise LossError(f"the linear program's scores leave [-{half_width:g}, "
                            f"{half_width:g}], where {loss.name}'s pieces were found: rescale "
                            "the labels, or use solver='lbfgs'")
        # certificate: at the LP's solution the loss is its tangent-line model
        true_value = objective.fun_and_jac(objective.pack(W, b))[0]
        optimum = result.fun + constant
        if not abs(true_value - optimum) <= 1e-6 * max(1.0, abs(optimum)):
            raise LossError(f"{loss.name} is not the maximum of the tangent lines found for "
                            f"it (the linear program's optimum {optimum!r} is not the loss "
                            f"there, {true_value!r}): use solver='lbfgs'")
        return W, b

    # ------------------------------------------------------------------ scores
    def _validate_X(self, X: Any) -> Any:
        check_is_fitted(self, "coef_")
        return validate_data(self, X, reset=False, accept_sparse=("csr", "csc", "coo"),
                             dtype=[np.float64, np.float32])

    def _loss_scores(self, X: Any) -> np.ndarray:
        """The loss's score input for X: (n,) or (n, K)."""
        return self._scores_of(self._validate_X(X))

    def _scores_of(self, X: Any) -> np.ndarray:
        """:meth:`_loss_scores` of an X validated already (fit's: validating it again would
        compare the array's missing column names with the DataFrame's it was fitted on)."""
        P = np.asarray(X @ self._W, dtype=np.float64) + self._b
        return P[:, 0] if self._width is None else P

    def _validate_fit_X(self, X: Any, y: Any) -> tuple[Any, np.ndarray]:
        if y is None:
            raise ValueError(f"requires y to be passed, but the target y is None "
                             f"({type(self).__name__})")
        X, y = validate_data(self, X, y, accept_sparse=("csr", "csc", "coo"),
                             dtype=[np.float64, np.float32],
                             y_numeric=isinstance(self, RegressorMixin), multi_output=False)
        if scipy.sparse.issparse(X):
            X = X.tocsr()
        return X, y


class LossRegressor(RegressorMixin, _LinearLossModel):
    """A linear model ``p = X @ coef_ + intercept_`` fitted under a lossdsl loss.

    Parameters: see :class:`_LinearLossModel` (``loss``, ``alpha``, ``l1_ratio``,
    ``fit_intercept``, ``solver``, ``max_iter``, ``tol``, ``wrt``, ``label``, ``inputs``,
    ``params``).

    Attributes: ``coef_`` (n_features,), ``intercept_`` (float), ``n_iter_``,
    ``n_features_in_``, ``solver_`` (the solver ``"auto"`` chose), ``objective_`` (the
    penalised mean loss at the fit), ``loss_`` (the compiled weighted-mean loss).

    ``predict`` gives the label-scale prediction for which the score is optimal under the
    loss: the score itself for losses on the label's scale (``half_mse``, ``quantile``,
    ``huber``), ``exp(p)`` for ``poisson_log``, found by bisection on the loss's gradient;
    ``predict_raw`` gives the scores themselves. ``score`` is the negative weighted mean
    loss (see the module docstring).
    """

    def _default_loss(self, n_classes: int | None) -> str:
        return "half_mse"

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        # score() is the negative loss, not R^2: "> 0.5" does not apply
        tags.regressor_tags.poor_score = True
        return tags

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LossRegressor:
        """Fit the coefficients on ``X, y`` (``sample_weight``: per-row weights)."""
        self._check_options()
        check_aligned([("X", X), ("y", y), ("sample_weight", sample_weight)])
        X, y = self._validate_fit_X(X, y)
        if y.dtype.kind not in "biuf":
            raise ValueError(f"Unknown label type: {type(self).__name__} needs numeric "
                             "targets")
        y = np.asarray(y, dtype=np.float64)
        if not np.all(np.isfinite(y)):
            raise ValueError("Input y contains NaN or infinity.")
        self._loss = self._bind_loss(None)
        if self._loss.class_axis:
            raise LossError(f"{self._loss.name} is a loss over classes (its score "
                            f"'{self._loss.wrt}' has one column per class): use LossClassifier")
        if self._loss.label_kind != "value":
            raise LossError(f"{self._loss.name} takes labels as class indices or rows: use "
                            "LossClassifier")
        self._width = None
        self._fit(X, y, sample_weight, None)
        self.coef_ = self._W[:, 0].copy()
        self.intercept_ = float(self._b[0])
        self.loss_ = self._loss.mean
        self._label_range = (float(np.min(y)), float(np.max(y)))
        raw = self._scores_of(X)
        self.identity_link_ = self._is_identity(raw)
        return self

    def _is_identity(self, raw: np.ndarray) -> bool:
        """Whether the score is the label-scale prediction, at the fitted scores and on a
        grid around them (:func:`lossdsl.implied.is_identity`)."""
        return is_identity(
            (z, functools.partial(self._loss.row_gradient, scores=z),
             functools.partial(self._label_scale, z))
            for z in (raw, score_grid(raw)))

    def predict_raw(self, X: Any) -> np.ndarray:
        """The linear score ``X @ coef_ + intercept_`` (the loss's score input; not called
        ``decision_function``, which scikit-learn keeps for classifiers)."""
        return self._loss_scores(X)

    def predict(self, X: Any) -> np.ndarray:
        """The label-scale prediction for which each score is optimal under the loss."""
        raw = self._loss_scores(X)
        if self.identity_link_:
            return raw
        return self._label_scale(raw)

    def _label_scale(self, raw: np.ndarray) -> np.ndarray:
        """The labels y* with dl(y*, p)/dp = 0 (:func:`lossdsl.implied.label_scale`)."""
        return self._loss.label_scale(raw, self._label_range)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """The negative weighted mean loss of the scores on ``X, y`` (greater is better)."""
        raw = self._loss_scores(X)
        y = np.asarray(column_or_1d(y), dtype=np.float64)
        if y.shape[0] != raw.shape[0]:
            raise ValueError(f"X has {raw.shape[0]} rows but y has {y.shape[0]}")
        weight = None if sample_weight is None else _check_sample_weight(sample_weight, raw)
        return -self._loss.mean_value(y, raw, weight)


class LossClassifier(ClassifierMixin, _LinearLossModel):
    """A linear classifier fitted under a lossdsl loss.

    Parameters: those of :class:`_LinearLossModel`, and ``class_values``: for a binary loss
    (one score per row), the label values the loss gets for ``classes_[0]`` and
    ``classes_[1]``: ``(0, 1)`` (default) or ``(-1, 1)`` for margin losses such as
    ``hinge``. A loss over classes (``sparse_cce_logits``, ``cce_logits``) gets class
    indices (or one-hot rows) and one score column per class.

    Attributes: ``classes_``, ``coef_`` ((1, n_features) for a binary loss, (K, n_features)
    for a loss over classes, as scikit-learn's ``LogisticRegression``), ``intercept_``,
    ``n_iter_``, ``n_features_in_``, ``solver_``, ``objective_``, ``loss_``.

    ``decision_function`` gives the scores ((n,) for two classes, greater for
    ``classes_[1]``: for a loss over classes, the second class's score minus the first's,
    and a binary loss's score negated where it favours ``classes_[0]``, as with
    ``class_values=(1, 0)``; ``coef_`` stays the loss's own score's); ``predict_proba`` the
    class probabilities for which the scores are optimal under the loss (``sigmoid`` for
    ``bce_logits``, ``softmax`` for ``sparse_cce_logits``; found from the loss's gradients,
    so for a loss that implies none, a hinge, the fitted model has no ``predict_proba``
    attribute: ``hasattr`` is False, and the AttributeError's cause says why); ``predict`` the most
    probable class (the class of lowest loss for a loss without probabilities); ``score``
    the negative weighted mean loss.
    """

    def __init__(self, loss: LossLike | None = None, *, alpha: float = 1e-4,
                 l1_ratio: float = 0.0, fit_intercept: bool = True, solver: str = "auto",
                 max_iter: int = 1000, tol: float = 1e-6, wrt: str | None = None,
                 label: str | None = None, inputs: Mapping[str, Any] | None = None,
                 params: Mapping[str, float] | None = None,
                 class_values: tuple[float, float] = (0, 1)):
        super().__init__(loss, alpha=alpha, l1_ratio=l1_ratio, fit_intercept=fit_intercept,
                         solver=solver, max_iter=max_iter, tol=tol, wrt=wrt, label=label,
                         inputs=inputs, params=params)
        self.class_values = class_values

    def _default_loss(self, n_classes: int | None) -> str:
        return "bce_logits" if n_classes == 2 else "sparse_cce_logits"

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LossClassifier:
        """Fit the coefficients on ``X, y`` (``sample_weight``: per-row weights)."""
        self._check_options()
        check_aligned([("X", X), ("y", y), ("sample_weight", sample_weight)])
        X, y = self._validate_fit_X(X, y)
        self.classes_, encoded = fit_classes(self, y, sample_weight)
        k = self.classes_.size
        self._loss = loss = self._bind_loss(k)
        if not loss.class_axis and k != 2:
            raise LossError(f"{loss.name} is a binary loss (its score '{loss.wrt}' is one "
                            f"value per row) but y has {k} classes; use a loss over classes "
                            "(sparse_cce_logits, cce_logits: one score per class)")
        self._width = k if loss.class_axis else None
        labels = self._labels(encoded)
        self._sign = 1.0
        if not loss.class_axis:
            self._check_both_labels()
            self._sign = self._orientation()
        self._fit(X, labels, sample_weight, self._width)
        self.coef_ = self._W.T.copy()
        self.intercept_ = self._b.copy()
        self.loss_ = loss.mean
        self._proba_error = None
        try:
            self._check_probabilities(self._scores_of(X))
        except LossError as error:
            self._proba_error = str(error)
        return self

    def _labels(self, encoded: np.ndarray) -> np.ndarray:
        """The labels the loss gets for class indices ``encoded``."""
        encoded = np.asarray(encoded, dtype=np.int64)
        if not self._loss.class_axis:
            return np.asarray(self.class_values, dtype=np.float64)[encoded]
        if self._loss.label_kind == "matrix":
            return np.eye(self.classes_.size)[encoded]
        return encoded

    def _class_rows(self, index: int, n: int) -> np.ndarray:
        return self._labels(np.full(n, index, dtype=np.int64))

    def _check_both_labels(self) -> None:
        """A loss written for labels -1/1 (hinge) ignores label 0: refuse it."""
        z = np.linspace(-3.0, 3.0, 13)
        for index, value in enumerate(self.class_values):
            with class_values_hint():
                gradient = self._loss.row_gradient(np.full(z.size, float(value)), z)
            if np.all(gradient == 0):
                raise LossError(
                    f"{self._loss.name} does not depend on the score for label {value} "
                    f"(class {self.classes_[index]!r}): its gradient is 0 at every score. Pass "
                    "class_values=(-1, 1) for a margin loss such as hinge, or write the loss "
                    "for labels 0/1")

    def _orientation(self) -> float:
        """+1 where a higher score favours ``classes_[1]`` (its loss falls against
        ``classes_[0]``'s as the score rises), -1 where it favours ``classes_[0]``:
        ``class_values=(1, 0)`` makes the score a logit of ``classes_[0]``, and
        scikit-learn reads ``decision_function > 0`` as ``classes_[1]`` (roc_auc came out
        as 1 - AUC)."""
        z = np.linspace(-3.0, 3.0, 13)
        with class_values_hint():
            g0, g1 = (self._loss.row_gradient(np.full(z.size, float(v)), z)
                      for v in self.class_values)
        difference = float(np.sum(np.where(np.isfinite(g1 - g0), g1 - g0, 0.0)))
        return -1.0 if difference > 0 else 1.0

    def _has_probabilities(self) -> bool:
        """Whether the fitted loss implies probabilities (``available_if`` of
        ``predict_proba``: a hinge has none, and an attribute that only raises misleads
        scikit-learn, RocCurveDisplay.from_estimator and check_estimator); True before fit,
        where predict_proba says the model is not fitted."""
        error = getattr(self, "_proba_error", None)
        if error is not None:
            # the reason, as the __cause__ of scikit-learn's AttributeError
            raise LossError(f"predict_proba is not available: {error}")
        return True

    # ------------------------------------------------------------------ probabilities
    def _probabilities(self, raw: np.ndarray) -> np.ndarray:
        """Class probabilities (n, K) for which the scores are optimal under the loss."""
        n = raw.shape[0]
        gradient = self._loss.row_gradient
        if not self._loss.class_axis:
            values = [float(v) for v in self.class_values]
            return class_probabilities(lambda j: gradient(np.full(n, values[j]), raw), n,
                                       None, self._loss.name)
        return class_probabilities(lambda j: gradient(self._class_rows(j, n), raw), n,
                                   raw.shape[1], self._loss.name)

    def _check_probabilities(self, raw: np.ndarray) -> None:
        """Probabilities must exist at the fitted scores and move with the score: a hinge
        is optimal at one score for a whole range of probabilities."""
        base = self._probabilities(raw)
        if not self._loss.class_axis:
            low, high = float(np.min(raw)), float(np.max(raw))
            span = max(high - low, 1.0)
            q = self._probabilities(np.linspace(low - span, high + span, 201))[:, 1]
            inside = (q > 1e-12) & (q < 1 - 1e-12)
            steps = np.diff(q)
            both = inside[1:] & inside[:-1]
            if not both.any() or not (np.all((steps > 0) | ~both)
                                      or np.all((steps < 0) | ~both)):
                raise LossError(
                    f"{self._loss.name} does not imply class probabilities: the probability "
                    "for which a score is optimal does not change strictly with the score "
                    "(a margin loss such as hinge is optimal at one score for many "
                    "probabilities)")
            return
        rows = np.arange(min(8, raw.shape[0]))
        if not np.all(probabilities_move(self._probabilities, raw[rows], base[rows])):
            raise LossError(f"{self._loss.name} does not imply class probabilities: they do "
                            "not change with the scores")

    # ------------------------------------------------------------------ prediction
    def decision_function(self, X: Any) -> np.ndarray:
        """The scores: (n,) for two classes, greater for ``classes_[1]`` as scikit-learn
        reads them (the loss's score, negated where it favours ``classes_[0]``:
        ``class_values=(1, 0)``), (n, K) for more."""
        raw = self._loss_scores(X)
        if raw.ndim == 2 and raw.shape[1] == 2:
            return raw[:, 1] - raw[:, 0]
        if raw.ndim == 1:
            return self._sign * raw
        return raw

    @available_if(_has_probabilities)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n, K), columns in the order of ``classes_`` (only for a loss
        that implies them: no attribute for a hinge)."""
        check_is_fitted(self, "coef_")
        return self._probabilities(self._loss_scores(X))

    @available_if(_has_probabilities)
    def predict_log_proba(self, X: Any) -> np.ndarray:
        """The logarithm of ``predict_proba``."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class (the class of lowest loss at the scores for a loss that
        implies no probabilities)."""
        raw = self._loss_scores(X)
        if self._proba_error is None:
            return self.classes_[np.argmax(self._probabilities(raw), axis=1)]
        n, k = raw.shape[0], self.classes_.size
        losses = np.empty((n, k))
        for index in range(k):
            with np.errstate(all="ignore"):
                losses[:, index] = self._loss.rows(**self._loss.arguments(
                    self._class_rows(index, n), raw))
        return self.classes_[np.argmin(np.where(np.isnan(losses), np.inf, losses), axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """The negative weighted mean loss of the scores on ``X, y`` (greater is better)."""
        raw = self._loss_scores(X)
        index = _class_index(self.classes_, y)
        if index.shape[0] != raw.shape[0]:
            raise ValueError(f"X has {raw.shape[0]} rows but y has {index.shape[0]}")
        weight = None if sample_weight is None else _check_sample_weight(sample_weight, raw)
        return -self._loss.mean_value(self._labels(index), raw, weight)


def _class_index(classes: np.ndarray, y: Any) -> np.ndarray:
    """Positions in ``classes`` of the labels ``y``; unknown labels raise ValueError."""
    y = column_or_1d(np.asarray(y))
    index = np.clip(np.searchsorted(classes, y), 0, classes.size - 1)
    if not np.array_equal(classes[index], y):
        unknown = [v for v in np.unique(y) if v not in set(classes.tolist())]
        raise ValueError(f"y contains labels the model was not fitted on: {unknown[:5]}")
    return index


# ---------------------------------------------------------------------------- metrics
class LossMetric:
    """A loss as a metric: ``metric(y_true, y_pred, sample_weight=None)`` is the weighted
    mean loss (lower is better) of predictions ``y_pred`` (the loss's score input: (n,) or
    (n, K) for a loss over classes) for labels ``y_true`` (as the loss takes them)."""

    def __init__(self, loss: LossLike, *, wrt: str | None = None, label: str | None = None,
                 inputs: Mapping[str, Any] | None = None,
                 params: Mapping[str, float] | None = None):
        self.loss = loss
        self._bound = _BoundLoss(loss, wrt, label, inputs, params)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> float:
        """The weighted mean loss."""
        labels = np.asarray(y_true)
        scores = np.asarray(y_pred, dtype=np.float64)
        if labels.shape[0] != scores.shape[0]:
            raise LossShapeError(f"y_true has {labels.shape[0]} rows but y_pred has "
                                 f"{scores.shape[0]}")
        if self._bound.class_axis and scores.ndim != 2:
            raise LossShapeError(f"{self._bound.name} takes one score per class: y_pred must "
                                 f"be (n_samples, n_classes), not {scores.shape}")
        if not self._bound.class_axis:
            if scores.ndim == 2 and scores.shape[1] == 1:  # a column, as Dense(1) gives
                scores = scores[:, 0]
            if scores.ndim != 1 or labels.ndim != 1:
                raise LossShapeError(
                    f"{self._bound.name} takes one label and one score per sample: y_true and "
                    f"y_pred must be (n_samples,), not {labels.shape} and {scores.shape} (a "
                    "loss is not averaged over the columns of several outputs here)")
        if labels.dtype.kind not in "biuf":
            raise LossError(f"y_true must be numeric labels as the loss takes them, not "
                            f"dtype {labels.dtype}; make_scorer encodes class labels")
        weight = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        return self._bound.mean_value(labels, scores, weight)

    def __repr__(self) -> str:
        return f"LossMetric({self.loss!r})"


_RESPONSE_METHODS = ("auto", "predict", "predict_raw", "decision_function", "predict_proba")


class LossScorer:
    """A loss as a scikit-learn scorer (``scoring=`` of ``cross_val_score``,
    ``GridSearchCV``): ``scorer(estimator, X, y)`` is the *negative* weighted mean loss,
    so greater is better (``greater_is_better=False`` of ``sklearn.metrics.make_scorer``).

    The loss's score input comes from ``response_method``: ``"auto"`` takes a classifier's
    ``decision_function`` (its logits; ``predict_raw`` of lossdsl's booster classifiers),
    and of a regressor ``predict`` where the loss scores label-scale predictions (mse,
    pinball, huber), else ``predict_raw`` (lossdsl's estimators: the score of a loss such as
    poisson_log, a log mean), and refuses an estimator without it; ``"predict"``,
    ``"predict_raw"``, ``"decision_function"`` or ``"predict_proba"`` choose. For a
    classifier the labels are encoded by its ``classes_``: ``class_values`` for a binary
    loss, class indices (or one-hot rows) for a loss over classes.
    """

    def __init__(self, loss: LossLike, *, response_method: str = "auto",
                 class_values: tuple[float, float] = (0, 1), **options: Any):
        if response_method not in _RESPONSE_METHODS:
            raise LossError(f"response_method must be one of {', '.join(_RESPONSE_METHODS)}, "
                            f"not {response_method!r}")
        self.metric = LossMetric(loss, **options)
        self.response_method = response_method
        self.class_values = class_values

    def __call__(self, estimator: Any, X: Any, y: Any, sample_weight: Any = None) -> float:
        """The negative weighted mean loss of ``estimator`` on ``X, y``."""
        bound = self.metric._bound
        classes = getattr(estimator, "classes_", None)
        method = self.response_method
        if method == "auto":
            method = self._automatic_method(estimator, classes is not None, y)
        if not hasattr(estimator, method):
            raise LossError(f"{type(estimator).__name__} has no {method}(): choose another "
                            "response_method")
        scores = np.asarray(getattr(estimator, method)(X), dtype=np.float64)
        if classes is None:
            return -self.metric(y, scores, sample_weight)
        index = _class_index(np.asarray(classes), y)
        k = len(classes)
        if bound.class_axis:
            if scores.ndim == 1 and method == "decision_function" and k == 2:
                scores = np.column_stack([np.zeros_like(scores), scores])
            labels = np.eye(k)[index] if bound.label_kind == "matrix" else index
        else:
            if k != 2:
                raise LossError(f"{bound.name} is a binary loss but the estimator has {k} "
                                "classes")
            if scores.ndim == 2:
                scores = scores[:, 1]
            labels = np.asarray(self.class_values, dtype=np.float64)[index]
        return -self.metric(labels, scores, sample_weight)

    def _automatic_method(self, estimator: Any, classifier: bool, y: Any) -> str:
        """The method whose output is the loss's score (``response_method="auto"``)."""
        bound = self.metric._bound
        name = type(estimator).__name__
        if classifier:
            for method in ("decision_function", "predict_raw"):
                if hasattr(estimator, method):
                    return method
            raise LossError(f"{name} has neither decision_function() nor predict_raw() to "
                            f"give {bound.name} its logits: pass response_method="
                            "'predict_proba' if the loss takes probabilities")
        if bound.class_axis or bound.scores_labels(np.asarray(y)):
            return "predict"
        if hasattr(estimator, "predict_raw"):
            return "predict_raw"
        raise LossError(
            f"{bound.name} scores '{bound.wrt}' on a scale of its own, not the labels' (its "
            f"score is no label-scale prediction), and {name}.predict gives label-scale "
            "predictions: score it with a loss of the prediction (poisson(y, p) rather than "
            "poisson_log(y, z)), or pass response_method='predict' if predict() does give "
            f"{bound.wrt}")

    def __repr__(self) -> str:
        return f"make_scorer({self.metric.loss!r}, response_method={self.response_method!r})"


def metric(loss: LossLike, *, wrt: str | None = None, label: str | None = None,
           inputs: Mapping[str, Any] | None = None,
           params: Mapping[str, float] | None = None) -> LossMetric:
    """``f(y_true, y_pred, sample_weight=None)``: the weighted mean loss of predictions."""
    return LossMetric(loss, wrt=wrt, label=label, inputs=inputs, params=params)


def make_scorer(loss: LossLike, *, response_method: str = "auto",
                class_values: tuple[float, float] = (0, 1), wrt: str | None = None,
                label: str | None = None, inputs: Mapping[str, Any] | None = None,
                params: Mapping[str, float] | None = None) -> LossScorer:
    """A scikit-learn scorer from a loss: the negative weighted mean loss (see
    :class:`LossScorer`), for ``scoring=`` of ``cross_val_score`` and ``GridSearchCV``."""
    return LossScorer(loss, response_method=response_method, class_values=class_values,
                      wrt=wrt, label=label, inputs=inputs, params=params)
