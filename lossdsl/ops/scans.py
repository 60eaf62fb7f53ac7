"""Cumulative sums in the order of a key: the sums over risk sets.

``sum_from(e, t)`` gives each sample ``i`` the sum of ``e`` over the samples whose key is at
least its own, ``sum_j [t_j >= t_i] e_j`` (the risk set at time ``t_i``: every sample still
at risk, ties included, as Breslow's partial likelihood counts them); ``sum_upto(e, t)`` sums
over ``t_j <= t_i``. ``logsumexp_from(s, t)`` and ``logsumexp_upto(s, t)`` are the logarithms
of the sums of ``exp(s)`` over the same sets, each partial sum taken relative to the running
maximum, so they stay exact where the exponentials overflow or underflow: Cox's
``log sum_{t_j >= t_i} exp(z_j)`` at scores of +-1e4. A third argument, strata ``g``, keeps
every sum within the samples of the sample's own stratum (``g_j = g_i``): a stratified Cox
model's risk sets.

``sum_group(e, g, 0)`` is the third direction: each sample gets the sum of ``e`` over the
samples whose key equals its own (its run of ties), which is ``groupsum(e, g)`` where the
grouped samples have classes (``e`` an (N, K) matrix: each row gets its group's column
sums, ``passes/shapes.py``); the language has no name for it. Its sets are symmetric (``j``
is in ``i``'s when ``i`` is in ``j``'s), so it is its own transpose.

The keys and strata are constants of the loss (their derivative is zero: a sum over a set
changes only where the order of the keys does). The two directions are each other's
transpose, which is all the derivatives need: the gradient of ``sum_from`` is a ``sum_upto``
of the adjoint (``passes/diff.py``).

Kernels compute them between two passes over the samples (``passes/schedule.py``): a pass
writes the summands, keys and strata of each cumulative sum to arrays, :func:`key_order`
sorts the keys once (and keeps the order while they stay the same: a training loop's labels),
and :meth:`KeyOrder.scan` accumulates each sum in float64 (:func:`log_cumsum_exp` for the
logarithms); later passes read the sums. A group's totals stay a table of one row per group
(:meth:`KeyOrder.group_table`), which later passes read through each sample's group
(:attr:`KeyOrder.run_of_sample`). It is the one implementation: the reference
interpreter and the CPU and CUDA glue call it.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import njit

from ..ir.node import PASS_BOUNDARIES, Node
from .registry import Op, register

#: name -> (what it accumulates, which samples: "from" t_j >= t_i, "upto" t_j <= t_i,
#: "group" t_j = t_i)
SCANS: dict[str, tuple[str, str]] = {
    "sum_from": ("sum", "from"),
    "sum_upto": ("sum", "upto"),
    "logsumexp_from": ("logsumexp", "from"),
    "logsumexp_upto": ("logsumexp", "upto"),
    "sum_group": ("sum", "group"),
}
#: The scans over each sample's ties alone: a group's total (``groupsum`` of samples with
#: classes, whose values may be (N, K): each column summed over the group). Not a name of
#: the language.
GROUP_SCANS: frozenset[str] = frozenset(
    name for name, (_, direction) in SCANS.items() if direction == "group")


def is_column_total(n: Node) -> bool:
    """Whether ``n`` is ``colsum(e)``: the group total ``sum_group(e, 0, 0)`` whose key is
    the same number for every sample (one group of all the samples)."""
    return n.op in GROUP_SCANS and n.args[1].op == "const" and n.args[2].op == "const"


def scan_name(accumulates: str, direction: str) -> str:
    """The name of the scan that accumulates ``accumulates`` in ``direction``."""
    return f"{accumulates}_{direction}"


def transposed(direction: str) -> str:
    """The other direction: ``i`` is in ``j``'s "from" set exactly when ``j`` is in ``i``'s
    "upto" set; a group is its own transpose."""
    return {"from": "upto", "upto": "from"}.get(direction, direction)


@njit(cache=True, error_model="numpy")
def _rescaled_sums(weights, factors, out):  # pragma: no cover - compiled
    """out[p] = out[p - 1] * factors[p] + weights[p]: the running sum of the weights,
    rescaled wherever the shift of the weights changes (``out`` may be ``weights``)."""
    total = 0.0
    for p in range(weights.shape[0]):
        # a factor 0 starts a new sum (even after an infinite one), and an empty sum is 0
        # at any scale (its factor may be inf: a shift from -inf's 0)
        if total == 0.0 or factors[p] == 0.0:
            total = weights[p]
        else:
            total = total * factors[p] + weights[p]
        out[p] = total


@njit(cache=True)
def _same_values(given, kept):  # pragma: no cover - compiled
    """Whether ``given`` and ``kept`` (of one length) hold the same values, NaN equal to NaN:
    one pass that stops at the first difference, where ``numpy.array_equal(equal_nan=True)``
    makes several (a call's group ids are compared with the last call's every time)."""
    for p in range(kept.shape[0]):
        a, b = given[p], kept[p]
        if a != b and (a == a or b == b):
            return False
    return True


@njit(cache=True, error_model="numpy")
def _running_maximum(values, restarts, out):  # pragma: no cover - compiled
    """out[p] = the maximum of values[:p + 1] since the last restart (NaN stays until one)."""
    maximum = -math.inf
    for p in range(values.shape[0]):
        value = values[p]
        if restarts[p]:
            maximum = value
        elif value > maximum or value != value:
            if maximum == maximum:
                maximum = value
        out[p] = maximum


def _log_cumsum_exp_into(values: np.ndarray, restarts: np.ndarray | None, shift: np.ndarray,
                         out: np.ndarray) -> None:
    """:func:`log_cumsum_exp` of ``values`` into ``out``, using ``shift`` as scratch and
    overwriting ``values`` (all three arrays of the same length, views allowed): no array is
    allocated, so a call faults in no fresh memory."""
    if restarts is None:
        np.maximum.accumulate(values, out=shift)
    else:
        _running_maximum(values, restarts, shift)
    shift[~np.isfinite(shift)] = 0.0  # +-inf (or NaN): unshifted
    np.subtract(values, shift, out=out)
    np.exp(out, out=out)  # the terms, each at most 1
    factors = values  # the rescaling from one shift to the next, 0 before the first
    factors[0] = 0.0
    np.subtract(shift[:-1], shift[1:], out=factors[1:])
    np.exp(factors[1:], out=factors[1:])
    if restarts is not None:
        factors[restarts] = 0.0
    _rescaled_sums(out, factors, out)
    np.log(out, out=out)
    out += shift


def log_cumsum_exp(values: np.ndarray, restarts: np.ndarray | None = None) -> np.ndarray:
    """log(cumsum(exp(values))) without overflow or underflow, started anew wherever
    ``restarts`` is True: each partial sum is taken relative to the running maximum so far
    (every term at most 1, the maximum's exactly 1), so exp and log run vectorised over the
    whole array and only the running sums are loops. -inf terms add nothing; NaN propagates
    from where it appears."""
    values = np.array(values, dtype=np.float64)
    out = np.empty_like(values)
    if values.shape[0]:
        with np.errstate(all="ignore"):
            _log_cumsum_exp_into(values, restarts, np.empty_like(values), out)
    return out


class KeyOrder:
    """The samples sorted by their keys (within their strata), once for every cumulative sum
    over those keys: the stable order, where each stratum starts, and for each sorted
    position the first and last position of its run of tied keys (whose sums are the run's).
    A NaN key or stratum sorts last and belongs to no set."""

    def __init__(self, keys: np.ndarray, strata: np.ndarray):
        # copies: compared with later calls' keys
        self.keys = np.array(keys, dtype=np.float64).reshape(-1)
        self.strata = np.array(np.broadcast_to(strata, self.keys.shape), dtype=np.float64)
        known = np.flatnonzero(~(np.isnan(self.keys) | np.isnan(self.strata)))
        stratified = known.shape[0] > 0 and np.any(self.strata[known] != self.strata[known[0]])
        if stratified:  # by stratum, then by key (lexsort sorts by its last key first)
            self.order = known[np.lexsort((self.keys[known], self.strata[known]))]
        else:
            self.order = known[np.argsort(self.keys[known], kind="stable")]
        count = self.order.shape[0]
        ordered, groups = self.keys[self.order], self.strata[self.order]
        positions = np.arange(count)
        new_stratum = np.zeros(count, dtype=bool)
        if count:
            new_stratum[0] = True
        if stratified:
            new_stratum[1:] = groups[1:] != groups[:-1]
        self.restarts = new_stratum if stratified else None
        starts = new_stratum.copy()
        starts[1:] |= ordered[1:] != ordered[:-1]
        ends = np.ones(count, dtype=bool)
        ends[:-1] = starts[1:]
        self.last_of_stratum = np.ones(count, dtype=bool)
        self.last_of_stratum[:-1] = new_stratum[1:]
        self.run_starts = np.flatnonzero(starts)  # where each run of tied keys starts
        self.run_of = np.cumsum(starts) - 1  # the run of each sorted position
        # each sample's run (a group's total), the samples of NaN keys one past the last
        self.run_of_sample = np.full(self.keys.shape[0], self.run_starts.shape[0], np.intp)
        self.run_of_sample[self.order] = self.run_of
        # the samples given in key order already (a batch of images, one after another)
        self.in_order = count == self.keys.shape[0] and bool(np.all(self.order == positions))
        self.first = np.maximum.accumulate(np.where(starts, positions, 0))
        self.last = np.minimum.accumulate(np.where(ends, positions, count)[::-1])[::-1]
        self._work: np.ndarray | None = None  # scratch rows of the sums (see scan)

    def same_keys(self, keys: np.ndarray, strata: np.ndarray) -> bool:
        """Whether ``keys`` and ``strata`` are the ones this order was made for."""
        return (keys.shape == self.keys.shape and _same_values(keys, self.keys)
                and _same_values(np.broadcast_to(strata, keys.shape), self.strata))

    def group_table(self, values: np.ndarray) -> np.ndarray:
        """The totals of ``values`` over each run of tied keys (each group), in float64, one
        row per run in key order and a last row of NaN for the samples whose key is NaN (in
        no group): ``values`` one per key, one row (N, K) per key (each column summed), or a
        scalar. Sample ``i``'s total is row :attr:`run_of_sample` ``[i]``, which kernels read
        in place of an (N, K) array of every sample's total (:meth:`group_totals`)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim < 2:
            values = np.broadcast_to(values, self.keys.shape)
        totals = np.full((self.run_starts.shape[0] + 1, *values.shape[1:]), np.nan)
        if self.order.shape[0]:
            # np.take: row gathers of (N, K) by fancy indexing cost several times more
            ordered = values if self.in_order else values.take(self.order, axis=0)
            with np.errstate(all="ignore"):
                np.add.reduceat(ordered, self.run_starts, axis=0, out=totals[:-1])
        return totals

    def group_totals(self, values: np.ndarray) -> np.ndarray:
        """Each sample's total of ``values`` over its run of tied keys (its group), in
        float64: :meth:`group_table` gathered by sample, NaN for a sample whose key is NaN."""
        return self.group_table(values).take(self.run_of_sample, axis=0)

    def scan(self, name: str, values: np.ndarray) -> np.ndarray:
        """Cumulative sum ``name`` of ``values`` (one per key, or a scalar), in float64; a
        group's total (:meth:`group_totals`) of values that may be rows (N, K)."""
        accumulates, direction = SCANS[name]
        if direction == "group":
            return self.group_totals(values)
        values = np.broadcast_to(np.asarray(values, dtype=np.float64), self.keys.shape)
        result = np.full(self.keys.shape, np.nan)
        count = self.order.shape[0]
        if not count:
            return result
        if self._work is None:  # kept with the order: reused by every later sum
            self._work = np.empty((3, count))
        ordered, shift, partial = self._work
        np.take(values, self.order, out=ordered)
        restarts = self.restarts
        runs = self.last
        if direction == "from":  # from the end: the same arrays, read backwards
            ordered, shift, partial = ordered[::-1], shift[::-1], partial[::-1]
            restarts = None if restarts is None else self.last_of_stratum[::-1]
            runs = self.first  # a run's sum is at its first position, counting from the end
        with np.errstate(all="ignore"):
            if accumulates == "logsumexp":
                _log_cumsum_exp_into(ordered, restarts, shift, partial)
            elif restarts is None:
                np.cumsum(ordered, out=partial)
            else:
                _rescaled_sums(ordered, np.where(restarts, 0.0, 1.0), partial)
        gathered, _, sums = self._work  # in sorted order, whichever way they were summed
        np.take(sums, runs, out=gathered)
        result[self.order] = gathered
        return result


_LAST_ORDER = threading.local()


def key_order(keys: np.ndarray, strata: np.ndarray | float = 0.0) -> KeyOrder:
    """The order of ``keys`` within ``strata``: the one made last in this thread when they
    are the same (the cumulative sums of a call share their keys, and a training loop's calls
    do), else a new one (a sort; comparing the keys costs one pass)."""
    keys = np.asarray(keys, dtype=np.float64).reshape(-1)
    strata = np.asarray(strata, dtype=np.float64).reshape(-1) if np.ndim(strata) else strata
    last = getattr(_LAST_ORDER, "order", None)
    if last is None or not last.same_keys(keys, strata):
        last = _LAST_ORDER.order = KeyOrder(keys, strata)
    return last


def scan(name: str, values: np.ndarray, keys: np.ndarray,
         strata: np.ndarray | float = 0.0) -> np.ndarray:
    """``name`` (a key of :data:`SCANS`) of ``values`` over the samples ordered by ``keys``
    within each stratum, in float64: one result per key. A sample whose key or stratum is
    NaN belongs to no set and gets NaN; ``values`` and ``strata`` may be scalars (the same
    for every sample)."""
    return key_order(keys, strata).scan(name, values)


# scan(e, t, strata): the language writes sum_from(e, t) (one stratum: the strata are the
# constant 0) or sum_from(e, t, g); resolve.py gives every node its three arguments
register(*(
    Op(name, 3, "scan",
       doc=("the " + ("sum of e" if accumulates == "sum" else "log of the sum of exp(s)")
            + " over the samples (of its stratum g) whose key t is "
            + ("at least" if direction == "from" else "at most") + " this sample's"),
       latex=(r"\sum_{{j:\,{1}_j " + (r"\ge" if direction == "from" else r"\le")
              + r" {1}_i}} {0}_j" if accumulates == "sum" else
              r"\log\sum_{{j:\,{1}_j " + (r"\ge" if direction == "from" else r"\le")
              + r" {1}_i}} e^{{{0}_j}}"))
    for name, (accumulates, direction) in SCANS.items() if name not in GROUP_SCANS
), Op("sum_group", 3, "scan",
      doc="the sum of e over the samples whose key g is this sample's (its group), column by "
          "column for rows (N, K): groupsum(e, g) of samples with classes",
      latex=r"\sum_{{j:\,{1}_j = {1}_i}} {0}_j"))
PASS_BOUNDARIES.update(SCANS)
