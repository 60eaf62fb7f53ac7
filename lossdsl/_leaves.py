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
the leaves still searching (gradient only, where the loss has no curvature) and one
``np.bincount`` per sum. The search stops when the step or the bracket is below ``xtol``
times the spread of the leaf's residuals; for a loss with no curvature the answer is then
moved onto the residual inside the final bracket (where a piecewise-linear cost has its
kink), so that such leaves are the weighted quantiles the built-ins give, to rounding.

:func:`lossdsl.lightgbm.train` and :func:`lossdsl.xgboost.train` use it after every tree;
the helpers below (:func:`use_refit`, :class:`EvalTracker`, :func:`learning_rate`) are what
the two training loops share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ._boost import BoostingObjective
from .errors import LossError
from .ir import is_constant

#: The default tolerance of the leaf search, relative to the spread of a leaf's residuals.
LEAF_XTOL = 1e-6

__all__ = ["LEAF_XTOL", "EvalTracker", "LeafSolution", "learning_rate", "refit_round",
           "solve_leaves", "use_refit"]


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
    cache = objective.__dict__.get("_lossdsl_leaf_curved")
    if cache is None:
        curvature = objective.compiled.derivative(objective.wrt, order=2)
        cache = not (is_constant(curvature) and curvature.value == 0)
        objective.__dict__["_lossdsl_leaf_curved"] = cache
    return bool(cache)


def _per_row(objective: BoostingObjective, n: int) -> dict[str, np.ndarray]:
    """The objective's inputs that hold one value per row (subset along with the rows)."""
    found = {}
    tables = objective.compiled.table_inputs()
    for name, value in objective.inputs.items():
        array = np.asarray(value)
        if name not in tables and array.ndim >= 1 and array.shape[0] == n and array.size > 1:
            found[name] = array
    return found


