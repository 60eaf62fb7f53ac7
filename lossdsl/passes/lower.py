"""Lowering for code generation: stable primitives written through shared subexpressions.

Losses on logits use ``softplus``, ``log_sigmoid`` and ``sigmoid`` of ``z`` and of ``-z`` at
once (``bce_logits`` and its gradient use all four). Each is stable when written through
``e = exp(-|z|)``:

    softplus(z)    = max(z, 0) + log1p(e)        log_sigmoid(z) = min(z, 0) - log1p(e)
    sigmoid(z)     = (z >= 0 ? 1 : e) / (1 + e)

and ``|-z| = |z|``, so after this pass hash-consing shares ONE ``exp`` and ONE ``log1p``
between all of them: the kernel of a logistic loss's value, gradient and Hessian costs one
exponential and one logarithm per element instead of six. Applied after differentiation
(derivative rules are stated on the primitives), just before scheduling.
"""

from __future__ import annotations

from ..ir.node import Node, constant, rebuild
from .simplify import make

_ZERO, _ONE = constant(0.0), constant(1.0)


def _m(op: str, *args: Node) -> Node:
    return make(op, args)


def _shared_exponential(x: Node) -> Node:
    return _m("exp", _m("neg", _m("abs", x)))


def _lower_one(n: Node, args: tuple[Node, ...]) -> Node:
    if n.op == "softplus":
        (x,) = args
        positive_part = _m("where", _m("gt", x, _ZERO), x, _ZERO)
        return _m("add", positive_part, _m("log1p", _shared_exponential(x)))
    if n.op == "log_sigmoid":
        (x,) = args
        negative_part = _m("where", _m("lt", x, _ZERO), x, _ZERO)
        return _m("sub", negative_part, _m("log1p", _shared_exponential(x)))
    if n.op == "sigmoid":
        (x,) = args
        e = _shared_exponential(x)
        numerator = _m("where", _m("ge", x, _ZERO), _ONE, e)
        return _m("div", numerator, _m("add", _ONE, e))
    return make(n.op, args, n.value, n.axes) if args else n


def lower(roots: list[Node]) -> list[Node]:
    """Rewrite stable primitives into forms that share their exponentials and logarithms."""
    return rebuild(roots, _lower_one)
