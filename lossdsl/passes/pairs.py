"""Derivatives through pair sums (``pairsum(e, g)``: each sample ``i`` sums ``e(i, j)`` over
the other samples ``j`` of its group, ``partner(x)`` reading ``x_j``).

``shapes.py`` gives each sample a ragged row of its partners and turns ``partner(x)`` into a
leaf of its own, ``x'``: one value per pair ``(i, j)``, ``x_j``. ``diff.grad(total, x)`` then
sees only the reads of ``x`` as ``x_i``; what sample ``k`` contributes as a partner is the
adjoint of ``x'`` summed over the pairs ``(j, k)``, the transposes of row ``k``'s pairs
``(k, j)``. Where that adjoint ``A(i, j)`` is computed from the inputs pair by pair, its value
at ``(j, k)`` is ``A`` with the roles of ``x`` and ``x'`` swapped, evaluated at ``(k, j)``:
so the gradient is ``grad(total, x) + rowsum(swap(A))``, a pair sum again.

The diagonal Hessian needs nothing more: ``diff.hessian_diag`` differentiates that gradient
along ``x``, and in ``swap(A)`` sample ``k``'s own value is read as ``x`` (the pairs are of
distinct samples, so no ``x'`` in row ``k`` is ``x_k``).
"""

from __future__ import annotations

from ..errors import LossError
from ..ir.axes import Axis, partner_name, partner_of
from ..ir.build import make
from ..ir.node import Node, axis_length, node, rebuild, toposort
from ..ops import find
from . import diff


def swap_partners(e: Node, paired: frozenset[str]) -> Node:
    """``e`` (a value per pair of the samples on the ``paired`` sample axes) with each
    sample's own inputs and its partners' swapped: ``x`` <-> ``partner(x)``. Raises a
    LossError where ``e`` reads a value that is not computed pair by pair from the inputs
    (a row or group reduction, the pair sum itself): its value at the partner is not known."""

    def rule(old: Node, args: tuple[Node, ...]) -> Node:
        if not old.axes:
            return old  # the same for every pair: numbers, params, sums over the samples
        if old.op == "input":
            base = partner_of(old.value)
            if base is not None:
                return node("input", (), base, old.axes[:1])
            if old.axes[0] in paired and len(old.axes) == 1:
                return node("input", (), partner_name(old.value),
                            (old.axes[0], Axis(old.axes[0]).items()))
            return old
        if old.op == "count":
            return old  # a row's number of partners: a pair's two samples share a group
        op = find(old.op)
        if op is None or op.kind != "elementwise":
            raise LossError(
                "the gradient of this pair sum needs its summand's derivative at the partner, "
                f"which reads a {old.op} of other samples: write the loss as a sum over "
                "samples of (inputs of the sample) * pairsum(e, g), where e reads each "
                "sample and its partner alone")
        return make(old.op, args, old.value)

    (swapped,) = rebuild([e], rule)
    return swapped


def grad(total: Node, x: Node) -> Node:
    """d total / d x, where ``x`` may also be read at the partners of a pair sum."""
    gradient = diff.grad(total, x)
    if x.op != "input" or len(x.axes or ()) != 1:
        return gradient
    wanted = partner_name(x.value)
    partner = next((n for n in toposort([total]) if n.op == "input" and n.value == wanted),
                   None)
    if partner is None:
        return gradient
    items = partner.axes[1]
    adjoint = swap_partners(diff.grad(total, partner), frozenset({x.axes[0]}))
    through = (make("rowsum", (adjoint,)) if adjoint.axes and items in adjoint.axes
               else make("mul", (adjoint, axis_length(items))))
    return make("add", (gradient, through))
