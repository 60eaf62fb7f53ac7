"""Arithmetic: ``neg add sub mul div pow``, ``abs sign``, ``min max`` and ``stop_gradient``.

Subgradient conventions: ``abs'(0) = 0``, ``sign' = 0``, ``max``/``min`` give the whole
derivative to the first argument on ties, ``stop_gradient`` has derivative 0.
"""

from __future__ import annotations

import numpy as np

from ..ir.node import constant
from .registry import NOTATION, Helper, Op, register

_ZERO, _ONE = constant(0.0), constant(1.0)


def _indicator(build, condition):
    return build("where", condition, _ONE, _ZERO)


def _sign(x):
    return np.where(np.isnan(x), x, np.sign(x))


def _pow_partials(build, n, a, b, wanted):
    """d(a^b)/da = b a^(b-1) and d(a^b)/db = a^b log a.

    Each is masked only where its unmasked form is 0 * inf = NaN although the power does not
    move (as PyTorch and JAX define them): d/da at a = b = 0 (a^0 is 1 for every a) and d/db
    at a = 0 (0^b is 0 or 1 for every b, where log a is -inf). A wider mask (d/da 0 wherever
    b = 0) would hide the partial's own derivative from the Hessian: (x + 2)^x at 0 has
    d/da = 0 but d(d/da)/db = 1/a.

    For b < 1 and a != 0, d/da is written (a^b b)/a: b a^(b-1) overflows there for a tiny
    base whose derivative is finite (x^x at 5e-324: 1 - 744, not inf), and its own
    derivative b (b-1) a^(b-2) more often (x^x's Hessian at 1e-300: 1e300, not -inf); for
    b >= 1 (and at a = 0), a^b may underflow where b a^(b-1) does not, so that form stays
    there. One power serves both, a^b or a^(b-1): the gradient and the Hessian compute as many
    powers as the single form did. A constant exponent folds instead."""
    da = None
    if wanted[0]:
        if b.op == "const":
            da = build("mul", b, build("pow", a, constant(b.value - 1.0)))
        else:
            reduced = build("and", build("lt", b, _ONE), build("ne", a, _ZERO))
            power = build("pow", a, build("where", reduced, b, build("sub", b, _ONE)))
            at_zero = build("eq", a, _ZERO)
            if b is not a:  # one condition for x^x
                at_zero = build("and", at_zero, build("eq", b, _ZERO))
            da = build("where", reduced, build("div", build("mul", power, b), a),
                       build("where", at_zero, _ZERO, build("mul", b, power)))
    db = None
    if wanted[1]:
        db = build("where", build("eq", a, _ZERO), _ZERO, build("mul", n, build("log", a)))
    return [da, db]


# x ** c for the constants whose product or sqrt form is exact and cheaper than pow
_POWER_FORMS = {2.0: "{0} * {0}", 3.0: "{0} * {0} * {0}", -1.0: "T(1.0) / {0}",
                -2.0: "T(1.0) / ({0} * {0})"}
_JAX_POWER_FORMS = {2.0: "{0} * {0}", 3.0: "{0} * {0} * {0}", 0.5: "jnp.sqrt({0})",
                    -1.0: "ONE / {0}", -2.0: "ONE / ({0} * {0})"}


def _pow_kernel(printer, n, a, b):
    exponent = n.args[1]
    if exponent.op == "const":
        if exponent.value == 0.5:
            return f"math.sqrt({a})"
        if exponent.value in _POWER_FORMS:
            return _POWER_FORMS[exponent.value].format(a)
    if printer.target != "cpu":
        return f"{a} ** {b}"
    # the CPU's libm.pow is vector_math.vpow (a loop calling it still vectorises; Numba's
    # ** calls libm's pow, one element at a time) wherever the module vectorises
    printer.math_calls["pow"] += 1
    return f"math.pow({a}, {b})"


def _pow_jax(n, a, b):
    exponent = n.args[1]
    if exponent.op == "const" and exponent.value in _JAX_POWER_FORMS:
        return _JAX_POWER_FORMS[exponent.value].format(a)
    return f"jnp.power({a}, {b})"


def _infix(name: str, symbol: str, reference, partials, latex: str = NOTATION,
           commutative: bool = False) -> Op:
    """An arithmetic operator, Python infix in Numba and ``jax.numpy`` code alike (the
    printers parenthesise the arguments as needed)."""
    infix = f"{{0}} {symbol} {{1}}"
    return Op(name, 2, doc=f"a {symbol} b", reference=reference, partials=partials,
              kernel=infix, latex=latex, torch=lambda t: getattr(t, name), jax=infix,
              commutative=commutative)


