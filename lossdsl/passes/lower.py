"""Lowering for code generation: stable primitives written through shared subexpressions,
and divisions by one bounded denominator through one shared reciprocal.

``softplus``, ``log_sigmoid`` and ``sigmoid`` are expanded through one ``exp(-|z|)`` that
hash-consing then shares between them; the rules are the expand phase, in
``passes/rules/expand.py``. The graphs lowered are the ones the kernels evaluate, derivatives
taken: the carriers phase (same module) then drops the values that only derivatives needed,
``x - stop_gradient(x)`` and its kind, which a loss writes to give its value one formula and
its derivatives another's.

Derivatives divide by the same denominator again and again (``pseudo_huber``'s Hessian
divides by ``1 + sqrt(1 + u^2)`` four times), and a division costs a CPU several times a
multiplication, vectorised or not; the kernels' per-sample math is strict, so LLVM never
turns them into one reciprocal itself. :func:`share_reciprocals` does, where bounds
(:func:`interval`) prove that ``a * (1/d)`` differs from ``a / d`` by a rounding at most,
never by an overflow or underflow of its own: the denominator bounded away from zero and
either from infinity too or divided into numerators within [-1, 1].
"""

from __future__ import annotations

import math
from collections import Counter

from ..ir.build import ONE, apply, rebuilt
from ..ir.node import Node, is_constant, rebuild, toposort
from .rewrite import apply_phase
from .rules.expand import CARRIERS, EXPAND

#: A denominator whose magnitude stays within [2^-100, 2^100] has a reciprocal that is a
#: normal number in float32 (and float64): dividing by it and multiplying by its reciprocal
#: overflow and underflow together.
RECIPROCAL_RANGE = (2.0 ** -100, 2.0 ** 100)

_UNBOUNDED = (-math.inf, math.inf)
_UNIT = (0.0, 1.0)
_UNIT_OPS = frozenset({"lt", "le", "gt", "ge", "eq", "ne", "and", "or", "not", "sigmoid"})
_SYMMETRIC_UNIT_OPS = frozenset({"sign", "tanh", "erf", "sin", "cos"})


def lower(roots: list[Node]) -> list[Node]:
    """Rewrite stable primitives into forms that share their exponentials and logarithms,
    drop the values that only derivatives needed (the carriers phase: ``roots`` are taken
    as graphs no derivative will be taken from; a reduction whose only term along its axis
    was a carrier keeps reducing that axis, ``ir.build.rebuilt``), then share the
    reciprocals of repeated bounded denominators (of the divisions left)."""
    return share_reciprocals(apply_phase(CARRIERS, apply_phase(EXPAND, roots)))


def share_reciprocals(roots: list[Node]) -> list[Node]:
    """``a / d -> a * (1/d)`` wherever two or more such divisions share a denominator ``d``
    (``1/d`` itself counts), so that each sample divides once instead of once per use
    (hash-consing makes the reciprocals one node). A division qualifies when
    :func:`interval` proves ``a * (1/d)`` no worse than a second rounding of ``a / d``:
    ``d`` of one sign and at least ``2^-100`` in magnitude (``1/d`` never overflows), and
    either at most ``2^100`` (``1/d`` is a normal number in float32 and float64) or with
    ``|a| <= 1``, where ``|a/d| <= |1/d|``: wherever ``1/d`` is subnormal (or 0, at an
    infinite ``d``) so is the quotient, and both are then within a subnormal ulp of each
    other."""
    order = toposort(roots)
    if sum(1 for n in order if n.op == "div") < 2:
        return roots
    bounds: dict[int, tuple[float, float]] = {}
    for n in order:
        bounds[id(n)] = interval(n, [bounds[id(a)] for a in n.args])
    low, high = RECIPROCAL_RANGE
    qualifying: set[int] = set()  # the divisions that may become products
    uses: Counter[int] = Counter()  # by denominator, how many of them divide by it
    for n in order:
        if n.op != "div" or n.args[1].op == "const":
            continue
        d_low, d_high = bounds[id(n.args[1])]
        smallest, largest = (d_low, d_high) if d_low > 0.0 else (-d_high, -d_low)
        a_low, a_high = bounds[id(n.args[0])]
        if smallest >= low and (largest <= high or max(-a_low, a_high) <= 1.0):
            qualifying.add(id(n))
            uses[id(n.args[1])] += 1
    shared = {denominator for denominator, count in uses.items() if count >= 2}
    if not shared:
        return roots

    def rewrite(old: Node, args: tuple[Node, ...]) -> Node:
        if (id(old) in qualifying and id(old.args[1]) in shared
                and not is_constant(args[0], 1.0)):
            return apply("mul", args[0], apply("div", ONE, args[1]))
        if args == old.args:
            return old
        return rebuilt(old, args)

    return rebuild(roots, rewrite)


