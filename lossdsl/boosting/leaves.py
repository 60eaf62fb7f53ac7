"""Exact leaf values for custom objectives: every leaf of a new tree at the loss's minimiser.

A GBDT with a custom objective sets each leaf to a Newton step, ``-sum(g) / sum(h)`` over its
rows. For piecewise-linear costs (MAE, quantile, ``asymmetric_l1``, a newsvendor cost with
per-row prices) the Hessian is 0, so the objective uses a constant one and every leaf moves
by the mean gradient, in money per unit: too far or too little. The libraries' built-in
quantile and L1 objectives instead refit each leaf of the finished tree to the exact
minimiser of the loss over its rows (LightGBM ``RenewTreeOutput``, XGBoost
``UpdateTreeLeaf``), which no library offers to custom objectives. :func:`solve_leaves` does
that for any lossdsl loss, for all leaves of a tree at once:

    c_j = argmin_c  sum_{i in leaf j}  w_i * l(y_i, F_i + c)

(``F``: the raw scores of the model before the tree), by a safeguarded 1-D search per leaf,
vectorised over leaves: an expanding search until the derivative changes sign (a bracket),
then Newton steps where the curvature is positive and the step stays inside the bracket and
shrinks fast enough, else false-position steps on the derivative (Illinois-modified) or
bisection. Each iteration is one call of the loss's compiled ``sum`` kernel on the rows of
the leaves still searching (gradient only, where the loss has no curvature) and compiled
passes over those rows for the per-leaf sums. A leaf stops when its bracket (or a Newton
or bisection step) is below ``xtol`` times the spread of its residuals.

For a loss without curvature (piecewise linear in the score) every leaf is first read off
its rows' kinks: each row's gradient just below and just above its residual (two kernel
calls), then per leaf the first residual where the derivative turns >= 0, found by a
bucketed selection without sorting (:func:`_kink_select`), so that such leaves are the
weighted quantiles the built-ins give. Every leaf found that way is checked on all its rows
(two more calls). Around the four calls, six compiled passes over the rows: the residuals
with the leaves' statistics (:func:`_leaf_stats`), the scores around the kinks with each
row's bucket (:func:`_around_kinks`), the bucket sums and the gathering of the rows where
each leaf's derivative turns (:func:`_kink_select`), the scores around the answers and the
derivative's signs there (:func:`_around_answers`, :func:`_no_sign_change`). The check
is what makes a reading exact, so it is never skipped: the reading assumes each row's
gradient jumps once, at its residual, and only gradients taken at the answer can show that
a row's loss has other kinks. A leaf that fails its check or that the reading cannot settle
is searched as above, where rows whose gradient is the same at both ends of their leaf's
bracket are set aside and, once few are left, the leaf is read off their kinks in one
sorted scan (checked again): a loss whose kinks are elsewhere or that is not convex gets
there.

:func:`lossdsl.lightgbm.train` and :func:`lossdsl.xgboost.train` use it after every tree;
the helpers below (:func:`check_train_options`, :func:`use_refit`, :func:`eval_objective`,
:func:`refit_round`, :class:`EvalTracker`, :func:`learning_rate`,
:func:`leaves_from_changes`, :func:`score_changes`) are what the two training loops share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from numba import njit

from ..errors import LossError
from ..ir.node import is_constant
from .objective import BoostingObjective, as_objective

#: The default tolerance of the leaf search, relative to the spread of a leaf's residuals.
LEAF_XTOL = 1e-6

__all__ = ["LEAF_XTOL", "EvalTracker", "LeafSolution", "check_train_options", "eval_objective",
           "learning_rate", "leaves_from_changes", "refit_round", "refuse_constrained_refit",
           "score_changes", "solve_leaves", "use_refit"]


_JIT = {"cache": True, "error_model": "numpy"}
_NO_ROWS = np.zeros(0)


# Row-level work of the search, one compiled pass each (a dozen NumPy passes otherwise).
@njit(**_JIT)
def _shift_scores(scores, leaf, c):  # pragma: no cover - compiled
    out = np.empty(leaf.shape[0])
    for i in range(leaf.shape[0]):
        out[i] = scores[i] + c[leaf[i]]
    return out


@njit(**_JIT)
def _add_by_leaf(scores, leaf, values):  # pragma: no cover - compiled
    """scores[i] += values[leaf[i]], in place (no gathered temporary)."""
    for i in range(leaf.shape[0]):
        scores[i] += values[leaf[i]]


@njit(**_JIT)
def _sum_alive(leaf, g, h, alive, G, H):  # pragma: no cover - compiled
    """G[leaf] += g (and H[leaf] += h when h has rows) over the rows alive."""
    use_h = h.shape[0] > 0
    for i in range(leaf.shape[0]):
        if alive[i]:
            j = leaf[i]
            G[j] += g[i]
            if use_h:
                H[j] += h[i]


@njit(**_JIT)
def _settle(leaf, g, alive, side_of_leaf, active, row_low, row_high, set_aside,
            aside_sum, left, lone):  # pragma: no cover - compiled
    """After an evaluation: remember each alive row's gradient at the end of its leaf's
    bracket the evaluation sat at (side +1: high, -1: low); set aside (alive = False, its
    gradient into aside_sum) a row whose gradient is the same at both ends; drop rows of
    leaves no longer active; count the rows left per leaf (and one of them). Returns the
    number of rows left."""
    kept = 0
    for i in range(leaf.shape[0]):
        if not alive[i]:
            continue
        j = leaf[i]
        if set_aside:
            side = side_of_leaf[j]
            if side > 0:
                row_high[i] = g[i]
            elif side < 0:
                row_low[i] = g[i]
            a = row_low[i]
            if a == row_high[i] and math.isfinite(a):
                aside_sum[j] += g[i]
                alive[i] = False
                continue
        if not active[j]:
            alive[i] = False
            continue
        left[j] += 1
        lone[j] = i
        kept += 1
    return kept


#: Copies of each per-leaf accumulator, taken by rows in turn: consecutive rows of one leaf
#: (most rows sit in a few large leaves) then add into different memory instead of each
#: waiting on the store of the one before (measured 24 -> 14 us for two sums over 16,000
#: rows of a LightGBM tree).
_LANES = 4


@njit(**_JIT)
def _leaf_stats(leaf, labels, scores, w, num_leaves):  # pragma: no cover - compiled
    """One pass over the rows: each row's residual ``labels - scores`` (labels empty: none,
    an empty array) and per leaf its rows, total weight (w empty: 1 each), the range of its
    residuals and its scale (the residuals' standard deviation, else their mean's magnitude,
    else 1; 1 without residuals). Returns (residual, count, total, smallest, largest, scale,
    the first row whose leaf index is outside [0, num_leaves), or -1: such a row stops the
    pass, and the rest is then meaningless)."""
    n = leaf.shape[0]
    L = num_leaves
    weighted = w.shape[0] > 0
    has_r = labels.shape[0] > 0
    # per leaf and lane, in one row (one cache line: measured faster than an array each):
    # rows, sum and sum of squares of the residuals, total weight (weighted rows only)
    sums = np.zeros((L, _LANES, 4))
    smallest = np.full(L, np.inf)
    largest = np.full(L, -np.inf)
    residual = np.empty(n if has_r else 0)
    bad = -1
    for i in range(n):
        j = leaf[i]
        if j < 0 or j >= L:
            bad = i
            break
        lane = i & (_LANES - 1)
        sums[j, lane, 0] += 1.0
        if weighted:
            sums[j, lane, 3] += w[i]
        if has_r:
            r = np.float64(labels[i]) - scores[i]
            residual[i] = r
            sums[j, lane, 1] += r
            sums[j, lane, 2] += r * r
            # (a NaN residual leaves the range alone: the kink reading refuses its leaf)
            if r < smallest[j]:
                smallest[j] = r
            if r > largest[j]:
                largest[j] = r
    count = np.zeros(L, dtype=np.intp)
    total = np.zeros(L)
    scale = np.ones(L)
    for j in range(L):
        rows = 0.0
        sum_r = 0.0
        sum_r2 = 0.0
        for lane in range(_LANES):
            rows += sums[j, lane, 0]
            sum_r += sums[j, lane, 1]
            sum_r2 += sums[j, lane, 2]
            total[j] += sums[j, lane, 3]
        count[j] = int(rows)
        if not weighted:
            total[j] = rows
        if not has_r:
            continue
        safe = max(count[j], 1)
        mean = sum_r / safe
        excess = sum_r2 / safe - mean * mean
        spread = math.sqrt(excess) if excess > 0 else (0.0 if excess <= 0 else np.nan)
        if spread > 0:
            value = spread
        elif abs(mean) > 0:
            value = abs(mean)
        else:
            value = 1.0
        scale[j] = value if math.isfinite(value) else 1.0
    return residual, count, total, smallest, largest, scale, bad


@njit(**_JIT)
def _nearest_kink(leaf, residual, eligible, low, high, c):  # pragma: no cover - compiled
    """Per eligible leaf, the residual inside [low, high] nearest c (NaN: none)."""
    L = c.shape[0]
    best = np.full(L, np.nan)
    distance = np.full(L, np.inf)
    for i in range(leaf.shape[0]):
        j = leaf[i]
        if eligible[j]:
            r = residual[i]
            if low[j] <= r <= high[j]:
                d = abs(r - c[j])
                if d < distance[j]:
                    distance[j] = d
                    best[j] = r
    return best


@njit(**_JIT)
def _step_leaves(G, H, active, first, converged, c, low, high, g_low, g_high, last_step,
                 older_step, width_before, width_last, last_side, previous, descent, scale,
                 xtol, side_of_leaf):  # pragma: no cover - compiled
    """One step of every active leaf's search, given the derivative G (and curvature H)
    of its loss at its current value c: the state machine of ``_newton_1d`` in
    ``lossdsl.boosting.objective``, per leaf, with false position (Illinois) added inside brackets.
    ``side_of_leaf`` gets where the evaluation sat: +1 the bracket's high end, -1 low."""
    tiny = 4 * 2.220446049250313e-16
    for j in range(c.shape[0]):
        side_of_leaf[j] = 0.0
        if not active[j]:
            continue
        g = G[j]
        cj = c[j]
        if not np.isfinite(g):
            # at the start: no answer (the fallback stays); later: the search overshot
            # into overflow, so the minimiser is nearer: halfway back
            if first[j]:
                active[j] = False
                continue
            if cj > previous[j]:
                high[j] = cj
                g_high[j] = np.nan
            else:
                low[j] = cj
                g_low[j] = np.nan
            candidate = 0.5 * (previous[j] + cj)
            last_step[j] = abs(candidate - previous[j])
            c[j] = candidate
            continue
        if first[j]:
            descent[j] = -1.0 if g > 0 else (1.0 if g < 0 else 0.0)
            first[j] = False
        if g == 0:  # a stationary point (or a plateau of a piecewise-linear loss)
            converged[j] = True
            active[j] = False
            continue
        up = g > 0
        side = 1.0 if up else -1.0
        side_of_leaf[j] = side
        # Illinois: when the same end of the bracket moves twice running, halve the
        # derivative kept at the other end, so false position does not stall on one side
        if side == last_side[j]:
            if up:
                g_low[j] *= 0.5
            else:
                g_high[j] *= 0.5
        if up:
            high[j] = cj
            g_high[j] = g
        else:
            low[j] = cj
            g_low[j] = g
        last_side[j] = side
        lo = low[j]
        hi = high[j]
        newton = cj - g / H[j] if H[j] > 0 else np.nan
        step_newton = newton - cj
        width = hi - lo
        bracketed = np.isfinite(lo) and np.isfinite(hi)
        # a small step ends the search only when it is a Newton step (converging) or half
        # the bracket; a small false-position step can sit next to one end of a wide one
        step_ends = False
        if bracketed:
            # Newton while it at least halves the step before last; else false position
            # while the bracket at least halves every two steps; else bisection
            if lo < newton < hi and abs(step_newton) <= 0.5 * older_step[j]:
                candidate = newton
                step_ends = True
            else:
                secant = lo - g_low[j] * (hi - lo) / (g_high[j] - g_low[j])
                if np.isfinite(secant) and lo < secant < hi and width <= 0.5 * width_before[j]:
                    candidate = secant
                else:
                    candidate = 0.5 * (lo + hi)
                    step_ends = True
        else:
            # no bracket yet: shrinking Newton steps, else expand downhill (at least the
            # leaf's scale, and twice the last step)
            last = last_step[j]
            if np.isfinite(step_newton) and (last == 0 or abs(step_newton) <= 0.5 * last):
                candidate = newton
                step_ends = True
            else:
                length = max(abs(step_newton) if np.isfinite(step_newton) else 0.0,
                             2 * last, scale[j])
                candidate = cj - length if up else cj + length
            if not abs(candidate) <= 1e300:  # heading for infinity: no finite minimiser
                active[j] = False
                continue
        step = abs(candidate - cj)
        older_step[j] = last_step[j] if last_step[j] > 0 else np.inf
        last_step[j] = step
        width_before[j] = width_last[j]
        width_last[j] = width
        previous[j] = cj
        c[j] = candidate
        tolerance = xtol * scale[j] + tiny * abs(candidate)
        if (step_ends and step <= tolerance) or (bracketed and width <= tolerance):
            converged[j] = True
            active[j] = False


