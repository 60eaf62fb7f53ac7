"""The log-space functions of logistic and likelihood losses: ``sigmoid log_sigmoid
softplus``, ``logaddexp log1mexp xlogy xlog1py``.

``sigmoid``, ``log_sigmoid`` and ``softplus`` have no kernel of their own: the lowering pass
(:mod:`lossdsl.passes.lower`) writes them through one shared ``exp(-|z|)`` before code
generation, so that a logistic loss's value, gradient and Hessian cost one exponential.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir.node import constant
from .registry import NOTATION, Helper, Op, reference_from_helper, register

_ZERO, _ONE = constant(0.0), constant(1.0)


def _stable_sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _x_times(log):
    """The reference of x log(y) (or x log1p(y)): 0 where x = 0 even at the log's pole or
    outside its domain (as scipy.special.xlogy, xlog1py), but NaN for y = NaN."""
    def reference(x, y):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where((x == 0) & ~np.isnan(y), 0.0, np.multiply(x, log(y)))
    return reference


def _torch_log1mexp(t):
    return lambda x: t.where(x > -math.log(2.0), t.log(-t.expm1(x)), t.log1p(-t.exp(x)))


def _log1mexp_partials(build, n, a, wanted):
    # -e^x / (1 - e^x) = -exp(x - log1mexp(x)): 0 at x = -inf, where -1/expm1(-x)'s own
    # derivative is inf/inf
    return [build("neg", build("exp", build("sub", a, n)))]


def _logaddexp_partials(build, n, a, b, wanted):
    # sigmoid(a - b), not exp(a - n): finite when a = +inf and b is not
    return [build("sigmoid", build("sub", a, b)) if wanted[0] else None,
            build("sigmoid", build("sub", b, a)) if wanted[1] else None]


def _masked_log_partials(build, a, b, log_u, u, pole, wanted):
    """d(a log(u))/da = log(u) and d/db = a u'/u for xlogy (u = b) and xlog1py (u = 1 + b).
    The value is 0 wherever a = 0, but d/da is log(u) there too (the value moves with a).
    Both are masked (0) only at a = 0 on the pole u = 0, the point 0 log 0 = 0 where the
    unmasked terms are -inf and 0/0 (as PyTorch's xlogy there): the entropy terms of
    js_div cancel, xlogy(p, p) - xlogy(y + p, y + p), and would give -inf + inf = NaN at
    y = p = 0. A mask wherever a = 0 would hide d/db's own derivative 1/u from the Hessian
    (xlog1py(x, x) at 0: 2, not 1)."""
    zero_a, at_pole = build("eq", a, _ZERO), build("eq", b, pole)
    if at_pole is not zero_a:  # one condition for xlogy(x, x)
        at_pole = build("and", zero_a, at_pole)
    return [build("where", at_pole, _ZERO, log_u) if wanted[0] else None,
            build("where", at_pole, _ZERO, build("div", a, u)) if wanted[1] else None]


def _xlog1py_partials(build, n, a, b, wanted):
    return _masked_log_partials(build, a, b, build("log1p", b), build("add", _ONE, b),
                                constant(-1.0), wanted)


def _xlogy_partials(build, n, a, b, wanted):
    return _masked_log_partials(build, a, b, build("log", b), b, _ZERO, wanted)


# log(1 - e^x): -expm1 keeps the digits of 1 - e^x near 0, log1p those of -e^x far out
_LOG1MEXP = Helper("log1mexp", """
def h_log1mexp(x):
    if x > T(-0.6931471805599453):
        return math.log(-math.expm1(x))
    return math.log1p(-math.exp(x))
""")

def _x_times_log(name: str, log: str, numpy_log, partials, doc: str) -> Op:
    """The record of ``name(x, y) = x log(y)`` (``log``: ``"log"`` or ``"log1p"``, the math
    function; ``numpy_log`` NumPy's), 0 where x = 0 unless y is NaN, as scipy.special's."""
    return Op(name, 2, doc=doc, reference=_x_times(numpy_log), partials=partials,
              kernel=Helper(name, f"""
def h_{name}(x, y):
    if x == T(0.0) and y == y:
        return T(0.0)
    return x * math.{log}(y)
"""), latex=NOTATION, torch=lambda t: getattr(t.special, name),
              jax=f"h.{name}({{0}}, {{1}})", callable_as=name)


register(
    Op("sigmoid", 1, doc="1/(1 + e^-x), evaluated stably for any x", reference=_stable_sigmoid,
       partials=lambda build, n, a, wanted: [build("mul", n, build("sigmoid", build("neg", a)))],
       lowered=True, latex=r"\sigma", torch=lambda t: t.sigmoid, jax="h.sigmoid({0})",
       callable_as="sigmoid"),
    Op("log_sigmoid", 1, doc="log(sigmoid(x)) = -softplus(-x), stable",
       reference=lambda x: -np.logaddexp(0.0, -x),
       partials=lambda build, n, a, wanted: [build("sigmoid", build("neg", a))],
       lowered=True, latex=r"\log \sigma", torch=lambda t: t.nn.functional.logsigmoid,
       jax="h.log_sigmoid({0})", callable_as="log_sigmoid"),
    Op("softplus", 1, doc="log(1 + e^x), stable", reference=lambda x: np.logaddexp(0.0, x),
       partials=lambda build, n, a, wanted: [build("sigmoid", a)],
       lowered=True, latex=r"\operatorname{softplus}", torch=lambda t: t.nn.functional.softplus,
       jax="h.softplus({0})", callable_as="softplus"),
    Op("log1mexp", 1, doc="log(1 - e^x) for x ≤ 0, stable near 0 and for very negative x "
       "(NaN for x > 0)", reference=reference_from_helper(_LOG1MEXP),
       partials=_log1mexp_partials, kernel=_LOG1MEXP,
       latex=r"\log\left(1 - e^{{{0}}}\right)", torch=_torch_log1mexp, jax="h.log1mexp({0})",
       callable_as="log1mexp"),
    # log(e^a + e^b) = max + log1p(exp(-|a - b|)); equal arguments first, so that two equal
    # infinities give that infinity instead of inf - inf = NaN (as numpy.logaddexp)
    Op("logaddexp", 2, doc="log(e^a + e^b) without overflow (logaddexp(inf, inf) = inf, as NumPy)",
       reference=np.logaddexp, partials=_logaddexp_partials, kernel=Helper("logaddexp", """
def h_logaddexp(a, b):
    if a == b:
        return a + T(0.6931471805599453)
    d = a - b
    if d > T(0.0):
        return a + math.log1p(math.exp(-d))
    return b + math.log1p(math.exp(d))
"""), latex=r"\log\left(e^{{{0}}} + e^{{{1}}}\right)", torch=lambda t: t.logaddexp,
       jax="h.logaddexp({0}, {1})", callable_as="logaddexp"),
    # x log(y), 0 where x = 0 unless y is NaN (as scipy.special.xlogy): entropy terms, whose
    # derivative in x at x = 0 is log(y) (a where-select in the language would give 0)
    _x_times_log("xlogy", "log", np.log, _xlogy_partials,
                 "a·log(b), and 0 where a = 0 (as scipy.special.xlogy): entropy terms"),
    # x log1p(y), 0 where x = 0 unless y is NaN (as scipy.special.xlog1py)
    _x_times_log("xlog1py", "log1p", np.log1p, _xlog1py_partials,
                 "a·log(1 + b), and 0 where a = 0 (as scipy.special.xlog1py)"),
)
