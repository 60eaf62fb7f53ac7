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

Cumulative sums in the order of a key (``sum_from(e, t)`` and its kin) differentiate by
transposition: the adjoint of a ``_from`` sum is an ``_upto`` sum of the adjoint (in the log
domain for ``logsumexp_from``, one sum per sign of the adjoint); their diagonal Hessian adds,
like a reduction's, the terms through the sums nested in their summands (``_Diagonal._scan``).

The derivative of each elementwise operation is the rule in its registry record
(:mod:`lossdsl.ops`), with its subgradient conventions: ``abs'(0) = 0``, ``sign' = 0``,
``max``/``min`` give the whole derivative to the first argument on ties, ``where``
differentiates each branch (and masks the other, so an infinite derivative in the branch not
taken does not leak NaN), ``stop_gradient`` has derivative 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import LossError
from ..ir.axes import Axis, partner_name, partner_of
from ..ir.build import REDUCTIONS, make
from ..ir.node import Node, axis_length, constant, depends_on, is_constant, node, toposort
from ..ops import find
from ..ops.compare import COMPARISONS, LOGICAL
from ..ops.primitives import ROW
from ..ops.scans import GROUP_SCANS, SCANS, is_column_total, scan_name, transposed
from . import pairs

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


def _threshold_weights(threshold: Node) -> Node:
    """The derivative of ``sparsemax_threshold(x)`` with respect to ``x``: 1/|S| on the
    row's support S (the x_k above the threshold), 0 elsewhere. The support does not change
    under small moves of x, so these weights have derivative 0."""
    support = _indicator(_m("gt", threshold.args[0], threshold))
    return _m("div", support, _m("rowsum", support))


def _shift_weights(shift: Node) -> tuple[Node, Node]:
    """The derivatives of ``b = logit_shift(z, t)`` with respect to ``z_k`` and to ``t``:
    ``-s_k / S`` and ``1 / S``, ``s_k = sigmoid'(z_k + b)`` and ``S`` their row's sum
    (implicit differentiation of ``sum_k sigmoid(z_k + b) = t``); 0 where ``b`` is infinite
    (``S = 0``: no finite shift moves)."""
    z, _ = shift.args
    u = _m("add", z, shift)
    slope = _m("mul", _m("sigmoid", u), _m("sigmoid", _m("neg", u)))
    total = _m("rowsum", slope)
    moves = _m("gt", total, _ZERO)
    return (_m("where", moves, _m("neg", _m("div", slope, total)), _ZERO),
            _m("where", moves, _m("div", _ONE, total), _ZERO))


def _row_weights(reduction: Node) -> Node:
    """The weight of each element in the derivative of a reduction: 1 for sums, the first
    maximum's indicator for ``rowmax``, the support's share for ``sparsemax_threshold``,
    ``db/dz`` for ``logit_shift`` (its target's weight: :func:`_shift_weights`)."""
    if reduction.op == "rowmax":
        return _first_maximum(reduction)
    if reduction.op == "sparsemax_threshold":
        return _threshold_weights(reduction)
    if reduction.op == "logit_shift":
        return _shift_weights(reduction)[0]
    return _ONE


def unbroadcast(value: Node, axes: tuple[str, ...], full: tuple[str, ...] | None = None,
                empty_rows: frozenset[str] = frozenset()) -> Node:
    """Sum ``value`` over the axes it has beyond ``axes`` (the adjoint of broadcasting).

    ``full`` are the axes ``value`` stands for, when they are more than its own: the adjoint
    of an operation on (N, K) values may be constant along the classes (``rowsum(a - z)``
    with ``a`` (N,): the adjoint of ``a - z`` is the rowsum's, one value per row), and its
    sum over an axis it does not vary along is that value times the axis' length.

    ``empty_rows``: the ragged axes whose rows may have no element (a pair sum's partners:
    a sample alone in its group has none). A sum over such a row is 0 at an empty one, also
    where a factor the same along the row came out of the sum (``make`` factors it out)
    and is not finite there: the adjoint of ``log`` or ``1/x`` of the empty pair sum's 0
    (``softplus(log(pairsum(exp(partner(s) - s), g)))``: ``sigmoid(-inf) * (1/0) *
    rowsum(...)`` is ``0 * inf * 0``, NaN)."""
    full = value.axes if full is None or value.axes is None else full
    if full is None or len(full) <= len(axes):
        return value
    if len(full) == 3:  # a class pair sum's summand: summed over the partner classes first
        value = (_m("rowsum", value) if len(value.axes) == 3
                 else _m("mul", value, axis_length(full[2])))
        full = full[:2]
        if len(axes) == 2:
            return value
    if len(full) == 2 and len(axes) < 2:
        value = (_m("rowsum", value) if len(value.axes) == 2
                 else _m("mul", value, axis_length(full[1])))
        if full[1] in empty_rows and _factored_out_of_the_sum(value):
            value = _m("where", _m("gt", axis_length(full[1]), _ZERO), value, _ZERO)
    if len(axes) == 0:
        value = (_m("sum", value) if len(value.axes) == 1
                 else _m("mul", value, node("count", (), full[0], ())))
    return value


def _factored_out_of_the_sum(total: Node) -> bool:
    """Whether the sum over a row ``total`` (built by ``make``) is not the row's ``rowsum``
    itself, negated or times a number: a factor the same along the row came out of it, or
    the summand was the same along the row (a product with the row's length)."""
    while total.op == "neg" or (total.op == "mul" and total.args[0].op == "const"
                                and math.isfinite(total.args[0].value)):
        total = total.args[-1]
    return total.op != "rowsum"


def _rows_that_may_be_empty(total: Node) -> frozenset[str]:
    """The ragged axes of the pair sums under ``total``: a sample's partners, none for a
    sample alone in its group (a group's items, the other ragged rows, are never none; the
    samples of one domain are paired or grouped, not both)."""
    return frozenset(
        n.axes[1] for n in toposort([total])
        if len(n.axes or ()) == 2 and Axis(n.axes[1]).is_ragged
        and (n.op in ("at_partner", "partner_first", "pairdot")
             or (n.op == "input" and partner_of(n.value) is not None)))


def _reduced_axis(n: Node) -> str:
    """The axis a reduction node removes."""
    return n.args[0].axes[-1]


def _sums_partners(n: Node) -> bool:
    """Whether ``n`` reduces each sample's row of partners (a pair sum: a row that reads
    values at the partners, which a mask may leave without a term; a group's items are
    never none)."""
    return (n.op in ROW and Axis(_reduced_axis(n)).is_ragged
            and pairs.reads_partners(n.args[0]))


