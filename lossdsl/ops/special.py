"""Special functions: ``lgamma digamma trigamma tetragamma``, ``log_ndtr ndtr_ratio``.

Each algorithm is written once, as its kernel helper's source (Numba-Python over the dtype
``T``); the NumPy reference runs that same source on float64 scalars
(:func:`lossdsl.ops.registry.reference_from_helper`), so the interpreter, constant folding and
the kernels compute the same thing, branch for branch.

* ``lgamma``: log|Gamma(x)|, +inf at the poles (the non-positive integers and -inf) and where
  it overflows, NaN for NaN.
* ``digamma``, ``trigamma``, ``tetragamma``: psi and its first two derivatives, by reflection
  below 0.5, the recurrence up to 16, then the asymptotic series (within 1e-15 of mpmath;
  from 6 on, trigamma was only within 1e-9 between 1 and 10); NaN at the poles.
  polygamma(3, x) is not implemented, so tetragamma has no derivative.
* ``log_ndtr``, ``ndtr_ratio``: log Phi(x) and phi(x)/Phi(x). Phi(x) = erfc(-x/sqrt(2))/2 is
  exact down to x = -10 (erfc is accurate in its tail, and Phi(-10) = 7.6e-24 is a normal
  float32); further left erfc underflows (float32 near -14, float64 near -38), so both use the
  asymptotic series Phi(x) = phi(x)/(-x) * S(x), S(x) = 1 - 1/x^2 + 3/x^4 - 15/x^6 + ...,
  whose 20 terms are within 1e-17 of S at x = -10 and better further out (``h_ndtr_tail``).
"""

from __future__ import annotations

import math

from ..ir.node import constant
from .registry import Helper, Op, reference_from_helper, register, register_helper

_ZERO, _ONE = constant(0.0), constant(1.0)

_LGAMMA = Helper("lgamma", """
def h_lgamma(x):
    if x <= T(0.0) and x == math.floor(x):
        return T(math.inf)
    return math.lgamma(x)
""")

_DIGAMMA = Helper("digamma", """
def h_digamma(x):
    if x != x or (x <= T(0.0) and x == math.floor(x)):
        return T(math.nan)
    if x == T(math.inf):
        return x
    result = T(0.0)
    if x < T(0.5):
        result -= T(math.pi) / math.tan(T(math.pi) * x)
        x = T(1.0) - x
    while x < T(16.0):
        result -= T(1.0) / x
        x += T(1.0)
    q = T(1.0) / (x * x)
    series = q * (T(1 / 12) - q * (T(1 / 120) - q * (T(1 / 252)
                                                     - q * (T(1 / 240) - q * T(1 / 132)))))
    return result + math.log(x) - T(0.5) / x - series
""")

_TRIGAMMA = Helper("trigamma", """
def h_trigamma(x):
    if x != x or (x <= T(0.0) and x == math.floor(x)):
        return T(math.nan)
    if x == T(math.inf):
        return T(0.0)
    result = T(0.0)
    sign = T(1.0)
    if x < T(0.5):
        s = math.sin(T(math.pi) * x)
        result = T(math.pi) * T(math.pi) / (s * s)
        sign = T(-1.0)
        x = T(1.0) - x
    inner = T(0.0)
    while x < T(16.0):
        inner += T(1.0) / (x * x)
        x += T(1.0)
    r = T(1.0) / x
    q = r * r
    inner += r + T(0.5) * q + r * q * (T(1 / 6) - q * (T(1 / 30) - q * (T(1 / 42) - q * (
        T(1 / 30) - q * T(5 / 66)))))
    return result + sign * inner
""")

# psi''(1 - x) - psi''(x) = 2 pi^3 cos(pi x) / sin(pi x)^3; psi''(x) = psi''(x + 1) - 2/x^3;
# then -1/x^2 - 1/x^3 - sum_k (2k+1) B_2k / x^(2k+2), whose next term is 3e-16 of it at 16
_TETRAGAMMA = Helper("tetragamma", """
def h_tetragamma(x):
    if x != x or (x <= T(0.0) and x == math.floor(x)):
        return T(math.nan)
    if x == T(math.inf):
        return T(-0.0)
    result = T(0.0)
    if x < T(0.5):
        r = T(math.pi) / math.sin(T(math.pi) * x)
        result = T(-2.0) * r * r * r * math.cos(T(math.pi) * x)
        x = T(1.0) - x
    while x < T(16.0):
        result -= T(2.0) / (x * x * x)
        x += T(1.0)
    r = T(1.0) / x
    q = r * r
    return result - q * (T(1.0) + r + q * (T(0.5) - q * (T(1 / 6) - q * (T(1 / 6) - q * (
        T(0.3) - q * (T(5 / 6) - q * T(691 / 210)))))))
""")

# Phi(x) (-x) / phi(x) for x <= -10: its asymptotic series S(x), 20 terms after the leading
# 1 (h_ndtr_tail_terms: S(x) - 1, which ndtr_gap needs without the 1)
register_helper(Helper("ndtr_tail_terms", """
def h_ndtr_tail_terms(x):
    q = T(1.0) / (x * x)
    term = T(1.0)
    total = T(0.0)
    odd = T(1.0)
    for _ in range(20):
        term *= -odd * q
        total += term
        odd += T(2.0)
    return total
"""))
register_helper(Helper("ndtr_tail", """
def h_ndtr_tail(x):
    return T(1.0) + h_ndtr_tail_terms(x)
"""))

