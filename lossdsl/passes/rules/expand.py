"""The expand phase: stable primitives written through shared subexpressions, for codegen.

Losses on logits use ``softplus``, ``log_sigmoid`` and ``sigmoid`` of ``z`` and of ``-z`` at
once (``bce_logits`` and its gradient use all four). Each is stable when written through
``e = exp(-|z|)``:

    softplus(z)    = max(z, 0) + log1p(e)        log_sigmoid(z) = min(z, 0) - log1p(e)
    sigmoid(z)     = (z >= 0 ? 1 : e) / (1 + e)

and ``|-z| = |z|`` (and ``|b - a| = |a - b|``), so after this phase hash-consing shares ONE
``exp`` and ONE ``log1p`` between all of them: the kernel of a logistic loss's value,
gradient and Hessian costs one exponential and one logarithm per element instead of six.
Applied after differentiation
(derivative rules are stated on the primitives), just before scheduling.
"""

from __future__ import annotations

from ...ir.build import ONE, ZERO, apply
from ...ir.node import Node
from ..rewrite import Phase, rule


def _shared_exponential(x: Node) -> Node:
    if x.op == "sub" and x.args[1].key < x.args[0].key:
        # |b - a| = |a - b|: one spelling, so that sigmoid(a - b) and sigmoid(b - a) (a
        # pair's two directions in a pair sum) share their exponential too
        x = apply("sub", x.args[1], x.args[0])
    return apply("exp", apply("neg", apply("abs", x)))


@rule("softplus")
def expand_softplus(n: Node) -> Node:
    """``softplus(z) -> max(z, 0) + log1p(exp(-|z|))``."""
    (x,) = n.args
    positive_part = apply("where", apply("gt", x, ZERO), x, ZERO)
    return apply("add", positive_part, apply("log1p", _shared_exponential(x)))


@rule("log_sigmoid")
def expand_log_sigmoid(n: Node) -> Node:
    """``log_sigmoid(z) -> min(z, 0) - log1p(exp(-|z|))``."""
    (x,) = n.args
    negative_part = apply("where", apply("lt", x, ZERO), x, ZERO)
    return apply("sub", negative_part, apply("log1p", _shared_exponential(x)))


@rule("sigmoid")
def expand_sigmoid(n: Node) -> Node:
    """``sigmoid(z) -> (z >= 0 ? 1 : e) / (1 + e)`` with ``e = exp(-|z|)``."""
    (x,) = n.args
    e = _shared_exponential(x)
    numerator = apply("where", apply("ge", x, ZERO), ONE, e)
    return apply("div", numerator, apply("add", ONE, e))


# The rules read the node as rebuilt from its new arguments, before make: an expansion
# replaces the primitive whatever its argument (make would fold a constant one first).
EXPAND = Phase(
    "expand",
    (expand_softplus, expand_log_sigmoid, expand_sigmoid),
    canonicalize_first=False,
)
