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

The carriers phase, applied after it, drops what only derivatives needed. A loss whose value
is one formula and whose derivatives are another's writes
``stop_gradient(exact) + (former - stop_gradient(former))`` (``poisson(full=1)``,
``negative_binomial``; ``bce`` as ``former + stop_gradient(exact - former)``; ``rank_xendcg``
adds ``(z - stop_gradient(z)) * stop_gradient(terms)``): every derivative graph was taken
from the graph with the former form in it, so in the graphs the kernels evaluate the former
form is dead weight, computed only to be subtracted (a third of ``negative_binomial``'s value
kernel: ``lgamma`` and ``log_poch`` for nothing).
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


# --- derivative carriers: values that only derivatives needed -----------------------------------


def _stopped(n: Node) -> Node | None:
    """The argument of ``stop_gradient(x)``, else None."""
    return n.args[0] if n.op == "stop_gradient" else None


def _carried_value(n: Node) -> tuple[Node, Node] | None:
    """``(x, e)`` where the sum ``n`` is ``x + stop_gradient(e - x)`` (either order): the
    value ``e`` with the derivatives of ``x``; else None."""
    for x, other in (n.args, n.args[::-1]):
        difference = _stopped(other)
        if difference is not None and difference.op == "sub" and difference.args[1] is x:
            return x, difference.args[0]
    return None


def carrier_of(n: Node) -> tuple[Node, float] | None:
    """``(x, 1.0)`` where ``n`` is ``x - stop_gradient(x)`` (a carrier: the value 0 with the
    derivatives of ``x``), ``(x, -1.0)`` where it is ``stop_gradient(x) - x``; else None."""
    if n.op != "sub":
        return None
    a, b = n.args
    if _stopped(b) is a:
        return a, 1.0
    if _stopped(a) is b:
        return b, -1.0
    return None


@rule("sub")
def carrier_minus_stopped(n: Node) -> Node | None:
    """``x - stop_gradient(x) -> 0`` (and ``stop_gradient(x) - x``), in graphs whose
    derivatives are taken: ``x`` is there to carry derivatives, and its value cancels.

    Where ``x`` is inf or NaN the difference was NaN and is now 0. That is the value the
    loss defines: ``stop_gradient(exact) + (former - stop_gradient(former))`` says the value
    is ``exact``, and the former form (cheap, with the derivatives wanted) overflows where
    the exact form does not (``lgamma(y + 1) - log_poch(1/alpha, y)`` is inf - inf at large
    counts, ``p - y log p`` at p = inf, where Poisson's NLL is inf); inputs outside a loss's
    domain reach the exact part too, which gives its own NaN, and declared domains are checked
    before the run. It is the assumption ``x - x -> 0`` makes (canonicalize's ``sub_self``), taken
    once no derivative can need ``x`` any more; a product with the 0 then folds by
    ``mul_zero`` (``rank_xendcg``'s ``(z - stop_gradient(z)) * stop_gradient(terms)``, whose
    terms are finite wherever its value is)."""
    return ZERO if carrier_of(n) is not None else None


@rule("add")
def carrier_plus_stopped_difference(n: Node) -> Node | None:
    """``x + stop_gradient(e - x) -> e`` (either order), in graphs whose derivatives are
    taken: the value ``e`` with the derivatives of ``x`` (``bce``'s clamped logs with
    PyTorch's derivatives) is ``e``, computed once instead of as ``x + (e - x)``, which
    rounds twice (by ulps of ``x``, not of ``e``) and is NaN where ``x`` is not finite; the
    reasons of :func:`carrier_minus_stopped` hold."""
    carried = _carried_value(n)
    return None if carried is None else carried[1]


# After differentiation only (lower): a derivative taken from the graph afterwards would
# lose the carrier's derivatives. Each replacement is built by make, so a product with the
# 0 and a sum with it fold there (mul_zero, add_zero).
CARRIERS = Phase(
    "carriers",
    (carrier_minus_stopped, carrier_plus_stopped_difference),
)


@rule("add")
def carrier_value_held(n: Node) -> Node | None:
    """``x + stop_gradient(e - x) -> stop_gradient(e) + (x - stop_gradient(x))`` (either
    order), in code a framework differentiates itself (the JAX backend): the same
    derivatives (``x``'s), and a value that is ``e`` to the last bit wherever ``x`` is
    finite (``x - x`` is exactly 0), where ``x + (e - x)`` rounds by ulps of ``x``
    (``gaussian_nll``'s clamped variance: 1.5e-11 off at var = -1)."""
    carried = _carried_value(n)
    if carried is None:
        return None
    x, e = carried
    return apply("add", apply("stop_gradient", e), apply("sub", x, apply("stop_gradient", x)))


# Before a framework differentiates the printed code: the carriers stay, their values exact.
HELD_CARRIERS = Phase(
    "held carriers",
    (carrier_value_held,),
)

