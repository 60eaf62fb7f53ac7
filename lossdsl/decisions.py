"""The cost-minimising decision for each row, from any lossdsl cost and a model's predictions.

Training on a cost is one way to use it; the other is to fit any model for its predictive
information (class probabilities, or a point forecast with held-out residuals, or predictive
quantiles) and then take, row by row, the decision whose *expected* cost is lowest:

    d_i = argmin_d  E[cost(y, d; inputs_i) | row i]

For a cost matrix this is the Bayes rule ``argmin_m sum_k P[i, k] C[k, m]``; for the
newsvendor cost ``asymmetric_l1(y, d, under, over)`` with residuals it is the forecast plus
the residuals' ``under / (under + over)`` quantile, per row when the prices are per row; for a
tiered or any other cost the language can write, it is found numerically, with the cost's
compiled kernels (``reduction="none"`` for values; ``"sum"`` for derivatives summed over a
row's outcomes) evaluated on whole blocks of rows at once, never a Python loop per row.

:func:`decide` is the entry point; see the "Decisions from a cost" section of
docs/business-costs.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .api import CompiledLoss, Loss
from .binding import check_aligned, coerce_loss, nan_rows, numeric_array
from .boosting.objective import LABEL_NAMES
from .errors import LossDomainError, LossError, LossNameError, LossShapeError, did_you_mean

__all__ = ["NOT_PER_ROW", "decide"]

# Kernel elements evaluated per call: bounds the memory of the flattened (rows x outcomes x
# candidate decisions) arrays, about 8 bytes per element and input (16 MB at the default).
DEFAULT_MAX_ELEMENTS = 1 << 21

# The continuous search: a first grid over the outcomes' range (widened while the best point
# is at its edge), zoom grids around the best point, then bisection / Newton on the expected
# cost's derivative where it brackets a zero.
_FIRST_GRID = 65
_ZOOM_GRID = 17
# a first grid with this many dips (points below both neighbours) is refined 4 times
_WAVY_DIPS = 3
_FINE_GRID = 4 * (_FIRST_GRID - 1) + 1
_ZOOMS = 3
_BEAM = 4
_NEIGHBOURS = 8
_EXPANSIONS = 60
_XTOL = 1e-10
_MAX_BISECTIONS = 100
_MAX_VALUE_ZOOMS = 12
# a grid level on its whole width is widened this often at most (5**8: 390,625 times as wide)
_FLAT_EXPANSIONS = 8
# The scan for basins outside the window: d = 0 and +-10^(k/2), k = -6..6, in units of the
# outcomes' magnitude, and each point's half-window (the distance to its nearest neighbour).
_SCAN_MAGNITUDES = 10.0 ** (np.arange(-6, 7) / 2)
_SCAN = np.concatenate([-_SCAN_MAGNITUDES[::-1], [0.0], _SCAN_MAGNITUDES])
_SCAN_HALF = np.minimum(np.diff(_SCAN, prepend=-np.inf), np.diff(_SCAN, append=np.inf))


def decide(cost: str | Loss | CompiledLoss, /, *,
           probabilities: Any = None, classes: Any = None,
           predictions: Any = None, residuals: Any = None, residual_weights: Any = None,
           groups: Any = None, residual_groups: Any = None,
           quantiles: Any = None, levels: Any = None,
           decisions: Any = None, label: str | None = None, decision: str | None = None,
           return_expected_cost: bool = False,
           max_elements: int = DEFAULT_MAX_ELEMENTS,
           **inputs: Any) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Each row's decision of lowest expected cost under ``cost``, given a model's predictions.

    ``cost`` is a loss (text, :class:`~lossdsl.Loss` or :class:`~lossdsl.CompiledLoss`) of a
    *label* input (the outcome, ``y``) and a *decision* input (what is chosen for the row),
    e.g. ``"where(d == 1, where(y == 1, 0, fee), where(y == 1, amount, 0))"`` or a cost
    matrix ``"pick(rowof(C, y), d)"``. The label is the input named like one (``y``,
    ``target``, ``label``, ...) and the decision the one input left; say ``label=`` /
    ``decision=`` when that does not single them out. Every other input is given by name as a
    keyword argument: a scalar, a table (``C`` of ``rowof``), or one value per row (an
    ``amount``, a price); params of the loss may be overridden the same way.

    The predictive information, one of:

    * ``probabilities``: an (N, K) array, ``P[i, k]`` the probability that row i's label is
      ``classes[k]`` (default ``0 .. K-1``); a vector (N,) is ``P(y = 1)`` of a binary label.
      The decision minimises ``sum_k P[i, k] * cost(y=classes[k], d)`` over the candidate
      ``decisions`` (default: the classes).
    * ``predictions`` (N,) and ``residuals`` (R,): held-out ``y - prediction`` of the model;
      row i's outcomes are ``predictions[i] + residuals[j]``, equally likely, or as likely
      as ``residual_weights`` (R,) say (the sample weights of the rows the residuals come
      from: a row of weight 0 does not count). With ``groups`` (N,) and
      ``residual_groups`` (R,), each row's outcomes come from the residuals of its own group
      only (a cost class, a band of the prediction's level, an hour of the day): errors
      whose spread differs between groups then move each group's decisions by its own
      amount. Every group of ``groups`` needs residuals of its own.
    * ``quantiles``: an (N, Q) array of each row's predictive quantiles at ``levels``
      (increasing, in (0, 1); default evenly spaced), each weighted by the probability mass
      it stands for; any (N, S) array of equally likely outcomes per row (ensemble members,
      posterior draws) may be passed the same way.

    For regression, ``decisions`` (a vector of candidate values, such as whole units of stock)
    makes the choice discrete; without it the decision is continuous and found by a
    safeguarded search of the expected cost over the outcomes' range: a grid (widened while
    its lowest point is at an edge, and both ways while it is infinite or level all over);
    where the grid shows a convex function, bisection / Newton on its derivative; elsewhere
    (steps, several basins) zoom grids into the few best points (from a grid 4 times as
    fine, and into its other dips too, where the first grid has 3 dips or more); then the
    outcomes next to the point found; then a coarse scan (d = 0 and ``+-10^(k/2)`` times
    the outcomes' magnitude, ``k = -6..6``) for a basin the window never saw, such as a
    fixed cost of ordering anything making ``d = 0`` best. For a cost piecewise-linear in
    ``y - d`` the result is the weighted quantile of the outcomes at the cost's critical
    ratio, to ``1e-10`` relative precision; a cost with many small steps may end a fraction
    of a percent above a fine brute-force grid's best. What a numerical search can still
    miss: a basin outside the outcomes' range that falls between the scan's points and is
    narrower than their spacing, and, for a cost whose local minima lie about one grid
    step apart (an oscillation at the grid's spacing, which the 65-point first grid may
    alias into a single dip), the lowest of several basins whose depths differ by less than
    the oscillation's amplitude. ``decisions=`` (a grid of candidates as fine as the cost
    needs) is exact.

    Ties between candidate decisions go to the first one in ``decisions``.

    Returns the decisions (N,), and with ``return_expected_cost=True`` also each row's
    expected cost at its decision. Outcomes where the cost is NaN count as never chosen;
    a row where every candidate's cost is NaN or infinite (an infinite per-row input), or
    where the expected cost keeps falling towards an infinite decision, is a
    :class:`~lossdsl.LossError` naming the row (its position in the caller's data, with
    ``groups=`` too), and so is a NaN in any input (a per-row value, a scalar, a table
    entry, a param override). ``max_elements`` bounds
    the kernel elements evaluated per call (rows are processed in blocks).
    """
    compiled = _per_row_kernel(cost)
    if groups is not None or residual_groups is not None:
        return _decide_by_group(compiled, groups, residual_groups, probabilities=probabilities,
                                classes=classes, predictions=predictions, residuals=residuals,
                                residual_weights=residual_weights, quantiles=quantiles,
                                levels=levels, decisions=decisions, label=label,
                                decision=decision,
                                return_expected_cost=return_expected_cost,
                                max_elements=max_elements, **inputs)
    return _decide_rows(compiled, None, probabilities=probabilities, classes=classes,
                        predictions=predictions, residuals=residuals,
                        residual_weights=residual_weights, quantiles=quantiles,
                        levels=levels, decisions=decisions, label=label, decision=decision,
                        return_expected_cost=return_expected_cost,
                        max_elements=max_elements, **inputs)