@njit(**_JIT)
def _lone_kinks(active, low, high, left, lone, residual, c, converged):  # pragma: no cover
    """A bracket holding one row not set aside has its minimiser at that row's kink (its
    residual, when inside the bracket): settle those leaves."""
    for j in range(c.shape[0]):
        if active[j] and left[j] == 1 and np.isfinite(low[j]) and np.isfinite(high[j]):
            kink = residual[lone[j]]
            if low[j] <= kink <= high[j]:
                c[j] = kink
                converged[j] = True
                active[j] = False


@njit(**_JIT)
def _match_values(delta, ordered, crowded, tolerance, nearest, unresolved):  # pragma: no cover
    """Per row, the index of the sorted value nearest ``delta``, and whether it is farther
    than ``tolerance`` or shared with another value (crowded). A table of buckets over the
    values' range gives each row its few candidates (a binary search per row mispredicts a
    branch on every level: measured 4x slower)."""
    count = ordered.shape[0]
    buckets = 64 * count
    first_value = ordered[0]
    span = ordered[count - 1] - first_value
    scale = buckets / span if span > 0 else 0.0
    # start[b]: the first value at or above bucket b's lower edge
    start = np.empty(buckets + 2, dtype=np.intp)
    k = 0
    for bucket in range(buckets + 2):
        edge = first_value + bucket / scale if scale > 0 else first_value
        while k < count and ordered[k] < edge:
            k += 1
        start[bucket] = k
    # each row's bucket first, in a loop of its own (the candidates' search below then does
    # not wait on the conversion: measured ~2x faster than one loop)
    row_bucket = np.empty(delta.shape[0], dtype=np.intp)
    for i in range(delta.shape[0]):
        position = (delta[i] - first_value) * scale
        row_bucket[i] = max(0, min(int(position), buckets)) if position == position else 0
    for i in range(delta.shape[0]):
        d = delta[i]
        bucket = row_bucket[i]
        lo = start[bucket] - 1
        if lo < 0:
            lo = 0
        hi = start[bucket + 1]
        if hi > count - 1:
            hi = count - 1
        best = lo
        distance = abs(d - ordered[lo])
        for candidate in range(lo + 1, hi + 1):
            gap = abs(d - ordered[candidate])
            if gap < distance:
                distance = gap
                best = candidate
        nearest[i] = best
        unresolved[i] = not (distance <= tolerance) or crowded[best]


