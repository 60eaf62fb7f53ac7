"""Stable rewrites: replace numerically fragile patterns with stable primitives.

``log(1 + exp(x)) -> softplus(x)``, ``log(sigmoid(x)) -> log_sigmoid(x)``,
``log(1 - sigmoid(x)) -> log_sigmoid(-x)``, ``1 - sigmoid(x) -> sigmoid(-x)``,
``exp(x) - 1 -> expm1(x)``, ``log(1 + x) -> log1p(x)``, ``1/(1 + exp(-x)) -> sigmoid(x)``,
``log(1 - exp(x))``, ``log1p(-exp(x))``, ``log(-expm1(x)) -> log1mexp(x)``,
``log(exp(a) + exp(b)) -> logaddexp(a, b)``;
``log(softmax(z))`` needs no rule: softmax is built as ``exp(z - logsumexp(z))`` and
``log(exp(a)) -> a`` is an identity of ``simplify.make``.

The stable primitives themselves (softplus, log_sigmoid, sigmoid, logsumexp with max shift)
are evaluated by the kernels in their stable forms, so the user never has to.
"""

from __future__ import annotations

from ..ir.node import Node, constant, is_constant, rebuild
from .simplify import make


def _one_plus(n: Node) -> Node | None:
    """``x`` when ``n`` is ``1 + x`` (or ``x + 1``), else None."""
    if n.op == "add":
        a, b = n.args
        if is_constant(a, 1.0):
            return b
        if is_constant(b, 1.0):
            return a
    return None


def _shifted_log_softmax(x: Node, lse: Node) -> Node | None:
    """``(x - s) - log(sum exp(x - s))`` when ``lse`` is ``s + log(rowsum(exp(x - s)))``.

    ``x - (s + log t)`` rounds ``s + log t`` first, an absolute error of half an ulp of the
    shift: 7.6e-6 at logits near 80 in float32, 1e-12 at 1e4 in float64, which becomes a
    relative error of every softmax probability. ``x - s`` is exact near the maximum (and is
    already computed, inside ``t``), so subtracting the small ``log t`` last keeps the result
    within an ulp of itself, as PyTorch's and JAX's log_softmax do.
    """
    if lse.op != "add":
        return None
    for shift, log_total in (lse.args, reversed(lse.args)):
        if log_total.op != "log" or log_total.args[0].op != "rowsum":
            continue
        terms = log_total.args[0].args[0]
        if terms.op == "exp" and terms.args[0].op == "sub" and terms.args[0].args == (x, shift):
            return make("sub", (terms.args[0], log_total))
    return None


def _softmax_ratio(x: Node) -> Node | None:
    """``exp(d) * (1/t)`` when ``x`` is ``d - log(t)`` with ``t = rowsum(exp(d))``.

    softmax is built as ``exp(log_softmax(z))``, but the derivative of ``log(t)`` is
    ``exp(d) * (1/t)``: the gradient of a loss on softmax probabilities (expected_cost) would
    hold each probability twice, formed two ways whose roundings differ, and subtract them.
    One form, the one PyTorch computes (``exp(z - max)`` times the reciprocal of the row's
    sum), is also the more accurate: ``exp`` of ``d - log t`` inherits the rounding of that
    difference, an error of ``|d|`` ulps in the probability.
    """
    if x.op != "sub" or x.args[1].op != "log" or x.args[1].args[0].op != "rowsum":
        return None
    difference, (total,) = x.args[0], x.args[1].args
    terms = total.args[0]
    if terms.op != "exp" or terms.args[0] is not difference:
        return None
    return make("mul", (terms, make("div", (constant(1.0), total))))


def _one_minus_exp(n: Node) -> Node | None:
    """``x`` when ``n`` is ``1 - exp(x)`` or ``-expm1(x)``: the argument of a log1mexp."""
    if n.op == "sub" and is_constant(n.args[0], 1.0) and n.args[1].op == "exp":
        return n.args[1].args[0]
    if n.op == "neg" and n.args[0].op == "expm1":
        return n.args[0].args[0]
    return None


def _rewrite(n: Node) -> Node | None:
    op, args = n.op, n.args
    if op == "exp":
        return _softmax_ratio(args[0])
    if op == "log1p" and args[0].op == "neg" and args[0].args[0].op == "exp":
        return make("log1mexp", args[0].args[0].args)  # log1p(-exp(x)) loses x near 0
    if op == "log":
        (x,) = args
        # 1 - e^x cancels for x near 0 (log(1 - exp(-1e-20)) would be -inf, not -46)
        exponent = _one_minus_exp(x)
        if exponent is not None:
            return make("log1mexp", (exponent,))
        if x.op == "add" and x.args[0].op == "exp" and x.args[1].op == "exp":
            # e^a + e^b overflows from a = 710 on
            return make("logaddexp", (x.args[0].args[0], x.args[1].args[0]))
        inner = _one_plus(x)
        if inner is not None:
            if inner.op == "exp":
                return make("softplus", inner.args)
            return make("log1p", (inner,))
        if x.op == "sigmoid":
            return make("log_sigmoid", x.args)
        if x.op == "sub" and is_constant(x.args[0], 1.0) and x.args[1].op == "sigmoid":
            return make("log_sigmoid", (make("neg", x.args[1].args),))
    elif op == "sub":
        a, b = args
        shifted = _shifted_log_softmax(a, b)
        if shifted is not None:
            return shifted
        if a.op == "exp" and is_constant(b, 1.0):
            return make("expm1", a.args)
        if is_constant(a, 1.0) and b.op == "sigmoid":
            return make("sigmoid", (make("neg", b.args),))
    elif op == "add":
        a, b = args
        if a.op == "exp" and is_constant(b, -1.0):
            return make("expm1", a.args)
    elif op == "div" and is_constant(args[0], 1.0):
        inner = _one_plus(args[1])
        if inner is not None and inner.op == "exp":
            return make("sigmoid", (make("neg", inner.args),))
    return None


def stabilize(roots: list[Node]) -> list[Node]:
    """Rewrite fragile patterns into stable primitives until nothing changes."""

    def rule(old: Node, args: tuple[Node, ...]) -> Node:
        current = make(old.op, args, old.value, old.axes) if args else old
        for _ in range(8):  # each rewrite can expose another at the same node
            replacement = _rewrite(current)
            if replacement is None or replacement is current:
                break
            current = replacement
        return current

    return rebuild(roots, rule)