def _decide_rows(compiled: CompiledLoss, row_ids: np.ndarray | None, /, *,
                 probabilities: Any, classes: Any, predictions: Any, residuals: Any,
                 residual_weights: Any, quantiles: Any, levels: Any, decisions: Any,
                 label: str | None, decision: str | None, return_expected_cost: bool,
                 max_elements: int, **inputs: Any
                 ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """:func:`decide` without groups; ``row_ids`` (one per row: their positions in the
    caller's data, when these rows are one group of it) name the rows in errors."""
    tables = compiled.table_inputs()
    check_aligned([("probabilities", probabilities), ("predictions", predictions),
                   ("quantiles", quantiles),
                   *((name, value) for name, value in inputs.items() if name not in tables)])
    check_aligned([("residuals", residuals), ("residual_weights", residual_weights)])
    classification = probabilities is not None
    if classification:
        extra = [name for name, value in (("predictions", predictions),
                                          ("residuals", residuals),
                                          ("residual_weights", residual_weights),
                                          ("quantiles", quantiles),
                                          ("levels", levels)) if value is not None]
        if extra:
            raise LossError(f"pass either probabilities= (classification) or predictions= with "
                            f"residuals=, or quantiles= (regression), not both: got "
                            f"probabilities= and {', '.join(e + '=' for e in extra)}")
        probabilities, classes = _probabilities(probabilities, classes)
        n = probabilities.shape[0]
    else:
        if classes is not None:
            raise LossError("classes= goes with probabilities=; for regression pass "
                            "predictions= and residuals=, or quantiles=")
        outcomes, weights, predictions = _outcomes(predictions, residuals, quantiles, levels,
                                                   residual_weights)
        n = outcomes.shape[0] if predictions is None else predictions.shape[0]
    label, decision = _roles(compiled, label, decision, inputs)
    per_row, shared = _split_inputs(compiled, inputs, n, label, decision, row_ids)
    if max_elements < 1:
        raise LossError(f"max_elements must be positive, got {max_elements}")

    if classification:
        candidates = classes if decisions is None else _candidates(decisions)
        try:
            values = _classification(compiled, label, decision, probabilities, classes,
                                     candidates, per_row, shared, max_elements)
        except LossDomainError as error:
            # the kernel's index is into decide's flattened arrays: say what was passed
            raise LossDomainError(error.message, error.span, (
                f"decide() evaluated the cost at every class ({label}: "
                f"{_preview(classes)}) and candidate decision ({decision}: "
                f"{_preview(candidates)}); give classes= and decisions= the cost accepts"
            )) from error
        chosen, expected = _choose(values, candidates, row_ids, per_row)
    elif decisions is not None:
        candidates = _candidates(decisions)
        expected_cost = _ExpectedCost(compiled, label, decision, outcomes, weights,
                                      predictions, per_row, shared, row_ids)
        values = np.empty((n, candidates.size))
        block = max(1, max_elements // (candidates.size * expected_cost.width
                                         * _row_width(per_row)))
        for start in range(0, n, block):
            rows = np.arange(start, min(n, start + block))
            values[rows] = expected_cost.values(rows, np.broadcast_to(
                candidates, (rows.size, candidates.size)))
        chosen, expected = _choose(values, candidates, row_ids, per_row)
    else:
        expected_cost = _ExpectedCost(compiled, label, decision, outcomes, weights,
                                      predictions, per_row, shared, row_ids)
        chosen, expected = np.empty(n), np.empty(n)
        block = max(1, max_elements // (max(_FIRST_GRID, _BEAM * _ZOOM_GRID)
                                         * expected_cost.width * _row_width(per_row)))
        for start in range(0, n, block):
            rows = np.arange(start, min(n, start + block))
            chosen[rows], expected[rows] = _minimise(expected_cost, rows)
    return (chosen, expected) if return_expected_cost else chosen