def solve_leaves(objective: BoostingObjective, label: Any, scores: np.ndarray,
                 leaves: np.ndarray, num_leaves: int, weight: Any = None, *,
                 column: int | None = None, fallback: np.ndarray | None = None,
                 xtol: float = LEAF_XTOL, max_iter: int = 100) -> LeafSolution:
    """The loss-minimising value of every leaf of one tree, all leaves at once.

    ``objective``: a :class:`~lossdsl._boost.BoostingObjective` (its loss, roles, params and
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
    model. Raw scores (and labels, per-row inputs) of all rows are read once; each iteration
    evaluates only the rows of leaves still searching.
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
    if n and (leaves.min() < 0 or leaves.max() >= num_leaves):
        raise LossError(f"leaf indices must be in [0, {num_leaves})")
    labels = objective.label_array(label, scores.shape)
    w = objective.weight_array(weight, n)
    w = None if w is None else np.asarray(w, dtype=np.float64)
    per_row = _per_row(objective, n)
    curved = _has_curvature(objective)
    values = np.zeros(num_leaves) if fallback is None else \
        np.array(fallback, dtype=np.float64).reshape(num_leaves)
    evaluations = 0

    def gradient_sums(rows: np.ndarray | None, shift: np.ndarray,
                      hessian: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-leaf sums of the weighted gradient (and Hessian) of the rows ``rows`` (None:
        all) at scores moved by ``shift`` (per leaf) in the tree's column."""
        nonlocal evaluations
        evaluations += 1
        leaf = leaves if rows is None else leaves[rows]
        if rows is None:
            prediction = scores.copy()
        else:
            prediction = scores[rows]
        if column is None:
            prediction += shift[leaf]
        else:
            prediction[:, column] += shift[leaf]
        arguments = dict(objective.inputs)
        for name, array in per_row.items():
            arguments[name] = array if rows is None else array[rows]
        arguments[objective.label] = labels if rows is None else labels[rows]
        arguments[objective.wrt] = prediction
        weights = w if (w is None or rows is None) else w[rows]
        wrt = (objective.wrt,)
        with np.errstate(all="ignore"):
            results = objective.compiled._compute(False, wrt, wrt if hessian else (),
                                                  arguments, weights)
        g = results[0] if column is None else results[0][:, column]
        g_sum = np.bincount(leaf, weights=g, minlength=num_leaves)
        if not hessian:
            return g_sum, None
        h = results[1] if column is None else results[1][:, column]
        return g_sum, np.bincount(leaf, weights=h, minlength=num_leaves)

    # ----- what each leaf holds: rows, weight, a scale for steps and tolerance
    count = np.bincount(leaves, minlength=num_leaves)
    total = count.astype(np.float64) if w is None else \
        np.bincount(leaves, weights=w, minlength=num_leaves)
    residual = None
    if labels.shape == scores.shape and labels.dtype.kind in "fiub":
        residual = (labels if column is None else labels[:, column]).astype(np.float64) \
            - (scores if column is None else scores[:, column])
        safe = np.maximum(count, 1)
        mean = np.bincount(leaves, weights=residual, minlength=num_leaves) / safe
        square = np.bincount(leaves, weights=residual * residual, minlength=num_leaves) / safe
        with np.errstate(invalid="ignore"):
            spread = np.sqrt(np.maximum(square - mean * mean, 0.0))
        scale = np.where(spread > 0, spread, np.where(np.abs(mean) > 0, np.abs(mean), 1.0))
        scale = np.where(np.isfinite(scale), scale, 1.0)
    else:
        scale = np.ones(num_leaves)
    solved = np.zeros(num_leaves, dtype=bool)
    active = (count > 0) & (total > 0)

    # ----- per-leaf search state
    c = np.zeros(num_leaves)
    low = np.full(num_leaves, -math.inf)
    high = np.full(num_leaves, math.inf)
    g_low = np.full(num_leaves, math.nan)
    g_high = np.full(num_leaves, math.nan)
    last_step = np.zeros(num_leaves)
    older_step = np.full(num_leaves, math.inf)
    width_before = np.full(num_leaves, math.inf)  # the bracket's width two iterations ago
    width_last = np.full(num_leaves, math.inf)
    last_side = np.zeros(num_leaves)  # +1: the last update moved high; -1: low
    previous = np.zeros(num_leaves)
    descent = np.zeros(num_leaves)
    converged = np.zeros(num_leaves, dtype=bool)
    first = np.ones(num_leaves, dtype=bool)

    for _ in range(max_iter):
        if not active.any():
            break
        everything = bool(active.all())
        rows = None if everything else np.flatnonzero(active[leaves])
        g_sum, h_sum = gradient_sums(rows, c, curved)
        idx = np.flatnonzero(active)
        G = g_sum[idx]
        H = h_sum[idx] if h_sum is not None else np.zeros(idx.size)
        cj = c[idx]

        # Not finite: at the start, the leaf keeps its fallback; later, the search overshot
        # into overflow, so the minimiser is nearer: step halfway back.
        bad = ~np.isfinite(G)
        if bad.any():
            at_start = bad & first[idx]
            active[idx[at_start]] = False
            back = bad & ~first[idx]
            b = idx[back]
            moved_up = c[b] > previous[b]
            high[b] = np.where(moved_up, c[b], high[b])
            g_high[b] = np.where(moved_up, math.nan, g_high[b])
            low[b] = np.where(moved_up, low[b], c[b])
            g_low[b] = np.where(moved_up, g_low[b], math.nan)
            candidate = 0.5 * (previous[b] + c[b])
            last_step[b] = np.abs(candidate - previous[b])
            c[b] = candidate
            keep = ~bad
            idx, G, H, cj = idx[keep], G[keep], H[keep], cj[keep]

        start = first[idx]
        descent[idx[start]] = -np.sign(G[start])
        first[idx] = False
        zero = G == 0
        if zero.any():  # a stationary point (or a plateau of a piecewise-linear loss)
            converged[idx[zero]] = True
            active[idx[zero]] = False
            keep = ~zero
            idx, G, H, cj = idx[keep], G[keep], H[keep], cj[keep]
        if idx.size == 0:
            continue

        up = G > 0
        side = np.where(up, 1.0, -1.0)
        # Illinois: when the same end of the bracket moves twice running, halve the
        # derivative kept at the other end, so false position does not stall on one side.
        same = side == last_side[idx]
        stale_low = same & up
        stale_high = same & ~up
        g_low[idx[stale_low]] *= 0.5
        g_high[idx[stale_high]] *= 0.5
        high[idx[up]] = cj[up]
        g_high[idx[up]] = G[up]
        low[idx[~up]] = cj[~up]
        g_low[idx[~up]] = G[~up]
        last_side[idx] = side

        lo, hi = low[idx], high[idx]
        with np.errstate(all="ignore"):
            newton = np.where(H > 0, cj - G / H, math.nan)
        bracketed = np.isfinite(lo) & np.isfinite(hi)
        step_newton = newton - cj
        width = hi - lo
        with np.errstate(all="ignore"):
            # inside the bracket: Newton while it at least halves the step before last;
            # else false position, while the bracket at least halves every two steps;
            # else bisection
            good_newton = (lo < newton) & (newton < hi) & \
                (np.abs(step_newton) <= 0.5 * older_step[idx])
            secant = lo - g_low[idx] * (hi - lo) / (g_high[idx] - g_low[idx])
            good_secant = np.isfinite(secant) & (lo < secant) & (secant < hi) & \
                (width <= 0.5 * width_before[idx])
        inside = np.where(good_newton, newton,
                          np.where(good_secant, secant, 0.5 * (lo + hi)))
        # no bracket yet: shrinking Newton steps, else expand (at least the leaf's scale,
        # and twice the last step), downhill
        finite_newton = np.isfinite(step_newton)
        last = last_step[idx]
        shrinking = finite_newton & ((last == 0) | (np.abs(step_newton) <= 0.5 * last))
        length = np.maximum(np.maximum(np.where(finite_newton, np.abs(step_newton), 0.0),
                                       2 * last), scale[idx])
        outside = np.where(shrinking, newton, cj - np.sign(G) * length)
        candidate = np.where(bracketed, inside, outside)
        runaway = ~bracketed & ~(np.abs(candidate) <= 1e300)
        if runaway.any():  # heading for infinity: no finite minimiser
            active[idx[runaway]] = False
            keep = ~runaway
            idx, cj, candidate, bracketed, width = (idx[keep], cj[keep], candidate[keep],
                                                    bracketed[keep], width[keep])
        step = np.abs(candidate - cj)
        older_step[idx] = np.where(last_step[idx] > 0, last_step[idx], math.inf)
        last_step[idx] = step
        width_before[idx] = width_last[idx]
        width_last[idx] = width
        previous[idx] = cj
        c[idx] = candidate
        tolerance = xtol * scale[idx] + 4 * np.finfo(np.float64).eps * np.abs(candidate)
        done = (step <= tolerance) | (bracketed & (width <= tolerance))
        converged[idx[done]] = True
        active[idx[done]] = False
    else:
        # out of iterations: a leaf with a bracket stops at its best point, one without
        # is taken to be unbounded (its steps kept doubling)
        stuck = np.flatnonzero(active)
        inside = np.isfinite(low[stuck]) & np.isfinite(high[stuck])
        converged[stuck[inside]] = True
        active[stuck] = False

    # A leaf that stopped without ever seeing the derivative turn beyond its answer (Newton
    # converging from one side, or a tail flattening out) may have no finite minimiser:
    # probe further along the way it went; a rise anywhere there means a finite one.
    unsure = np.flatnonzero(converged & np.where(descent > 0, ~np.isfinite(high),
                                                 np.where(descent < 0, ~np.isfinite(low),
                                                          False)))
    if unsure.size:
        rises = np.zeros(num_leaves, dtype=bool)
        probe_leaves = np.zeros(num_leaves, dtype=bool)
        probe_leaves[unsure] = True
        rows = np.flatnonzero(probe_leaves[leaves])
        distance = np.maximum(scale, np.abs(c))
        for j in range(4):
            shift = c + descent * distance * 10.0 ** j
            g_sum, _ = gradient_sums(rows, shift, False)
            rises |= probe_leaves & (descent * g_sum > 0)
        converged[unsure[~rises[unsure]]] = False

    if not curved and residual is not None:
        _snap_to_kinks(c, converged, low, high, residual, leaves, num_leaves)
    solved = converged & np.isfinite(c)
    values[solved] = c[solved]
    return LeafSolution(values, solved, evaluations)


