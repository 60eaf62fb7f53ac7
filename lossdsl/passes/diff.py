"""Symbolic differentiation: gradients (reverse mode) and diagonal Hessians.

``grad(total, x)`` propagates adjoints from the scalar ``total`` down the DAG. Where an
operation broadcast an argument (a scalar against samples, a vector against a class
matrix), the adjoint is summed back (``sum`` / ``rowsum``), so gradients of losses with
nested reductions (Dice: a ratio of sums) are graphs with reductions of their own, which the
scheduler computes in extra passes.

``hessian_diag(total, x)`` differentiates the gradient once more along the diagonal:
``D(e)`` is ``d e_q / d x_q`` for the element ``q`` of ``x``. Elementwise nodes use the chain
rule. For a reduction ``S = sum_a f`` it is exact: the direct term ``D(f)`` (only element
``q`` of the sum depends directly on ``x_q``) plus, for every inner reduction ``T`` that ``f``
uses, ``sum_a(df/dT) * D(T)``.

The derivative of each elementwise operation is the rule in its registry record
(:mod:`lossdsl.ops`), with its subgradient conventions: ``abs'(0) = 0``, ``sign' = 0``,
``max``/``min`` give the whole derivative to the first argument on ties, ``where``
differentiates each branch (and masks the other, so an infinite derivative in the branch not
taken does not leak NaN), ``stop_gradient`` has derivative 0.
"""

from __future__ import annotations

import math

from ..errors import LossError
from ..ir.build import make
from ..ir.node import Node, axis_length, constant, depends_on, node, toposort
from ..ops import find

_ZERO, _ONE = constant(0.0), constant(1.0)


def _m(op: str, *args: Node) -> Node:
    return make(op, args)


def _indicator(condition: Node) -> Node:
    return _m("where", condition, _ONE, _ZERO)


class Partials:
    """Partial derivatives of elementwise operations: each operation's rule in its registry
    record (:mod:`lossdsl.ops`), built with ``make``.

    ``of(n, wanted)`` returns one derivative per argument of ``n`` (or None for an argument
    that does not depend on the variable, listed in ``wanted``).
    """

    def of(self, n: Node, wanted: list[bool]) -> list[Node | None]:
        op = find(n.op)
        if op is None or op.partials is None:
            reason = op.no_derivative if op is not None else ""
            raise LossError(reason or f"'{n.op}' has no derivative in lossdsl")
        return op.partials(_m, n, *n.args, wanted=wanted)


PARTIALS = Partials()


def _first_maximum(row_maximum: Node) -> Node:
    """1 at the first class k where ``rowmax(x)`` is attained, else 0: the derivative of
    ``rowmax(x)`` with respect to ``x``, ties going to the first, as for ``max``."""
    x = row_maximum.args[0]
    k = make("class_index", (row_maximum,), None, x.axes)  # x's row axis: classes or items
    # the first index of a maximum is -max over the maxima of -k
    candidates = _m("where", _m("eq", x, row_maximum), _m("neg", k), constant(-math.inf))
    first = _m("neg", _m("rowmax", candidates))
    return _indicator(_m("eq", k, first))


def unbroadcast(value: Node, axes: tuple[str, ...], full: tuple[str, ...] | None = None) -> Node:
    """Sum ``value`` over the axes it has beyond ``axes`` (the adjoint of broadcasting).

    ``full`` are the axes ``value`` stands for, when they are more than its own: the adjoint
    of an operation on (N, K) values may be constant along the classes (``rowsum(a - z)``
    with ``a`` (N,): the adjoint of ``a - z`` is the rowsum's, one value per row), and its
    sum over an axis it does not vary along is that value times the axis' length."""
    full = value.axes if full is None or value.axes is None else full
    if full is None or len(full) <= len(axes):
        return value
    if len(full) == 2 and len(axes) < 2:
        value = (_m("rowsum", value) if len(value.axes) == 2
                 else _m("mul", value, axis_length(full[1])))
    if len(axes) == 0:
        value = (_m("sum", value) if len(value.axes) == 1
                 else _m("mul", value, node("count", (), full[0], ())))
    return value


def _reduced_axis(n: Node) -> str:
    """The axis a reduction node removes."""
    return n.args[0].axes[-1]