_LOG_NDTR = Helper("log_ndtr", """
def h_log_ndtr(x):
    if x > T(0.0):
        return math.log1p(T(-0.5) * math.erfc(x * T(0.7071067811865476)))
    if x > T(-10.0):
        return math.log(T(0.5) * math.erfc(x * T(-0.7071067811865476)))
    return T(-0.5) * x * x - math.log(-x) - T(0.9189385332046728) + math.log(h_ndtr_tail(x))
""")

_NDTR_RATIO = Helper("ndtr_ratio", """
def h_ndtr_ratio(x):
    if x > T(-10.0):
        density = math.exp(T(-0.5) * x * x) * T(0.3989422804014327)
        return density / (T(0.5) * math.erfc(x * T(-0.7071067811865476)))
    return -x / h_ndtr_tail(x)
""")


# x + phi(x)/Phi(x), the factor of ndtr_ratio's derivative: in the left tail r = -x/S(x)
# and x + r = x (S - 1)/S, S - 1 being the series without its leading 1, where x + r itself
# cancels two terms of size |x| (at x = -1e8 it kept no digit: probit_bce's Hessian 1.49
# for 1.0)
_NDTR_GAP = Helper("ndtr_gap", """
def h_ndtr_gap(x):
    if x > T(-10.0):
        return x + h_ndtr_ratio(x)
    gap = h_ndtr_tail_terms(x)
    return x * gap / (T(1.0) + gap)
""")


def _log_ndtr_partials(build, n, a, wanted):
    # phi(x)/Phi(x) as a primitive of its own: exp(-x^2/2 - log_ndtr(x))/sqrt(2 pi) cancels
    # two terms of size x^2/2; in float32 at x = -80 that form gives the slope 80.005 for
    # 80.012 and the curvature -0.39 for -0.99984 (through ndtr_ratio: 80.012 and -0.99991)
    return [build("ndtr_ratio", a)]


def _ndtr_ratio_partials(build, n, a, wanted):
    # r = phi/Phi: r' = -r (x + r), x + r without cancellation (ndtr_gap), and 0 where r
    # underflows to 0 (x > 38.5; x = +inf, an uncensored upper bound, would give 0 * inf)
    slope = build("neg", build("mul", n, build("ndtr_gap", a)))
    return [build("where", build("eq", n, _ZERO), _ZERO, slope)]


def _ndtr_gap_partials(build, n, a, wanted):
    # (x + r)' = 1 + r' = 1 - r (x + r)
    return [build("sub", _ONE, build("mul", build("ndtr_ratio", a), n))]


def _torch_ndtr_gap(t):
    ratio = _torch_ndtr_ratio(t)
    return lambda x: x + ratio(x)


def _torch_ndtr_ratio(t):
    return lambda x: t.exp(-0.5 * x * x - t.special.log_ndtr(x)) / math.sqrt(2 * math.pi)


def _special(name: str, doc: str, helper: Helper, partials, latex: str, torch, **traits) -> Op:
    return Op(name, 1, doc=doc, reference=reference_from_helper(helper), partials=partials,
              kernel=helper, latex=latex, torch=torch, jax=f"h.{name}({{0}})",
              vectorisable=False, callable_as=name, **traits)


register(
    _special("lgamma", "log|Γ(x)|, +inf at the poles (0, -1, -2, ...)", _LGAMMA,
             lambda build, n, a, wanted: [build("digamma", a)], r"\ln \Gamma",
             lambda t: t.lgamma),
    _special("digamma", "ψ(x), the derivative of lgamma", _DIGAMMA,
             lambda build, n, a, wanted: [build("trigamma", a)], r"\psi",
             lambda t: t.digamma),
    _special("trigamma", "ψ′(x) = polygamma(1, x); polygamma(3) is not "
             "implemented, so a loss that calls trigamma has a gradient but no Hessian", _TRIGAMMA,
             lambda build, n, a, wanted: [build("tetragamma", a)], r"\psi_1",
             lambda t: lambda x: t.polygamma(1, x)),
    _special("tetragamma", "ψ″(x) = polygamma(2, x), the derivative of trigamma; it "
             "has no derivative of its own", _TETRAGAMMA,
             None, r"\psi_2", lambda t: lambda x: t.polygamma(2, x), differentiable=False,
             no_derivative=(
                 "tetragamma has no derivative in lossdsl (polygamma(3, x) is not implemented): "
                 "a loss that calls trigamma has a gradient but no Hessian, one that calls "
                 "tetragamma neither")),
    _special("log_ndtr", "log Φ(x), the log of the standard normal CDF; finite wherever the "
             "value is (log_ndtr(-40) = -804.6)", _LOG_NDTR, _log_ndtr_partials, r"\log \Phi",
             lambda t: t.special.log_ndtr),
    _special("ndtr_ratio", "φ(x)/Φ(x), the derivative of log_ndtr (≈ -x in the left tail), "
             "without overflow or cancellation", _NDTR_RATIO, _ndtr_ratio_partials,
             r"\frac{{\varphi\left({0}\right)}}{{\Phi\left({0}\right)}}", _torch_ndtr_ratio),
    _special("ndtr_gap", "x + φ(x)/Φ(x), the factor of ndtr_ratio's derivative -r (x + r), "
             "without the cancellation of its two terms in the left tail", _NDTR_GAP,
             _ndtr_gap_partials,
             r"\left({0} + \frac{{\varphi\left({0}\right)}}{{\Phi\left({0}\right)}}\right)",
             _torch_ndtr_gap),
)