def _snap_to_kinks(c: np.ndarray, converged: np.ndarray, low: np.ndarray, high: np.ndarray,
                   residual: np.ndarray, leaves: np.ndarray, num_leaves: int) -> None:
    """Move each converged leaf of a loss without curvature onto the residual inside its
    final bracket nearest its value (in place).

    The minimiser of a piecewise-linear cost of ``F + c - y`` is a kink, at a residual
    ``y_i - F_i``; the bracket holds the point where the derivative changes sign, so a
    residual inside it is that kink, and a move within the bracket is within the search's
    tolerance whatever the loss.
    """
    bracketed = converged & np.isfinite(low) & np.isfinite(high)
    if not bracketed.any():
        return
    leaf_low, leaf_high = low[leaves], high[leaves]
    inside = np.flatnonzero(bracketed[leaves] & (residual >= leaf_low)
                            & (residual <= leaf_high))
    if inside.size == 0:
        return
    leaf = leaves[inside]
    distance = np.abs(residual[inside] - c[leaf])
    order = np.lexsort((distance, leaf))
    first = np.ones(order.size, dtype=bool)
    first[1:] = leaf[order][1:] != leaf[order][:-1]
    chosen = inside[order[first]]
    c[leaves[chosen]] = residual[chosen]


# ---------------------------------------------------------------------- training helpers
def use_refit(refit: bool | str, objective: BoostingObjective) -> bool:
    """Whether to refit leaves: ``"auto"`` turns it on for the objectives whose Hessian
    policy is ``"constant"`` (Hessian 0 everywhere or on a region: first-order leaves)."""
    if refit == "auto":
        return objective.policy == "constant"
    if isinstance(refit, (bool, np.bool_)):
        return bool(refit)
    raise LossError(f"refit must be True, False or 'auto', not {refit!r}")


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
            reached = np.bincount(tree_leaves, minlength=count) > 0
            if (reached & ~solution.solved).any():  # (ids no row reaches are not leaves)
                new = np.where(solution.solved, new,
                               np.asarray(library_values(t, count), dtype=np.float64))
        else:
            new = np.asarray(library_values(t, count), dtype=np.float64)
        new = new.astype(store_dtype).astype(np.float64)
        if column is None:
            scores += new[tree_leaves]
        else:
            scores[:, column] += new[tree_leaves]
        values.append(new)
        solutions.append(solution)
    return values, solutions
