"""Building nodes in canonical form: ``make``, the constructor every stage uses.

``make(op, args)`` computes the node's axes, folds constants, orders the arguments of
commutative operations so that equal expressions are the same node (CSE by hash-consing), and
applies the local canonical identities (``x*1``, ``x+0``, ``x-x``, ``--x``, ``log(exp(x))``,
...) so graphs stay small as they are built. The identities themselves are the rules of the
``canonicalize`` phase (``passes/rules/canonicalize.py``); ``make`` applies the first one that
fires to the node it is about to return. :func:`node` (re-exported here) builds a node as
given, without any of this. A pass that rewrites a graph rebuilds each node from its new
arguments with :func:`rebuilt`, which keeps the axis a reduction reduced where a rule took
from its argument the only term along it (``make`` alone would infer another).

Assumptions (the usual ones of symbolic algebra systems such as SymPy): ``x*0 -> 0`` and
``x-x -> 0`` assume ``x`` is finite. ``x/x`` is never simplified (it is NaN at 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..ops.primitives import OPERATIONS, ROW, SCAN
from ..ops.scans import is_column_total
from ..reference import ELEMENTWISE_NUMPY, fold
from .axes import Axis
from .node import Axes, Node, axis_length, constant, node

if TYPE_CHECKING:
    from ..passes.rewrite import Phase

__all__ = [
    "ONE",
    "REDUCTIONS",
    "ZERO",
    "apply",
    "install_canonical_rules",
    "make",
    "node",
    "rebuilt",
    "reduced_along",
    "result_axes",
]

# the registry's commutative operations (min and max are not among them: on ties the
# derivative goes to the argument written first)
COMMUTATIVE = frozenset(name for name, op in OPERATIONS.items() if op.commutative)

ZERO = constant(0.0)
ONE = constant(1.0)

#: The reductions: one value per row (the registry's row reductions) or a scalar (``sum``),
#: of their first argument along its last axis (``sum``: along every axis).
REDUCTIONS = frozenset({"sum", *ROW})

# Set by passes.rules.canonicalize when it is imported (see the end of this module).
_canonical_rules: Phase | None = None


def result_axes(op: str, args: tuple[Node, ...], given: Axes | None = None) -> Axes | None:
    """The axes of ``op`` applied to ``args`` (None while any argument's axes are unknown)."""
    if op in ("const", "param", "count"):
        return ()
    if op == "input":
        return given
    if any(a.axes is None for a in args):
        return None
    if op == "sum":
        return ()
    if op in ROW:  # one value per row (per class, of a class pair sum's partner classes)
        return args[0].axes[:-1]
    if op == "class_index":
        if not args[0].axes or given is not None:
            # a scalar label (pick(z, 1), onehot(1)) names no sample domain of its own: the
            # class axis is the one it meets, which shapes.specialize infers and passes in
            # (and a row maximum's derivative names the axis of its row: classes or items)
            return given
        sample = Axis(args[0].axes[0])
        return (sample, sample.classes())
    if op in ("at_partner", "partner_first"):  # a value per partner of each sample
        if given is not None or not args[0].axes:
            return given
        sample = Axis(args[0].axes[0])
        return (sample, sample.items())
    if op == "pairdot":  # the rows (n<d>, n<d>k) of two inputs: a value per pair
        sample = Axis(args[0].axes[0])
        return (sample, sample.items())
    if op == "pairmatvec":  # per pair (n<d>, n<d>g) times rows (n<d>, n<d>k): rows
        return args[1].axes
    if op == "table_row":
        if given is not None or not args[1].axes:
            return given
        sample = Axis(args[1].axes[0])
        return (sample, sample.classes())
    longest: Axes = ()
    for a in args:
        if len(a.axes) > len(longest):
            longest = a.axes
    return longest


def make(
    op: str,
    args: tuple[Node, ...] | list[Node] = (),
    value: object = None,
    axes: Axes | None = None,
) -> Node:
    """Build ``op(args)`` in canonical, simplified form (the constructor every pass uses)."""
    args = tuple(args)
    if op in ELEMENTWISE_NUMPY and args and all(a.op == "const" for a in args):
        if op != "stop_gradient":
            return constant(fold(op, [a.value for a in args]))
    if op in COMMUTATIVE and len(args) == 2:
        a, b = args
        # constants first, then a stable structural order, so a*b and b*a are one node
        if (b.op == "const" and a.op != "const") or (
            (a.op == "const") == (b.op == "const") and b.key < a.key
        ):
            args = (b, a)
    built = node(op, args, value, result_axes(op, args, axes))
    if _canonical_rules is not None and op in _canonical_rules.by_op:
        # A replacement was itself built by make, so it is canonical already: one rule at most.
        replacement = _canonical_rules.rewrite_once(built)
        if replacement is not None:
            return replacement
    return built


def rebuilt(old: Node, args: tuple[Node, ...]) -> Node:
    """``old`` built again by :func:`make` from new arguments ``args`` (what a pass that
    rewrites a graph does with each node): ``make(old.op, args, old.value, old.axes)``,
    except where a rewrite left ``args`` without an axis that ``old`` reads them along.

    ``make`` infers a reduction's axes from its argument, so a rule that drops the only term
    of a reduction's argument that varies along the reduced axis (the carriers phase dropping
    ``s - stop_gradient(s)`` next to a group's total, a pair sum whose summand is
    ``exp(partner(s) - stop_gradient(partner(s)))``) would have ``make`` reduce another axis,
    or none: a silent wrong number. The rebuilt reduction reduces the same axis as before,
    of its new argument broadcast back along it (:func:`reduced_along`); a value stored and
    read at the partners (``at_partner``) that is now the same at every partner is that
    value. A column total (``colsum``: a group total whose key, the same for every sample,
    gives the node no axes of its own) of a value that no longer varies along the samples
    is that value times the number of samples; the other scans keep the samples' axis from
    their keys, so the kernels sum the value as it is. With this, any rule may simplify
    inside a reduction."""
    if args and old.args and old.args[0].axes and args[0].axes is not None:
        # a sum reduces every axis of its argument, a row reduction the last, a scan the
        # samples (the first)
        reduced = (old.args[0].axes if old.op == "sum" else old.args[0].axes[:1]
                   if old.op in SCAN else old.args[0].axes[-1:])
        lost = any(axis not in args[0].axes for axis in reduced)
        if lost and old.op in REDUCTIONS:
            return reduced_along(old.op, args, old.args[0].axes)
        if lost and old.op == "at_partner":
            return args[0]
        if lost and is_column_total(old):
            return make("mul", (args[0], axis_length(reduced[0])))
    return make(old.op, args, old.value, old.axes)


def reduced_along(op: str, args: tuple[Node, ...], axes: Axes) -> Node:
    """The reduction ``op`` (``sum``, a row reduction or the ``rowmean`` macro) of its first
    argument ``args[0]`` broadcast to ``axes`` (the argument may lack the reduced axis: it
    does not vary along it), built without a broadcast: a sum over an axis of a value that
    does not vary along it is that value times the axis' length (a group's size, a sample's
    number of partners), a maximum or a mean is the value, sparsemax's threshold of a row of
    equal values ``x`` is ``x - 1/K``, and the shift ``b`` that calibrates a row of equal
    scores ``z`` to the row's target ``t`` solves ``n sigmoid(z + b) = t``: ``log t - log(n -
    t) - z``. Where the argument has the reduced axis, ``make(op, args)``."""
    x = args[0]
    if op == "sum":  # every element: each row's along the row axes first, then the samples'
        total = x
        for axis in reversed(axes[1:]):
            if axis not in total.axes:
                total = make("mul", (total, axis_length(axis)))
        if axes[0] in total.axes:
            return make("sum", (total,))
        total = make("mul", (total, axis_length(axes[0])))
        return make("sum", (total,)) if total.axes else total  # still along a row axis
    axis = axes[-1]
    if axis in x.axes:
        return make(op, args)
    length = axis_length(axis)
    if op == "rowsum":
        return make("mul", (x, length))
    if op in ("rowmax", "rowmean"):
        return x
    if op == "sparsemax_threshold":
        return make("sub", (x, make("div", (ONE, length))))
    if op == "logit_shift":
        z, t = args
        odds = make("sub", (make("log", (t,)), make("log", (make("sub", (length, t)),))))
        return make("sub", (odds, z))
    raise ValueError(f"{op} is not a reduction")


def apply(op: str, *args: Node) -> Node:
    """``make(op, args)`` with the arguments listed: ``apply("div", ONE, x)``."""
    return make(op, args)


def install_canonical_rules(phase: Phase) -> None:
    """Make ``phase`` the identities that :func:`make` applies (the canonicalize phase)."""
    global _canonical_rules
    _canonical_rules = phase


# The identities are stated with the other rewrites, and build their replacements with make:
# imported last, once make exists, so that importing either module first works.
from ..passes.rules import canonicalize as _canonicalize  # noqa: E402, F401