def _unless_still(factor: Node | Sequence[Node], term: Node) -> Node:
    """``term``, a product with ``factor``, or 0 where ``factor`` is 0. For the diagonal
    Hessian through a pair sum whose row is masked out whole (or empty: a sample alone in its
    group): the sum is 0 and stays 0 as the variable moves, so its ``D`` and its weight in the
    row's reduction are 0, while what they multiply is not finite there (the derivatives of
    ``log`` and ``1/x`` at 0, which the gradient masks): a function of a value that does not
    move does not move (0, not ``0 * inf = NaN``).

    ``factor`` may be the factors of such a product (a pair sum and the sample's own factors
    taken out of it, :meth:`_Diagonal._scaled_sum`): 0 where any of them is. Each is tested
    alone, never their product, which underflows to 0 where the term need not (a weight
    ``1/(|s_i| |s_j|)^2`` of rows of norm 1e80): that 0 is a number too small, not a row
    without terms."""
    factors = [factor] if isinstance(factor, Node) else list(factor)
    condition = None
    for f in factors:
        zero = _m("eq", f, _ZERO)
        condition = zero if condition is None else _m("or", condition, zero)
    return term if condition is None else _m("where", condition, _ZERO, term)


def _factored(w: Node) -> tuple[bool, list[tuple[Node, bool]], list[tuple[Node, int]]]:
    """``w`` as ``(negated, masks, factors)``: ``w`` is the product of ``factors`` (each
    ``(f, 1)`` or ``(f, -1)``, ``f`` or ``1/f``), negated where ``negated``, and 0 outside each
    mask ``(c, holds)`` (``where(c, ..., 0)`` for ``holds``, ``where(c, 0, ...)`` otherwise),
    through the products, quotients and negations of ``w``: ``1/(a b)`` is ``1/a`` times
    ``1/b``. The masks are kept whole (a factor masked out may be infinite: 0, not NaN)."""
    negated, masks, factors = False, [], []
    stack = [(w, 1)]
    while stack:
        n, exponent = stack.pop()
        if n.op == "neg":
            negated = not negated
            stack.append((n.args[0], exponent))
        elif n.op == "mul":
            stack.extend((a, exponent) for a in reversed(n.args))
        elif n.op == "div":
            stack.extend(((n.args[1], -exponent), (n.args[0], exponent)))
        elif n.op == "where" and exponent == 1 and is_constant(n.args[2], 0.0):
            masks.append((n.args[0], True))
            stack.append((n.args[1], 1))
        elif n.op == "where" and exponent == 1 and is_constant(n.args[1], 0.0):
            masks.append((n.args[0], False))
            stack.append((n.args[2], 1))
        else:
            factors.append((n, exponent))
    return negated, masks, factors


#: The largest power of the rows' scale c (in size) that a Hessian's value may grow or
#: shrink as: at c = 1.3e154, where the squared norms themselves overflow, c^2 is float64's
#: largest number and c^-2 its smallest normal one.
_SCALE_RANGE = 2.0
#: What a product is taken to the terms of (see _Diagonal._product).
_DISTRIBUTES = frozenset({"add", "sub", "neg", "where"})
#: Operations whose value scales as their (first) argument's does.
_SCALE_AS_ARGUMENT = frozenset({"neg", "abs", "stop_gradient", "at_partner", "rowsum", "rowmax",
                                "sum", "sparsemax_threshold"})


def _sign(x: Node) -> int:
    """1 where ``x`` is known to be >= 0 everywhere, -1 where <= 0, else 0 (unknown): a few
    rules that cover adjoints such as ``where(y > 0, 1, 0) / N``."""
    if x.op == "const":
        return 1 if x.value >= 0 else (-1 if x.value <= 0 else 0)  # NaN: unknown
    if x.op in ("exp", "count"):
        return 1
    if x.op == "neg":
        return -_sign(x.args[0])
    if x.op in ("mul", "div"):
        return _sign(x.args[0]) * _sign(x.args[1])
    if x.op in ("add", "where"):
        signs = {_sign(a) for a in x.args[-2:]}
        return signs.pop() if len(signs) == 1 else 0
    return 0


def _signed_exp_sum(name: str, log_weights: Node, weights: Node, order: tuple[Node, ...],
                    shift: Node) -> Node:
    """``exp(shift)`` times the log-domain scan ``name`` of ``weights * exp(log_weights)``:
    a log sums positive terms only, so one scan per sign of ``weights`` (a sign known from the
    graph needs one)."""
    sign, total = _sign(weights), _ZERO
    for part, side in ((weights, 1), (_m("neg", weights), -1)):
        if sign == -side:
            continue  # this part is 0 everywhere
        # -inf where the part is 0; NaN stays NaN (a log of a NaN adjoint)
        log_part = _m("where", _m("le", part, _ZERO), constant(-math.inf), _m("log", part))
        term = _m("exp", _m("add", shift, _m(name, _m("add", log_weights, log_part), *order)))
        total = _m("add", total, term) if side == 1 else _m("sub", total, term)
    return total


def scan_adjoint(n: Node, adjoint: Node) -> Node:
    """What cumulative sum ``n`` contributes to the gradient of its summands, given its
    adjoint: each summand's share of every sum it is in, which is the transposed cumulative
    sum of the adjoint (``j`` is in ``i``'s "from" set when ``i`` is in ``j``'s "upto" set).

    For ``L = logsumexp_from(s, t)`` the share of ``s_j`` is ``sum_i a_i exp(s_j - L_i)``
    over its transposed set, accumulated in the log domain as ``exp(s_j + logsumexp_upto(
    log a - L))`` (one scan per sign of ``a``): every term is at most the adjoint, so
    scores of +-1e4 stay finite where ``exp(s)`` and ``exp(-L)`` alone do not."""
    accumulates, direction = SCANS[n.op]
    values, *order = n.args  # the keys and the strata
    other = transposed(direction)
    if accumulates == "sum":
        return _summed_over_sets(scan_name("sum", other), adjoint, order, n)
    return _signed_exp_sum(scan_name("logsumexp", other), _m("neg", n), adjoint, order, values)


def _summed_over_sets(name: str, values: Node, order: Sequence[Node], like: Node) -> Node:
    """The cumulative sum ``name`` of ``values`` over the sets of keys and strata
    ``order``, one value per sample of cumulative sum ``like``'s axis. A column total
    (``colsum``: every sample in the one group of a constant key) of a value the same for
    every sample is that value times the number of samples, which no scan could say: its
    axes would have no sample axis to count."""
    if name in GROUP_SCANS and not values.axes and all(not a.axes for a in order):
        return _m("mul", values, axis_length(like.axes[0]))
    return _m(name, values, *order)


def _times(adjoint: Node, partial: Node) -> Node:
    """``adjoint * partial``; a partial that is a 0/1 mask (a comparison: pick's one-hot)
    selects instead, so that an infinite adjoint gives the entries it masks out 0, not
    ``0 * inf = NaN`` (the gradient of ``sqrt(pick(p, y))`` at ``p_y = 0``)."""
    if partial.op in COMPARISONS or partial.op in LOGICAL:
        return _m("where", partial, adjoint, _ZERO)
    return _m("mul", adjoint, partial)


def grad(total: Node, x: Node) -> Node:
    """d total / d x: a node with (at most) the axes of input ``x``; where ``x`` is also
    read at the partners of a pair sum, the partners' shares too (``pairsum(partner(z), q)``
    reads z there alone)."""
    gradient = _direct_grad(total, x)
    partner = _partner_leaf(total, x)
    if partner is not None and len(partner.axes) == 3:  # x at the partner classes
        gradient = _m("add", gradient, pairs.class_transposed(grad(total, partner), x.axes[1]))
    elif partner is not None:
        gradient = _m("add", gradient, pairs.transposed(grad(total, partner), partner.axes[1]))
    return gradient