def interval(n: Node, args: list[tuple[float, float]]) -> tuple[float, float]:
    """Bounds ``(low, high)`` of the values ``n`` takes when it is not NaN, from the bounds
    of its arguments (``args``, in order): exact for constants, comparisons and the
    arithmetic, ``(-inf, inf)`` for what it does not know (inputs, params, sums, most
    functions). Conservative: every value lies within the bounds returned."""
    op = n.op
    if op == "const":
        value = float(n.value)
        return (value, value) if not math.isnan(value) else _UNBOUNDED
    if op in _UNIT_OPS:
        return _UNIT
    if op in _SYMMETRIC_UNIT_OPS:
        return (-1.0, 1.0)
    if op == "erfc":
        return (0.0, 2.0)
    if op in ("add", "sub", "mul", "div", "max", "min") and len(args) == 2:
        (a0, a1), (b0, b1) = args
        if op == "add":
            return _checked(a0 + b0, a1 + b1)
        if op == "sub":
            return _checked(a0 - b1, a1 - b0)
        if op == "max":
            return (max(a0, b0), max(a1, b1))
        if op == "min":
            return (min(a0, b0), min(a1, b1))
        if op == "mul":
            if n.args[0] is n.args[1]:  # a square
                low = 0.0 if a0 <= 0.0 <= a1 else min(a0 * a0, a1 * a1)
                return _checked(low, max(a0 * a0, a1 * a1))
            return _hull([a0 * b0, a0 * b1, a1 * b0, a1 * b1])
        if b0 > 0.0 or b1 < 0.0:  # a division by a value of one sign, not zero
            return _hull([a0 / b0, a0 / b1, a1 / b0, a1 / b1])
        return _UNBOUNDED
    if op == "neg":
        (a0, a1), = args
        return (-a1, -a0)
    if op == "abs":
        (a0, a1), = args
        if a0 >= 0.0:
            return (a0, a1)
        if a1 <= 0.0:
            return (-a1, -a0)
        return (0.0, max(-a0, a1))
    if op == "sqrt":
        (a0, a1), = args
        if a1 < 0.0:
            return _UNBOUNDED  # NaN only
        return (math.sqrt(max(a0, 0.0)), math.sqrt(a1))
    if op == "pow" and n.args[1].op == "const":
        return _power(args[0], float(n.args[1].value))
    if op == "exp":
        (a0, a1), = args
        return (_exp(a0), _exp(a1))
    if op == "where":
        _, (a0, a1), (b0, b1) = args
        return (min(a0, b0), max(a1, b1))
    return _UNBOUNDED


def _power(base: tuple[float, float], exponent: float) -> tuple[float, float]:
    """Bounds of ``x ** exponent`` for ``x`` within ``base`` (a constant exponent)."""
    a0, a1 = base
    try:
        if exponent.is_integer() and exponent % 2 == 0 and exponent > 0:  # even: |x|^e
            low = 0.0 if a0 <= 0.0 <= a1 else min(abs(a0), abs(a1)) ** exponent
            return (low, max(abs(a0), abs(a1)) ** exponent)
        if a0 > 0.0 and exponent < 0.0:
            return (a1 ** exponent, a0 ** exponent)
        if a0 >= 0.0 and exponent > 0.0:
            return (a0 ** exponent, a1 ** exponent)
    except OverflowError:
        pass
    return _UNBOUNDED


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _checked(low: float, high: float) -> tuple[float, float]:
    """``(low, high)``, or unbounded where interval arithmetic met inf - inf."""
    if math.isnan(low) or math.isnan(high):
        return _UNBOUNDED
    return (low, high)


def _hull(values: list[float]) -> tuple[float, float]:
    """The bounds of the endpoint products or quotients (0 * inf is NaN: unbounded)."""
    if any(math.isnan(v) for v in values):
        return _UNBOUNDED
    return (min(values), max(values))
