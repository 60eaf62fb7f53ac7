"""The canonicalize phase: algebraic identities, one named rule each.

``ir.build.make`` applies these to every node it builds (after folding constants and ordering
the arguments of commutative operations, so ``a`` below is the constant of a constant product),
and :func:`passes.simplify.simplify` rebuilds a whole graph through it. Every replacement is
itself built by ``make``, so it is canonical already.

Assumptions (the usual ones of symbolic algebra systems such as SymPy): ``x*0 -> 0`` and
``x-x -> 0`` assume ``x`` is finite. ``x/x`` is never simplified (it is NaN at 0).
"""

from __future__ import annotations

import math

from ...ir.build import ZERO, install_canonical_rules, make
from ...ir.node import Node, constant, is_constant
from ...ops.compare import COMPARISONS, LOGICAL
from ..rewrite import Phase, other_than_constant, rule


def _neg(x: Node) -> Node:
    return make("neg", (x,))


# --- add ---------------------------------------------------------------------------------------


@rule("add")
def add_zero(n: Node) -> Node | None:
    """``0 + x -> x``, ``x + 0 -> x``."""
    return other_than_constant(n, 0.0)


@rule("add")
def add_negation_to_sub(n: Node) -> Node | None:
    """``a + -b -> a - b``, ``-a + b -> b - a``."""
    a, b = n.args
    if b.op == "neg":
        return make("sub", (a, b.args[0]))
    if a.op == "neg":
        return make("sub", (b, a.args[0]))
    return None


@rule("add")
def add_same_term(n: Node) -> Node | None:
    """``x + x -> 2*x``."""
    a, b = n.args
    return make("mul", (constant(2.0), a)) if a is b else None


def _factor_and_rest(n: Node) -> tuple[float, Node]:
    """``(c, x)`` for ``n = c*x`` with a constant ``c``, else ``(1, n)``."""
    if n.op == "mul" and n.args[0].op == "const":
        return n.args[0].value, n.args[1]
    return 1.0, n


@rule("add")
def add_like_terms(n: Node) -> Node | None:
    """``c1*x + c2*x -> (c1 + c2)*x`` (also ``x + c*x``)."""
    a_factor, a_rest = _factor_and_rest(n.args[0])
    b_factor, b_rest = _factor_and_rest(n.args[1])
    if a_rest is b_rest and a_rest.op != "const":
        total = a_factor + b_factor
        if _out_of_range(total, a_factor, b_factor):
            return None
        return make("mul", (constant(total), a_rest))
    return None


# float32's largest and smallest normal magnitudes: a folded constant that leaves this range
# while the constants written do not would overflow (or flush) in a float32 kernel, where
# the formula as written stays finite (p*1e20*1e20 at p = 1e-20 is 1e20, not inf*1e-20)
_FLOAT32_MAX, _FLOAT32_TINY = 3.4028234663852886e38, 1.1754943508222875e-38


def _out_of_range(folded: float, *written: float) -> bool:
    """Whether folding the ``written`` constants into ``folded`` leaves the float32 range
    (or the finite numbers) that each of them is in."""
    def magnitude(value: float) -> int:  # 0: zero, 1: normal, 2: too small, 3: too large
        size = abs(value)
        return (0 if size == 0 else 1 if _FLOAT32_TINY <= size <= _FLOAT32_MAX
                else 2 if size < _FLOAT32_TINY else 3)

    if math.isinf(folded) and all(math.isfinite(value) for value in written):
        return True
    worst = max(magnitude(value) for value in written)
    return magnitude(folded) > max(worst, 1) or (
        magnitude(folded) == 0 and all(value != 0 for value in written))


@rule("add")
def add_complementary_wheres(n: Node) -> Node | None:
    """``where(c, x, 0) + where(c, 0, y) -> where(c, x, y)``: one select instead of two."""
    a, b = n.args
    if a.op == "where" and b.op == "where" and a.args[0] is b.args[0]:
        if is_constant(a.args[2], 0.0) and is_constant(b.args[1], 0.0):
            return make("where", (a.args[0], a.args[1], b.args[2]))
        if is_constant(a.args[1], 0.0) and is_constant(b.args[2], 0.0):
            return make("where", (a.args[0], b.args[1], a.args[2]))
    return None


