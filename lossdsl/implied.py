"""What a fitted score implies under a loss: label-scale predictions and class probabilities.

A model trained under a loss gives raw scores; what they stand for on the label's scale is
read off the loss's gradient, whatever the link:

* :func:`label_scale`: the label ``y*`` with ``dl(y*, z)/dz = 0`` (the mean for squared
  error, the median for MAE, ``exp(z)`` for ``poisson_log``, the quantile for ``quantile``);
* :func:`class_probabilities`: the class probabilities ``q`` for which ``z`` is optimal,
  ``sum_k q_k grad l(k, z) = 0`` (``sigmoid``/``softmax`` for the cross-entropies, the
  cost-weighted rule for a weighted one), or a :class:`~lossdsl.LossError` where the loss is
  not a proper scoring rule.

Used by the scikit-learn estimators (:mod:`lossdsl.estimators`, :mod:`lossdsl.linear`), which
supply the gradient through a callable so that per-row inputs follow the rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from .domains import Domain
from .errors import LossDomainError, LossError

__all__ = ["PROBABILITY_SLACK", "class_probabilities", "label_bounds", "label_scale",
           "probabilities_move",
           "simplex_solution"]

#: How far implied probabilities may stray outside [0, 1] by rounding.
PROBABILITY_SLACK = 1e-9
#: Multiclass: the largest relative residual of ``sum_k q_k grad l(k, z) = 0`` accepted.
RESIDUAL_TOLERANCE = 1e-6
# Doublings of the bracket's width tried before a row's prediction is declared unbounded.
_EXPANSIONS = 1100
# Of those, the first that also move an end where the gradient is 0 (inside a flat band).
_FLAT_EXPANSIONS = 64
# Bisection steps for a label-scale prediction (each halves the bracket).
_BISECTIONS = 200

#: ``gradient(labels, rows)``: the loss's gradient in the score at ``labels`` for the rows
#: selected by the boolean mask ``rows`` (None: every row), one value per selected row.
RowGradient = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


def label_bounds(domains: Iterable[Domain]) -> tuple[float, float]:
    """The closed interval of labels that the label's declared domains allow (``y in
    (0, inf)``: from the smallest positive float64), (-inf, inf) without any."""
    low, high = -math.inf, math.inf
    for domain in domains:
        below, above = ((min(domain.members), max(domain.members)) if domain.members
                        else domain.closed)
        low, high = max(low, below), min(high, above)
    return low, high


def label_scale(gradient: RowGradient, n: int, label_range: tuple[float, float],
                name: str, bounds: tuple[float, float] = (-math.inf, math.inf)) -> np.ndarray:
    """(n,) the labels ``y*`` with ``dl(y*, z)/dz = 0`` for each row's score, by a bracket
    widened from ``label_range`` (doubling, or halving the way to an end of ``bounds``, the
    labels the loss accepts: :func:`label_bounds`, or to a label found where the gradient is
    not finite, such as y < 0 for ``mse(log(y), p)``, whose prediction below the training
    labels lies between 0 and the smallest of them) and vectorised bisection to a few ulps.

    ``dl/dz`` falls as the label rises (a larger label pulls the score up); where it is 0
    over a band of labels (epsilon-insensitive losses), the prediction is the band's middle.
    A row whose
    gradient does not change sign from + to - (a loss with no label-scale reading there),
    is 0 for every label (no band the labels' bounds close: the loss does not depend on the
    score there) or turns non-finite raises a :class:`~lossdsl.LossError` naming it;
    ``name`` names the loss.
    """
    low, high = label_range
    width = max(high - low, 1.0)
    lo, hi = np.full(n, float(low)), np.full(n, float(high))
    g_lo, g_hi = gradient(lo, None), gradient(hi, None)
    # per row, the nearest labels beyond each end where dl/dz was found not finite (log(y)
    # at y < 0 when the labels' domain is not declared): the bracket widens no further than
    # halfway to them, as to a declared bound, so that it closes in on the labels the loss
    # takes instead of stopping at the first label it does not
    floor, ceiling = np.full(n, -math.inf), np.full(n, math.inf)
    for step in range(_EXPANSIONS):
        up = g_hi > 0  # the root lies above the bracket: it moves up
        down = (g_lo < 0) & ~up  # below it
        # an end where dl/dz is 0 may lie inside a band of such labels, whose middle is the
        # prediction: the first doublings also widen such an end (the other stays) until it
        # is out of the band (or the loss is flat out there)
        flat = step < _FLAT_EXPANSIONS
        widen_up = flat & (g_hi == 0) & ~up & ~down
        widen_down = flat & (g_lo == 0) & ~up & ~down
        move = width * 2.0 ** min(step, 1023)  # 2.0 ** 1024 raises: the bracket is at inf
        rising, falling = up | widen_up, down | widen_down
        next_hi = _widened(hi, move, bounds[1], ceiling)
        next_lo = -_widened(-lo, move, -bounds[0], -floor)
        # an end that can move no more (next to a label where dl/dz is not finite) stays
        rising &= next_hi != hi
        falling &= next_lo != lo
        if not (rising.any() or falling.any()):
            break
        if rising.any():
            lo[up & rising], g_lo[up & rising] = hi[up & rising], g_hi[up & rising]
            hi[rising], g_hi[rising] = _finite_step(gradient, rising, hi, g_hi,
                                                    next_hi, ceiling)
        if falling.any():
            hi[down & falling], g_hi[down & falling] = lo[down & falling], g_lo[down & falling]
            lo[falling], g_lo[falling] = _finite_step(gradient, falling, lo, g_lo,
                                                      next_lo, floor)
    # dl/dz still 0 at both ends after the widenings: the loss does not depend on the score
    # there whatever the label (msle's max(p, eps) at a score below eps), so no label is
    # singled out, and the bracket's middle would only say how far it was widened (it was
    # returned: 32768); a band is the prediction only where the labels' bounds close it
    flat = (g_lo == 0) & (g_hi == 0) & ~(math.isfinite(bounds[0]) and math.isfinite(bounds[1]))
    if flat.any():
        i = int(np.argmax(flat))
        raise LossError(
            f"{name} implies no label-scale prediction for row {i}: dl/dz is 0 for every "
            f"label in [{lo[i]:.6g}, {hi[i]:.6g}] (the loss does not depend on the score "
            "there). Use predict_raw() for the raw scores")
    bad = ~(np.isfinite(g_lo) & np.isfinite(g_hi) & (g_lo >= 0) & (g_hi <= 0))
    if bad.any():
        i = int(np.argmax(bad))
        beyond = [f"{where} {label:.6g}" for where, label in (("below", floor[i]),
                                                              ("above", ceiling[i]))
                  if math.isfinite(label)]
        raise LossError(
            f"{name} implies no label-scale prediction for row {i}: dl/dz does not change "
            f"sign from + to - for any label in [{lo[i]:.6g}, {hi[i]:.6g}] (gradients "
            f"{g_lo[i]!r}, {g_hi[i]!r}"
            + (f"; not finite at the labels {' and '.join(beyond)}" if beyond else "")
            + "). Use predict_raw() for the raw scores")
    # where dl/dz is 0 over a band of labels (epsilon-insensitive: every y within eps of z),
    # the prediction is the band's middle: a bisection finds its lower edge (the last label
    # with g > 0) and, for the rows whose first label past it still has g = 0, another its
    # upper edge (the first with g < 0)
    low, high, g_high = _bisect(gradient, lo, hi, g_hi, None, False)
    prediction = 0.5 * (low + high)
    band = g_high == 0
    if band.any():
        upper_low, upper_high, _ = _bisect(gradient, high[band], hi[band], g_hi[band], band,
                                           True)
        prediction[band] = 0.5 * (prediction[band] + 0.5 * (upper_low + upper_high))
    return prediction


def _widened(end: np.ndarray, move: float, bound: float, barrier: np.ndarray) -> np.ndarray:
    """The upper ends ``end`` of brackets moved up by ``move``, or halfway to ``bound`` (the
    largest label the loss accepts) where that is nearer, and in any case to below
    ``barrier`` (per row: the nearest label above found where dl/dz is not finite), halfway
    to it where the step would reach it. (Lower ends: negate ends, bound and barrier.)"""
    candidate = np.where(end + move <= bound, end + move, end + 0.5 * (bound - end))
    return np.where(candidate < barrier, candidate, end + 0.5 * (barrier - end))


def _finite_step(gradient: RowGradient, rows: np.ndarray, end: np.ndarray, g_end: np.ndarray,
                 candidate: np.ndarray, barrier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ends of the brackets of ``rows`` (a mask) moved to ``candidate`` and the gradient
    there, except that a row whose gradient there is not finite keeps its end (and its
    gradient) and records the candidate in ``barrier`` (updated in place), which the next
    steps do not reach (:func:`_widened`)."""
    moved, g = candidate[rows], gradient(candidate[rows], rows)
    infeasible = ~np.isfinite(g)
    if infeasible.any():
        limits = barrier[rows]
        limits[infeasible] = moved[infeasible]
        barrier[rows] = limits
        moved[infeasible] = end[rows][infeasible]
        g[infeasible] = g_end[rows][infeasible]
    return moved, g


