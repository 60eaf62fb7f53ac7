"""The stabilize phase: numerically fragile patterns into stable primitives, one rule each.

``log(1 + exp(x)) -> softplus(x)``, ``log(sigmoid(x)) -> log_sigmoid(x)``,
``log(1 - sigmoid(x)) -> log_sigmoid(-x)``, ``1 - sigmoid(x) -> sigmoid(-x)``,
``exp(x) - 1 -> expm1(x)``, ``log(1 + x) -> log1p(x)``, ``1/(1 + exp(-x)) -> sigmoid(x)``,
``log(1 - exp(x))``, ``log1p(-exp(x))``, ``log(-expm1(x)) -> log1mexp(x)``,
``log(exp(a) + exp(b)) -> logaddexp(a, b)``, ``exp(k log_sigmoid(x)) -> sigmoid(x)^k`` for
k = 1..4, and two forms of the softmax family that round better. ``log(softmax(z))`` needs
no rule: softmax is built as ``exp(z - logsumexp(z))`` and ``log(exp(a)) -> a`` is a
canonical identity.

The stable primitives themselves (softplus, log_sigmoid, sigmoid, logsumexp with max shift)
are evaluated by the kernels in their stable forms, so the user never has to.
"""

from __future__ import annotations

import math

from ...ir.build import ONE, ZERO, make
from ...ir.node import Node, constant, is_constant
from ..rewrite import Phase, other_than_constant, rule


def _one_plus(n: Node) -> Node | None:
    """``x`` when ``n`` is ``1 + x`` (or ``x + 1``), else None."""
    return other_than_constant(n, 1.0) if n.op == "add" else None


def _one_minus_exp(n: Node) -> Node | None:
    """``x`` when ``n`` is ``1 - exp(x)`` or ``-expm1(x)``: the argument of a log1mexp."""
    if n.op == "sub" and is_constant(n.args[0], 1.0) and n.args[1].op == "exp":
        return n.args[1].args[0]
    if n.op == "neg" and n.args[0].op == "expm1":
        return n.args[0].args[0]
    return None


@rule("exp")
def softmax_ratio(n: Node) -> Node | None:
    """``exp(d - log(t)) -> exp(d) * (1/t)`` when ``t = rowsum(exp(d))``.

    softmax is built as ``exp(log_softmax(z))``, but the derivative of ``log(t)`` is
    ``exp(d) * (1/t)``: the gradient of a loss on softmax probabilities (expected_cost) would
    hold each probability twice, formed two ways whose roundings differ, and subtract them.
    One form, the one PyTorch computes (``exp(z - max)`` times the reciprocal of the row's
    sum), is also the more accurate: ``exp`` of ``d - log t`` inherits the rounding of that
    difference, an error of ``|d|`` ulps in the probability.
    """
    (x,) = n.args
    if x.op != "sub" or x.args[1].op != "log" or x.args[1].args[0].op != "rowsum":
        return None
    difference, (total,) = x.args[0], x.args[1].args
    terms = total.args[0]
    if terms.op != "exp" or terms.args[0] is not difference:
        return None
    return make("mul", (terms, make("div", (ONE, total))))


@rule("exp")
def power_of_sigmoid(n: Node) -> Node | None:
    """``exp(k * log_sigmoid(x)) -> sigmoid(x)^k`` for k = 1, 2, 3, 4, as a product.

    The focal loss's ``(1 - p_t)^gamma`` is written ``exp(gamma * log_sigmoid(-+z))`` so
    that no derivative meets ``0^(gamma - 2)``; at a whole gamma (2, the default) the product
    of sigmoids is the same function without an exponential per element, and rounds better:
    ``exp`` of ``k * log_sigmoid(x)`` turns that argument's rounding into a relative error
    of ``|k x|`` ulps (60 at x = -30, k = 2), the product into about ``2k``. Both underflow
    to 0 together (the sigmoid's ``exp(-|x|)`` first)."""
    (x,) = n.args
    if x.op == "log_sigmoid":
        power, inner = 1, x
    elif (x.op == "mul" and x.args[0].op == "const" and x.args[0].value in (2.0, 3.0, 4.0)
          and x.args[1].op == "log_sigmoid"):
        power, inner = int(x.args[0].value), x.args[1]
    else:
        return None
    sigmoid = make("sigmoid", inner.args)
    product = sigmoid
    for _ in range(power - 1):
        product = make("mul", (product, sigmoid))
    return product


@rule("log1p")
def log1p_negated_exp(n: Node) -> Node | None:
    """``log1p(-exp(x)) -> log1mexp(x)``: the former loses ``x`` near 0."""
    (x,) = n.args
    if x.op == "neg" and x.args[0].op == "exp":
        return make("log1mexp", x.args[0].args)
    return None