def _decide_by_group(compiled: CompiledLoss, groups: Any, residual_groups: Any, *,
                     predictions: Any, residuals: Any, residual_weights: Any,
                     return_expected_cost: bool, **rest: Any
                     ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """:func:`decide` once per group of rows, each with the residuals of its own group."""
    if groups is None or residual_groups is None:
        raise LossError("groups= (one per row) and residual_groups= (one per residual) go "
                        "together: give both, or neither")
    unsupported = [name for name in ("probabilities", "quantiles", "levels")
                   if rest[name] is not None]
    if unsupported or predictions is None or residuals is None:
        raise LossError("groups= and residual_groups= select each row's residuals: pass them "
                        "with predictions= and residuals=" + (
                            f", not {', '.join(n + '=' for n in unsupported)}"
                            if unsupported else ""))
    check_aligned([("residuals", residuals), ("residual_groups", residual_groups),
                   ("residual_weights", residual_weights)])
    mu = _floats("predictions", predictions)
    r = _floats("residuals", residuals)
    row_group, residual_group = np.asarray(groups), np.asarray(residual_groups)
    for what, array, size, of in (("groups", row_group, mu.shape[0], "predictions"),
                                  ("residual_groups", residual_group, r.shape[0],
                                   "residuals")):
        if array.shape != (size,):
            raise LossShapeError(f"{what} must give one group per value of {of} ({size}), "
                                 f"got shape {array.shape}")
        missing = _missing_ids(array)
        if missing.any():
            # NaN never equals itself: such a row would match no group, its own included
            unit = "row" if what == "groups" else "residual"
            raise LossDomainError(
                f"{what} is NaN (missing) in {int(missing.sum())} {unit}(s), the first "
                f"{unit} {int(np.flatnonzero(missing)[0])}: every {unit} needs a group id "
                "(give missing ids a group of their own, or drop those rows)")
    weights = None if residual_weights is None else _floats("residual_weights",
                                                             residual_weights)
    if weights is not None and weights.shape != r.shape:
        raise LossShapeError(f"residual_weights must give one weight per residual "
                             f"({r.size}), got shape {weights.shape}")
    tables = compiled.table_inputs()
    # per-row inputs are sliced with the rows; scalars, tables and params go to every group
    per_row = {name for name, value in rest.items()
               if name not in _DECIDE_OPTIONS and name not in tables and np.ndim(value) >= 1}
    for name in sorted(per_row):
        # checked here, against all the rows: a group's call would count only its own
        if np.shape(rest[name])[0] != mu.shape[0]:
            raise LossShapeError(f"input '{name}' has {np.shape(rest[name])[0]} rows (shape "
                                 f"{np.shape(rest[name])}) but the predictions have "
                                 f"{mu.shape[0]}: pass one value per row, in the same "
                                 f"order, or a scalar")
    # (sliced by position below: a pandas input must be in the predictions' row order)
    check_aligned([("predictions", predictions), ("groups", groups),
                   *((name, rest[name]) for name in sorted(per_row))])
    chosen: np.ndarray | None = None
    expected = np.empty(mu.shape[0])
    for group in np.unique(row_group):
        rows = np.flatnonzero(row_group == group)
        own = residual_group == group
        if not own.any():
            shown = group.item() if isinstance(group, np.generic) else group
            raise LossError(f"group {shown!r} has {rows.size} row(s) but no residuals "
                            f"(residual_groups= never takes that value): each row's outcomes "
                            f"come from its own group's residuals")
        arguments = {name: (np.asarray(value)[rows] if name in per_row else value)
                     for name, value in rest.items()}
        d, e = _decide_rows(compiled, rows, predictions=mu[rows], residuals=r[own],
                            residual_weights=None if weights is None else weights[own],
                            return_expected_cost=True, **arguments)
        if chosen is None:  # the decisions' dtype: candidate integers stay integers
            chosen = np.empty(mu.shape[0], dtype=d.dtype)
        chosen[rows], expected[rows] = d, e
    if chosen is None:  # no rows
        chosen = np.empty(0)
    return (chosen, expected) if return_expected_cost else chosen


def _missing_ids(ids: np.ndarray) -> np.ndarray:
    """Which group ids are missing: NaN (NaT), or None or pandas' NA in an object array."""
    if ids.dtype.kind in "fc":
        return np.isnan(ids)
    if ids.dtype.kind in "mM":
        return np.isnat(ids)
    if ids.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, (float, np.floating)) and v != v)
                         or type(v).__name__ in ("NAType", "NaTType") for v in ids],
                        dtype=bool)
    return np.zeros(ids.shape, dtype=bool)


# decide's own keywords (passed through _decide_by_group with the cost's inputs)
_DECIDE_OPTIONS = frozenset({"probabilities", "classes", "quantiles", "levels", "decisions",
                             "label", "decision", "max_elements"})
#: Keywords of :func:`decide` whose values are not one per row of the predictions (the
#: options but the probabilities and quantiles, and the residuals' group ids).
NOT_PER_ROW = (_DECIDE_OPTIONS - {"probabilities", "quantiles"}) | {"residual_groups"}


# ---------------------------------------------------------------------------- arguments
_KERNELS: dict[str, CompiledLoss] = {}


def _per_row_kernel(cost: str | Loss | CompiledLoss) -> CompiledLoss:
    """The cost compiled with ``reduction="none"``: the given one when it is, and one kept
    per loss text, so that repeated calls do not reload kernels."""
    if isinstance(cost, CompiledLoss) and cost.reduction == "none":
        return cost
    if isinstance(cost, str) and cost in _KERNELS:
        return _KERNELS[cost]
    loss, params, target = coerce_loss(cost)
    compiled = CompiledLoss(loss, target or "cpu", "none", params)
    if isinstance(cost, str):
        if len(_KERNELS) >= 32:
            _KERNELS.pop(next(iter(_KERNELS)))
        _KERNELS[cost] = compiled
    return compiled


