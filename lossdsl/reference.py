"""A NumPy interpreter of the expression graph: the reference semantics of every operation.

Used to fold constants and, in tests, as the oracle the compiled kernels are compared with.
Values are float64 arrays shaped by each node's axes: ``()``, ``(N,)`` or ``(N, K)``, and the
items of grouped samples (axes ``(n<d>, n<d>g)``) one flat array in group order, whose rows
the ``offsets`` of their axis delimit. The
elementwise operations are their registry records' ``reference`` (:mod:`lossdsl.ops`); the
leaves, reductions and lookups, which depend on axes, are the methods of :class:`Evaluator`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .ir.axes import Axis, partner_of
from .ir.node import Axes, Node
from .ir.visit import NodeVisitor
from .ops import operations
from .ops.scans import scan

#: The NumPy implementation of every elementwise operation, from the registry's records
#: (generated kernels' scalar glue calls these too).
ELEMENTWISE_NUMPY: dict[str, Callable[..., np.ndarray]] = {
    op.name: op.reference for op in operations("elementwise") if op.reference is not None
}


#: The scalar glue's operations (``run``'s arithmetic between a kernel's loops): NumPy's,
#: except that the four arithmetic operators and negation are Python's operators, which on
#: the glue's NumPy float64 scalars give the ufuncs' IEEE results (and warnings, under the
#: same ``errstate``) in a tenth of a ufunc call's time, and on :mod:`lossdsl.dask`'s lazy
#: scalars build the same graph.
GLUE_OPERATIONS: dict[str, Callable[..., Any]] = {
    **ELEMENTWISE_NUMPY, "add": operator.add, "sub": operator.sub, "mul": operator.mul,
    "div": operator.truediv, "neg": operator.neg,
}


def fold(op: str, values: list[float]) -> float:
    """The value of an elementwise operation on constant arguments (for constant folding)."""
    with np.errstate(all="ignore"):
        return float(ELEMENTWISE_NUMPY[op](*[np.float64(v) for v in values]))


class Unbound(KeyError):
    """The graph needs something the evaluation was not given: an input, a param, a count,
    or a class axis (a constant expression such as a param's value has none, so
    ``param a = rowsum(3)`` is not constant). A KeyError, as a missing binding is."""


class Evaluator(NodeVisitor[np.ndarray]):
    """Evaluates a typed graph on NumPy arrays; one method per kind of leaf or reduction,
    the elementwise operations by their registry records' references."""

    method_prefix = "eval_"
    pass_arguments = True

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        params: Mapping[str, float] | None = None,
        counts: Mapping[str, int] | None = None,
        offsets: Mapping[str, np.ndarray] | None = None,
        partners: Mapping[str, np.ndarray] | None = None,
    ):
        super().__init__()
        self.inputs = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
        self.params = dict(params or {})
        self.counts = dict(counts or {})
        self.offsets = {axis: np.asarray(o, dtype=np.int64) for axis, o in (offsets or {}).items()}
        # the partners of each sample of a pair sum: axis -> the sample each slot reads
        self.partners = {axis: np.asarray(p, dtype=np.int64)
                         for axis, p in (partners or {}).items()}

    def evaluate(self, roots: list[Node]) -> list[np.ndarray]:
        """The values of ``roots`` (float64 arrays and scalars)."""
        with np.errstate(all="ignore"):
            return self.run(roots)

    def fallback(self, n: Node, *args: np.ndarray) -> np.ndarray:
        aligned = [self._align(v, a.axes, n.axes) for v, a in zip(args, n.args)]
        return ELEMENTWISE_NUMPY[n.op](*aligned)

    def _align(self, value: np.ndarray, axes: Axes, out_axes: Axes) -> np.ndarray:
        """Broadcast a value with ``axes`` against ``out_axes``: a vector meets a matrix
        row-wise, a group's value is repeated for each of its items."""
        if len(axes) == 1 and len(out_axes) == 2:
            if Axis(out_axes[1]).is_ragged:
                return np.repeat(value, np.diff(self._offsets(out_axes[1])))
            return value[:, None]
        return value

    def _offsets(self, axis: str) -> np.ndarray:
        return self._bound(self.offsets, axis, "offsets of")

    def _bound(self, table: Mapping, key, what: str):
        if key not in table:
            raise Unbound(f"{what} {key!r}")
        return table[key]

    def _rows(self, value: np.ndarray) -> np.ndarray:
        """``value`` as the (N, K) matrix a row reduction reduces."""
        if np.ndim(value) != 2:
            raise Unbound("class axis")
        return value

    def eval_const(self, n):
        return np.float64(n.value)

    def eval_input(self, n):
        base = partner_of(n.value)
        if base is not None and not Axis(n.axes[1]).is_ragged:
            # a matrix input's rows read at the partner (within pairmatvec's row argument):
            # laid out by sample, pairmatvec picks each pair's partner row
            return self._bound(self.inputs, base, "input")
        if base is not None:  # the input at the partner of each pair
            return self._bound(self.inputs, base, "input")[self._partners(n.axes[1])]
        return self._bound(self.inputs, n.value, "input")

    def _pair_rows(self, axis: str) -> np.ndarray:
        """The sample i of each pair slot (i, j) of the partners ``axis``."""
        offsets = self._offsets(axis)
        return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))

    def eval_pairdot(self, n, u, v):
        axis = n.axes[1]
        return np.sum(self._rows(u)[self._pair_rows(axis)]
                      * self._rows(v)[self._partners(axis)], axis=1)

    def eval_pairmatvec(self, n, weights, rows):
        axis = n.args[0].axes[1]
        terms = np.asarray(weights)[:, None] * self._rows(rows)[self._partners(axis)]
        offsets = self._offsets(axis)
        out = np.zeros((len(offsets) - 1, terms.shape[1]))
        np.add.at(out, self._pair_rows(axis), terms)
        return out

    def _partners(self, axis: str) -> np.ndarray:
        return self._bound(self.partners, axis, "partners of")

    def eval_at_partner(self, n, value):
        rows = len(self._offsets(n.axes[1])) - 1
        return np.broadcast_to(value, (rows,))[self._partners(n.axes[1])]

    def eval_partner_first(self, n, ids):
        offsets = self._offsets(n.axes[1])
        rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        return (self._partners(n.axes[1]) < rows).astype(np.float64)

    def eval_param(self, n):
        return np.float64(self._bound(self.params, n.value, "param"))

    def eval_count(self, n):
        if n.axes:  # the number of items of each group
            return np.diff(self._offsets(n.value)).astype(np.float64)
        return np.float64(self._bound(self.counts, n.value, "count"))

    def eval_class_index(self, n, label):
        if n.axes is None or len(n.axes) != 2:  # untyped: no class axis to index
            raise Unbound("class axis")
        width = self._bound(self.counts, n.axes[1], "count")
        rows = label.shape[0] if np.ndim(label) else 1
        return np.broadcast_to(np.arange(width, dtype=np.float64), (rows, width))

    def eval_table_row(self, n, table, labels):
        rows = table[np.asarray(labels).astype(np.int64)]
        if rows.ndim == 1:  # one label for every sample
            rows = np.broadcast_to(rows, (self.counts[n.axes[0]], rows.shape[0]))
        return rows

    def eval_count_as(self, n, value, count):  # count_as(l, s) is l; s only counts samples
        return value

    def eval_rowsum(self, n, x):
        if self._ragged(n):
            return np.add.reduceat(x, self._offsets(n.args[0].axes[1])[:-1])
        return self._rows(x).sum(axis=1)

    def eval_rowmax(self, n, x):
        if self._ragged(n):
            return np.maximum.reduceat(x, self._offsets(n.args[0].axes[1])[:-1])
        return self._rows(x).max(axis=1)

    def eval_sparsemax_threshold(self, n, x):
        return simplex_threshold(self._rows(x))

    def eval_logit_shift(self, n, z, t):
        if self._ragged(n):
            offsets = self._offsets(n.args[0].axes[1])
            rows = len(offsets) - 1
            segments = np.repeat(np.arange(rows), np.diff(offsets))
        else:
            rows, width = self._rows(z).shape
            segments = np.repeat(np.arange(rows), width)
        targets = np.broadcast_to(np.asarray(t, dtype=np.float64), (rows,))
        return logit_shifts(np.ravel(z), targets, segments)

    @staticmethod
    def _ragged(n: Node) -> bool:
        """Whether row reduction ``n`` reduces the items of groups (a flat array)."""
        axes = n.args[0].axes
        return axes is not None and len(axes) == 2 and Axis(axes[1]).is_ragged

    def eval_sum(self, n, x):
        return np.float64(x.sum())

    def _scan(self, n, values, keys, strata):
        shape = np.broadcast_shapes(np.shape(values), np.shape(keys), np.shape(strata))
        return scan(n.op, values, np.broadcast_to(keys, shape),
                    np.broadcast_to(strata, shape)).reshape(shape)

    eval_sum_from = eval_sum_upto = eval_logsumexp_from = eval_logsumexp_upto = _scan

    def eval_sum_group(self, n, values, keys, strata):
        """Each sample's group total (each column of rows (N, K) summed over the group)."""
        samples = np.shape(keys)[0] if np.ndim(keys) else np.shape(values)[0]
        return scan(n.op, values, np.broadcast_to(keys, (samples,)),
                    np.broadcast_to(strata, (samples,)))