def _direct_grad(total: Node, x: Node) -> Node:
    """d total / d x through the reads of ``x`` itself (not at partners)."""
    dependent = depends_on(total, {id(x)})
    if not dependent[id(total)]:
        return _ZERO
    adjoints: dict[int, Node] = {id(total): _ONE}
    empty_rows = _rows_that_may_be_empty(total)
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
        elif n.op in SCANS:  # the key is a constant of the loss
            contributions = [scan_adjoint(n, adjoint) if wanted[0] else None, None, None]
        elif n.op in ("rowmax", "sparsemax_threshold"):
            if _sums_partners(n) and not is_constant(adjoint, 0.0):
                # its first maximum's slot has no transposed pair
                raise LossError("pairmax(e, g) has no derivative in lossdsl where e reads "
                                "values at the partners: hold it constant, "
                                "stop_gradient(pairmax(e, g)), as pair_logsumexp does for "
                                "its shift")
            contributions = [_m("mul", adjoint, _row_weights(n))]
        elif n.op == "logit_shift":  # the scores' weights per element, the target's per row
            contributions = [_m("mul", adjoint, weight) for weight in _shift_weights(n)]
        elif n.op == "at_partner" and len(n.axes) == 3:  # each class's share as a partner
            contributions = [pairs.class_transposed(adjoint, n.axes[1])]
        elif n.op == "at_partner":  # each sample's share as the partner of its pairs
            contributions = [pairs.transposed(adjoint, n.axes[1])]
        elif n.op == "pairdot":  # each row's share, as the pair's own and as its partner
            contributions = list(pairs.dot_adjoints(n, adjoint))
        elif n.op in ("class_index", "table_row", "partner_first"):
            continue  # indices, lookup tables and the order given: constants of the loss
        else:
            partials = PARTIALS.of(n, wanted)
            contributions = [_times(adjoint, p) if w else None for p, w in zip(partials, wanted)]
        for a, contribution, w in zip(n.args, contributions, wanted):
            if not w or contribution is None:
                continue
            # the contribution stands for one value per element of n (of a for reductions,
            # whose adjoint is the same for every element they reduce)
            full = a.axes if n.op in (*REDUCTIONS, "at_partner") else n.axes
            contribution = unbroadcast(contribution, a.axes, full, empty_rows)
            previous = adjoints.get(id(a))
            adjoints[id(a)] = (
                contribution if previous is None else _m("add", previous, contribution)
            )
    return adjoints.get(id(x), _ZERO)


def _partner_leaf(total: Node, x: Node) -> Node | None:
    """The leaf of input ``x`` read at the partners of a pair sum in ``total`` (of a class
    matrix ``x``: at the partner classes of a class pair sum), if any."""
    if x.op != "input" or len(x.axes or ()) not in (1, 2):
        return None
    wanted = partner_name(x.value)
    return next((n for n in toposort([total]) if n.op == "input" and n.value == wanted), None)