@rule("add", "sub")
def wheres_on_one_condition(n: Node) -> Node | None:
    """``where(c, a, b) ± where(c, d, e) -> where(c, a ± d, b ± e)``.

    Reverse mode sums a shared node's adjoint over its uses, so a value used in both branches
    of a select (``exp(z)`` in ``where(z < -6, exp(z) - exp(z)^2/2, softplus(z))``) gets
    ``where(c, 1, 0) - where(c, exp(z), 0)``; merged into one select, the chain factor
    ``exp(z)`` then moves inside it (``nan_safe_where_product``) instead of multiplying the
    branch not taken, which is ``inf * 0 = NaN`` where ``exp(z)`` overflows.
    """
    a, b = n.args
    if a.op == "where" and b.op == "where" and a.args[0] is b.args[0]:
        return make("where", (a.args[0], make(n.op, (a.args[1], b.args[1])),
                              make(n.op, (a.args[2], b.args[2]))))
    return None


# --- sub ---------------------------------------------------------------------------------------


@rule("sub")
def sub_zero(n: Node) -> Node | None:
    """``x - 0 -> x``."""
    a, b = n.args
    return a if is_constant(b, 0.0) else None


@rule("sub")
def zero_sub(n: Node) -> Node | None:
    """``0 - x -> -x``."""
    a, b = n.args
    return _neg(b) if is_constant(a, 0.0) else None


@rule("sub")
def sub_self(n: Node) -> Node | None:
    """``x - x -> 0`` (for finite ``x``)."""
    a, b = n.args
    return ZERO if a is b else None


@rule("sub")
def sub_negation_to_add(n: Node) -> Node | None:
    """``a - -b -> a + b``."""
    a, b = n.args
    return make("add", (a, b.args[0])) if b.op == "neg" else None


@rule("sub")
def sub_negative_constant(n: Node) -> Node | None:
    """``x - (-c) -> x + c`` for a negative constant."""
    a, b = n.args
    if b.op == "const" and b.value < 0:
        return make("add", (a, constant(-b.value)))
    return None


# --- mul ---------------------------------------------------------------------------------------


@rule("mul")
def mul_zero(n: Node) -> Node | None:
    """``0*x -> 0`` (for finite ``x``)."""
    a, b = n.args
    return ZERO if is_constant(a, 0.0) or is_constant(b, 0.0) else None


@rule("mul")
def mul_one(n: Node) -> Node | None:
    """``1*x -> x``."""
    a, b = n.args
    if is_constant(a, 1.0):
        return b
    if is_constant(b, 1.0):
        return a
    return None


@rule("mul")
def mul_minus_one(n: Node) -> Node | None:
    """``-1*x -> -x``."""
    a, b = n.args
    if is_constant(a, -1.0):
        return _neg(b)
    if is_constant(b, -1.0):
        return _neg(a)
    return None


@rule("mul")
def mul_negation_outward(n: Node) -> Node | None:
    """``(-a)*b -> -(a*b)``, ``a*(-b) -> -(a*b)``."""
    a, b = n.args
    if a.op == "neg":
        return _neg(make("mul", (a.args[0], b)))
    if b.op == "neg":
        return _neg(make("mul", (a, b.args[0])))
    return None


@rule("mul")
def mul_by_reciprocal(n: Node) -> Node | None:
    """``(x*v) * (1/x) -> (x*v) / x`` (and ``x * (1/x) -> x / x``): a factor divided by
    itself, as the derivative of ``x log x`` (``log x + x * (1/x)``) has it, in one
    rounding, and with a derivative that stays finite where ``x`` is tiny: that of the
    product, ``1/x - x * (1/x/x)``, was ``inf - inf`` at x = 1e-300; the quotient's is
    ``1/x - (x/x)/x``. Other reciprocals stay products: where ``1/x`` is shared, a product
    per use is cheaper than a division (measured: dividing every ``u * (1/x)`` made
    pseudo_huber's gradient and Hessian 35% slower)."""
    for u, reciprocal in (n.args, n.args[::-1]):
        if reciprocal.op == "div" and is_constant(reciprocal.args[0], 1.0):
            x = reciprocal.args[1]
            if u is x or (u.op == "mul" and x in u.args):
                return make("div", (u, x))
    return None


@rule("mul")
def mul_by_reciprocal_square(n: Node) -> Node | None:
    """``a * (1/x/x) -> (a * (1/x)) * (1/x)``: the derivative of ``1/x`` (of ``log x``, times
    the inner derivative) is ``-(1/x/x)``, which underflows to 0 from x = 1.3e154 (1.8e19 in
    float32) while ``a * (1/x)`` need not: the Hessian of ``log(cosh(p))`` kept its ``u''/u``
    term alone, 1 for 0 at p = 400, once ``u' * (u' * (1/u/u))`` lost the other. Products
    of the shared reciprocal, as before, not divisions (see :func:`mul_by_reciprocal`)."""
    for a, square in (n.args, n.args[::-1]):
        if (square.op == "div" and square.args[0].op == "div"
                and is_constant(square.args[0].args[0], 1.0)
                and square.args[0].args[1] is square.args[1]):
            reciprocal = square.args[0]
            return make("mul", (make("mul", (a, reciprocal)), reciprocal))
    return None