@rule("log")
def log_one_minus_exp(n: Node) -> Node | None:
    """``log(1 - exp(x))``, ``log(-expm1(x)) -> log1mexp(x)``.

    ``1 - e^x`` cancels for ``x`` near 0 (``log(1 - exp(-1e-20))`` would be -inf, not -46).
    """
    exponent = _one_minus_exp(n.args[0])
    return make("log1mexp", (exponent,)) if exponent is not None else None


@rule("log")
def log_sum_of_exps(n: Node) -> Node | None:
    """``log(exp(a) + exp(b)) -> logaddexp(a, b)``: ``e^a + e^b`` overflows from a = 710 on.

    A positive number c stands for ``exp(log c)``: ``exp(1)`` is folded to 2.718... before
    this rule meets it, and ``log(exp(z) + 2)`` overflows the same way (``c = 1`` is left to
    the softplus rule)."""
    (x,) = n.args
    if x.op != "add" or "exp" not in (x.args[0].op, x.args[1].op):
        return None
    exponents = [_exponent_of(term) for term in x.args]
    if None in exponents:
        return None
    return make("logaddexp", tuple(exponents))


def _exponent_of(term: Node) -> Node | None:
    """``a`` for ``exp(a)``, ``log c`` for a positive finite number c other than 1."""
    if term.op == "exp":
        return term.args[0]
    if term.op == "const" and 0 < term.value < math.inf and term.value != 1:
        return constant(math.log(term.value))
    return None


@rule("log")
def log_one_plus_exp(n: Node) -> Node | None:
    """``log(1 + exp(x)) -> softplus(x)``."""
    inner = _one_plus(n.args[0])
    if inner is not None and inner.op == "exp":
        return make("softplus", inner.args)
    return None


@rule("log1p")
def log1p_exp(n: Node) -> Node | None:
    """``log1p(exp(x)) -> softplus(x)`` (finite where ``exp(x)`` overflows: 800 at x = 800,
    not inf, and its derivative sigmoid(x), not ``inf * 0``)."""
    (inner,) = n.args
    return make("softplus", inner.args) if inner.op == "exp" else None


@rule("log")
def log_one_plus(n: Node) -> Node | None:
    """``log(1 + x) -> log1p(x)``."""
    inner = _one_plus(n.args[0])
    return make("log1p", (inner,)) if inner is not None else None


def _integer_power(n: Node) -> tuple[Node, int] | None:
    """``(x, k)`` when ``n`` is ``x^k`` for a whole constant ``k`` or a product of ``k``
    copies of ``x``."""
    if n.op == "pow":
        base, exponent = n.args
        if exponent.op == "const" and float(exponent.value).is_integer():
            return base, int(exponent.value)
        return None
    factors = _factors(n)
    if len(factors) >= 2 and all(f is factors[0] for f in factors):
        return factors[0], len(factors)
    return None


@rule("log")
def log_of_power(n: Node) -> Node | None:
    """``log(x*x) -> 2 log|x|``, ``log(x^k) -> k log(x)`` (``log|x|`` for even k): the
    power overflows (float64 from |x| = 1.3e154 at k = 2) or underflows (below 1.5e-154,
    ``log(0) = -inf``) where its log is a modest number, and the derivatives of the power's
    reciprocal with it (a gradient of 0 for 2e-156 at x = 1e156). Where the power is in
    range both compute the same value, ``k log x`` one rounding closer. Odd k keeps
    ``log(x)``: NaN for a negative x as ``log`` of the negative power was."""
    power = _integer_power(n.args[0])
    if power is None or power[1] in (0, 1):
        return None
    x, k = power
    base = make("abs", (x,)) if k % 2 == 0 else x
    return make("mul", (constant(float(k)), make("log", (base,))))


@rule("sqrt")
def sqrt_of_square(n: Node) -> Node | None:
    """``sqrt(x*x) -> |x|`` (and ``sqrt(x^2)``): exact where the square is a normal number
    (the square root of a correctly rounded square is |x| in binary floating point), and
    |x| where the square overflows (inf from |x| = 1.3e154 in float64, with a gradient of
    0 for 1) or underflows; its Hessian is 0, not the cancelled ``1/|x| - x^2/|x|^3``."""
    power = _integer_power(n.args[0])
    if power is None or power[1] != 2:
        return None
    return make("abs", (power[0],))


