"""Building nodes in canonical form: ``make``, the constructor every stage uses.

``make(op, args)`` computes the node's axes, folds constants, orders the arguments of
commutative operations so that equal expressions are the same node (CSE by hash-consing), and
applies the local canonical identities (``x*1``, ``x+0``, ``x-x``, ``--x``, ``log(exp(x))``,
...) so graphs stay small as they are built. The identities themselves are the rules of the
``canonicalize`` phase (``passes/rules/canonicalize.py``); ``make`` applies the first one that
fires to the node it is about to return. :func:`node` (re-exported here) builds a node as
given, without any of this.

Assumptions (the usual ones of symbolic algebra systems such as SymPy): ``x*0 -> 0`` and
``x-x -> 0`` assume ``x`` is finite. ``x/x`` is never simplified (it is NaN at 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..ops.primitives import OPERATIONS, ROW
from ..reference import ELEMENTWISE_NUMPY, fold
from .axes import Axis
from .node import Axes, Node, constant, node

if TYPE_CHECKING:
    from ..passes.rewrite import Phase

__all__ = [
    "ONE",
    "ZERO",
    "apply",
    "install_canonical_rules",
    "make",
    "node",
    "result_axes",
]

# the registry's commutative operations (min and max are not among them: on ties the
# derivative goes to the argument written first)
COMMUTATIVE = frozenset(name for name, op in OPERATIONS.items() if op.commutative)

ZERO = constant(0.0)
ONE = constant(1.0)

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