def _zero_partials(build, n, *args, wanted):
    return [_ZERO] * len(args)


def _extremum(name: str, keeps_first: str, keeps_first_numpy, which: str, first_wins: str,
              second_wins: str, torch, jax_helper: str) -> Op:
    """``min`` or ``max``: NaN in the first argument propagates, and ties pick it, so the
    whole derivative goes to the first argument there. Each partial is 1 unless the other
    argument strictly wins, so where a comparison with NaN is false both are 1 and the
    derivative of a NaN argument (``max(|r|, delta)`` at a NaN residual) is NaN too, not the
    other's finite one."""
    return Op(
        name, 2, doc=f"the {which} of a and b; NaN in a propagates, ties pick a",
        reference=lambda a, b: np.where(keeps_first_numpy(a, b) | np.isnan(a), a, b),
        partials=lambda build, n, a, b, wanted: [
            build("where", build(second_wins, a, b), _ZERO, _ONE),
            build("where", build(first_wins, a, b), _ZERO, _ONE)],
        kernel=Helper(name, f"""
def h_{name}(a, b):
    return a if (a {keeps_first} b or a != a) else b
"""), latex=rf"\{name}\left({{0}}, {{1}}\right)", torch=torch,
        jax=f"h.{jax_helper}({{0}}, {{1}})", callable_as=name)


register(
    Op("neg", 1, doc="-x", reference=np.negative,
       partials=lambda build, n, a, wanted: [constant(-1.0)],
       kernel="-{0}", latex=NOTATION, torch=lambda t: t.neg, jax="-{0}"),
    _infix("add", "+", np.add, lambda build, n, a, b, wanted: [_ONE, _ONE],
           commutative=True),
    _infix("sub", "-", np.subtract, lambda build, n, a, b, wanted: [_ONE, constant(-1.0)]),
    _infix("mul", "*", np.multiply, lambda build, n, a, b, wanted: [b, a], commutative=True),
    _infix("div", "/", np.divide, lambda build, n, a, b, wanted: [
        build("div", _ONE, b), build("neg", build("div", n, b)) if wanted[1] else None],
        latex=r"\frac{{{0}}}{{{1}}}"),
    Op("pow", 2, doc="a ^ b (a ** b)", reference=np.power, partials=_pow_partials,
       kernel=_pow_kernel, latex=NOTATION, torch=lambda t: t.pow, jax=_pow_jax),
    Op("abs", 1, doc="|x|", reference=np.abs,
       partials=lambda build, n, a, wanted: [build("sign", a)],
       kernel="abs({0})", latex=r"\left|{0}\right|", torch=lambda t: t.abs, jax="jnp.abs({0})",
       callable_as="abs"),
    Op("sign", 1, doc="-1, 0 or 1 (sign(0) = 0; NaN for NaN)", reference=_sign,
       partials=_zero_partials,
       kernel=Helper("sign", """
def h_sign(x):
    if x > T(0.0):
        return T(1.0)
    if x < T(0.0):
        return T(-1.0)
    return x * T(0.0)
"""), latex=r"\operatorname{sign}", torch=lambda t: t.sign, jax="h.sign({0})",
       callable_as="sign"),
    _extremum("min", "<=", np.less_equal, "smaller", "le", "gt", lambda t: t.minimum,
              "minimum"),
    _extremum("max", ">=", np.greater_equal, "larger", "ge", "lt", lambda t: t.maximum,
              "maximum"),
    # along(v, g): a value per group given to each sample of the group (g: the samples' group
    # ids), so that sums and means over samples count every sample (shapes.py adds it)
    Op("along", 2, doc="a, for each element of b (a group's value for each of its samples)",
       reference=lambda a, b: a + np.zeros_like(b),
       partials=lambda build, n, a, b, wanted: [_ONE, _ZERO],
       kernel=lambda printer, n, a, b: a, latex=NOTATION,
       torch=lambda t: lambda a, b: a + t.zeros_like(b), jax="{0} + jnp.zeros_like({1})"),
    Op("stop_gradient", 1, doc="the value of x, derivative 0", reference=lambda x: x,
       partials=_zero_partials, kernel="{0}", latex=NOTATION,
       torch=lambda t: lambda x: x.detach(), jax="lax.stop_gradient({0})",
       callable_as="stop_gradient"),
)