#: Beyond this magnitude ``1 + x*x`` is ``x*x`` in float64 (``x*x`` > 2^64, ulps of 2^11 and
#: more) and ``x*x`` is still finite in float32 (2^64 < 3.4e38): where a form of ``1 + x*x``
#: that overflows (from |x| = 1.3e154 in float64, 1.8e19 in float32) switches to one that
#: does not, both agree to a few ulps.
SQUARE_GUARD = 2.0 ** 32


def _guarded(x: Node, bound: float, near: Node) -> tuple[Node, Node, Node]:
    """``(c, w, m)``: the guard ``c = |x| <= bound`` and ``w = where(c, near, m - 1)`` with
    ``m = max(|x|, bound)``, which is ``|x|`` wherever ``c`` fails, carrying the derivatives
    of ``|x|`` (``|x| + stop_gradient(max(|x|, bound) - |x|)``: the carriers phase computes
    the maximum). ``1 + w`` is ``1 + near`` within the guard and ``|x|`` beyond it (``m - 1``
    is exact below 2^53 and rounds away only beyond), so one log1p or one division of
    ``1 + w`` serves both sides; at least ``bound`` in the branch not taken, ``m`` keeps it
    finite with finite derivatives at ``x = 0``, also for JAX's autodiff of the printed
    value (``0 * inf`` is NaN in a where's masked branch)."""
    magnitude = make("abs", (x,))
    at_least = make("max", (magnitude, constant(bound)))
    large = make("add", (magnitude, make("stop_gradient", (make("sub", (at_least, magnitude)),))))
    guard = make("le", (magnitude, constant(bound)))
    return guard, make("where", (guard, near, make("sub", (large, ONE)))), large


@rule("log1p")
def log1p_of_power(n: Node) -> Node | None:
    """``log1p(x*x) -> where(c, 1, 2) log1p(where(c, x*x, |x| - 1))`` with the guard
    ``c = |x| <= 2^32`` (and ``log1p(x^k)`` for even k = 2..16, guarded by ``2^(64/k)``):
    ``k log|x|`` beyond the guard, where ``1 + x^k`` rounds to ``x^k`` in float64. The power
    overflows (float64 from |x| = 1.3e154 at k = 2, float32 from 1.8e19) where the log is a
    modest number (``log1p(x*x)`` was inf, its gradient ``2x/(1 + x*x)`` 0 for ``2/x``).
    One log1p as before, of a selected argument (:func:`_guarded`), and its derivatives
    one division by ``1 + w`` as before: a comparison, a maximum and selects per element."""
    power = _integer_power(n.args[0])
    if power is None or power[1] % 2 or not 2 <= power[1] <= 16:
        return None
    x, k = power
    if x.op == "const":
        return None
    guard, argument, _ = _guarded(x, 2.0 ** math.ceil(64 / k), n.args[0])
    factor = make("where", (guard, ONE, constant(float(k))))
    return make("mul", (factor, make("log1p", (argument,))))


def _square_of(n: Node) -> Node | None:
    """``x`` when ``n`` is ``x*x`` or ``x^2``."""
    power = _integer_power(n)
    return power[0] if power is not None and power[1] == 2 else None


@rule("div")
def quotient_by_one_plus_square(n: Node) -> Node | None:
    """``a/(1 + x*x) -> a where(c, 1, 1/|x|) / (1 + where(c, x*x, |x| - 1))`` with the guard
    ``c = |x| <= 2^32``, and ``b where(c, x, sign(x)) / (1 + ...)`` for ``a = b*x``: ``1 +
    x*x`` overflows from |x| = 1.3e154 in float64 (1.8e19 in float32), where ``x/(1 + x*x)``
    is ``1/x`` (1e-200 at x = 1e200, computed as 0). Beyond the guard ``1 + x*x`` rounds to
    ``x*x`` in float64, and the quotient is ``(a/|x|)/|x|`` (``b sign(x)/|x|``): one
    division as before where ``x`` is a factor of the numerator (the derivatives of
    ``log1p(x*x)``), one more elsewhere (:func:`_guarded`)."""
    a, denominator = n.args
    squared = _one_plus(denominator)
    x = None if squared is None else _square_of(squared)
    if x is None or x.op == "const":
        return None
    guard, square, large = _guarded(x, SQUARE_GUARD, squared)
    rest = _without(_factors(a), (x,))
    if rest is None:
        numerator = make("mul", (a, make("where", (guard, ONE, make("div", (ONE, large))))))
    else:
        numerator = make("where", (guard, x, make("sign", (x,))))
        for factor in rest:
            numerator = make("mul", (factor, numerator))
    return make("div", (numerator, make("add", (ONE, square))))