@njit(**_JIT)
def _difference(before, after):  # pragma: no cover - compiled
    """``after - before`` and the largest ``|after|`` (NaN if any is NaN), in one pass."""
    out = np.empty(after.shape[0])
    largest = 0.0
    missing = False
    for i in range(after.shape[0]):
        a = after[i]
        out[i] = a - before[i]
        if a != a:
            missing = True
        elif abs(a) > largest:
            largest = abs(a)
    return out, (np.nan if missing else largest)


def score_changes(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, float]:
    """((n, T) the change of a library's cached training scores over one round, the
    largest magnitude among the scores after it, NaN if one is NaN): what
    :func:`leaves_from_changes` matches, in one pass instead of three."""
    n = after.shape[0]
    delta, largest = _difference(np.ascontiguousarray(before, dtype=np.float64).reshape(-1),
                                 np.ascontiguousarray(after, dtype=np.float64).reshape(-1))
    return delta.reshape(n, -1), float(largest)


def leaves_from_changes(delta: np.ndarray, values: np.ndarray, scale: float,
                        precision: Any = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """(leaf of each row, rows not resolved) from the change a new tree made to a
    library's cached training scores: each row moved by its leaf's value. A row is
    resolved when its change matches one leaf's value to rounding (``scale``: the largest
    magnitude of the scores and values involved; ``precision``: the floating type the
    library adds them in, XGBoost float32) and no other leaf has that value."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ordered = np.ascontiguousarray(values[order])
    tolerance = 8 * float(np.finfo(precision).eps) * scale
    crowded = np.zeros(ordered.size, dtype=bool)  # leaves sharing (nearly) one value
    close = np.diff(ordered) <= 4 * tolerance
    crowded[:-1] |= close
    crowded[1:] |= close
    delta = np.ascontiguousarray(delta, dtype=np.float64)
    nearest = np.empty(delta.shape[0], dtype=np.intp)
    unresolved = np.empty(delta.shape[0], dtype=bool)
    _match_values(delta, ordered, crowded, tolerance, nearest, unresolved)
    return order[nearest], unresolved


@njit(**_JIT)
def _kink_scan(leaf, residual, row_low, row_high, base, low, high, c, converged,
               active):  # pragma: no cover - compiled
    """The exact minimiser of each bracketed leaf whose rows (not set aside) each have one
    kink, at their residual, with gradient ``row_low`` left of it and ``row_high`` right of
    it. Rows come sorted by (leaf, residual); ``base``: per leaf, the gradient of the rows
    set aside plus ``row_low`` of the others (the derivative just above the bracket's low
    end). The minimiser is the first residual where the derivative turns >= 0."""
    n = leaf.shape[0]
    i = 0
    while i < n:
        j = leaf[i]
        G = base[j]
        found = False
        while i < n and leaf[i] == j:
            if not found:
                G += row_high[i] - row_low[i]
                if G >= 0:
                    r = residual[i]
                    if low[j] <= r <= high[j]:
                        c[j] = r
                        converged[j] = True
                        active[j] = False
                    found = True
            i += 1


@njit(**_JIT)
def _around_kinks(scores, residual, leaf, scale, xtol, candidates, count, smallest,
                  largest):  # pragma: no cover - compiled
    """Each row's score just below and just above its kink (``scores + residual``), by its
    leaf's search tolerance (and rounding), and, in the same pass, its bucket for
    :func:`_kink_select`: each candidate leaf with a finite range of residuals gets one
    bucket per 8 of its rows over that range (they stay in cache; the map from residual to
    bucket is monotone), every other leaf one bucket. Returns (below, above, bucket of each
    row, offset: leaf j's buckets are offset[j]..offset[j + 1] - 1, usable: the leaves
    given buckets over their range)."""
    L = count.shape[0]
    n = leaf.shape[0]
    offset = np.zeros(L + 1, dtype=np.intp)
    usable = np.zeros(L, dtype=np.bool_)
    # per leaf, in one row (one cache line for the row's lookups: measured faster than an
    # array each): its margin around the kinks, its smallest residual, its buckets per
    # unit of residual and its last bucket (relative)
    per_leaf = np.zeros((L, 4))
    for j in range(L):
        span = largest[j] - smallest[j]
        usable[j] = candidates[j] and math.isfinite(smallest[j]) and math.isfinite(span)
        last = count[j] // 8 if usable[j] else 0
        offset[j + 1] = offset[j] + last + 1
        per_leaf[j, 0] = xtol * scale[j]
        per_leaf[j, 1] = smallest[j]
        per_leaf[j, 2] = last / span if span > 0 else 0.0
        per_leaf[j, 3] = last
    below = np.empty(n)
    above = np.empty(n)
    bucket = np.empty(n, dtype=np.intp)
    eps8 = 8 * 2.220446049250313e-16
    for i in range(n):
        j = leaf[i]
        s = scores[i]
        r = residual[i]
        at = s + r
        delta = per_leaf[j, 0] + eps8 * (abs(s) + abs(at))
        below[i] = at - delta
        above[i] = at + delta
        position = (r - per_leaf[j, 1]) * per_leaf[j, 2]
        k = 0  # (also for a NaN position: its leaf is refused by _kink_select)
        if position > 0:
            top = per_leaf[j, 3]
            k = int(top if position >= top else position)
        bucket[i] = offset[j] + k
    return below, above, bucket, offset, usable


@njit(**_JIT)
def _weighted_select(r, d, lo, hi, need):  # pragma: no cover - compiled
    """The smallest value of ``r[lo:hi]`` at which the sum of ``d`` (>= 0) over the values
    up to it, in increasing order, reaches ``need`` (NaN: never): a weighted quickselect
    (three-way partitions in place, expected linear time; a sort once the rest is small
    or the pivots keep failing)."""
    rounds = 0
    while hi > lo:
        size = hi - lo
        if size <= 16 or rounds > 48:
            order = np.argsort(r[lo:hi])
            total = 0.0
            for k in order:
                total += d[lo + k]
                if total >= need:
                    return r[lo + k]
            return np.nan
        rounds += 1
        a, b, e = r[lo], r[lo + size // 2], r[hi - 1]
        pivot = max(min(a, b), min(max(a, b), e))  # the median of three
        lt, i, gt = lo, lo, hi
        less = 0.0
        equal = 0.0
        while i < gt:
            v = r[i]
            if v < pivot:
                less += d[i]
                r[i], r[lt] = r[lt], v
                d[i], d[lt] = d[lt], d[i]
                lt += 1
                i += 1
            elif v > pivot:
                gt -= 1
                r[i], r[gt] = r[gt], v
                d[i], d[gt] = d[gt], d[i]
            else:
                equal += d[i]
                i += 1
        if less >= need:
            hi = lt
        elif less + equal >= need:
            return pivot
        else:
            need -= less + equal
            lo = gt
    return np.nan


#: What a refused row adds to its bucket's row count in :func:`_kink_select`: more rows
#: than any data set has, fewer than a float counts exactly.
_REFUSED = 2.0 ** 40


@njit(**_JIT)
def _kink_select(residual, g_low, g_high, bucket, offset, usable, c,
                 settled):  # pragma: no cover - compiled
    """Each usable leaf's minimiser when every row's gradient is ``g_low`` left of its kink
    (its residual) and ``g_high`` right of it, with ``g_high >= g_low`` (convex): the first
    residual, in increasing order, where the leaf's derivative ``sum(g_low) + sum of
    (g_high - g_low) over the residuals up to it`` turns >= 0 (the middle of the flat
    stretch up to the next residual where it turns to exactly 0). Leaves with a non-finite or
    decreasing row, or whose derivative is not negative at the far left or never turns, are
    left unsettled. ``bucket``, ``offset``, ``usable``: from :func:`_around_kinks` over the
    same rows (all rows of a usable leaf are among them).

    Two passes over the rows, neither reading the rows' leaves: the sums of ``g_low`` and of
    the jumps by bucket (a leaf's sums are its buckets' sums; summing by bucket, spread over
    thousands, keeps consecutive rows of one large leaf from waiting on each other's
    stores), then the rows of the bucket where each leaf's derivative turns gathered and
    selected among (about 8 per leaf)."""
    L = c.shape[0]
    n = bucket.shape[0]
    buckets = offset[L]
    # per bucket, in one row (one cache line; measured 2x faster than an array each): the
    # sums of g_low and of the jumps, and the rows counted with a row whose jump is negative
    # counted as _REFUSED and one whose residual is not finite as NaN (those refuse its
    # leaf; a gradient that is not finite makes the first two sums not finite): no branch
    # per row
    sums = np.zeros((buckets, 3))
    for i in range(n):
        k = bucket[i]
        a = g_low[i]
        step = g_high[i] - a
        sums[k, 0] += a
        sums[k, 1] += step
        sums[k, 2] += 1.0 + 0.0 * residual[i] + _REFUSED * (step < 0)
    # a leaf is settled when its derivative is negative at the far left and turns by the
    # far right: per leaf, the bucket where it turns (tag 1), the jumps before it, and the
    # first bucket with rows after it (tag 2), which holds the smallest residual after it
    # (the bucket map is monotone)
    tag = np.zeros(buckets, dtype=np.uint8)
    crossing = np.full(L, -1, dtype=np.intp)
    after = np.full(L, -1, dtype=np.intp)
    need = np.zeros(L)
    first = np.zeros(L + 1, dtype=np.intp)  # where each leaf's gathered rows start
    for j in range(L):
        gathered = 0
        if usable[j]:
            base = 0.0
            total = 0.0
            rows = 0.0
            for k in range(offset[j], offset[j + 1]):
                base += sums[k, 0]
                total += sums[k, 1]
                rows += sums[k, 2]
            if (rows < _REFUSED and math.isfinite(base) and math.isfinite(total) and -base > 0
                    and total >= -base):
                left = -base
                for k in range(offset[j], offset[j + 1]):
                    if sums[k, 1] >= left:
                        crossing[j] = k
                        tag[k] = 1
                        gathered = int(sums[k, 2])
                        break
                    left -= sums[k, 1]
                need[j] = left
                if crossing[j] >= 0:
                    for k in range(crossing[j] + 1, offset[j + 1]):
                        if sums[k, 2] > 0:
                            after[j] = k
                            tag[k] = 2
                            break
        first[j + 1] = first[j] + gathered
    r_near = np.empty(first[L])
    d_near = np.empty(first[L])
    fill = np.zeros(buckets, dtype=np.intp)  # a crossing bucket's next free slot
    for j in range(L):
        if crossing[j] >= 0:
            fill[crossing[j]] = first[j]
    later = np.full(buckets, np.inf)
    for i in range(n):
        k = bucket[i]
        t = tag[k]
        if t == 1:
            slot = fill[k]
            r_near[slot] = residual[i]
            d_near[slot] = g_high[i] - g_low[i]
            fill[k] = slot + 1
        elif t == 2 and residual[i] < later[k]:
            later[k] = residual[i]
    for j in range(L):
        if crossing[j] < 0:
            continue
        value = _weighted_select(r_near, d_near, first[j], first[j + 1], need[j])
        if math.isnan(value):  # rounding of the sums: the bucket's largest residual
            value = r_near[first[j]]
            for k in range(first[j], first[j + 1]):
                value = max(value, r_near[k])
        # a leaf whose derivative is exactly 0 right of its answer is flat up to its next
        # residual (4:1 slopes, integer weights): every point in between is a minimiser;
        # take the middle, as the built-ins interpolate, rather than the low end (a biased
        # pick on rounded labels)
        slope = -need[j]
        following = later[after[j]] if after[j] >= 0 else np.inf
        for k in range(first[j], first[j + 1]):
            if r_near[k] <= value:
                slope += d_near[k]
            elif r_near[k] < following:
                following = r_near[k]
        if slope == 0 and math.isfinite(following):
            value = 0.5 * (value + following)
        c[j] = value
        settled[j] = True


@njit(**_JIT)
def _around_answers(scores, leaf, c, scale, xtol):  # pragma: no cover - compiled
    """Scores moved by each leaf's answer ``c`` minus and plus its tolerance (``xtol``
    times its scale, and rounding: :meth:`_Search.tolerance`), in one pass."""
    L = c.shape[0]
    low = np.empty(L)
    high = np.empty(L)
    for j in range(L):
        delta = xtol * scale[j] + 4 * 2.220446049250313e-16 * abs(c[j])
        low[j] = c[j] - delta
        high[j] = c[j] + delta
    n = leaf.shape[0]
    below = np.empty(n)
    above = np.empty(n)
    for i in range(n):
        j = leaf[i]
        below[i] = scores[i] + low[j]
        above[i] = scores[i] + high[j]
    return below, above


@njit(**_JIT)
def _no_sign_change(leaf, g_below, g_above, solved):  # pragma: no cover - compiled
    """The leaves among ``solved`` whose derivative (the sum of their rows' gradients) is
    not <= 0 at ``g_below``'s scores and >= 0 at ``g_above``'s, in one pass."""
    L = solved.shape[0]
    below4 = np.zeros((L, _LANES))
    above4 = np.zeros((L, _LANES))
    for i in range(leaf.shape[0]):
        j = leaf[i]
        lane = i & (_LANES - 1)
        below4[j, lane] += g_below[i]
        above4[j, lane] += g_above[i]
    wrong = np.zeros(L, dtype=np.bool_)
    for j in range(L):
        below = 0.0
        above = 0.0
        for lane in range(_LANES):
            below += below4[j, lane]
            above += above4[j, lane]
        wrong[j] = solved[j] and not (below <= 0 and above >= 0)
    return wrong


@njit(**_JIT)
def _sum_by_leaf(leaf, values, num_leaves):  # pragma: no cover - compiled
    """Per leaf, the sum of ``values`` over its rows."""
    out = np.zeros(num_leaves)
    for i in range(leaf.shape[0]):
        out[leaf[i]] += values[i]
    return out


class LeafSolution(NamedTuple):
    """The result of :func:`solve_leaves`.

    ``values``: (num_leaves,) the exact leaf values where ``solved``, else the ``fallback``
    (the library's own values); ``solved``: (num_leaves,) whether the leaf has rows with
    positive total weight and a finite minimiser that the search reached; ``evaluations``:
    the number of kernel calls the search made (for profiling).
    """

    values: np.ndarray
    solved: np.ndarray
    evaluations: int


def _has_curvature(objective: BoostingObjective) -> bool:
    """Whether the loss's second derivative in the score can be non-zero (a loss whose
    curvature is the constant 0, such as MAE or quantile, needs gradient-only calls)."""
    curvature = objective.curvature
    return not (is_constant(curvature) and curvature.value == 0)


def _per_row(objective: BoostingObjective) -> dict[str, np.ndarray]:
    """The objective's inputs that hold one value per row (subset along with the rows)."""
    return {name: np.asarray(objective.inputs[name]) for name in objective.row_inputs()}


class _Rows:
    """Some rows of one tree's leaf problem (gathered once), evaluated at scores moved per
    leaf; :meth:`keep` drops rows for good, so later evaluations touch fewer."""

    def __init__(self, objective: BoostingObjective, labels: np.ndarray, scores: np.ndarray,
                 weight: np.ndarray | None, leaves: np.ndarray, column: int | None,
                 residual: np.ndarray | None, per_row: dict[str, np.ndarray],
                 counter: list[int]):
        self.objective = objective
        self.labels = labels
        self.scores = scores
        self.weight = weight
        self.leaf = leaves
        self.column = column
        self.residual = residual
        self.per_row = per_row
        self.counter = counter  # kernel calls, shared by all subsets of the problem

    @property
    def size(self) -> int:
        return self.leaf.shape[0]

    def take(self, rows: np.ndarray, force: bool = False) -> _Rows:
        """The subset ``rows`` (indices) as a new, compact set of rows (itself: all rows,
        unless ``force``)."""
        if rows.shape[0] == self.size and not force:
            return self
        return _Rows(self.objective, self.labels[rows], self.scores[rows],
                     None if self.weight is None else self.weight[rows], self.leaf[rows],
                     self.column, None if self.residual is None else self.residual[rows],
                     {name: array[rows] for name, array in self.per_row.items()},
                     self.counter)

    def gradient(self, shift: np.ndarray, hessian: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-row weighted gradient (and Hessian) in the tree's column at scores moved by
        ``shift[leaf]``: one call of the compiled sum kernel."""
        if self.column is None:
            return self.gradient_at(_shift_scores(self.scores, self.leaf, shift), hessian)
        return self.gradient_at(self.scores[:, self.column] + shift[self.leaf], hessian)

    def column_scores(self) -> np.ndarray:
        """The scores of the tree's column, (rows,)."""
        return self.scores if self.column is None else self.scores[:, self.column]

    def gradient_at(self, column_scores: np.ndarray, hessian: bool
                    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-row weighted gradient (and Hessian) in the tree's column with that column's
        scores set to ``column_scores`` (the other columns held): one kernel call."""
        self.counter[0] += 1
        if self.column is None:
            prediction = column_scores
        else:
            prediction = self.scores.copy()
            prediction[:, self.column] = column_scores
        objective = self.objective
        arguments = dict(objective.inputs)
        arguments.update(self.per_row)
        arguments[objective.label] = self.labels
        arguments[objective.wrt] = prediction
        wrt = (objective.wrt,)
        with np.errstate(all="ignore"):
            results = objective.compiled.compute(False, wrt, wrt if hessian else (),
                                                  arguments, self.weight)
        g = results[0] if self.column is None else results[0][:, self.column]
        if not hessian:
            return g, None
        return g, (results[1] if self.column is None else results[1][:, self.column])


def solve_leaves(objective: BoostingObjective, label: Any, scores: np.ndarray,
                 leaves: np.ndarray, num_leaves: int, weight: Any = None, *,
                 column: int | None = None, fallback: np.ndarray | None = None,
                 xtol: float = LEAF_XTOL, max_iter: int = 100) -> LeafSolution:
    """The loss-minimising value of every leaf of one tree, all leaves at once.

    ``objective``: a :class:`~lossdsl.boosting.objective.BoostingObjective` (its loss, roles,
    params and
    per-row ``inputs``, which must belong to these rows); ``label``: the labels as the
    library holds them; ``scores``: the raw scores ``F`` of the model before the tree,
    (n,) or (n, K) for losses over classes and multi-output models; ``leaves``: (n,) the
    tree's leaf index of each row (0 <= index < ``num_leaves``); ``weight``: sample weights
    or None; ``column``: for (n, K) scores, the column the tree adds to (the other columns
    are held at ``scores``); ``fallback``: (num_leaves,) values to return for the leaves not
    solved (default 0); ``xtol``: tolerance relative to the leaf's residual spread (the
    standard deviation of ``y - F`` over its rows; 1 for class labels).

    Returns a :class:`LeafSolution`. A leaf is left at its fallback when it has no rows or
    zero total weight, when the loss or its gradient is not finite at the leaf's current
    scores, or when the loss keeps falling (or stays flat at its lowest) as the leaf's value
    goes to an infinity: there is no finite minimiser, and an infinite leaf would ruin the
    model.

    Each iteration evaluates only the rows of leaves still searching. For a loss without
    curvature (piecewise linear in the score), a row whose gradient is the same at both
    ends of its leaf's bracket is set aside with that gradient (a convex loss's gradient
    is monotone, so it is constant in between), and a bracket left with one such row has
    its minimiser at that row's kink; since a non-convex row would break that reasoning,
    every leaf solved this way is checked at the end on all its rows (the derivative must
    change sign across the answer), and searched again without setting rows aside if not.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[0]
    if scores.ndim == 2 and column is None:
        raise LossError("scores of shape (n, K) need the column the tree adds to (column=k)")
    if scores.ndim == 1 and column is not None:
        raise LossError("column= is only for (n, K) scores")
    leaves = np.asarray(leaves).reshape(-1).astype(np.intp, copy=False)
    if leaves.shape[0] != n:
        raise LossError(f"{leaves.shape[0]} leaf indices for {n} rows")
    labels = objective.label_array(label, scores.shape)
    w = objective.weight_array(weight, n)
    w = None if w is None else np.asarray(w, dtype=np.float64)
    curved = _has_curvature(objective)
    values = np.zeros(num_leaves) if fallback is None else \
        np.array(fallback, dtype=np.float64).reshape(num_leaves)

    # the residuals y - F (where the labels are numbers shaped like the scores) and the
    # leaves' statistics, in one pass that also checks the leaf indices
    label_column = _NO_ROWS
    has_residual = labels.shape == scores.shape and labels.dtype.kind in "fiub"
    if has_residual:
        label_column = labels if column is None else labels[:, column]
        if label_column.dtype not in (np.float32, np.float64):
            label_column = label_column.astype(np.float64)
    residual, count, total, smallest, largest, scale, bad = _leaf_stats(
        leaves, label_column, scores if column is None else scores[:, column],
        _NO_ROWS if w is None else w, num_leaves)
    if bad >= 0:
        raise LossError(f"leaf indices must be in [0, {num_leaves}), not {leaves[bad]} "
                        f"(row {bad})")
    if not has_residual:
        residual = None
    candidates = (count > 0) & (total > 0)
    counter = [0]
    data = _Rows(objective, labels, scores, w, leaves, column, residual,
                 _per_row(objective), counter)
    search = _Search(data, num_leaves, scale, xtol, max_iter, curved, count, smallest,
                     largest)
    if not curved and residual is not None:
        # first the one-kink reading (two kernel calls and one linear-time selection per
        # leaf, checked below like every shortcut); the leaves it leaves open are searched
        c, solved = search.kinks(candidates)
        rest = candidates & ~solved
        if rest.any():
            c_rest, solved_rest = search.run(rest, set_aside=True)
            c = np.where(rest, c_rest, c)
            solved = np.where(rest, solved_rest, solved)
    else:
        c, solved = search.run(candidates, set_aside=not curved)
    if not curved and solved.any():
        wrong = search.check(c, solved)
        if wrong.any():  # a row not convex in the score: search those leaves in full
            c2, solved2 = search.run(wrong, set_aside=False)
            c = np.where(wrong, c2, c)
            solved = np.where(wrong, solved2, solved)
    solved &= np.isfinite(c)
    values[solved] = c[solved]
    return LeafSolution(values, solved, counter[0])


class _Search:
    """The vectorised safeguarded 1-D search of :func:`solve_leaves` (one state per leaf)."""

    def __init__(self, data: _Rows, num_leaves: int, scale: np.ndarray, xtol: float,
                 max_iter: int, curved: bool, count: np.ndarray, smallest: np.ndarray,
                 largest: np.ndarray):
        self.data = data
        self.count = count  # rows per leaf
        self.reached = count > 0  # the leaves with rows
        self.smallest = smallest  # the range of each leaf's residuals
        self.largest = largest
        self.num_leaves = num_leaves
        self.scale = scale
        self.xtol = xtol
        self.max_iter = max_iter
        self.curved = curved

    def rows_of(self, leaves: np.ndarray) -> _Rows:
        """The rows of the leaves marked in ``leaves`` (all rows without a gather when
        they cover every leaf with rows)."""
        if (leaves | ~self.reached).all():
            return self.data
        return self.data.take(np.flatnonzero(leaves[self.data.leaf]))

    def tolerance(self, c: np.ndarray, leaves: Any = slice(None)) -> np.ndarray:
        return self.xtol * self.scale[leaves] + 4 * np.finfo(np.float64).eps * np.abs(c)

    def sums(self, rows: _Rows, values: np.ndarray) -> np.ndarray:
        return _sum_by_leaf(rows.leaf, np.ascontiguousarray(values, dtype=np.float64),
                            self.num_leaves)

    def check(self, c: np.ndarray, solved: np.ndarray) -> np.ndarray:
        """Leaves among ``solved`` whose derivative, over all their rows, does not change
        sign (from <= 0 to >= 0) across their answer ``c``, +- the tolerance."""
        rows = self.rows_of(solved)
        below, above = _around_answers(np.ascontiguousarray(rows.column_scores()), rows.leaf,
                                       c, self.scale, self.xtol)
        g_below, _ = rows.gradient_at(below, False)
        g_above, _ = rows.gradient_at(above, False)
        return _no_sign_change(rows.leaf, np.ascontiguousarray(g_below, dtype=np.float64),
                               np.ascontiguousarray(g_above, dtype=np.float64), solved)

    def kinks(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(c, settled): the leaves' minimisers read off their rows' kinks, assuming a loss
        without curvature whose gradient in each row jumps once, at the row's residual.

        Each row's gradient is taken just below and just above its kink (two kernel calls
        over the candidate leaves' rows), and :func:`_kink_select` finds each leaf's
        weighted-quantile-like minimiser without sorting. The assumption is not verified
        here: :meth:`check` tests every answer on all its leaf's rows afterwards."""
        L = self.num_leaves
        c = np.zeros(L)
        settled = np.zeros(L, dtype=bool)
        rows = self.rows_of(candidates)
        if rows.size == 0 or rows.residual is None:
            return c, settled
        below, above, bucket, offset, usable = _around_kinks(
            np.ascontiguousarray(rows.column_scores()), rows.residual, rows.leaf, self.scale,
            self.xtol, candidates, self.count, self.smallest, self.largest)
        g_low, _ = rows.gradient_at(below, False)
        g_high, _ = rows.gradient_at(above, False)
        _kink_select(rows.residual, np.ascontiguousarray(g_low, dtype=np.float64),
                     np.ascontiguousarray(g_high, dtype=np.float64), bucket, offset, usable,
                     c, settled)
        return c, settled

    #: Rows (not set aside) few enough to sort and scan for the leaves' kinks at once.
    scan_rows = 8192

    def scan(self, rows: _Rows, alive: np.ndarray, row_low: np.ndarray, row_high: np.ndarray,
             set_aside_sum: np.ndarray, low: np.ndarray, high: np.ndarray, c: np.ndarray,
             converged: np.ndarray, active: np.ndarray) -> None:
        """Settle the bracketed leaves by :func:`_kink_scan` over their remaining rows."""
        keep = np.flatnonzero(alive)
        leaf, residual = rows.leaf[keep], rows.residual[keep]
        order = np.lexsort((residual, leaf))
        a, b = row_low[keep][order], row_high[keep][order]
        base = set_aside_sum + np.bincount(leaf, weights=row_low[keep],
                                           minlength=self.num_leaves)
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            return
        _kink_scan(leaf[order], residual[order], a, b, base, low, high, c, converged,
                   active)
        alive &= active[rows.leaf]

    def run(self, candidates: np.ndarray, set_aside: bool) -> tuple[np.ndarray, np.ndarray]:
        """(c, converged) for the leaves ``candidates``: see :func:`solve_leaves`."""
        L = self.num_leaves
        scale = self.scale
        active = candidates.copy()
        c = np.zeros(L)
        low = np.full(L, -math.inf)
        high = np.full(L, math.inf)
        g_low = np.full(L, math.nan)
        g_high = np.full(L, math.nan)
        last_step = np.zeros(L)
        older_step = np.full(L, math.inf)
        width_before = np.full(L, math.inf)  # the bracket's width two iterations ago
        width_last = np.full(L, math.inf)
        last_side = np.zeros(L)  # +1: the last update moved high; -1: low
        previous = np.zeros(L)
        descent = np.zeros(L)
        converged = np.zeros(L, dtype=bool)
        first = np.ones(L, dtype=bool)
        side_of_leaf = np.zeros(L)  # where the last evaluation sat: +1 high, -1 low
        exact = np.zeros(L, dtype=bool)  # settled on a kink
        # the rows in leaf order: each compiled pass then works leaf by leaf (predictable
        # branches, one leaf's state in cache) instead of jumping between leaves per row
        leaf = self.data.leaf
        order = np.argsort(leaf.astype(np.int16) if self.num_leaves < 2 ** 15 else leaf,
                           kind="stable")
        rows = self.data.take(order[active[leaf[order]]], force=True)
        alive = np.ones(rows.size, dtype=bool)  # rows still counted (not set aside)
        set_aside_sum = np.zeros(L)  # the gradient of the rows set aside, per leaf
        row_low = np.full(rows.size, math.nan)  # each row's gradient at its leaf's low end
        row_high = np.full(rows.size, math.nan)

        for _ in range(self.max_iter):
            if not active.any():
                break
            g_rows, h_rows = rows.gradient(c, self.curved)
            G, H = set_aside_sum.copy(), np.zeros(L)
            _sum_alive(rows.leaf, g_rows, _NO_ROWS if h_rows is None else h_rows, alive, G, H)
            _step_leaves(G, H, active, first, converged, c, low, high, g_low, g_high,
                         last_step, older_step, width_before, width_last, last_side, previous,
                         descent, scale, self.xtol, side_of_leaf)

            # rows: remember each one's gradient at the end of the bracket it was evaluated
            # at, set aside those with the same gradient at both ends, drop finished leaves
            left = np.zeros(L, dtype=np.intp)
            lone = np.zeros(L, dtype=np.intp)
            kept = _settle(rows.leaf, g_rows, alive, side_of_leaf, active, row_low, row_high,
                           set_aside, set_aside_sum, left, lone)
            if set_aside and rows.residual is not None:
                searching = active.copy()
                _lone_kinks(active, low, high, left, lone, rows.residual, c, converged)
                if kept <= self.scan_rows and not (active & ~(np.isfinite(low)
                                                              & np.isfinite(high))).any():
                    # every leaf bracketed and few rows left: take each leaf's minimiser
                    # from its rows' kinks at once (checked on all rows afterwards)
                    self.scan(rows, alive, row_low, row_high, set_aside_sum, low, high, c,
                              converged, active)
                exact |= searching & ~active & converged
            if kept < 0.35 * rows.size:  # drop the dead rows for good
                keep = np.flatnonzero(alive)
                rows = rows.take(keep)
                row_low, row_high = row_low[keep], row_high[keep]
                alive = np.ones(rows.size, dtype=bool)
        else:
            # out of iterations: a leaf with a bracket stops at its best point, one
            # without is taken to be unbounded (its steps kept doubling)
            stuck = np.flatnonzero(active)
            inside_bracket = np.isfinite(low[stuck]) & np.isfinite(high[stuck])
            converged[stuck[inside_bracket]] = True
            active[stuck] = False

        # A leaf that stopped without ever seeing the derivative turn beyond its answer
        # (Newton converging from one side, or a tail flattening out) may have no finite
        # minimiser: probe further along the way it went; a rise there means a finite one.
        unsure = converged & np.where(descent > 0, ~np.isfinite(high),
                                      np.where(descent < 0, ~np.isfinite(low), False))
        if unsure.any():
            rises = np.zeros(L, dtype=bool)
            probe = self.data.take(np.flatnonzero(unsure[self.data.leaf]))
            distance = np.maximum(scale, np.abs(c))
            for j in range(4):
                g_rows, _ = probe.gradient(c + descent * distance * 10.0 ** j, False)
                rises |= unsure & (descent * self.sums(probe, g_rows) > 0)
            converged &= ~(unsure & ~rises)
        if not self.curved and self.data.residual is not None:
            # leaves that stopped on a tolerance, not on a kink: move onto the kink
            narrow = (high - low) <= 2 * self.tolerance(c)
            _snap_to_kinks(c, converged & ~exact & narrow, low, high, self.data.residual,
                           self.data.leaf)
        return c, converged & candidates


def _snap_to_kinks(c: np.ndarray, converged: np.ndarray, low: np.ndarray, high: np.ndarray,
                   residual: np.ndarray, leaves: np.ndarray) -> None:
    """Move each converged leaf of a loss without curvature onto the residual inside its
    final bracket nearest its value (in place).

    The minimiser of a piecewise-linear cost of ``F + c - y`` is a kink, at a residual
    ``y_i - F_i``; the bracket holds the point where the derivative changes sign, so a
    residual inside it is that kink, and a move within the bracket is within the search's
    tolerance whatever the loss.
    """
    eligible = converged & np.isfinite(low) & np.isfinite(high)
    if not eligible.any():
        return
    best = _nearest_kink(leaves, residual, eligible, low, high, c)
    found = np.isfinite(best)
    c[found] = best[found]


# ---------------------------------------------------------------------- training helpers
def check_train_options(num_boost_round: Any, refit: Any,
                        objective: BoostingObjective | None = None) -> int:
    """The number of rounds, once ``num_boost_round``, ``refit`` and the ``objective`` are
    known to be valid (``refit`` itself is decided after the first round: see
    :func:`use_refit`)."""
    if objective is not None and objective.group_input is not None:
        raise LossError(
            f"this loss groups its rows by '{objective.group_input}' (a ranking loss): a "
            "leaf's best value then depends on rows outside the leaf, so train() cannot set "
            "leaves to a minimiser row by row; train with the library's own loop "
            "(lgb.train(params | {'objective': obj}, Dataset(..., group=)), xgb.train(params, "
            "DMatrix(..., qid=), obj=obj)), whose Newton leaves use the exact Hessian")
    if objective is not None and objective.loss.cumulative_sums:
        raise LossError(
            f"this loss sums over risk sets or columns ("
            f"{', '.join(objective.loss.cumulative_sums)}: each row's value depends on rows "
            "outside its own, every row ordered after it or every row), so a leaf's best value "
            "depends on rows outside the leaf and train() cannot set leaves to a minimiser "
            "row by row; train with the library's own loop (xgb.train(params, dtrain, "
            "obj=obj), lgb.train(params | {'objective': obj}, dataset)), whose Newton leaves "
            "use the exact Hessian")
    if not isinstance(num_boost_round, (int, np.integer)) or num_boost_round < 1:
        # (the init score is folded into the first round's leaves: a model of no rounds
        # would predict without it)
        raise LossError(f"num_boost_round must be a positive integer, not "
                        f"{num_boost_round!r}")
    _check_refit(refit)
    return int(num_boost_round)


def _check_refit(refit: Any) -> None:
    if not (refit == "auto" or isinstance(refit, (bool, np.bool_))):
        raise LossError(f"refit must be True, False or 'auto', not {refit!r}")


def use_refit(refit: bool | str, objective: BoostingObjective) -> bool:
    """Whether to refit leaves: ``"auto"`` turns it on for the objectives whose Hessian
    policy is ``"constant"`` (Hessian 0 everywhere or on a region: first-order leaves),
    except one that reproduces a built-in (``like=``, LightGBM's ``huber``), whose leaves
    the built-in does not refit."""
    _check_refit(refit)
    if refit == "auto":
        return objective.policy == "constant" and objective.like is None
    return bool(refit)


#: The names LightGBM, XGBoost and scikit-learn give monotone constraints.
_MONOTONE_ALIASES = ("monotone_constraints", "monotone_constraint", "monotonic_cst", "mc")


def refuse_constrained_refit(params: Mapping[str, Any]) -> None:
    """Refuse monotone constraints when leaves are refitted: a leaf moved to its rows'
    minimiser need not keep the order the constraint imposed on its siblings (LightGBM's
    own quantile objective refuses them for that reason), so the model would silently
    break the constraint."""
    for name in _MONOTONE_ALIASES:
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, str):  # XGBoost's "(1,0,-1)"
            signs = [float(t) for t in value.replace("(", " ").replace(")", " ")
                     .replace(",", " ").split()]
        elif isinstance(value, Mapping):  # XGBoost's {feature name: sign}
            signs = [float(v) for v in value.values()]
        else:
            signs = [float(v) for v in np.ravel(np.asarray(value, dtype=np.float64))]
        if any(sign != 0 for sign in signs):
            raise LossError(f"params[{name!r}] constrains the model to be monotone, and the "
                            "leaves refitted to their rows' minimisers need not keep that "
                            "order (LightGBM's quantile objective refuses the pair): pass "
                            "refit=False to keep the library's constrained leaves, or drop "
                            "the constraint")


def eval_objective(entry: Sequence[Any], objective: BoostingObjective,
                   container: str) -> BoostingObjective:
    """The objective scoring an ``evals`` entry: ``(name, data)`` reuses the training
    objective (refused when its per-row inputs belong to the training rows), ``(name,
    data, objective for those rows)`` names its own. ``container``: the data's type, for
    messages."""
    if not isinstance(entry, (tuple, list)) or len(entry) not in (2, 3):
        raise LossError(f"evals must hold (name, {container}) or (name, {container}, "
                        f"objective for those rows) tuples, not {type(entry).__name__}")
    if len(entry) == 2:
        if objective.row_inputs():
            raise LossError(f"evaluation set {entry[0]!r}: the objective has per-row inputs "
                            "for the training rows; pass (name, data, objective built for "
                            "that set's rows) instead")
        return objective
    given = entry[2]
    if given is None:
        raise LossError(f"evaluation set {entry[0]!r}: its objective is None; pass (name, "
                        f"{container}) to score it with the training objective")
    return given if isinstance(given, BoostingObjective) else as_objective(given)


def learning_rate(params: Mapping[str, Any], aliases: Sequence[str], default: float) -> float:
    """The shrinkage the library applies to each tree (first alias present in params)."""
    for name in aliases:
        if name in params and params[name] is not None:
            rate = float(params[name])
            if not rate > 0:
                raise LossError(f"params[{name!r}] must be positive, got {rate}")
            return rate
    return default


class EvalTracker:
    """Weighted mean loss of the refitted model on evaluation sets, round by round, kept
    from the newest tree's leaf indices (never the library's stale internal scores), with
    early stopping on the last set.

    ``sets``: (name, labels, weights, start scores, objective) for each evaluation set.
    ``history``: ``{name: {metric: [value per round]}}`` as the libraries' ``evals_result``.
    """

    def __init__(self, sets: Sequence[tuple[str, np.ndarray, np.ndarray | None, np.ndarray,
                                            BoostingObjective, Any]],
                 early_stopping_rounds: int | None):
        if early_stopping_rounds is not None and not sets:
            raise LossError("early_stopping_rounds needs at least one evaluation set in evals")
        if early_stopping_rounds is not None and early_stopping_rounds < 1:
            raise LossError("early_stopping_rounds must be a positive number of rounds")
        self.sets = list(sets)
        self.early_stopping_rounds = early_stopping_rounds
        self.history: dict[str, dict[str, list[float]]] = {}
        for name, _, _, _, objective, _ in self.sets:
            self.history.setdefault(name, {})[self.metric_name(objective)] = []
        self.best_round = -1
        self.best_value = math.inf

    @staticmethod
    def metric_name(objective: BoostingObjective) -> str:
        """The metric's name in the history: the loss's name, else ``"lossdsl"``."""
        return objective.loss.name or "lossdsl"

    def add_tree(self, index: int, leaves: np.ndarray, values: np.ndarray,
                 column: int | None) -> None:
        """Add one tree (leaf values ``values``) to evaluation set ``index``."""
        scores = self.sets[index][3]
        leaves = np.asarray(leaves).reshape(-1).astype(np.intp, copy=False)
        if leaves.size and leaves.max() >= values.shape[0]:
            raise LossError("an evaluation row reached a leaf that no training row reached; "
                            "this tree cannot be refitted consistently")
        if column is None:
            scores += values[leaves]
        else:
            scores[:, column] += values[leaves]

    def record(self, round_index: int) -> bool:
        """Evaluate every set after round ``round_index`` (0-based); True to stop early."""
        value = math.nan
        for name, labels, weights, scores, objective, container in self.sets:
            value = objective.value(labels, scores, weights, container=container)
            if math.isnan(value):  # NaN compares False: round 1 would stay "best", silently
                raise LossError(
                    f"the loss on evaluation set {name!r} is NaN after round "
                    f"{round_index + 1}: a NaN label or per-row input among its rows, or "
                    "scores outside the loss's domain; fill or drop those rows")
            self.history[name][self.metric_name(objective)].append(value)
        if not self.sets:
            return False
        if value < self.best_value or self.best_round < 0:
            self.best_value, self.best_round = value, round_index
        return (self.early_stopping_rounds is not None
                and round_index - self.best_round >= self.early_stopping_rounds)


def refit_round(objective: BoostingObjective, label: Any, weight: Any, scores: np.ndarray,
                leaves: np.ndarray, library_values: Any, rate: float, refit: bool,
                store_dtype: Any = np.float64,
                ) -> tuple[list[np.ndarray], list[LeafSolution | None]]:
    """Set the leaves of one boosting round's trees and move ``scores`` (in place) by them.

    ``leaves``: (n, T) the leaf index of each row in each of the round's T trees (one per
    class or output column; T = 1 for (n,) scores); ``library_values(t, num_leaves)``: the
    library's own (shrunk) values of tree t's leaves, asked for only where needed (leaves
    the search could not solve, or every leaf without refit); ``rate``: the learning rate;
``store_dtype``: the precision the library stores leaf values in (XGBoost: float32), to
which the values are rounded before they move the scores, so that the scores stay those
of the stored model.
    With several trees, each is refitted with the other columns held at their current
    scores, the trees before it already refitted: block coordinate descent, so each tree
    lowers the training loss (the trees of a round were grown from the same gradients, and
    refitting them all at the old scores would overshoot together: for a softmax, adding a
    constant to every class changes nothing, and K exact steps would add up).

    Returns the leaf values written to each tree (shrunk; without any init score) and each
    tree's :class:`LeafSolution` (None without refit).
    """
    leaves = np.asarray(leaves)
    n = scores.shape[0]
    leaves = leaves.reshape(n, -1).astype(np.intp, copy=False)
    trees = leaves.shape[1]
    if scores.ndim == 1 and trees != 1:
        raise LossError(f"{trees} trees in one round for one column of scores")
    values, solutions = [], []
    for t in range(trees):
        tree_leaves = leaves[:, t]
        count = int(tree_leaves.max()) + 1 if n else 1
        column = None if scores.ndim == 1 else t
        solution = None
        if refit:
            solution = solve_leaves(objective, label, scores, tree_leaves, count, weight,
                                    column=column)
            new = rate * solution.values
            unsolved = not solution.solved.all()
            reached = np.bincount(tree_leaves, minlength=count) > 0 if unsolved else None
            if unsolved and (reached & ~solution.solved).any():  # (ids no row reaches: no leaf)
                new = np.where(solution.solved, new,
                               np.asarray(library_values(t, count), dtype=np.float64))
        else:
            new = np.asarray(library_values(t, count), dtype=np.float64)
        new = new.astype(store_dtype).astype(np.float64)
        _add_by_leaf(scores if column is None else scores[:, column], tree_leaves, new)
        values.append(new)
        solutions.append(solution)
    return values, solutions