class _Diagonal:
    """The diagonal derivative D(e) = d e_q / d seed_q, with some nodes held constant.

    Each rule is a generator that yields the ``(e, seed, frozen)`` derivatives it needs and
    is sent their values; ``__call__`` runs them on an explicit stack, so the depth of the
    graph (a chain of thousands of operations) never becomes depth of the Python stack.
    """

    def __init__(self, ordered: Node | None = None):
        # the seed of rows (N, D) whose derivatives grow and shrink as powers of its rows'
        # norms (_orders_products), if any: the chain rule's products of its derivatives are
        # taken as _product takes them
        self.ordered = ordered
        self.memo: dict[tuple[int, int, frozenset], Node] = {}
        self.dependence: dict[int, dict[int, bool]] = {}
        # the terms of pair values' derivatives with respect to a seed of rows (N, D)
        self.row_terms: dict[tuple, list[tuple[Node, Node, str]]] = {}
        # by seed: the power of the seed's scale each node grows as (_scale), with the node
        self.scales: dict[int, dict[int, tuple[Node, float]]] = {}

    def depends(self, e: Node, seed: Node) -> bool:
        """Whether ``e`` depends on input ``seed`` at any of its elements: where it reads the
        seed itself, and where it reads the seed at the partners of a pair sum or at the
        partner classes of a class pair sum (the seed's partner leaf, directly or through a
        value stored and read at the partners), whose derivative at the element's own sample
        or class is 0 but which depends on the seed at the others."""
        table = self.dependence.setdefault(id(seed), {})
        if id(e) not in table:
            wanted = partner_name(seed.value) if seed.op == "input" else None
            reads = {id(n) for n in toposort([e])
                     if n is seed or (n.op == "input" and n.value == wanted)}
            table.update(depends_on(e, reads))
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
        if e.op == "pairmatvec":
            return (yield from self._partner_rows(e, seed, frozen))
        if (e.op in REDUCTIONS and pairs.is_rows(seed) and e.args[0].axes
                and Axis(_reduced_axis(e)).is_ragged and e.op == "rowsum"):
            return (yield from self._pair_sum_of_rows(e, seed, frozen))
        if e.op in REDUCTIONS:
            return (yield from self._reduction(e, seed, frozen))
        if e.op in SCANS:
            return (yield from self._scan(e, seed, frozen))
        if e.op == "at_partner" and len(e.axes) == 3:
            return self._at_partner_class(e, seed)
        if e.op == "at_partner":
            return (yield from self._at_partner_sample(e, seed))
        if e.op in ("class_index", "table_row", "partner_first") or not e.args:
            return _ZERO
        wanted = [self.depends(a, seed) and id(a) not in frozen for a in e.args]
        total = _ZERO
        for a, partial, w in zip(e.args, PARTIALS.of(e, wanted), wanted):
            if w and not is_constant(partial, 0.0):  # stop_gradient's argument: not needed
                inner = yield (a, seed, frozen)
                term = (self._product([partial, inner], seed) if seed is self.ordered
                        else _m("mul", partial, inner))
                if _sums_partners(a) and not is_constant(partial):
                    term = _unless_still(inner, term)
                total = _m("add", total, term)
        return total

    # --------------------------------------------------- rows (N, D) read by pairs
    #
    # With a seed of rows (N, D) read pair by pair (pairdot), the derivative of a pair's
    # value f_ij with respect to the seed's element (i, d) is, column by column, a sum of
    # terms weight_ij * row_d, the row being the pair's own sample's (OWN: any value on
    # (n<d>, n<d>k) at i) or its partner's (PARTNER: the rows of matrix inputs read at j):
    # d(u_i . s_j)/ds_jd = u_id, d(s_i . v_j)/ds_id = v_jd, a per-sample value's D is its
    # own row. A sum over the partners then is OWN: row * rowsum(weight), PARTNER:
    # pairmatvec(weight, row), and no value per pair and column exists.

    def _row_terms(self, f: Node, seed: Node, frozen: frozenset, partner: bool):
        """The terms ``[(weight, row, side)]`` of the derivative of ``f`` (per pair, per
        sample or a number) with respect to the seed's row of the pair's own sample i
        (``partner``: of its partner j), side "own" or "partner" saying whose row."""
        key = (id(f), id(seed), frozen, partner)
        if key in self.row_terms:
            return self.row_terms[key]
        terms: list[tuple[Node, Node, str]] = []
        if id(f) in frozen or not self.depends(f, seed) or not f.axes:
            if f.axes == () and id(f) not in frozen and self.depends(f, seed):
                raise LossError("the exact Hessian of a pair sum of rows (N, D) that depends "
                                "on the variable through a sum over the samples is not "
                                "implemented")
        elif len(f.axes) == 1 and not partner:  # the pair's own sample's value
            terms = [(_ONE, (yield (f, seed, frozen)), "own")]
        elif len(f.axes) == 1 and self._row_pointwise(f, seed, frozen):
            terms = []  # the pair's own sample's value, of its own row alone
        elif len(f.axes) == 1 and (find(f.op) is None or find(f.op).kind != "elementwise"):
            raise LossError("the exact Hessian of a pair sum of rows (N, D) reading, within "
                            "a pair, a sample's own pair sum of the variable is not "
                            "implemented")
        elif f.op == "pairdot":
            u, v = f.args
            if partner and v is seed:
                terms = [(_ONE, u, "own")]
            elif not partner and u is seed:
                terms = [(_ONE, pairs.row_at_partners(v), "partner")]
        elif f.op == "at_partner":
            terms = yield from self._partner_value_terms(f.args[0], seed, frozen, partner)
        elif f.op == "input" or f.op in ("class_index", "partner_first"):
            terms = []
        elif find(f.op) is not None and find(f.op).kind == "elementwise":
            wanted = [self.depends(a, seed) and id(a) not in frozen for a in f.args]
            for a, partial, w in zip(f.args, PARTIALS.of(f, wanted), wanted):
                if not w or is_constant(partial, 0.0):
                    continue
                inner = yield from self._row_terms(a, seed, frozen, partner)
                terms += [(_m("mul", partial, weight), row, side)
                          for weight, row, side in inner]
        else:
            raise LossError(f"the exact Hessian of a pair sum of rows (N, D) through a "
                            f"{f.op} is not implemented")
        self.row_terms[key] = terms
        return terms

    def _partner_value_terms(self, q: Node, seed: Node, frozen: frozenset, partner: bool):
        """The terms of the derivative of ``q_j`` (a per-sample value read at the partner j
        of pair (i, j)) with respect to the seed's row of i (the pair's own sample) or of j
        (``partner``)."""
        if partner:  # q_j's own row: through the row reductions of j's own rows (norms)
            if not self._row_pointwise(q, seed, frozen):
                raise LossError("the exact Hessian of a pair sum of rows (N, D) reading at "
                                "the partner a value that depends on the partner's row "
                                "through pair sums of its own is not implemented")
            terms = []
            sums = self._maximal(q, seed, frozen, lambda n: n.op == "rowsum")
            for reduced in sums:
                outer = yield (q, reduced, frozen | {id(r) for r in sums if r is not reduced})
                row = yield (reduced, seed, frozen)
                if not is_constant(outer, 0.0):
                    terms.append((pairs.at_partners(outer, _pair_axes(seed)),
                                  pairs.row_at_partners(row), "partner"))
            return terms
        if self._row_pointwise(q, seed, frozen):
            return []  # q_j depends on j's own row alone
        # q_j depends on i's row through the pairs (j, i) of j's pair sums (those nested in
        # another's summand too): the summands' derivatives with respect to the partner's
        # row, at (j, i), with the roles swapped, times dq_j/dR_j through every path
        sums = self._pair_sums_under(q, seed, frozen)
        held = frozen | {id(r) for r in sums}
        through: dict[int, Node] = {}
        for reduced in sums:  # outermost first: q's own partials, then along the nesting
            total = yield (q, reduced, held - {id(reduced)})
            for outer in sums:
                if outer is reduced or id(outer) not in through:
                    continue
                inner = yield (outer, reduced, held - {id(outer), id(reduced)})
                if not is_constant(inner, 0.0):
                    total = _m("add", total, _m("mul", through[id(outer)], inner))
            through[id(reduced)] = total
        terms = []
        for reduced in sums:
            if is_constant(through[id(reduced)], 0.0):
                continue
            factor = pairs.at_partners(through[id(reduced)], _pair_axes(seed))
            inner = yield from self._row_terms(reduced.args[0], seed, held, True)
            for weight, row, side in inner:
                swapped = pairs.swap_partners(weight) if weight.axes else weight
                if side == "own":  # j's row, seen from i: at the partner
                    terms.append((_m("mul", factor, swapped), pairs.row_at_partners(row),
                                  "partner"))
                else:  # i's row, read at the partner of (j, i)
                    terms.append((_m("mul", factor, swapped), pairs.row_at_own(row), "own"))
        return terms

    def _pair_sums_under(self, q: Node, seed: Node, frozen: frozenset) -> list[Node]:
        """The pair sums under per-sample ``q`` (nested in each other's summands too, not
        within values read at the partners) that depend on the seed, outermost first; any
        other coupling of the samples on the way is refused."""
        found, seen, stack = [], set(), [q]
        while stack:
            n = stack.pop()
            if (id(n) in seen or id(n) in frozen or n.op == "stop_gradient"
                    or not self.depends(n, seed)):
                continue
            seen.add(id(n))
            if n.op == "rowsum" and n.args[0].axes and Axis(_reduced_axis(n)).is_ragged:
                found.append(n)
            elif n.op in ("sum", "pairmatvec") or n.op in SCANS or (
                    n.op in REDUCTIONS and not pairs.is_rows(n.args[0])):
                raise LossError("the exact Hessian of a pair sum of rows (N, D) reading at "
                                "the partner a value coupled to the others other than by "
                                "its pair sums is not implemented")
            if n.op not in ("at_partner", "pairdot"):  # those read at the other sample
                stack.extend(n.args)
        depth = {id(n): i for i, n in enumerate(reversed(toposort([q])))}
        return sorted(found, key=lambda n: depth[id(n)])

    def _pair_sum_of_rows(self, e: Node, seed: Node, frozen: frozenset):
        """D of a pair sum ``e`` (the sum over each sample's partners) of values that read
        the seed's rows (N, D): the sum of its summand's terms over the partners."""
        f = e.args[0]
        axis = _reduced_axis(e)
        total = _ZERO

        def over_partners(weight: Node) -> Node:
            return (_m("rowsum", weight) if axis in (weight.axes or ())
                    else _m("mul", weight, axis_length(axis)))

        for weight, row, side in (yield from self._row_terms(f, seed, frozen, False)):
            if side == "partner":
                term = self._scaled_sum(weight, seed,
                                        lambda w, r=row: _m("pairmatvec", w, r))
            else:
                # a row's D where its pair sum is 0 (a sample alone, or masked out whole)
                # may not be finite (the derivative of log of that 0): the term is 0
                term = self._scaled_sum(weight, seed, over_partners, row)
            total = _m("add", total, term)
        return total

    def _partner_rows(self, e: Node, seed: Node, frozen: frozenset):
        """D of ``pairmatvec(w, r)``: ``sum_j dw_ij/ds_id r_jd`` (r is read at the partner
        j != i: its derivative at i is 0)."""
        weights, rows = e.args
        total = _ZERO
        for weight, row, side in (yield from self._row_terms(weights, seed, frozen, False)):
            if side == "partner":
                columns = _m("mul", row, rows)
                term = self._scaled_sum(weight, seed,
                                        lambda w, c=columns: _m("pairmatvec", w, c))
            else:  # 0 where the sum over the partners is (see _pair_sum_of_rows)
                term = self._scaled_sum(weight, seed, lambda w: _m("pairmatvec", w, rows), row)
            total = _m("add", total, term)
        return total

    # A pair's weight in these sums is a product of the pair's values and of the sample's
    # own, each scaling as a power of the rows' norms: with D = |s_i| |s_j| (a cosine
    # similarity), 1/D^2 times |s_j| is ~1/c^3 at rows of norm c, below float64's range from
    # c = 1e103 (subnormal from 1e77), while the term it is a factor of, ~1/c^2, is a number
    # up to c = 1e154. The sample's own factors are taken out of the sum (the same for every
    # partner), and each product is taken in an order that keeps its partial products near
    # the scale of the whole (:meth:`_balanced`).

    def _scaled_sum(self, weight: Node, seed: Node, summed, row: Node | None = None) -> Node:
        """``row * summed(weight)`` (without ``row``: ``summed(weight)``), ``summed`` a sum
        over each sample's partners (``rowsum``, ``pairmatvec``) linear in the weights: the
        sample's own factors of ``weight`` (one value per sample) multiplied outside the sum,
        each product in the order :meth:`_balanced` gives. 0 where the sum is 0 (a row of
        partners masked out whole, or none) and, with ``row``, where a factor of the sample's
        is (the term, a product with them, is still: :func:`_unless_still`); the sample's
        own factors may not be finite where their partners' weights are all 0 (masked out)."""
        negated, masks, factors = _factored(weight)
        own, pair = [], []
        for f, exponent in factors:
            f = f if exponent == 1 else _m("div", _ONE, f)
            (own if len(f.axes or ()) <= 1 else pair).append(f)
        pair_weight = self._balanced(pair, seed)
        if negated:
            pair_weight = _m("neg", pair_weight)
        for condition, holds in reversed(masks):
            pair_weight = (_m("where", condition, pair_weight, _ZERO) if holds
                           else _m("where", condition, _ZERO, pair_weight))
        total = summed(pair_weight)
        term = self._product([total, *own] + ([] if row is None else [row]), seed)
        if row is None and all(f.op == "const" for f in own):
            return term  # a sum without terms is 0 already, times numbers
        still = [total] + ([f for f in own if f.op != "const"] if row is not None else [])
        return _unless_still(still, term)

    def _product(self, factors: list[Node], seed: Node) -> Node:
        """The product of ``factors``, each product taken apart into its factors: as it is
        where each factor scales as at most the square of the seed's scale (``c^2`` is a
        number wherever the squared norms are), else in :meth:`_balanced`'s order, and where
        a factor beyond that is a sum (or a select, or a negation), the product of the others
        taken to each of its terms when that brings them nearer (``s * (h D(X) + X D(h))``,
        ``h = 1/|s|``: ``c * c^-3``, each term of the sum below float64's range from
        ``c = 1e103`` where the product is ``c^-2``)."""
        if len(factors) == 2 and all(abs(self._scale(f, seed)) <= _SCALE_RANGE
                                     for f in factors):
            return _m("mul", *factors)
        flat = []
        for f in factors:
            stack = [f]
            while stack:
                n = stack.pop()
                if n.op == "mul":
                    stack.extend(reversed(n.args))
                else:
                    flat.append(n)
        sums = [(abs(self._scale(f, seed)), i) for i, f in enumerate(flat)
                if f.op in _DISTRIBUTES and abs(self._scale(f, seed)) > _SCALE_RANGE]
        if not sums:
            return self._balanced(flat, seed)
        _, index = max(sums)
        inner = flat[index]
        rest = self._product(flat[:index] + flat[index + 1:], seed) if len(flat) > 1 else _ONE
        if self._scale(rest, seed) * self._scale(inner, seed) >= 0:
            return _m("mul", rest, inner)  # the rest takes the sum's terms no nearer
        if inner.op == "neg":
            return _m("neg", self._product([rest, inner.args[0]], seed))
        if inner.op in ("add", "sub"):
            return _m(inner.op, *(self._product([rest, a], seed) for a in inner.args))
        condition, then, otherwise = inner.args  # where: zero branches stay 0
        return _m("where", condition,
                  *(a if is_constant(a, 0.0) else self._product([rest, a], seed)
                    for a in (then, otherwise)))

    def _balanced(self, factors: list[Node], seed: Node) -> Node:
        """The product of ``factors`` (1 for none), taken in an order that keeps each partial
        product's scale near 0's (:meth:`_scale`: the power of the seed's scale it grows
        as): the numbers first, then a factor that grows with the seed's scale wherever the
        partial product does not, else one that shrinks."""
        scales = [self._scale(f, seed) for f in factors]
        order = [f for f, scale in zip(factors, scales) if scale == 0]
        growing = sorted((pair for pair in zip(factors, scales) if pair[1] > 0),
                         key=lambda pair: -pair[1])
        shrinking = sorted((pair for pair in zip(factors, scales) if pair[1] < 0),
                           key=lambda pair: pair[1])
        running = 0.0
        while growing or shrinking:
            f, scale = (growing if (running <= 0 and growing) or not shrinking
                        else shrinking).pop(0)
            order.append(f)
            running += scale
        product = None
        for f in order:
            product = f if product is None else _m("mul", product, f)
        return _ONE if product is None else product

    def _scale(self, e: Node, seed: Node) -> float:
        """The power of the seed's scale ``c`` that ``e`` grows as where every element of the
        seed is multiplied by ``c`` (large): 1 for the seed, its partner leaf and the other
        inputs of its axes, 2 for a squared norm or a dot product of its rows, 0 for numbers,
        the other inputs and what does not scale as a power (exp, log, comparisons); a sum or
        a select takes its largest term's (a number added or selected does not count). An
        estimate for the order of a product's factors, which the product's value does not
        depend on. The rows a cosine pairs with the seed's (``rowsum(x1*x2)/(|x1| |x2|)``)
        are taken at the seed's scale: ordered so, each partial product of the cosines'
        Hessians stays within ``c^-2..c^2`` where both rows scale by ``c`` and where either
        does alone; taken as numbers (scale 0), a product such as ``(|x1| |x2|)^-1 *
        (x1 (|x1| |x2|)^-1)`` is left as it is (two factors ``~c^-1`` by that estimate),
        ``c^-3`` where both rows scale."""
        table = self.scales.setdefault(id(seed), {})
        if id(e) in table:
            return table[id(e)][1]
        wanted = partner_name(seed.value) if seed.op == "input" else None
        for n in toposort([e]):
            if id(n) in table:
                continue
            args = [table[id(a)][1] for a in n.args]
            if n is seed or (n.op == "input" and (n.value == wanted or n.axes == seed.axes)):
                scale = 1.0
            elif n.op in ("mul", "pairdot", "pairmatvec"):
                scale = args[0] + args[1]
            elif n.op == "div":
                scale = args[0] - args[1]
            elif n.op == "sqrt":
                scale = args[0] / 2
            elif n.op == "pow":
                exponent = n.args[1]
                scale = args[0] * exponent.value if exponent.op == "const" else 0.0
            elif n.op in _SCALE_AS_ARGUMENT:
                scale = args[0]
            elif n.op in ("add", "sub", "max", "min", "where"):
                terms = [s for a, s in zip(n.args[-2:], args[-2:]) if a.op != "const"]
                scale = max(terms, key=abs, default=0.0)
            else:
                scale = 0.0
            table[id(n)] = (n, scale)  # the node held: its id is not another's later
        return table[id(e)][1]

    def _row_pointwise(self, v: Node, seed: Node, frozen: frozenset = frozenset()) -> bool:
        """Whether each sample's ``v`` depends on the seed's rows (N, D) at its own row
        alone: reductions over its columns (a norm), but no sum over the samples or the
        partners, cumulative sum or read at the partners on the way."""
        stack, seen = [v], set()
        while stack:
            n = stack.pop()
            if (id(n) in seen or n is seed or id(n) in frozen or n.op == "stop_gradient"
                    or not self.depends(n, seed)):
                continue
            seen.add(id(n))
            if (n.op in ("sum", "at_partner", "pairdot", "pairmatvec") or n.op in SCANS
                    or (n.op in REDUCTIONS and not pairs.is_rows(n.args[0]))):
                return False
            stack.extend(n.args)
        return True

    def _at_partner_sample(self, e: Node, seed: Node):
        """D of ``e = at_partner(v)`` (v at the partner j of each pair (i, j) of samples):
        ``d v_j / d seed_i``. The partner's value depends on the seed at this sample only
        through what couples samples: 0 where ``v`` depends on each sample's seed alone, or
        where that coupling has no derivative (ranks, indicators). Where ``v`` couples the
        samples through pair sums of its own (``log(pairsum(exp(partner(s) - s), g))``
        read at the partner: a softmax over each sample's partners), ``v_j`` reads ``seed_i``
        as the partner of its pair (j, i) alone: through the seed's partner leaf (an input
        seed) and through values stored and read at the partners that depend on each
        sample's seed alone (``partner(exp(s))``: ``w_i``). So this is ``v``'s derivative
        with respect to those reads at the pair (j, i), times ``D(w)_i`` for a stored ``w``,
        with the pair's roles swapped. Other couplings on the way (a sum over the samples,
        a cumulative sum, a stored value that depends on other samples itself) are refused.

        Nodes held constant (``frozen``) are not consulted: they are held as the values of
        the pair's own sample i (the leaves of the reduction over its partners), while ``v``
        is read at the partner j."""
        v = e.args[0]
        if self._pointwise(v, seed):
            return _ZERO
        partner = _partner_leaf(v, seed)
        # what couples v_j to other samples than j and has a derivative (ranks do not)
        reads = [n for n in toposort([v]) if n.op == "at_partner" and self._moves(n.args[0], seed)]
        coupled = any((n.op == "sum" or n.op in SCANS) and self._moves(n, seed)
                      for n in toposort([v]))
        if (coupled or len(seed.axes or ()) != 1
                or not all(self._pointwise(n.args[0], seed) for n in reads)
                or (partner is None and not reads)):
            if is_constant(grad(_m("sum", v), seed), 0.0):
                return _ZERO  # ranks and indicators: no derivative to pass on
            raise LossError("the exact Hessian of a pair sum reading at the partners a "
                            "value that depends on the other samples through a sum over "
                            "the samples, a cumulative sum or a value read at the partners "
                            "that depends on other samples itself is not implemented (pair "
                            "sums of the variable are)")
        # sample j's v_j reads the seed at its partners m through the pairs (j, m) alone, so
        # the gradient of the total with respect to a read at the partners is d v_j / d
        # read(j, m), pair by pair; swapped, read(j, i) is sample i's own value
        total = (pairs.swap_partners(grad(_m("sum", v), partner)) if partner is not None
                 else _ZERO)
        for read in sorted(reads, key=lambda n: n.key):
            own = yield (read.args[0], seed, frozenset())  # D(w)_i: w depends on i alone
            total = _m("add", total, _m("mul", pairs.swap_partners(
                _direct_grad(_m("sum", v), read)), own))
        return total

    def _moves(self, v: Node, seed: Node) -> bool:
        """Whether ``v`` depends on the seed with a derivative that is not zero (ranks and
        indicators, and what ``stop_gradient`` holds, do not move)."""
        if not self.depends(v, seed):
            return False
        return not is_constant(grad(_m("sum", v) if v.axes else v, seed), 0.0)

    def _pointwise(self, v: Node, seed: Node) -> bool:
        """Whether each sample's ``v`` depends on the seed at that sample alone: no sum,
        row reduction, cumulative sum or partner read on the way."""
        stack, seen = [v], set()
        while stack:
            n = stack.pop()
            if id(n) in seen or n is seed or not self.depends(n, seed):
                continue
            seen.add(id(n))
            if n.op in (*REDUCTIONS, "at_partner") or n.op in SCANS:
                return False
            stack.extend(n.args)
        return True

    def _maximal(self, f: Node, seed: Node, frozen: frozenset, wanted,
                 within=None) -> list[Node]:
        """The maximal nodes under ``f`` that depend on ``seed`` (held constant: none of
        ``frozen``) and are ``wanted``, in a stable order; with ``within``, only among the
        nodes for which it holds (the others neither taken nor looked into)."""
        found, seen, stack = [], set(), [f]
        while stack:
            n = stack.pop()
            if (id(n) in seen or id(n) in frozen or not self.depends(n, seed)
                    or (within is not None and not within(n))):
                continue
            seen.add(id(n))
            if wanted(n):
                found.append(n)
                continue
            stack.extend(n.args)
        return sorted(found, key=lambda n: n.key)

    def _leaves(self, f: Node, axis: str, seed: Node, frozen: frozenset) -> list[Node]:
        """Maximal nodes under ``f`` that are constant along ``axis`` and depend on ``seed``."""
        return self._maximal(f, seed, frozen, lambda n: axis not in n.axes)

    def _couplings(self, f: Node, seed: Node, frozen: frozenset) -> list[Node]:
        """The maximal nodes under ``f`` through which sample ``i``'s value depends on the
        seed's other elements: scalars (sums over the samples) and cumulative sums."""
        return self._maximal(f, seed, frozen, lambda n: n.axes == () or n.op in SCANS)

    def _reduction(self, e: Node, seed: Node, frozen: frozenset):
        f = e.args[0]
        axis = _reduced_axis(e)
        if axis in seed.axes and self._reads_partners(f, seed):
            return self._over_partners(e, seed, frozen)
        # the weight each element gets in the reduction's derivative
        weight = _row_weights(e)
        # over the partner classes c of class k: values stored and read at c (a partner sum
        # there holds class k's value) are terms of their own, held constant in the others
        # over a sample's partners: values stored and read at the partners (at_partner) that
        # depend on the seed at the pair's own sample (a pair sum there holds its term) are
        # terms of their own too
        stored_reads = (self._stored_at_partner_classes(f, seed, frozen)
                        if Axis(axis).is_partner_classes
                        else self._stored_at_partners(f, axis, seed, frozen)
                        if Axis(axis).is_ragged else [])
        held = frozen | {id(a) for a in stored_reads}
        leaves = self._leaves(f, axis, seed, held)
        # a sum over the samples of values holding cumulative sums: sample i's value depends
        # on the others through them, as through the scalars
        scans = ([n for n in self._couplings(f, seed, frozen) if n.op in SCANS]
                 if e.op == "sum" else [])
        inner = held | {id(t) for t in leaves} | {id(t) for t in scans}
        total = _ZERO
        if axis in seed.axes:
            total = _m("mul", weight, (yield (f, seed, inner)))
        for stored in stored_reads:
            # d f / d A times D(A): the pair (k, c) (or (i, j)) depends on the seed at k
            # (at i) through A
            outer = yield (f, stored, inner - {id(stored)})
            if is_constant(outer, 0.0):  # read under stop_gradient or a comparison (ranks)
                continue
            through = _m("mul", outer, (yield (stored, seed, frozen)))
            total = _m("add", total, _m("rowsum", through) if axis in through.axes
                       else _m("mul", through, axis_length(axis)))
        for scan in scans:  # sum_i df_i/dT_i dT_i/dx_q: the scan's adjoint, times D(u)_q
            u = scan.args[0]
            if self._couplings(u, seed, frozen):
                raise LossError(f"the exact Hessian of a sum over {scan.op} of values that "
                                "depend on other samples is not implemented")
            through = yield (f, scan, inner - {id(scan)})
            total = _m("add", total, _m("mul", scan_adjoint(scan, through),
                                        (yield (u, seed, frozen))))
        if e.op == "logit_shift":  # its per-row target: db/dt D(t)
            target = e.args[1]
            if self.depends(target, seed) and id(target) not in frozen:
                total = _m("add", total, _m("mul", _shift_weights(e)[1],
                                            (yield (target, seed, frozen))))
        reduce_op = "sum" if e.op == "sum" else "rowsum"
        for leaf in leaves:
            through = _m("mul", weight, (yield (f, leaf, inner - {id(leaf)})))
            if axis in through.axes:
                reduced = _m(reduce_op, through)
            else:  # the same for every element: a sum of it would no longer know its axis
                reduced = _m("mul", through, axis_length(axis))
            inner_diagonal = yield (leaf, seed, frozen)
            term = _m("mul", reduced, inner_diagonal)
            if _sums_partners(e) and not is_constant(inner_diagonal):
                term = _unless_still(reduced, term)
            total = _m("add", total, term)
        return total

    def _reads_partners(self, f: Node, seed: Node) -> bool:
        """Whether ``f`` reads input ``seed`` at the partner classes of a class pair sum (a
        class matrix seed) or at the partners of a pair sum (a per-sample seed: its partner
        leaf, or a value stored and read at the partners that depends on it): then an
        element of ``f`` depends on the seed at other classes or samples too."""
        if seed.op != "input" or len(seed.axes or ()) not in (1, 2) or not self.depends(f, seed):
            return False
        wanted = partner_name(seed.value)
        return any((n.op == "input" and n.value == wanted) or (
            len(seed.axes) == 1 and n.op == "at_partner" and self.depends(n, seed))
            for n in toposort([f]))

    def _stored_at_partner_classes(self, f: Node, seed: Node, frozen: frozenset
                                   ) -> list[Node]:
        """The class matrices stored by a pass and read at the partner classes
        (``at_partner``) under ``f`` that depend on the seed, in a stable order."""
        return self._maximal(f, seed, frozen,
                             lambda n: n.op == "at_partner" and len(n.axes) == 3)

    def _stored_at_partners(self, f: Node, axis: str, seed: Node, frozen: frozenset
                            ) -> list[Node]:
        """The values stored by a pass and read at the partners of a pair sum
        (``at_partner``) that the summand ``f`` of a reduction over the partners' ``axis``
        reads pair by pair (not within a value of the pair's own sample) and that depend on
        the seed, in a stable order."""
        return self._maximal(f, seed, frozen, lambda n: n.op == "at_partner",
                             within=lambda n: axis in (n.axes or ()))

    def _at_partner_class(self, e: Node, seed: Node) -> Node:
        """D of ``e = at_partner(v)`` (v at the partner class c of each pair (k, c) of a
        row): ``d v_c / d seed_k``. ``v_c`` depends on the seed at another class k only
        where it reads the seed at its own partner classes (a partner sum of the seed: the
        term of its pair (c, k)), so this is the derivative of ``v`` with respect to that
        partner read, ``d v_c / d seed'(c, k)``, with the pair's roles swapped. Where the
        seed is not an input, ``v_c`` depends on its value at c alone (0 at k != c).
        Values of ``v`` that depend on the seed through a row reduction over the classes or
        a sum over the samples (every class of a row at once) are refused."""
        v = e.args[0]
        partner = _partner_leaf(v, seed)
        reads = depends_on(v, {id(partner)} if partner is not None else set())
        if any(len(n.axes) < 2 and (self.depends(n, seed) or reads[id(n)])
               for n in toposort([v])):
            raise LossError("the exact Hessian of a value read at the partner class of a "
                            "class pair sum that depends on the variable through a row "
                            "reduction or a sum over the samples is not implemented")
        if partner is None or len(seed.axes) != 2:
            return _ZERO
        # each class's own value v_c reads the seed at its partners c' alone (checked
        # above), so the gradient of the total is d v_c / d seed'(c, c') pair by pair
        own_pairs = grad(_m("sum", _m("rowsum", v)), partner)
        return pairs.swap_partner_classes(own_pairs)

    def _over_partners(self, e: Node, seed: Node, frozen: frozenset) -> Node:
        """D of a reduction ``e`` over the samples or the classes of a row of values that
        read the seed at partner classes (a class pair sum, ``classpairsum``) or at the
        partners of a pair sum (``pairsum``; then ``e`` is a sum over the samples): each
        element depends on the seed at its own class (sample) and as the partner of the
        others, which is ``e``'s gradient (the partner reads transposed). Exact where ``e``
        is a sum over the samples, or where the values of a row depend on that row's seed
        alone (the gradient of the total then holds row ``i``'s derivative at row ``i``), and
        nothing on the way is held constant."""
        f = e.args[0]
        held = any(id(n) in frozen and self.depends(n, seed) for n in toposort([f]))
        if held or (e.axes and self._couplings(f, seed, frozen)):
            kind = "a class pair sum" if len(seed.axes) == 2 else "a pair sum"
            raise LossError(f"the exact Hessian of {kind} nested in a sum over the samples or "
                            "in another reduction is not implemented")
        return grad(e if not e.axes else _m("sum", e), seed)

    def _scan(self, c: Node, seed: Node, frozen: frozenset):
        """D of cumulative sum ``c`` (``C_q``: the sum of ``f`` over ``q``'s set ``W(q)``):
        ``f_q``'s own term (its couplings held constant) plus, for each coupling ``T`` of
        ``f``, ``sum over i in W(q) of dC_q/df_i * df_i/dT_i * dT_i/dx_q``. Within ``W(q)``,
        ``dT_i/dx_q`` is known in closed form when ``T`` is a sum over all samples
        (``D(T)``) or a cumulative sum over the transposed sets (``i`` in ``W(q)`` means
        ``q`` is in ``T_i``'s set: ``D(u)_q``, times ``exp(s_q - T_i)`` for a logsumexp), or
        over the same sets (then only ``q``'s ties share them), or when one of the two sums
        over each sample's ties alone (its keys as strata, the other without strata: Efron's
        ties in a partial likelihood); other nestings are refused."""
        accumulates, direction = SCANS[c.op]
        f, *order = c.args  # the keys and the strata
        couplings = self._couplings(f, seed, frozen)
        inner = frozen | {id(t) for t in couplings}
        logsumexp = accumulates == "logsumexp"
        own = _m("exp", _m("sub", f, c)) if logsumexp else _ONE  # dC_q/df_q
        total = _ZERO
        if c.axes[0] in seed.axes:
            total = _m("mul", own, (yield (f, seed, inner)))
        window = scan_name(accumulates, direction)

        def over_window(weights: Node, log_factor: Node = _ZERO, shift: Node = _ZERO,
                        sets: tuple[Node, ...] = tuple(order)) -> Node:
            """The sum over i in W(q) of dC_q/df_i * weights_i * exp(log_factor_i + shift_q),
            in the log domain wherever an exponential is involved (each term is small where
            its factors alone overflow); ``sets``: the keys and strata of another window
            within W(q) (q's ties), over which to sum instead."""
            if not logsumexp and is_constant(log_factor, 0.0) and is_constant(shift, 0.0):
                return _summed_over_sets(window, weights, sets, c)
            if logsumexp:  # dC_q/df_i = exp(f_i - C_q)
                log_factor, shift = _m("add", f, log_factor), _m("sub", shift, c)
            return _signed_exp_sum(scan_name("logsumexp", direction), log_factor, weights, sets,
                                   shift)

        for coupling in couplings:
            through = yield (f, coupling, inner - {id(coupling)})  # df_i/dT_i
            if coupling.axes == ():
                term = over_window(through, _ZERO)
                total = _m("add", total, _m("mul", term, (yield (coupling, seed, frozen))))
                continue
            inner_accumulates, inner_direction = SCANS[coupling.op]
            u, *inner_order = coupling.args
            inner_logsumexp = inner_accumulates == "logsumexp"
            if not self._couplings(u, seed, frozen) and not inner_logsumexp and (
                    is_column_total(coupling) or (is_column_total(c) and not logsumexp)):
                # a column total (colsum) has every sample in its one set: inside, q is in
                # the set of every i in W(q), as for a sum over all samples; outside, the i
                # whose sums hold q are those of q's transposed set of the inner sum
                term = (over_window(through) if is_column_total(coupling) else
                        _summed_over_sets(scan_name("sum", transposed(inner_direction)),
                                          through, inner_order, c))
                total = _m("add", total, _m("mul", term, (yield (u, seed, frozen))))
                continue
            keys, strata = order
            # the keys as strata: each set is the sample's ties (those of its key)
            inner_ties = (inner_order[0] is keys and inner_order[1] is keys
                          and is_constant(strata))
            outer_ties = (inner_order[0] is keys and strata is keys
                          and is_constant(inner_order[1]))
            if ((inner_order != order and not (inner_ties or outer_ties))
                    or self._couplings(u, seed, frozen)):
                raise LossError(f"the exact Hessian of {c.op} over {coupling.op} "
                                "is known when both sum in the order of the same keys (and "
                                "strata, or one over each sample's ties), of values that "
                                "depend on each sample alone")
            if inner_ties:  # only q's ties i have dT_i/dx_q, all in W(q), and T_i = T_q
                shift = _m("sub", u, coupling) if inner_logsumexp else _ZERO
                term = over_window(through, _ZERO, shift, (keys, keys))
            elif outer_ties or transposed(inner_direction) == direction:
                # q is in the set of every i in W(q) (q's ties are in each other's sets)
                # dT_i/dx_q: D(u)_q, times exp(u_q - T_i) for a logsumexp
                term = (over_window(through, _m("neg", coupling), u) if inner_logsumexp
                        else over_window(through))
            elif logsumexp or not is_constant(order[1]):
                raise LossError(f"the exact Hessian of {c.op} over {coupling.op} in the same "
                                "direction is not implemented for logsumexp sums or within "
                                "strata (only tied keys couple them)")
            else:  # only q's ties: their sets are q's own, and T_i = T_q
                term = _m("sub", _m("add", _m(window, through, *order),
                                    _m(scan_name("sum", transposed(direction)), through,
                                       *order)),
                          _m("sum", through) if through.axes
                          else _m("mul", through, node("count", (), c.axes[0], ())))
                if inner_logsumexp:
                    term = _m("mul", term, _m("exp", _m("sub", u, coupling)))
            total = _m("add", total, _m("mul", term, (yield (u, seed, frozen))))
        if logsumexp:  # an empty set (every summand -inf) has no derivative: 0, not NaN
            total = _m("where", _m("eq", c, constant(-math.inf)), _ZERO, total)
        return total