@rule("div")
def quotient_by_square(n: Node) -> Node | None:
    """``a/(x*x) -> (a (1/x)) (1/x)`` (and ``a/x^2``): ``x*x`` overflows or underflows
    where the quotient need not (``1e300/(x*x)`` is 0 for 1e-20 at x = 1e160), and the
    Hessian of ``1/(x*x)``, ``2 r (2 (r x)^2) - r (r - 2 (r x)^2)`` with ``r = 1/(x*x)``,
    was ``inf - inf = NaN`` for +inf below |x| = 1e-154; that of ``(1/x)^2`` is a sum of
    positive terms. The products of the reciprocal overflow or underflow only where the
    quotient does, and cost a product where the square did."""
    a, denominator = n.args
    x = _square_of(denominator)
    if x is None or x.op == "const":
        return None
    reciprocal = make("div", (ONE, x))
    if is_constant(a, 1.0):
        return make("mul", (reciprocal, reciprocal))
    return make("mul", (make("mul", (a, reciprocal)), reciprocal))


@rule("log")
def log_sigmoid_of(n: Node) -> Node | None:
    """``log(sigmoid(x)) -> log_sigmoid(x)``."""
    (x,) = n.args
    return make("log_sigmoid", x.args) if x.op == "sigmoid" else None


@rule("log")
def log_one_minus_sigmoid(n: Node) -> Node | None:
    """``log(1 - sigmoid(x)) -> log_sigmoid(-x)``."""
    (x,) = n.args
    if x.op == "sub" and is_constant(x.args[0], 1.0) and x.args[1].op == "sigmoid":
        return make("log_sigmoid", (make("neg", x.args[1].args),))
    return None


def _log_softmax_parts(lse: Node) -> tuple[Node, Node, Node] | None:
    """``(x, s, log t)`` when ``lse`` is ``s + log(t)`` (either order) with
    ``t = rowsum(exp(x - s))``: a logsumexp of the rows of x, shifted by s."""
    if lse.op != "add":
        return None
    for shift, log_total in (lse.args, reversed(lse.args)):
        if log_total.op != "log" or log_total.args[0].op != "rowsum":
            continue
        terms = log_total.args[0].args[0]
        if terms.op == "exp" and terms.args[0].op == "sub" and terms.args[0].args[1] == shift:
            return terms.args[0].args[0], shift, log_total
    return None


def _is_onehot(n: Node) -> bool:
    """Whether ``n`` is ``onehot(y)``: ``y == k`` for the class index k of each column."""
    return n.op == "eq" and any(a.op == "class_index" for a in n.args)


def _entry_of(n: Node, x: Node) -> bool:
    """Whether ``n`` is x itself or one entry of each of its rows, ``rowsum(x onehot(y))``
    (how ``pick(x, y)`` is built)."""
    if n == x:
        return True
    if n.op != "rowsum" or n.args[0].op != "mul":
        return False
    a, b = n.args[0].args
    return (a == x and _is_onehot(b)) or (b == x and _is_onehot(a))


@rule("sub")
def shifted_log_softmax(n: Node) -> Node | None:
    """``x - (s + log(t)) -> (x - s) - log(t)`` when ``t = rowsum(exp(x - s))``, and
    ``(s + log(t)) - x -> log(t) - (x - s)``; the same for one entry of each row,
    ``pick(x, y)``, in place of x (sparse cross-entropy's ``logsumexp(z) - pick(z, y)``).

    ``x - (s + log t)`` rounds ``s + log t`` first, an absolute error of half an ulp of the
    shift: 7.6e-6 at logits near 80 in float32, 1e-12 at 1e4 in float64, which becomes a
    relative error of every softmax probability, and of a cross-entropy near 0 (all of it
    at z = (1e4, 1e4 - 30)). ``x - s`` is exact near the maximum (and is already computed,
    inside ``t``), so subtracting the small ``log t`` last keeps the result within an ulp of
    itself, as PyTorch's and JAX's log_softmax do.
    """
    a, b = n.args
    parts = _log_softmax_parts(b)
    if parts is not None and _entry_of(a, parts[0]):
        x, shift, log_total = parts
        return make("sub", (make("sub", (a, shift)), log_total))
    parts = _log_softmax_parts(a)
    if parts is not None and _entry_of(b, parts[0]):
        x, shift, log_total = parts
        return make("sub", (log_total, make("sub", (b, shift))))
    return None


def _factors(n: Node) -> list[Node]:
    """The factors of a product ``n`` (a tree of ``mul``), or ``[n]``."""
    if n.op != "mul":
        return [n]
    return [f for a in n.args for f in _factors(a)]