def _reciprocal(n: Node) -> bool:
    """Whether ``n`` is ``1/u``."""
    return n.op == "div" and is_constant(n.args[0], 1.0)


@rule("mul")
def mul_reciprocals_paired(n: Node) -> Node | None:
    """``(r * (r*a)) * b -> (r*a) * (r*b)`` for a reciprocal ``r = 1/u``: each reciprocal
    times one factor of the numerator, not the two reciprocals first. The Hessian of
    ``log(u)`` (of ``log1p(x*x)``, ``u = 1 + x*x``) holds ``-u'^2/u^2`` as
    ``(u' * (1/u)) * (1/u)`` times ``u'`` (what :func:`mul_by_reciprocal_square` leaves, then
    the chain rule's factor): ``u' * r * r`` underflows to 0 from x = 1e103 in float64
    (x / x^4), and the Hessian ``2 r - 4 x^2 r^2`` kept ``2 r``, the wrong sign, up to
    x = 1e154; ``(x r) (x r)`` is ``1/x^2`` wherever that is representable."""
    for p, b in (n.args, n.args[::-1]):
        if p.op != "mul" or b.op == "const" or _reciprocal(b):
            continue
        for r, q in (p.args, p.args[::-1]):
            if (_reciprocal(r) and q.op == "mul" and any(f is r for f in q.args)
                    and not (b.op == "mul" and any(f is r for f in b.args))):
                return make("mul", (q, make("mul", (r, b))))
    return None


@rule("mul")
def mul_quotient_square(n: Node) -> Node | None:
    """``(a/u/u) * b -> (a/u) * (b/u)``: the derivative of ``a/u`` in ``u`` is
    ``-(a/u)/u``, which underflows where ``(a/u) (u'/u)`` does not (the gradient of
    ``x/(1 + x*x)``, ``1/u - 2 x (x/u/u)``, kept ``1/u``, the wrong sign, from x = 1e103 in
    float64). ``1/u/u`` is :func:`mul_by_reciprocal_square`'s."""
    for square, b in (n.args, n.args[::-1]):
        if (square.op == "div" and square.args[0].op == "div"
                and square.args[0].args[1] is square.args[1]
                and not is_constant(square.args[0].args[0], 1.0)):
            quotient, u = square.args
            if b.op == "div" and b.args[1] is u:
                continue  # a product of two quotients by u already
            return make("mul", (quotient, make("div", (b, u))))
    return None


@rule("mul")
def mul_constants_together(n: Node) -> Node | None:
    """``c1*(c2*x) -> (c1*c2)*x``."""
    a, b = n.args
    if a.op == "const" and b.op == "mul" and b.args[0].op == "const":
        product = a.value * b.args[0].value
        if _out_of_range(product, a.value, b.args[0].value):
            return None
        return make("mul", (constant(product), b.args[1]))
    return None


# The constants mul_constant_outward moves: the written c*x keeps a product x*y that would
# overflow (or flush to 0) in range, and c*(x*y) does not ((1e-30*x)*y at x = y = 1e30 is
# 1e30 in float32, 1e-30*inf after the move); within 2^-24..2^24 only a product within that
# factor of the range's edge can (the derivatives' 2s, 1/2s and small counts all move)
_OUTWARD_MAGNITUDES = (2.0 ** -24, 2.0 ** 24)


@rule("mul")
def mul_constant_outward(n: Node) -> Node | None:
    """``(c*x)*y -> c*(x*y)``: float constant factors outwards, so they fold together; only
    constants of moderate magnitude (``_OUTWARD_MAGNITUDES``), whose move cannot overflow a
    product that the written order keeps finite, except within that factor of the range."""
    a, b = n.args
    if a.op != "const":
        for first, second in ((a, b), (b, a)):
            if first.op == "mul" and first.args[0].op == "const":
                magnitude = abs(first.args[0].value)
                low, high = _OUTWARD_MAGNITUDES
                if not low <= magnitude <= high:
                    continue
                return make("mul", (first.args[0], make("mul", (first.args[1], second))))
    return None


