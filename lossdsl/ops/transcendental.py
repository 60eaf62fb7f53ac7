"""Elementary functions: ``exp log log1p expm1 sqrt``, ``tanh sin cos atan``, ``erf erfc``.

In CPU kernels ``exp``, ``expm1``, ``log`` and ``log1p`` are the SIMD-vectorisable versions
of :mod:`lossdsl.backend.cpu.vector_math`; the others are libm calls, one element at a time,
so a loop that calls them is not vectorised (``vectorisable=False``).
"""

from __future__ import annotations

import math

import numpy as np

from ..ir.node import constant
from .registry import NOTATION, Op, register

_ONE = constant(1.0)


def _elementwise(function):
    """A float function of one float, applied to each element of an array."""
    vectorised = np.vectorize(function, otypes=[np.float64])

    def apply(x):
        return vectorised(np.asarray(x, dtype=np.float64))

    return apply


def _erf_partials(build, n, a, wanted):
    scale = constant(2.0 / math.sqrt(math.pi))
    return [build("mul", scale, build("exp", build("neg", build("mul", a, a))))]


def _erfc_partials(build, n, a, wanted):
    scale = constant(-2.0 / math.sqrt(math.pi))
    return [build("mul", scale, build("exp", build("neg", build("mul", a, a))))]


def _tanh_partials(build, n, a, wanted):
    # sech(x)^2 = 4 sigmoid(2x) sigmoid(-2x): 1 - tanh(x)^2 cancels to a relative error
    # of ulp(1)/sech(x)^2, all of it (0) from |x| = 19 in float64 and 9 in float32; the
    # sigmoids share one exp(-|2x|) in the kernels and their derivatives are as exact
    two_a = build("mul", constant(2.0), a)
    return [build("mul", constant(4.0), build("mul", build("sigmoid", two_a),
                                              build("sigmoid", build("neg", two_a))))]


def _function(name: str, doc: str, reference, partials, latex: str, *, torch=None,
              jax: str | None = None, vectorisable: bool = True) -> Op:
    """A function the language calls by its name, printed as ``math.<name>(x)``."""
    return Op(name, 1, doc=doc, reference=reference, partials=partials,
              kernel=f"math.{name}({{0}})", latex=latex,
              torch=torch or (lambda t: getattr(t, name)), jax=jax or f"jnp.{name}({{0}})",
              vectorisable=vectorisable, callable_as=name)


register(
    _function("exp", "e^x", np.exp, lambda build, n, a, wanted: [n], NOTATION),
    _function("log", "the natural logarithm log x", np.log,
              lambda build, n, a, wanted: [build("div", _ONE, a)], r"\log"),
    _function("log1p", "log(1 + x), exact for small x", np.log1p,
              lambda build, n, a, wanted: [build("div", _ONE, build("add", _ONE, a))],
              NOTATION),
    _function("expm1", "e^x - 1, exact for small x", np.expm1,
              lambda build, n, a, wanted: [build("exp", a)], NOTATION),
    _function("sqrt", "√x", np.sqrt,
              lambda build, n, a, wanted: [build("div", constant(0.5), n)], r"\sqrt{{{0}}}"),
    _function("tanh", "the hyperbolic tangent", np.tanh, _tanh_partials, r"\tanh"),
    _function("sin", "the sine", np.sin, lambda build, n, a, wanted: [build("cos", a)],
              r"\sin", vectorisable=False),
    _function("cos", "the cosine", np.cos,
              lambda build, n, a, wanted: [build("neg", build("sin", a))], r"\cos",
              vectorisable=False),
    _function("erf", "the error function",
              _elementwise(lambda v: math.erf(v) if not math.isnan(v) else math.nan),
              _erf_partials, r"\operatorname{erf}", jax="lax.erf({0})", vectorisable=False),
    _function("erfc", "1 - erf(x), exact in the right tail (underflows to 0 past x ≈ 27 in "
              "float64)", _elementwise(math.erfc), _erfc_partials, r"\operatorname{erfc}",
              torch=lambda t: t.special.erfc, jax="lax.erfc({0})", vectorisable=False),
    # the arctan robust loss, c^2 atan((r/c)^2), saturates at c^2 pi/2 for outliers
    _function("atan", "the arctangent, in (-π/2, π/2)", np.arctan,
              lambda build, n, a, wanted: [
                  build("div", _ONE, build("add", _ONE, build("mul", a, a)))],
              r"\arctan", jax="jnp.arctan({0})", vectorisable=False),
)