def _softmax_parts(factors: list[Node]) -> tuple[Node, Node] | None:
    """``(r, e)`` when ``factors`` hold ``r = 1/t`` and ``e`` with ``t = rowsum(e)``,
    ``e = exp(...)``: a softmax probability ``e/t`` of each row (how the derivatives of
    ``logsumexp`` spell it)."""
    for r in factors:
        if r.op == "div" and is_constant(r.args[0], 1.0) and r.args[1].op == "rowsum":
            e = r.args[1].args[0]
            if e.op == "exp" and any(f is e for f in factors):
                return r, e
    return None


def _without(factors: list[Node], remove: tuple[Node, ...]) -> list[Node] | None:
    """``factors`` less one occurrence of each of ``remove``, or None if one is missing."""
    rest = list(factors)
    for f in remove:
        for i, g in enumerate(rest):
            if g is f:
                del rest[i]
                break
        else:
            return None
    return rest


@rule("sub")
def softmax_variance(n: Node) -> Node | None:
    """``a - a*q -> a*(1 - q)`` for a softmax probability ``q = e/t`` that is a factor of
    ``a``, with ``1 - q`` of the row's largest term (``e = 1``: the exponentials are shifted
    by the row's maximum) written as the rest's mass over the row's sum, ``o/t``,
    ``o = rowsum(where(e == 1, 0, e))``.

    The diagonal Hessian of a cross-entropy on logits is ``q - q*q`` (times the label mass):
    for a confident class ``q`` rounds to 1 and ``q - q*q`` to 0 or to an ulp of 1 (float32
    z = (17, 0, 0): 1.19e-7 where q (1 - q) is 8.28e-8; 0 from z = (20, 0, 0), and in
    float64 from (40, 0, 0)). ``o`` sums the other terms alone, so ``o/t`` keeps its digits
    however small. Only one term of a row can be 1 with ``t < 2``; elsewhere (every other
    term, ties at the maximum, a row whose other mass is 1 or more) ``q <= 1/2`` and
    ``1 - q`` does not cancel. A row with a +inf logit (``t = inf``) keeps ``1 - q``, as
    before."""
    a, b = n.args
    factors_a = _factors(a)
    parts = _softmax_parts(factors_a)
    if parts is None:
        return None
    r, e = parts
    extra = _without(_factors(b), tuple(factors_a))
    if extra is None or len(extra) != 2 or _without(extra, (r, e)) != []:
        return None
    total = r.args[1]
    largest = make("eq", (e, ONE))
    others = make("rowsum", (make("where", (largest, ZERO, e)),))
    alone = make("and", (largest, make("lt", (total, constant(2.0)))))
    complement = make("where", (alone, make("mul", (others, r)),
                                make("sub", (ONE, make("mul", (r, e))))))
    return make("mul", (a, complement))


@rule("sub")
def exp_minus_one(n: Node) -> Node | None:
    """``exp(x) - 1 -> expm1(x)``."""
    a, b = n.args
    return make("expm1", a.args) if a.op == "exp" and is_constant(b, 1.0) else None


@rule("sub")
def one_minus_sigmoid(n: Node) -> Node | None:
    """``1 - sigmoid(x) -> sigmoid(-x)``."""
    a, b = n.args
    if is_constant(a, 1.0) and b.op == "sigmoid":
        return make("sigmoid", (make("neg", b.args),))
    return None


@rule("add")
def exp_plus_minus_one(n: Node) -> Node | None:
    """``-1 + exp(x) -> expm1(x)`` (either order: ``make`` puts the constant first)."""
    for a, b in (n.args, n.args[::-1]):
        if a.op == "exp" and is_constant(b, -1.0):
            return make("expm1", a.args)
    return None


@rule("div")
def reciprocal_one_plus_exp(n: Node) -> Node | None:
    """``1/(1 + exp(x)) -> sigmoid(-x)``."""
    a, b = n.args
    if not is_constant(a, 1.0):
        return None
    inner = _one_plus(b)
    if inner is not None and inner.op == "exp":
        return make("sigmoid", (make("neg", inner.args),))
    return None


STABILIZE = Phase(
    "stabilize",
    (
        softmax_ratio,
        power_of_sigmoid,
        log1p_negated_exp,
        log_one_minus_exp,
        log_sum_of_exps,
        log_one_plus_exp,
        log1p_exp,
        log_one_plus,
        log_of_power,
        log1p_of_power,
        sqrt_of_square,
        log_sigmoid_of,
        log_one_minus_sigmoid,
        shifted_log_softmax,
        softmax_variance,
        exp_minus_one,
        one_minus_sigmoid,
        exp_plus_minus_one,
        reciprocal_one_plus_exp,
        quotient_by_one_plus_square,
        quotient_by_square,
    ),
)