@rule("mul")
def nan_safe_where_product(n: Node) -> Node | None:
    """``where(c, x, 0)*y -> where(c, x*y, 0)`` (and ``where(c, 0, x)*y``).

    The product is then never ``0 * inf = NaN`` in the branch not taken: the classic
    NaN-through-where gradient problem, which every masked derivative would otherwise meet.
    """
    a, b = n.args
    for first, second in ((a, b), (b, a)):
        if first.op == "where":
            condition, then, otherwise = first.args
            if is_constant(otherwise, 0.0):
                return make("where", (condition, make("mul", (then, second)), ZERO))
            if is_constant(then, 0.0):
                return make("where", (condition, ZERO, make("mul", (otherwise, second))))
    return None


# --- div ---------------------------------------------------------------------------------------


@rule("div")
def div_one(n: Node) -> Node | None:
    """``x/1 -> x``."""
    a, b = n.args
    return a if is_constant(b, 1.0) else None


@rule("div")
def zero_div_constant(n: Node) -> Node | None:
    """``0/c -> 0`` for a nonzero constant ``c``."""
    a, b = n.args
    if is_constant(a, 0.0) and b.op == "const" and b.value != 0:
        return ZERO
    return None


@rule("div")
def div_negation_outward(n: Node) -> Node | None:
    """``(-a)/b -> -(a/b)``, ``a/(-b) -> -(a/b)``."""
    a, b = n.args
    if a.op == "neg":
        return _neg(make("div", (a.args[0], b)))
    if b.op == "neg":
        return _neg(make("div", (a, b.args[0])))
    return None


# --- unary -------------------------------------------------------------------------------------


@rule("neg")
def neg_neg(n: Node) -> Node | None:
    """``--x -> x``."""
    (x,) = n.args
    return x.args[0] if x.op == "neg" else None


@rule("neg")
def neg_sub(n: Node) -> Node | None:
    """``-(a - b) -> b - a``."""
    (x,) = n.args
    return make("sub", (x.args[1], x.args[0])) if x.op == "sub" else None


@rule("pow")
def pow_one(n: Node) -> Node | None:
    """``x^1 -> x``."""
    base, exponent = n.args
    return base if is_constant(exponent, 1.0) else None


@rule("pow")
def pow_zero(n: Node) -> Node | None:
    """``x^0 -> 1``."""
    _, exponent = n.args
    return constant(1.0) if is_constant(exponent, 0.0) else None


@rule("log")
def log_exp(n: Node) -> Node | None:
    """``log(exp(x)) -> x`` (what makes ``log(softmax(z))`` a log-softmax)."""
    (x,) = n.args
    return x.args[0] if x.op == "exp" else None


@rule("abs")
def abs_of_sign_free(n: Node) -> Node | None:
    """``|-x| -> |x|``, ``||x|| -> |x|``."""
    (x,) = n.args
    return make("abs", x.args) if x.op in ("neg", "abs") else None


@rule("abs")
def abs_of_signed_select(n: Node) -> Node | None:
    """``|where(c, -x, x)| -> |x|`` (and ``|where(c, x, -x)|``): a label that picks the sign
    (``log_sigmoid(where(y == 1, -z, z))``) then shares ``exp(-|z|)`` with the other terms."""
    (x,) = n.args
    if x.op != "where":
        return None
    _, then, otherwise = x.args
    if then.op == "neg" and then.args[0] is otherwise:
        return make("abs", (otherwise,))
    if otherwise.op == "neg" and otherwise.args[0] is then:
        return make("abs", (then,))
    return None


@rule("stop_gradient")
def stop_gradient_of_constant(n: Node) -> Node | None:
    """``stop_gradient(x) -> x`` where ``x`` has no gradient anyway (or is stopped already)."""
    (x,) = n.args
    return x if x.op in ("const", "param", "count", "stop_gradient") else None


@rule("min", "max")
def min_max_self(n: Node) -> Node | None:
    """``min(x, x) -> x``, ``max(x, x) -> x``."""
    a, b = n.args
    return a if a is b else None


# --- logic -------------------------------------------------------------------------------------

#: Operations whose value is 0 or 1 (a comparison's NaN operand gives 0).
_CONDITIONS = frozenset(COMPARISONS + LOGICAL)


@rule("and", "or")
def logic_with_a_constant(n: Node) -> Node | None:
    """``0 and c -> 0``, ``1 or c -> 1``; ``1 and c -> c``, ``0 or c -> c`` where ``c`` is
    itself a condition (0 or 1): a ``requires`` clause whose numbers decide a part of it."""
    a, b = n.args
    for known, other in ((a, b), (b, a)):
        if known.op != "const" or known.value != known.value:  # NaN: left as it is
            continue
        deciding = (known.value == 0) == (n.op == "and")
        if deciding:
            return constant(0.0 if n.op == "and" else 1.0)
        if other.op in _CONDITIONS:
            return other
    return None