def _bisect(gradient: RowGradient, low: np.ndarray, high: np.ndarray, g_high: np.ndarray,
            rows: np.ndarray | None, rising: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bisection of the brackets ``[low, high]`` of ``rows`` (a mask; None: every row) to a
    few ulps, down to the last label with ``dl/dz > 0`` (``rising``: ``>= 0``); returns the
    final brackets and the gradient at their upper ends (``g_high``: at the given ones)."""
    for _ in range(_BISECTIONS):
        mid = 0.5 * (low + high)
        g = gradient(mid, rows)
        if not np.all(np.isfinite(g)):
            i = int(np.argmax(~np.isfinite(g)))
            row = i if rows is None else int(np.flatnonzero(rows)[i])
            raise LossError(f"the loss's gradient is not finite at label {mid[i]!r} for row "
                            f"{row}; use predict_raw()")
        below_root = g >= 0 if rising else g > 0
        low = np.where(below_root, mid, low)
        high = np.where(below_root, high, mid)
        g_high = np.where(below_root, g_high, g)
        if np.all(high - low <= 4 * np.finfo(np.float64).eps * np.maximum(np.abs(low),
                                                                          np.abs(high))):
            break
    return low, high, g_high


def score_grid(raw: np.ndarray) -> np.ndarray:
    """41 scores spanning the range of ``raw`` and as much again on each side."""
    low, high = float(np.min(raw)), float(np.max(raw))
    span = max(high - low, 1.0)
    return np.linspace(low - span, high + span, 41)


#: A set of scores to check the identity link at: (the scores, the loss's gradient in the
#: score at given labels for those scores, and their label-scale predictions)
IdentityCheck = tuple[np.ndarray, Callable[[np.ndarray], np.ndarray],
                      Callable[[], np.ndarray]]


def is_identity(checks: Iterable[IdentityCheck]) -> bool:
    """Whether a loss's score is its label-scale prediction at each set of scores ``z``:
    the gradient is < 0 just above ``y = z`` and > 0 just below, or, where it is 0 there
    (a band of labels with gradient 0: epsilon-insensitive), the label-scale prediction
    (the band's middle, :func:`label_scale`) is the score itself."""
    for z, gradient, predictions in checks:
        delta = 1e-7 * np.maximum(1.0, np.abs(z))
        try:
            above, below = gradient(z + delta), gradient(z - delta)
        except LossDomainError:  # scores the labels cannot take (y in [0, inf))
            return False
        if np.all(above < 0) and np.all(below > 0):
            continue
        if not (np.all(above <= 0) and np.all(below >= 0)):
            return False
        try:
            middle = predictions()
        except LossError:
            return False
        if not np.allclose(middle, z, rtol=1e-9, atol=1e-9):
            return False
    return True


def class_probabilities(gradient_at: Callable[[int], np.ndarray], n: int, k: int | None,
                        name: str, hint: str = "") -> np.ndarray:
    """(n, K) the class probabilities for which each row's scores are optimal under a loss.

    ``gradient_at(j)``: the gradient in the scores at the label of class ``j`` for every
    row, ``(n,)`` for a loss with one score per row (``k`` None: two classes, ``q = g0 / (g0
    - g1)``) or ``(n, K)`` for a loss over ``k`` classes (``q`` on the simplex minimising
    ``||sum_j q_j grad l(j, z)||``, which must be ~0). Raises a :class:`~lossdsl.LossError`
    naming the row where no probabilities exist (``hint``: what to do instead)."""
    if k is None:
        g0, g1 = gradient_at(0), gradient_at(1)
        with np.errstate(all="ignore"):
            q = g0 / (g0 - g1)
        bad = ~np.isfinite(q) | (q < -PROBABILITY_SLACK) | (q > 1 + PROBABILITY_SLACK)
        if bad.any():
            i = int(np.argmax(bad))
            raise LossError(
                f"{name} does not imply a probability for row {i}: the gradients at the two "
                f"classes' labels are {g0[i]!r} and {g1[i]!r}, so q = g0 / (g0 - g1) = "
                f"{q[i]!r} is not in [0, 1]; the loss is not a proper scoring rule there"
                + hint)
        q = np.clip(q, 0.0, 1.0)
        return np.column_stack([1.0 - q, q])
    G = np.empty((n, k, k))
    for label in range(k):
        G[:, label, :] = gradient_at(label)
    q = simplex_solution(G)
    scale = np.maximum(np.abs(G).max(axis=(1, 2)), 1e-300)
    residual = np.linalg.norm(np.einsum("nk,nkj->nj", q, G), axis=1) / scale
    bad = (~np.all(np.isfinite(q), axis=1) | (residual > RESIDUAL_TOLERANCE)
           | np.any(q < -PROBABILITY_SLACK, axis=1))
    if bad.any():
        i = int(np.argmax(bad))
        raise LossError(
            f"{name} does not imply class probabilities for row {i}: no probabilities q with "
            f"sum_k q_k * grad l(k, z) = 0 (best found: {q[i].tolist()}, residual "
            f"{residual[i]:.3g}); the loss is not a proper scoring rule there" + hint)
    q = np.clip(q, 0.0, None)
    return q / q.sum(axis=1, keepdims=True)


def probabilities_move(probabilities: Callable[[np.ndarray], np.ndarray], z: np.ndarray,
                       base: np.ndarray) -> np.ndarray:
    """(n,) for each row of scores ``z`` (n, K), whether the implied probabilities move when
    the score moves towards any one class (a step of 1% of the scores' size): an expected
    cost under a cost matrix can imply the same q at every score, which then says nothing
    about the row. ``probabilities(z)``: (n, K) probabilities at ``z``; ``base``: at ``z``
    itself. A step where no probabilities exist is skipped."""
    k = z.shape[1]
    step = 1e-2 * (1.0 + np.max(np.abs(z)))
    moved = np.zeros(z.shape[0], dtype=bool)
    for j in range(k):
        direction = -np.full(k, 1.0 / k)
        direction[j] += 1.0
        try:
            other = probabilities(z + step * direction)
        except LossError:
            continue
        moved |= np.max(np.abs(other - base), axis=1) > 1e-9
    return moved


def simplex_solution(G: np.ndarray) -> np.ndarray:
    """Per row, the q with sum(q) = 1 that minimises ||G^T q|| (G: (n, K labels, K scores)):
    the KKT system [[2 G G^T, 1], [1^T, 0]] [q; mu] = [0; 1]."""
    n, k, _ = G.shape
    system = np.zeros((n, k + 1, k + 1))
    system[:, :k, :k] = 2.0 * G @ np.swapaxes(G, 1, 2)
    system[:, :k, k] = 1.0
    system[:, k, :k] = 1.0
    right = np.zeros((n, k + 1))
    right[:, k] = 1.0
    try:
        solution = np.linalg.solve(system, right[..., None])[..., 0]
    except np.linalg.LinAlgError:
        solution = (np.linalg.pinv(system) @ right[..., None])[..., 0]
    return solution[:, :k]