def _probabilities(probabilities: Any, classes: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _floats("probabilities", probabilities)
    if p.ndim == 1:  # P(y = 1) of a binary label
        p = np.column_stack([1.0 - p, p])
    if p.ndim != 2 or p.shape[1] < 1:
        raise LossShapeError(f"probabilities must be an (N, K) array (or a vector of "
                             f"P(y = 1)), got shape {np.shape(probabilities)}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        bad = int(np.argmax(~np.isfinite(p).all(axis=1) | (p < 0).any(axis=1)))
        raise LossDomainError(f"probabilities must be finite and non-negative; row {bad} is "
                              f"{p[bad].tolist()}")
    # the expected cost of a decision is a probability-weighted sum: rows summing to 1.5
    # scaled it by 1.5 (the decisions were right, the returned costs were not)
    totals = p.sum(axis=1)
    off = np.flatnonzero(np.abs(totals - 1.0) > 1e-3)
    if off.size:
        raise LossDomainError(f"each row of probabilities must sum to 1 (a distribution over "
                              f"the classes); row {off[0]} sums to {totals[off[0]]:.6g}: pass "
                              "the model's predict_proba, or normalise the rows")
    if classes is None:
        classes = np.arange(p.shape[1])
    else:
        classes = _candidates(classes, "classes")
        if classes.size != p.shape[1]:
            raise LossShapeError(f"classes= has {classes.size} values but probabilities have "
                                 f"{p.shape[1]} columns: give one class value per column")
    return p, classes


def _row_width(per_row: Mapping[str, np.ndarray]) -> int:
    """Elements per row of the widest per-row input ((N, K) cost rows repeat K values)."""
    return max([int(np.prod(value.shape[1:])) for value in per_row.values()] + [1])


def _preview(values: np.ndarray) -> str:
    shown = ", ".join(str(v) for v in values[:6].tolist())
    return f"[{shown}{', ...' if values.size > 6 else ''}]"


def _candidates(values: Any, what: str = "decisions") -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "biuf":
        raise LossShapeError(f"{what}= must be a non-empty vector of numbers, got "
                             f"{array.dtype} of shape {array.shape}")
    return array


def _outcomes(predictions: Any, residuals: Any, quantiles: Any, levels: Any,
              residual_weights: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(outcomes, their probabilities, predictions): residuals (R,) shared by every row
    (added to the predictions (N,) by :class:`_ExpectedCost`), or quantiles (N, Q) per row
    (and no predictions)."""
    if quantiles is not None:
        if residuals is not None or predictions is not None or residual_weights is not None:
            raise LossError("quantiles= are each row's predicted outcomes themselves: pass "
                            "them alone, or predictions= with residuals=, not both")
        q = _floats("quantiles", quantiles)
        if q.ndim != 2 or q.shape[1] == 0:
            raise LossShapeError(f"quantiles must be an (N, Q) array, one row of predictive "
                                 f"quantiles per row, got shape {q.shape}")
        if levels is None:
            weights = np.full(q.shape[1], 1.0 / q.shape[1])
        else:
            weights = _level_weights(levels, q.shape[1])
        _finite("quantiles", q)
        return q, weights, None
    if levels is not None:
        raise LossError("levels= goes with quantiles=")
    if predictions is None or residuals is None:
        raise LossError("give the model's predictive information: probabilities= (N, K) for "
                        "classification; predictions= (N,) with held-out residuals= (R,), or "
                        "quantiles= (N, Q), for regression")
    r = _floats("residuals", residuals)
    if r.ndim != 1 or r.size == 0:
        raise LossShapeError(f"residuals must be a non-empty vector of held-out y - prediction "
                             f"(R,), got shape {r.shape}; for outcomes per row pass "
                             f"quantiles= (N, Q)")
    _finite("residuals", r)
    mu = _floats("predictions", predictions)
    if mu.ndim != 1:
        raise LossShapeError(f"predictions must be a vector (N,), got shape {mu.shape}")
    _finite("predictions", mu)
    if residual_weights is None:
        return r, np.full(r.size, 1.0 / r.size), mu
    w = _floats("residual_weights", residual_weights)
    if w.shape != r.shape:
        raise LossShapeError(f"residual_weights must give one weight per residual "
                             f"({r.size}), got shape {w.shape}")
    _finite("residual_weights", w)
    if np.any(w < 0) or not np.any(w > 0):
        raise LossDomainError("residual_weights must be non-negative with a positive sum")
    kept = w > 0
    return r[kept], w[kept] / w[kept].sum(), mu


def _level_weights(levels: Any, q: int) -> np.ndarray:
    """The probability mass each quantile stands for: from the midpoint with its lower
    neighbour to the midpoint with its upper one (0 and 1 at the ends)."""
    a = _floats("levels", levels)
    if a.shape != (q,):
        raise LossShapeError(f"levels= must give one level per quantile column ({q}), got "
                             f"shape {a.shape}")
    if not (np.all(a > 0) and np.all(a < 1) and np.all(np.diff(a) > 0)):
        raise LossDomainError(f"levels= must increase strictly within (0, 1), got {a.tolist()}")
    edges = np.concatenate([[0.0], 0.5 * (a[1:] + a[:-1]), [1.0]])
    return np.diff(edges)


def _finite(what: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        raise LossDomainError(f"{what} must be finite; found "
                              f"{array[~np.isfinite(array)][:3].tolist()}")


def _roles(compiled: CompiledLoss, label: str | None, decision: str | None,
           given: Mapping[str, Any]) -> tuple[str, str]:
    """(label input, decision input): as given, else the label is the input named like a
    label and the decision the one input left. Never a guess between look-alikes."""
    names = compiled.inputs
    for name, role in ((label, "label"), (decision, "decision")):
        if name is not None and name not in names:
            raise LossNameError(f"{role}={name!r} is not an input of this cost (inputs: "
                                f"{', '.join(names)})", None, did_you_mean(name, names))
    for name in (label, decision):
        if name is not None and name in given:
            raise LossError(f"'{name}' is the {'label' if name == label else 'decision'}: "
                            f"decide() sets it, do not pass {name}=...")
    free = [n for n in names if n not in given and n not in (label, decision)]
    if label is None:
        named = [n for n in free if n in LABEL_NAMES]
        if len(named) == 1:
            label = named[0]
        elif decision is not None and len(free) == 1:
            label = free[0]
        else:
            raise LossError(f"cannot tell which input of ({', '.join(names)}) is the label "
                            f"(the outcome); pass label='...' and decision='...', and the "
                            f"other inputs by name")
        free.remove(label)
    if decision is None:
        if len(free) != 1:
            raise LossError(f"cannot tell which input of ({', '.join(names)}) is the "
                            f"decision: {'none' if not free else ', '.join(free)} left after "
                            f"the label '{label}'; pass decision='...', and the other inputs "
                            f"by name (amount=..., a scalar or one value per row)")
        decision = free[0]
    else:
        leftover = [n for n in free if n != decision]
        if leftover:
            raise LossNameError(f"input '{leftover[0]}' has no value: pass "
                                f"{leftover[0]}=... (a scalar or one value per row)")
    if label == decision:
        raise LossError(f"the label and the decision cannot both be '{label}'")
    return label, decision


def _split_inputs(compiled: CompiledLoss, inputs: Mapping[str, Any], n: int, label: str,
                  decision: str, row_ids: np.ndarray | None = None
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(per-row inputs, inputs and params shared by every row)."""
    per_row: dict[str, np.ndarray] = {}
    shared: dict[str, Any] = {}
    tables = compiled.table_inputs()
    for name, value in inputs.items():
        if name not in compiled.inputs:
            if name in compiled.params:
                _refuse_missing_shared(name, value, "param")
                shared[name] = value
                continue
            raise LossNameError(f"{name}=... is not an input or param of this cost (inputs: "
                                f"{', '.join(compiled.inputs)})", None,
                                did_you_mean(name, list(compiled.inputs)
                                             + list(compiled.params)))
        array = np.asarray(value)
        if array.ndim == 0 or name in tables:
            _refuse_missing_shared(name, value, "table" if name in tables else "input")
            shared[name] = value
        elif array.shape[0] != n:
            raise LossShapeError(f"input '{name}' has {array.shape[0]} rows (shape "
                                 f"{array.shape}) but the predictions have {n}: pass one "
                                 f"value per row, in the same order, or a scalar")
        else:
            # a NaN among the outcomes' costs only rules that outcome out: a missing value
            # would choose the row's decision silently
            missing = nan_rows(array) if array.dtype.kind == "f" else ()
            if len(missing):
                raise LossDomainError(
                    f"input '{name}' is NaN in {len(missing)} row(s), the first row "
                    f"{_row_name(row_ids, missing[0])}: a missing value would decide the row "
                    f"from the costs of the other outcomes alone; fill it in or drop the row")
            per_row[name] = array
    return per_row, shared


def _refuse_missing_shared(name: str, value: Any, kind: str) -> None:
    """A NaN in a value every row shares (a scalar input, a param, a table entry) is a
    LossDomainError naming it: the cost would be NaN at every outcome it enters, and NaN
    outcomes count as never chosen, so the rows were decided from the others alone."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return  # not numbers: the kernel's binding says what is wrong
    missing = np.isnan(array)
    if not missing.any():
        return
    where = ""
    if array.ndim:
        entry = tuple(int(i) for i in np.argwhere(missing)[0])
        where = (f" at entry {entry[0] if len(entry) == 1 else entry}"
                 f" ({int(missing.sum())} NaN entr{'y' if missing.sum() == 1 else 'ies'})")
    raise LossDomainError(f"{kind} '{name}' is NaN{where}: every row's cost reads it, and a "
                          f"missing value would decide the rows from the other outcomes' "
                          f"costs alone; give it a number")


def _row_name(row_ids: np.ndarray | None, row: Any) -> int:
    """The caller's number of row ``row`` (its position in the caller's data)."""
    return int(row) if row_ids is None else int(row_ids[int(row)])


def _nonfinite_note(per_row: Mapping[str, np.ndarray], row: int) -> str:
    """' (amount=inf)': the row's per-row inputs that are not finite, for an error."""
    shown = []
    for name, value in per_row.items():
        entry = np.asarray(value[row])
        if entry.dtype.kind in "fc" and not np.all(np.isfinite(entry)):
            shown.append(f"{name}={entry.tolist()}")
    return f" ({', '.join(shown)})" if shown else ""


# ---------------------------------------------------------------------------- classification
def _classification(compiled: CompiledLoss, label: str, decision: str, p: np.ndarray,
                    classes: np.ndarray, candidates: np.ndarray,
                    per_row: dict[str, np.ndarray], shared: dict[str, Any],
                    max_elements: int) -> np.ndarray:
    """(N, M) expected costs: ``sum_k P[i, k] cost(y=classes[k], d=candidates[m])``."""
    n, k = p.shape
    m = candidates.size
    if not per_row:
        # The same cost for every row: one kernel call for the (K, M) table, then P @ table.
        table = compiled(**{label: np.repeat(classes, m), decision: np.tile(candidates, k)},
                         **shared).reshape(k, m)
        return _expectation(p[:, :, None], table[None, :, :])
    out = np.empty((n, m))
    block = max(1, max_elements // (k * m * _row_width(per_row)))
    cells = np.repeat(classes, m), np.tile(candidates, k)
    for start in range(0, n, block):
        stop = min(n, start + block)
        rows = np.repeat(np.arange(start, stop), k * m)
        arguments = {name: value[rows] for name, value in per_row.items()}
        arguments[label] = np.tile(cells[0], stop - start)
        arguments[decision] = np.tile(cells[1], stop - start)
        values = _one_per_case(compiled(**arguments, **shared), (stop - start) * k * m,
                               per_row).reshape(stop - start, k, m)
        out[start:stop] = _expectation(p[start:stop, :, None], values)
    return out


def _one_per_case(values: Any, cases: int, per_row: Mapping[str, np.ndarray]) -> np.ndarray:
    """The cost's values, checked to be one number per case evaluated."""
    values = np.asarray(values)
    if values.size != cases:
        shapes = ", ".join(f"{name} {value.shape}" for name, value in per_row.items())
        raise LossShapeError(
            f"the cost gives {values.size} numbers for {cases} (row, outcome, decision) cases "
            f"(shape {values.shape}): each per-row input must be one value per row (N,), or "
            f"a row (N, K) that the cost reduces to one number (pick, rowsum); got {shapes}")
    return values


def _floats(what: str, value: Any) -> np.ndarray:
    """``value`` as a float64 array, or a LossShapeError naming ``what``."""
    return numeric_array(what, value).astype(np.float64, copy=False)


def _expectation(p: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``sum_k p * values`` over axis 1, an impossible outcome (p = 0) adding nothing even
    where its cost is infinite (NumPy's 0 * inf is NaN)."""
    values = np.asarray(values, dtype=np.float64)
    if np.all(np.isfinite(values)):
        if values.shape[0] == 1:
            return p[:, :, 0] @ values[0]
        return np.einsum("nk,nkm->nm", p[:, :, 0], values)
    return np.where(p > 0, p * values, 0.0).sum(axis=1)


def _choose(values: np.ndarray, candidates: np.ndarray, row_ids: np.ndarray | None = None,
            per_row: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The candidate of lowest expected cost per row (the first on ties), and that cost;
    NaN costs never chosen, a row of only NaN or infinite costs an error."""
    clean = np.where(np.isnan(values), np.inf, values)
    best = np.argmin(clean, axis=1)
    shown = candidates[:5].tolist()
    # every candidate NaN: undefined; every candidate infinite: no decision is better than
    # another, the first is no answer
    for every, cost, advice in (
            (np.isnan(values).all(axis=1), "NaN", "the cost is undefined there (check the "
             f"per-row inputs and the candidate decisions {shown}...)"),
            (np.isposinf(clean).all(axis=1), "infinite (or NaN)", "no decision is better than "
             f"another; check the row's inputs and the candidate decisions {shown}...")):
        if every.any():
            row = int(np.argmax(every))
            raise LossDomainError(f"the expected cost is {cost} for every candidate decision "
                                  f"of row {_row_name(row_ids, row)}"
                                  f"{_nonfinite_note(per_row or {}, row)}: {advice}")
    return candidates[best], clean[np.arange(values.shape[0]), best]


# ---------------------------------------------------------------------------- regression
class _ExpectedCost:
    """Row i's expected cost ``sum_j w_j cost(y=outcome_ij, d)`` (and its derivative in d)
    at several decisions per row, from one kernel call over a block of rows.

    A cost without class axes takes the outcomes as an (M, S) matrix against the decisions
    and per-row inputs as (M,) vectors (the language's row-wise broadcasting), so only the
    outcomes are laid out in full; the derivatives then come summed over the outcomes from a
    ``reduction="sum"`` kernel. A cost with class axes (or inputs per row and class) gets
    every input flattened to one element per (row, decision, outcome).
    """

    def __init__(self, compiled: CompiledLoss, label: str, decision: str,
                 outcomes: np.ndarray, weights: np.ndarray, predictions: Any,
                 per_row: dict[str, np.ndarray], shared: dict[str, Any],
                 row_ids: np.ndarray | None = None):
        self.compiled, self.label, self.decision = compiled, label, decision
        self.row_ids = row_ids  # the rows' numbers in the caller's data, for errors
        self.outcomes, self.weights = outcomes, weights
        self.per_row, self.shared = per_row, shared
        self.width = weights.size
        self.predictions = predictions  # with residuals, outcomes are prediction + residual
        self.matrix = (not compiled.label_inputs() and not compiled.table_inputs()
                       and all(rank == 1 for rank in compiled.default_ranks().values())
                       and all(value.ndim == 1 for value in per_row.values()))
        # summed derivatives need equal weights (a common factor); levels= may weigh unequally
        self.summed = None
        if self.matrix and np.all(weights == weights[0]):
            self.summed = _summed_kernel(compiled)

    def row_outcomes(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), S) outcomes of the given rows."""
        if self.predictions is None:
            return self.outcomes[rows]
        return self.predictions[rows, None] + self.outcomes[None, :]

    def _arguments(self, rows: np.ndarray, d: np.ndarray, matrix: bool) -> dict[str, Any]:
        """Kernel inputs for decisions ``d`` (len(rows), G): (row, g) by outcome matrices
        with (row, g) vectors, or all flattened to (row, g, outcome)."""
        g = d.shape[1]
        y = self.row_outcomes(rows)
        shape = (rows.size, g, self.width)
        if matrix:
            arguments: dict[str, Any] = {
                self.label: np.broadcast_to(y[:, None, :], shape).reshape(-1, self.width),
                self.decision: np.ascontiguousarray(d).ravel(),
            }
            repeat = g
        else:
            arguments = {self.label: np.broadcast_to(y[:, None, :], shape).ravel(),
                         self.decision: np.broadcast_to(d[:, :, None], shape).ravel()}
            repeat = g * self.width
        for name, value in self.per_row.items():
            arguments[name] = np.repeat(value[rows], repeat, axis=0)
        return {**arguments, **self.shared}

    def values(self, rows: np.ndarray, d: np.ndarray) -> np.ndarray:
        """(len(rows), G) expected costs at decisions ``d`` (len(rows), G)."""
        raw = self.compiled(**self._arguments(rows, d, self.matrix))
        return _outcome_mean(raw.reshape(rows.size, d.shape[1], self.width), self.weights)

    def slope(self, rows: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(derivative, second derivative) of the expected cost in the decision at ``d``:
        (len(rows),) or (len(rows), G), results shaped alike."""
        grid = d[:, None] if d.ndim == 1 else d
        if self.summed is not None:
            g, h = self.summed.grad_and_hessian(self.decision,
                                                **self._arguments(rows, grid, True))
            return (g * self.weights[0]).reshape(d.shape), (h * self.weights[0]).reshape(d.shape)
        g, h = self.compiled.grad_and_hessian(self.decision,
                                              **self._arguments(rows, grid, False))
        shape = (*grid.shape, self.width)
        return (_outcome_mean(g.reshape(shape), self.weights).reshape(d.shape),
                _outcome_mean(h.reshape(shape), self.weights).reshape(d.shape))


_SUMMED: dict[int, tuple[CompiledLoss, CompiledLoss]] = {}


def _summed_kernel(compiled: CompiledLoss) -> CompiledLoss:
    """The ``reduction="sum"`` twin of a per-row kernel, kept while that kernel is."""
    kept = _SUMMED.get(id(compiled))
    if kept is not None and kept[0] is compiled:
        return kept[1]
    summed = CompiledLoss(compiled.loss, compiled.target, "sum", compiled.params)
    if len(_SUMMED) >= 32:
        _SUMMED.pop(next(iter(_SUMMED)))
    _SUMMED[id(compiled)] = (compiled, summed)
    return summed


def _outcome_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean over the last axis (outcomes), infinite costs of impossible outcomes
    (weight 0) left out."""
    values = np.asarray(values, dtype=np.float64)
    if np.all(weights > 0):
        return values @ weights
    return np.where(weights > 0, values * weights, 0.0).sum(axis=-1)


def _minimise(cost: _ExpectedCost, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The continuous minimiser of each row's expected cost, and its value there."""
    y = cost.row_outcomes(rows)
    low, high = y.min(axis=1), y.max(axis=1)
    # Pad past the outcomes: the minimiser of a cost of y - d lies within their range, but a
    # cost with a price on d itself may sit outside it; the grid then widens towards it.
    pad = np.maximum(0.25 * (high - low), 1e-3 * np.maximum(1.0, np.abs(high)))
    best_d, best_v = _search(cost, rows, y, low - pad, high + pad)

    # 5. A basin the window never saw (the grid widens only while its edge is lowest): a
    # fixed cost of ordering anything makes d = 0 best, far below the outcomes. A coarse
    # scan over d = 0 and +-scale * 10^(k/2) (both signs, 10^-3 to 10^3 of the outcomes'
    # magnitude); a scan point below the point found is searched around, the better kept.
    scale = np.maximum(np.maximum(np.abs(low), np.abs(high)), high - low)
    scale = np.where(scale > 0, scale, 1.0)
    scan = scale[:, None] * _SCAN
    scan_values = cost.values(rows, scan)
    scan_values = np.where(np.isnan(scan_values), np.inf, scan_values)
    k = np.argmin(scan_values, axis=1)
    index = np.arange(rows.size)
    lower = np.flatnonzero(scan_values[index, k] < best_v - 1e-9 * np.abs(best_v))
    if lower.size:
        centre, half = scan[lower, k[lower]], scale[lower] * _SCAN_HALF[k[lower]]
        d, v = _search(cost, rows[lower], y[lower], centre - half, centre + half)
        d = np.where(v <= scan_values[lower, k[lower]], d, centre)
        v = np.minimum(v, scan_values[lower, k[lower]])
        better = v < best_v[lower]
        best_d[lower[better]], best_v[lower[better]] = d[better], v[better]
    return best_d, best_v


def _search(cost: _ExpectedCost, rows: np.ndarray, y: np.ndarray, a: np.ndarray,
            b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(best point, its value) of each row's expected cost, searched from the window
    [a, b] (widened where its edge is lowest, or where it shows nothing finite or lower)."""
    t = np.linspace(0.0, 1.0, _FIRST_GRID)
    a, b = a.copy(), b.copy()

    # 1. The first grid, widened on the side where its edge is strictly the lowest point, and
    # on both sides while every point is infinite (or NaN), or all are equal (a plateau
    # beside a cheaper region, such as a capacity the outcomes lie beyond): nothing on it
    # says which way is down. A plateau is widened _FLAT_EXPANSIONS times at most (the cost
    # may be the same everywhere), a grid with nothing finite until _EXPANSIONS.
    grid = a[:, None] + (b - a)[:, None] * t
    values = cost.values(rows, grid)
    flat_widenings = np.zeros(rows.size, dtype=int)
    for attempt in range(_EXPANSIONS + 1):
        clean = np.where(np.isnan(values), np.inf, values)
        best = np.argmin(clean, axis=1)
        nothing_finite = ~np.isfinite(clean).any(axis=1)
        plateau = _level(clean) & (flat_widenings < _FLAT_EXPANSIONS)
        both = nothing_finite | plateau
        at_low = ((best == 0) & (clean[:, 0] < clean[:, 1])) | both
        at_high = ((best == t.size - 1) & (clean[:, -1] < clean[:, -2])) | both
        edge = np.flatnonzero(at_low | at_high)
        if edge.size == 0:
            break
        if attempt == _EXPANSIONS:
            _refuse_unsearchable(cost, rows, edge[0], grid, values, nothing_finite, at_low)
        flat_widenings[plateau] += 1
        width = (b - a)[edge]
        a[edge] = np.where(at_low[edge], a[edge] - 2 * width, a[edge])
        b[edge] = np.where(at_high[edge], b[edge] + 2 * width, b[edge])
        grid[edge] = a[edge, None] + (b - a)[edge, None] * t
        values[edge] = cost.values(rows[edge], grid[edge])
    # 2. Rows whose expected cost is verifiably convex on the grid (every secant slope lies
    # between the derivatives at its ends, which a step or a second basin breaks) go straight
    # to the derivative search from the best grid point's neighbours. The others zoom grids
    # into the few best points (a beam: the best basin of a non-convex or stepped cost is
    # not always around the first grid's best point).
    best_d, best_v, a, b = _bracket(grid, values)
    # a plateau still level after widening (a cost that does not depend on the decision
    # there): any point is as good; the middle one, nearest the outcomes, rather than the
    # far left edge
    level = np.flatnonzero(_level(clean))
    if level.size:
        middle = t.size // 2
        best_d[level], a[level], b[level] = (grid[level, middle], grid[level, middle - 1],
                                             grid[level, middle + 1])
    other = np.flatnonzero(~_convex_on_grid(cost, rows, grid, values))
    if other.size:
        clean_other = np.where(np.isnan(values[other]), np.inf, values[other])
        inner = clean_other[:, 1:-1]
        dips = ((inner < clean_other[:, :-2]) & (inner < clean_other[:, 2:])).sum(axis=1)
        # Several dips on the first grid: an oscillating cost, whose local minima about a
        # grid step apart alias (the grid's lowest points need not lie in the lowest basin).
        # Such rows get a grid 4 times as fine, and the beam also zooms into its other dips.
        wavy = dips >= _WAVY_DIPS
        for part_rows, fine in ((other[~wavy], False), (other[wavy], True)):
            if part_rows.size == 0:
                continue
            part_grid, part_values = grid[part_rows], values[part_rows]
            if fine:
                spread = np.linspace(0.0, 1.0, _FINE_GRID)
                part_grid = part_grid[:, :1] + (part_grid[:, -1:] - part_grid[:, :1]) * spread
                part_values = _values_in_parts(cost, rows[part_rows], part_grid)
            found = _beam(cost, rows[part_rows], part_grid, part_values, dips=fine)
            for array, part in zip((best_d, best_v, a, b), found):
                array[part_rows] = part

    # 3. Where the derivative changes sign across the bracket: bisection (Newton when it
    # lands inside), which reaches a piecewise-linear cost's kink, a weighted quantile of the
    # outcomes, to full precision in ~35 steps. Elsewhere (steps, plateaus), more zooms.
    slope_a, _ = cost.slope(rows, a)
    slope_b, _ = cost.slope(rows, b)
    signed = (slope_a < 0) & (slope_b > 0)
    solved = np.flatnonzero(signed)
    if solved.size:
        x = _bisect(cost, rows[solved], a[solved], b[solved])
        v = cost.values(rows[solved], x[:, None])[:, 0]
        better = v <= best_v[solved]
        best_d[solved[better]], best_v[solved[better]] = x[better], v[better]
        # A stationary point no lower than the grid's best: a step of the cost (which the
        # derivative does not see) lies in the bracket; search it by value like the others.
        signed[solved[~better]] = False
    rest = np.flatnonzero(~signed)
    for _ in range(_MAX_VALUE_ZOOMS):
        rest = rest[(b - a)[rest] > _XTOL * (1.0 + np.abs(best_d[rest]))]
        if rest.size == 0:
            break
        best_d, best_v, a, b = _zoom(cost, rows, rest, best_d, best_v, a, b)

    # 4. The outcomes next to the point found: costs of y - d have their kinks there, and a
    # sum of many steps (a tiered cost over hundreds of outcomes) its lowest tooth may be a
    # neighbour of the one the grids settled on.
    outcomes = np.sort(y, axis=1)
    position = (outcomes < best_d[:, None]).sum(axis=1)
    window = np.clip(position[:, None] + np.arange(-_NEIGHBOURS, _NEIGHBOURS), 0,
                     outcomes.shape[1] - 1)
    near = outcomes[np.arange(rows.size)[:, None], window]
    d, v, _, _ = _bracket(near, cost.values(rows, near))
    better = v < best_v
    best_d[better], best_v[better] = d[better], v[better]
    return best_d, best_v


def _level(values: np.ndarray) -> np.ndarray:
    """Per row: whether the finite ``values`` are all equal, to rounding (the expected
    cost's sum over outcomes rounds alike points apart in the last bits)."""
    with np.errstate(invalid="ignore"):
        top, bottom = values.max(axis=1), values.min(axis=1)
        return np.isfinite(top) & (top - bottom <= 1e-12 * np.abs(bottom))


def _refuse_unsearchable(cost: _ExpectedCost, rows: np.ndarray, position: int,
                         grid: np.ndarray, values: np.ndarray, nothing_finite: np.ndarray,
                         at_low: np.ndarray) -> None:
    """The error for a row whose search widened _EXPANSIONS times in vain: its expected
    cost kept falling towards an infinite decision, or was never finite."""
    row = _row_name(cost.row_ids, rows[position])
    note = _nonfinite_note(cost.per_row, int(rows[position]))
    span = f"from {grid[position, 0]:.6g} to {grid[position, -1]:.6g}"
    if np.isnan(values[position]).all():
        raise LossDomainError(f"the expected cost of row {row}{note} is NaN at every decision "
                              f"tried ({span}): the cost is undefined there; check its "
                              f"per-row inputs")
    if nothing_finite[position]:
        raise LossDomainError(f"the expected cost of row {row}{note} is infinite (or NaN) at "
                              f"every decision tried ({span}): no decision is better than "
                              f"another; check the row's inputs, or pass candidate "
                              f"decisions=")
    side = "-inf" if at_low[position] else "+inf"
    raise LossError(f"the expected cost of row {row} keeps falling as the decision goes "
                    f"to {side} (still at {grid[position, 0 if side == '-inf' else -1]:.6g}):"
                    f" it has no finite minimiser; bound the decision in the cost, or pass "
                    f"candidate decisions=")


def _convex_on_grid(cost: _ExpectedCost, rows: np.ndarray, grid: np.ndarray,
                    values: np.ndarray) -> np.ndarray:
    """Per row: whether the values on the evenly spaced ``grid`` are those of a convex
    function with the derivatives the kernel gives there (secant slopes between the end
    points' derivatives, which holds for subgradients at kinks too), to rounding."""
    slopes, _ = cost.slope(rows, grid)
    step = (grid[:, 1] - grid[:, 0])[:, None]
    with np.errstate(invalid="ignore", over="ignore"):
        secant = np.diff(values, axis=1) / step
        tolerance = 1e-9 * (np.abs(values).max(axis=1, keepdims=True) / step
                            + np.abs(slopes).max(axis=1, keepdims=True))
        fits = ((secant >= slopes[:, :-1] - tolerance) & (secant <= slopes[:, 1:] + tolerance))
    return fits.all(axis=1) & np.isfinite(values).all(axis=1) & np.isfinite(slopes).all(axis=1)


def _beam(cost: _ExpectedCost, rows: np.ndarray, grid: np.ndarray,
          values: np.ndarray, dips: bool = False) -> tuple[np.ndarray, ...]:
    """(best point, its value, the bracket around it) after zooming, level by level, into
    the neighbourhoods of the ``_BEAM`` lowest points of the previous level (``grid``: the
    first level, evenly spaced; with ``dips``, also the lowest points of ``_BEAM`` other
    dips of it)."""
    t = np.linspace(-1.0, 1.0, _ZOOM_GRID)
    index = np.arange(rows.size)[:, None]
    # every point carries the step of the grid it belongs to: its zoom spans one step either
    # side (neighbours in the merged grids of several beams may be duplicates)
    spacing = np.repeat((grid[:, 1] - grid[:, 0])[:, None], grid.shape[1], axis=1)
    for level in range(_ZOOMS):
        clean = np.where(np.isnan(values), np.inf, values)
        top = np.argsort(clean, axis=1, kind="stable")[:, :min(_BEAM, grid.shape[1])]
        if level == 0 and dips:
            # and the lowest points of as many other dips of the grid (no higher than either
            # neighbour): other basins, not only neighbours in one, since the grid's samples
            # rank basins only to their sampling error (an oscillating cost)
            padded = np.pad(clean, ((0, 0), (1, 1)), constant_values=np.inf)
            dip = (clean <= padded[:, :-2]) & (clean <= padded[:, 2:])
            dip[index, top] = False
            others = np.argsort(np.where(dip, clean, np.inf), axis=1, kind="stable")
            top = np.concatenate([top, others[:, :min(_BEAM, grid.shape[1])]], axis=1)
        centres, half = grid[index, top], spacing[index, top]
        grid = (centres[:, :, None] + half[:, :, None] * t).reshape(rows.size, -1)
        spacing = np.repeat(half * (t[1] - t[0]), t.size, axis=1)
        values = _values_in_parts(cost, rows, grid)
    clean = np.where(np.isnan(values), np.inf, values)
    best = np.argmin(clean, axis=1)
    flat = np.arange(rows.size)
    d, h = grid[flat, best], spacing[flat, best]
    return d, clean[flat, best], d - h, d + h


def _values_in_parts(cost: _ExpectedCost, rows: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``cost.values(rows, grid)`` a first grid's width of columns at a time: the blocks
    of rows are sized for that many decisions per row (max_elements)."""
    return np.concatenate([cost.values(rows, grid[:, i:i + _FIRST_GRID])
                           for i in range(0, grid.shape[1], _FIRST_GRID)], axis=1)


def _bracket(grid: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, ...]:
    """(best point, its value, the grid points either side) of each row's grid."""
    clean = np.where(np.isnan(values), np.inf, values)
    best = np.argmin(clean, axis=1)
    index = np.arange(grid.shape[0])
    last = grid.shape[1] - 1
    return (grid[index, best].copy(), clean[index, best].copy(),
            grid[index, np.maximum(best - 1, 0)].copy(),
            grid[index, np.minimum(best + 1, last)].copy())


def _zoom(cost: _ExpectedCost, rows: np.ndarray, which: np.ndarray, best_d: np.ndarray,
          best_v: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """A finer grid on [a, b] for the rows ``which``; the best point kept if no grid point
    beats it."""
    t = np.linspace(0.0, 1.0, _ZOOM_GRID)
    grid = a[which, None] + (b - a)[which, None] * t
    d, v, lo, hi = _bracket(grid, cost.values(rows[which], grid))
    better = v < best_v[which]
    best_d, best_v, a, b = best_d.copy(), best_v.copy(), a.copy(), b.copy()
    best_d[which[better]], best_v[which[better]] = d[better], v[better]
    a[which], b[which] = lo, hi
    return best_d, best_v, a, b


def _bisect(cost: _ExpectedCost, rows: np.ndarray, a: np.ndarray,
            b: np.ndarray) -> np.ndarray:
    """A zero of each row's expected-cost derivative in [a, b] (negative at a, positive at
    b): Newton steps when they stay inside the bracket, bisection otherwise."""
    a, b = a.copy(), b.copy()
    x = 0.5 * (a + b)
    active = np.arange(rows.size)
    for _ in range(_MAX_BISECTIONS):
        g, h = cost.slope(rows[active], x[active])
        xa = x[active]
        a[active] = np.where(g < 0, xa, a[active])
        b[active] = np.where(g > 0, xa, b[active])
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(h > 0, g / h, np.nan)
        newton = xa - step
        tolerance = _XTOL * (1.0 + np.abs(xa))
        # A Newton step this short has converged: stop at x rather than bisect, since the
        # point just moved onto the bracket's edge and a rounded step may fall outside it.
        converged = (g == 0) | (np.abs(step) <= tolerance)
        inside = (newton > a[active]) & (newton < b[active])
        nxt = np.where(inside, newton, 0.5 * (a[active] + b[active]))
        done = converged | ((b[active] - a[active]) <= tolerance)
        x[active] = np.where(converged, xa, nxt)
        active = active[~done]
        if active.size == 0:
            break
    return x