def evaluate(
    roots: list[Node],
    inputs: Mapping[str, np.ndarray],
    params: Mapping[str, float] | None = None,
    counts: Mapping[str, int] | None = None,
    offsets: Mapping[str, np.ndarray] | None = None,
    partners: Mapping[str, np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Evaluate typed graph ``roots`` with NumPy (float64); ``offsets``: for each axis of
    groups' items, where each group's items start in the flat arrays (and where they end);
    ``partners``: for each axis of the partners of a pair sum, the sample each slot reads."""
    return Evaluator(inputs, params, counts, offsets, partners).evaluate(roots)


def simplex_threshold(rows: np.ndarray) -> np.ndarray:
    """The tau of each row of ``rows`` (N, K) with sum_k max(z_k - tau, 0) = 1, by sorting
    (Held, Wolfe and Crowder; Martins and Astudillo's sparsemax): the support is the k largest
    entries with 1 + k u_k > u_1 + ... + u_k for u sorted in decreasing order. NaN for a row
    holding NaN or +inf, or only -inf (no finite support), as the kernels give."""
    rows = np.asarray(rows, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ordered = -np.sort(-rows, axis=1)
        totals = np.cumsum(ordered, axis=1)
        sizes = np.arange(1, rows.shape[1] + 1)
        support = np.count_nonzero(1.0 + sizes * ordered > totals, axis=1)
        picked = totals[np.arange(rows.shape[0]), np.maximum(support - 1, 0)]
        tau = (picked - 1.0) / np.maximum(support, 1)
    defined = (support > 0) & ~np.isnan(rows).any(axis=1) & ~(rows == np.inf).any(axis=1)
    return np.where(defined, tau, np.nan)


def _log_sums(terms: np.ndarray, taken: np.ndarray, segments: np.ndarray,
              rows: int) -> np.ndarray:
    """The log of each row's sum of ``exp(terms)`` over the ``taken`` elements (-inf for
    none), relative to the row's largest term."""
    largest = np.full(rows, -np.inf)
    np.maximum.at(largest, segments[taken], terms[taken])
    shifted = np.where(taken, terms - np.where(np.isfinite(largest), largest, 0.0)[segments],
                       -np.inf)
    total = np.bincount(segments, weights=np.exp(shifted), minlength=rows)
    with np.errstate(divide="ignore"):
        return largest + np.log(total)


def logit_shifts(z: np.ndarray, targets: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """For each row r (the elements of ``z`` whose ``segments`` is r), the b with
    ``sum sigmoid(z + b) = targets[r]``, by bisection to adjacent doubles (the sum falls as b
    grows; b = logit(t/n) - max z and logit(t/n) - min z bracket it, n the row's finite
    scores, an infinite score counting as a sure 1 or 0). The sign of ``t - sum sigmoid(u)``
    (``u = z + b``) is taken from ``(t - #{u >= 0}) + A - B`` (A the sum of ``sigmoid(-u)``
    over ``u >= 0``, B that of ``sigmoid(u)`` over ``u < 0``), from ``log A - log B`` where
    the whole part is 0, so that scores far apart, whose terms underflow, still have their
    root. -inf where the target is 0, +inf where it is n, NaN where no b exists or a score
    or the target is NaN."""
    z = np.asarray(z, dtype=np.float64)
    rows = targets.shape[0]

    def per_row(values: np.ndarray) -> np.ndarray:
        return np.bincount(segments, weights=values, minlength=rows)

    finite = np.isfinite(z)
    target = targets - per_row((z == np.inf).astype(np.float64))
    count = per_row(finite.astype(np.float64))
    clean = per_row(np.isnan(z).astype(np.float64)) == 0
    highest, lowest = np.full(rows, -np.inf), np.full(rows, np.inf)
    np.maximum.at(highest, segments[finite], z[finite])
    np.minimum.at(lowest, segments[finite], z[finite])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        solvable = clean & (target > 0) & (target < count)
        p = np.where(solvable, target / count, 0.5)
        logit = np.log(p) - np.log1p(-p)
        low = np.where(solvable, logit - highest, 0.0)
        high = np.where(solvable, logit - lowest, 0.0)
        scores = np.where(finite, z, 0.0)
        active = solvable.copy()
        while active.any():
            middle = 0.5 * low + 0.5 * high
            active &= (low < middle) & (middle < high)
            u = scores + middle[segments]
            terms = -np.abs(u) - np.log1p(np.exp(-np.abs(u)))  # log sigmoid(-|u|)
            side_a = finite & (u >= 0)
            log_a = _log_sums(terms, side_a, segments, rows)
            log_b = _log_sums(terms, finite & (u < 0), segments, rows)
            whole = target - per_row(side_a.astype(np.float64))
            residual = np.where(whole != 0, whole + np.exp(log_a) - np.exp(log_b),
                                log_a - log_b)
            low = np.where(active & (residual >= 0), middle, low)
            high = np.where(active & (residual <= 0), middle, high)
        shift = np.where(solvable, 0.5 * low + 0.5 * high, np.nan)
    shift = np.where(clean & (target == count), np.inf, shift)
    return np.where(clean & (target == 0), -np.inf, shift)
