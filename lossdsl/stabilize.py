"""Stable rewrites: replace numerically fragile patterns with stable primitives.

``log(1 + exp(x)) -> softplus(x)``, ``log(sigmoid(x)) -> log_sigmoid(x)``,
``log(1 - sigmoid(x)) -> log_sigmoid(-x)``, ``1 - sigmoid(x) -> sigmoid(-x)``,
``exp(x) - 1 -> expm1(x)``, ``log(1 + x) -> log1p(x)``, ``1/(1 + exp(-x)) -> sigmoid(x)``;
``log(softmax(z))`` needs no rule: softmax is built as ``exp(z - logsumexp(z))`` and
``log(exp(a)) -> a`` is an identity of ``simplify.make``.

The stable primitives themselves (softplus, log_sigmoid, sigmoid, logsumexp with max shift)
are evaluated by the kernels in their stable forms, so the user never has to.
"""

from __future__ import annotations

from .ir import Node, is_constant, rebuild
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


def _rewrite(n: Node) -> Node | None:
    op, args = n.op, n.args
    if op == "log":
        (x,) = args
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