def _pair_axes(rows: Node) -> tuple[Axis, Axis]:
    """The axes of the pairs of the samples of rows ``rows`` (n<d>, n<d>k)."""
    sample = Axis(rows.axes[0])
    return sample, sample.items()


def hessian_diag(total: Node, x: Node, gradient: Node | None = None) -> Node:
    """The diagonal of the Hessian of ``total`` with respect to input ``x``."""
    if gradient is None:
        gradient = grad(total, x)
    return _Diagonal(x if _orders_products(total, x) else None)(gradient, x)


def _orders_products(total: Node, x: Node) -> bool:
    """Whether the diagonal Hessian with respect to input ``x`` takes the chain rule's
    products in the order of their scales (:meth:`_Diagonal._product`): where ``x`` is rows
    (N, D) read as cosines, whose derivatives are powers of the rows' norms ``c`` (the
    Hessian ``~1/c^2``, a number up to ``c = 1.3e154``, a product of factors ``~c^3`` and
    ``~1/c^5`` on the way, out of float64's range from ``c = 1e62..1e103``): read pair by
    pair (``pairdot``: ntxent, pair_cosine), or each row by a dot product with it
    (``rowsum(x * v)``) and divided by its norm (a ``sqrt`` of its squared norm
    ``rowsum(x^2)``: cosine_similarity, cosine_distance, cosine_embedding). Other losses
    keep the products as the chain rule forms them."""
    if not pairs.is_rows(x):
        return False
    nodes = toposort([total])
    if any(n.op == "pairdot" and any(a is x for a in n.args) for n in nodes):
        return True
    dot = any(n.op == "rowsum" and n.args[0].op == "mul" and any(a is x for a in n.args[0].args)
              for n in nodes)
    squared_norms = {id(n) for n in nodes
                     if n.op == "rowsum" and n.args[0].op == "pow" and n.args[0].args[0] is x
                     and is_constant(n.args[0].args[1], 2.0)}
    if not (dot and squared_norms):
        return False
    reads = depends_on(total, squared_norms)
    return any(n.op == "sqrt" and reads[id(n)] for n in nodes)
