"""Lowering's shared reciprocals: the interval bounds they rest on (a property test against
evaluation), which denominators they take, and what they save in a real loss."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import lossdsl
from lossdsl import compiler
from lossdsl.ir.build import ONE, apply
from lossdsl.ir.node import Node, constant, node, toposort
from lossdsl.passes.lower import interval, share_reciprocals
from lossdsl.reference import evaluate

X = node("input", (), "x", ("n0",))
Y = node("input", (), "y", ("n0",))


def bounds(n: Node) -> tuple[float, float]:
    """:func:`interval` of ``n``, its arguments' bounds computed first."""
    found: dict[int, tuple[float, float]] = {}
    for current in toposort([n]):
        found[id(current)] = interval(current, [found[id(a)] for a in current.args])
    return found[id(n)]


def divisions(roots: list[Node]) -> int:
    return sum(1 for n in toposort(roots) if n.op == "div")


_UNARY = ("neg", "abs", "sqrt", "exp", "square", "inverse_square")
_BINARY = ("add", "sub", "mul", "div", "max", "min", "where")


@st.composite
def expressions(draw, depth: int = 4) -> Node:
    """Expressions of x and constants (of either sign, zero, tiny and huge among them)."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        if draw(st.booleans()):
            return X
        return constant(draw(st.sampled_from([0.0, 1.0, -1.0, 2.0, 0.5, 1e-30, 1e30, -3.0])))
    if draw(st.booleans()):
        kind = draw(st.sampled_from(_UNARY))
        argument = draw(expressions(depth - 1))
        if kind == "square":
            return apply("pow", argument, constant(2.0))
        if kind == "inverse_square":
            return apply("pow", argument, constant(-2.0))
        return apply(kind, argument)
    kind = draw(st.sampled_from(_BINARY))
    a, b = draw(expressions(depth - 1)), draw(expressions(depth - 1))
    if kind == "where":
        return apply("where", apply("gt", X, constant(0.0)), a, b)
    return apply(kind, a, b)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(expressions())
def test_every_value_lies_within_its_bounds(expression):
    """Evaluated at x from -1e300 to 1e300 (zeros, infinities), every value that is not NaN
    lies within the bounds interval() gives."""
    x = np.array([-np.inf, -1e300, -1e10, -2.0, -1.0, -0.5, -1e-300, -0.0, 0.0, 1e-300, 0.25,
                  1.0, 3.0, 1e10, 1e300, np.inf])
    with np.errstate(all="ignore"):
        (values,) = evaluate([expression], {"x": x})
    low, high = bounds(expression)
    values = np.broadcast_to(values, x.shape)
    kept = values[~np.isnan(values)]
    assert np.all((kept >= low) & (kept <= high)), (str(expression), low, high, kept)


def test_bounds_of_pseudo_hubers_denominators():
    """The denominators of pseudo_huber's derivatives, as the stable split writes them."""
    clipped = apply("min", apply("max", apply("sub", X, Y), constant(-1.0)), ONE)
    inner = apply("add", ONE, apply("pow", clipped, constant(2.0)))
    assert bounds(apply("add", ONE, apply("sqrt", inner))) == (2.0, 1.0 + np.sqrt(2.0))
    assert bounds(apply("div", ONE, apply("max", apply("abs", X), ONE))) == (0.0, 1.0)
    assert bounds(apply("max", apply("abs", X), ONE)) == (1.0, np.inf)  # no upper bound


def test_only_shared_bounded_denominators_become_reciprocals():
    bounded = apply("add", constant(2.0), apply("abs", apply("sin", X)))  # [2, 3]
    twice = [apply("div", X, bounded), apply("div", Y, bounded)]
    lowered = share_reciprocals(twice)
    assert divisions(lowered) == 1  # the one reciprocal, shared
    assert lowered[0] == apply("mul", X, apply("div", ONE, bounded))
    once = [apply("div", X, bounded)]
    assert share_reciprocals(once) == once  # a reciprocal and a product would cost more
    unbounded = apply("add", constant(2.0), apply("abs", X))  # [2, inf): 1/d may underflow
    assert share_reciprocals([apply("div", X, unbounded), apply("div", Y, unbounded)]) == [
        apply("div", X, unbounded), apply("div", Y, unbounded)]
    tiny = apply("add", constant(1e-200), apply("abs", apply("sin", X)))  # 1/d may overflow
    assert divisions(share_reciprocals([apply("div", X, tiny), apply("div", Y, tiny)])) == 2
    # unbounded above, but numerators within [-1, 1]: where 1/d is subnormal so are they
    small = [apply("div", apply("sin", X), unbounded), apply("div", apply("cos", Y), unbounded)]
    assert divisions(share_reciprocals(small)) == 1


def test_pseudo_hubers_gradient_and_hessian_divide_less():
    """pseudo_huber's gradient + Hessian kernel divided 17 times per sample, 5 now (a CPU
    division costs several multiplications)."""
    compiled = lossdsl.compile("pseudo_huber(y, p)", target="cpu")
    spec = compiled.specialization(compiled.default_ranks())
    request = compiler.KernelRequest(np.dtype("float64"), "cpu", False, ("p",), ("p",))
    source = compiler.generate_source(spec, request).source
    body = source[source.index("def body0"):]
    body = body[:body.index("return")]
    assert body.count(" / ") == 5