def grad(total: Node, x: Node) -> Node:
    """d total / d x: a node with (at most) the axes of input ``x``."""
    dependent = depends_on(total, {id(x)})
    if not dependent[id(total)]:
        return _ZERO
    adjoints: dict[int, Node] = {id(total): _ONE}
    for n in reversed(toposort([total])):
        if n is x:
            break  # everything x depends on comes after it in reverse order
        adjoint = adjoints.pop(id(n), None)
        if adjoint is None or not n.args:
            continue
        wanted = [dependent[id(a)] for a in n.args]
        if not any(wanted):
            continue
        if n.op in ("sum", "rowsum"):
            contributions = [adjoint]
        elif n.op == "rowmax":
            contributions = [_m("mul", adjoint, _first_maximum(n))]
        elif n.op in ("class_index", "table_row"):
            continue  # indices and lookup tables: constants of the loss
        else:
            partials = PARTIALS.of(n, wanted)
            contributions = [_m("mul", adjoint, p) if w else None for p, w in zip(partials, wanted)]
        for a, contribution, w in zip(n.args, contributions, wanted):
            if not w:
                continue
            # the contribution stands for one value per element of n (of a for reductions,
            # whose adjoint is the same for every element they reduce)
            full = a.axes if n.op in ("sum", "rowsum", "rowmax") else n.axes
            contribution = unbroadcast(contribution, a.axes, full)
            previous = adjoints.get(id(a))
            adjoints[id(a)] = (
                contribution if previous is None else _m("add", previous, contribution)
            )
    return adjoints.get(id(x), _ZERO)


class _Diagonal:
    """The diagonal derivative D(e) = d e_q / d seed_q, with some nodes held constant.

    Each rule is a generator that yields the ``(e, seed, frozen)`` derivatives it needs and
    is sent their values; ``__call__`` runs them on an explicit stack, so the depth of the
    graph (a chain of thousands of operations) never becomes depth of the Python stack.
    """

    def __init__(self):
        self.memo: dict[tuple[int, int, frozenset], Node] = {}
        self.dependence: dict[int, dict[int, bool]] = {}

    def depends(self, e: Node, seed: Node) -> bool:
        table = self.dependence.setdefault(id(seed), {})
        if id(e) not in table:
            table.update(depends_on(e, {id(seed)}))
        return table[id(e)]

    def _known(self, e: Node, seed: Node, frozen: frozenset) -> Node | None:
        """D(e) when it needs no work (or was computed before), else None."""
        if e is seed:
            return _ONE
        if id(e) in frozen or not self.depends(e, seed):
            return _ZERO
        return self.memo.get((id(e), id(seed), frozen))

    def __call__(self, e: Node, seed: Node, frozen: frozenset = frozenset()) -> Node:
        known = self._known(e, seed, frozen)
        if known is not None:
            return known
        stack = [((e, seed, frozen), self._compute(e, seed, frozen))]
        sent: Node | None = None
        while True:
            (current, current_seed, current_frozen), rule = stack[-1]
            try:
                request = rule.send(sent)
            except StopIteration as finished:
                stack.pop()
                sent = finished.value
                self.memo[(id(current), id(current_seed), current_frozen)] = sent
                if not stack:
                    return sent
                continue
            sent = self._known(*request)
            if sent is None:
                stack.append((request, self._compute(*request)))

    def _compute(self, e: Node, seed: Node, frozen: frozenset):
        if e.op in ("sum", "rowsum", "rowmax"):
            return (yield from self._reduction(e, seed, frozen))
        if e.op in ("class_index", "table_row") or not e.args:
            return _ZERO
        wanted = [self.depends(a, seed) and id(a) not in frozen for a in e.args]
        total = _ZERO
        for a, partial, w in zip(e.args, PARTIALS.of(e, wanted), wanted):
            if w:
                inner = yield (a, seed, frozen)
                total = _m("add", total, _m("mul", partial, inner))
        return total

    def _leaves(self, f: Node, axis: str, seed: Node, frozen: frozenset) -> list[Node]:
        """Maximal nodes under ``f`` that are constant along ``axis`` and depend on ``seed``."""
        leaves, seen, stack = [], set(), [f]
        while stack:
            n = stack.pop()
            if id(n) in seen or id(n) in frozen or not self.depends(n, seed):
                continue
            seen.add(id(n))
            if axis not in n.axes:
                leaves.append(n)
                continue
            stack.extend(n.args)
        return sorted(leaves, key=lambda n: n.key)

    def _reduction(self, e: Node, seed: Node, frozen: frozenset):
        f = e.args[0]
        axis = _reduced_axis(e)
        # the weight each element gets in the reduction's derivative
        weight = _ONE if e.op != "rowmax" else _first_maximum(e)
        leaves = self._leaves(f, axis, seed, frozen)
        inner = frozen | {id(t) for t in leaves}
        total = _ZERO
        if axis in seed.axes:
            total = _m("mul", weight, (yield (f, seed, inner)))
        reduce_op = "sum" if e.op == "sum" else "rowsum"
        for leaf in leaves:
            through = _m("mul", weight, (yield (f, leaf, inner - {id(leaf)})))
            if axis in through.axes:
                reduced = _m(reduce_op, through)
            else:  # the same for every element: a sum of it would no longer know its axis
                reduced = _m("mul", through, axis_length(axis))
            total = _m("add", total, _m("mul", reduced, (yield (leaf, seed, frozen))))
        return total


def hessian_diag(total: Node, x: Node, gradient: Node | None = None) -> Node:
    """The diagonal of the Hessian of ``total`` with respect to input ``x``."""
    if gradient is None:
        gradient = grad(total, x)
    return _Diagonal()(gradient, x)