# --- where -------------------------------------------------------------------------------------


@rule("where")
def where_same_branches(n: Node) -> Node | None:
    """``where(c, x, x) -> x``."""
    _, then, otherwise = n.args
    return then if then is otherwise else None


@rule("where")
def where_constant_condition(n: Node) -> Node | None:
    """``where(1, x, y) -> x``, ``where(0, x, y) -> y``."""
    condition, then, otherwise = n.args
    if condition.op == "const":
        return then if condition.value != 0 else otherwise
    return None


@rule("where")
def where_repeated_condition(n: Node) -> Node | None:
    """``where(c, where(c, x, _), y) -> where(c, x, y)`` (and in the other branch): a branch
    that tests the same condition again knows its outcome."""
    condition, then, otherwise = n.args
    if then.op == "where" and then.args[0] is condition:
        return make("where", (condition, then.args[1], otherwise))
    if otherwise.op == "where" and otherwise.args[0] is condition:
        return make("where", (condition, then, otherwise.args[2]))
    return None


# --- reductions and counts ---------------------------------------------------------------------


@rule("sum", "rowsum")
def reduction_of_zero(n: Node) -> Node | None:
    """``sum(0) -> 0``: a Hessian term that vanished, which must not reach the glue code."""
    (x,) = n.args
    return x if is_constant(x, 0.0) else None


@rule("sum", "rowsum")
def reduction_factor_out(n: Node) -> Node | None:
    """``sum(c*f) -> c*sum(f)``, ``sum(-f) -> -sum(f)``, ``sum(f/c) -> sum(f)/c`` for factors
    ``c`` that do not vary along the reduced axis."""
    (x,) = n.args
    if x.axes is None or not x.axes:
        return None
    axis = x.axes[-1]

    def constant_along(m: Node) -> bool:
        return m.axes is not None and axis not in m.axes

    # Peel every such factor, divisor and negation in a loop, then rebuild them around one
    # reduction: a product of thousands of per-sample-constant factors must not recurse.
    outside: list[tuple[str, Node | None]] = []
    inner = x
    while True:
        if inner.op == "mul":
            a, b = inner.args
            if constant_along(a):
                outside.append(("mul", a))
                inner = b
                continue
            if constant_along(b):
                outside.append(("mul", b))
                inner = a
                continue
        elif inner.op == "neg":
            outside.append(("neg", None))
            inner = inner.args[0]
            continue
        elif inner.op == "div" and constant_along(inner.args[1]):
            outside.append(("div", inner.args[1]))
            inner = inner.args[0]
            continue
        break
    if not outside:
        return None
    result = make(n.op, (inner,))
    for kind, factor in reversed(outside):
        if kind == "mul":
            result = make("mul", (factor, result))
        elif kind == "neg":
            result = make("neg", (result,))
        else:
            result = make("div", (result, factor))
    return result


@rule("count_as")
def count_as_one(n: Node) -> Node | None:
    """``count_as(l, 1) -> l``: every sample counts once, the plain mean."""
    loss, count = n.args
    return loss if is_constant(count, 1.0) else None


CANONICALIZE = Phase(
    "canonicalize",
    (
        add_zero,
        add_negation_to_sub,
        add_same_term,
        add_like_terms,
        add_complementary_wheres,
        wheres_on_one_condition,
        sub_zero,
        zero_sub,
        sub_self,
        sub_negation_to_add,
        sub_negative_constant,
        mul_zero,
        mul_one,
        mul_minus_one,
        mul_negation_outward,
        mul_constants_together,
        mul_constant_outward,
        nan_safe_where_product,
        mul_by_reciprocal,  # after it: a masked product keeps its mask
        mul_by_reciprocal_square,
        mul_reciprocals_paired,
        mul_quotient_square,
        div_one,
        zero_div_constant,
        div_negation_outward,
        neg_neg,
        neg_sub,
        pow_one,
        pow_zero,
        log_exp,
        abs_of_sign_free,
        abs_of_signed_select,
        stop_gradient_of_constant,
        min_max_self,
        logic_with_a_constant,
        where_same_branches,
        where_constant_condition,
        where_repeated_condition,
        reduction_of_zero,
        reduction_factor_out,
        count_as_one,
    ),
    # make applies these rules to every node it builds, and a replacement is built by make
    # too: a node fresh from make is canonical, so the driver rewrites nothing further
    max_rounds=0,
)

install_canonical_rules(CANONICALIZE)
