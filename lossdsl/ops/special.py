"""Special functions: ``lgamma digamma trigamma tetragamma``, ``log_ndtr ndtr_ratio``,
``stirlerr bd0``.

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
* ``stirlerr``, ``bd0``: the two pieces of Loader's saddle-point form of the count
  likelihoods (C. Loader 2000, "Fast and accurate computation of binomial probabilities", as
  R's dpois/dnbinom and scipy's boost backend compute them). stirlerr(n) = log(n!) -
  [(n + 1/2) log(n) - n + log(2 pi)/2], the error of Stirling's formula, and bd0(x, m) =
  x log(x/m) + m - x, the Poisson deviance term, both >= 0 and both without the cancellation
  of terms of size n log(n) that log(n!) - n log(m) + m suffers at large counts (a negative
  binomial at y = 1e8 kept no digit in float32). stirlerr: a table at the counts and
  half-counts up to 15, its asymptotic series (16 terms, within 1e-17 from n = 6 on), below 6
  the recurrence stirlerr(n) = stirlerr(n + 1) + atanh(t)/t - 1, t = 1/(2n + 1), whose step
  is a series of positive terms; below 1 the definition (its terms are below 4 there). bd0:
  Loader's series in v = (x - m)/(x + m) where |v| < 1/4 (14 terms), x log(x/m) + m - x
  beyond, where it keeps its digits. Their derivatives are right but the losses take theirs
  from their former forms (regression.loss).
"""

from __future__ import annotations

import math

from ..ir.node import constant
from .registry import Helper, Op, reference_from_helper, register, register_helper

_ZERO, _HALF, _ONE = constant(0.0), constant(0.5), constant(1.0)

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
        # tan(pi x) = tan(pi r) with r = x - round(x) (exact): pi x itself rounds to an
        # absolute error near |x| ulp, the whole value near a pole far from 0
        r = x - math.floor(x + T(0.5))
        result -= T(math.pi) / math.tan(T(math.pi) * r)
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
        s = math.sin(T(math.pi) * (x - math.floor(x + T(0.5))))  # as digamma's reduction
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
        # cos(pi x)/sin(pi x)^3 = cos(pi r)/sin(pi r)^3, r = x - round(x) as digamma's;
        # cos(pi r) as sin(pi (1/2 - |r|)), exactly 0 at half-integers (cos(pi/2) is 6e-17)
        reduced = x - math.floor(x + T(0.5))
        r = T(math.pi) / math.sin(T(math.pi) * reduced)
        result = T(-2.0) * r * r * r * math.sin(T(math.pi) * (T(0.5) - abs(reduced)))
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


# log(n!) - [(n + 1/2) log(n) - n + log(2 pi)/2]. At the counts and half-counts up to 15 a
# table (of mpmath's values, as Loader's and R's), which the counts of data mostly are. From
# n = 6 on the asymptotic series sum_k B_2k / (2k (2k - 1) n^(2k - 1)), 16 terms (the 17th is
# 1e-17 at 6; above 15 seven are, above 200 three); below 6 the recurrence up to 6, each step
# (n + 1/2) log1p(1/n) - 1 = atanh(t)/t - 1 = t^2/3 + t^4/5 + ... (t = 1/(2n + 1) <= 1/3),
# 18 positive terms (the next is below 1e-18), where the step's own formula would cancel two
# terms near 1 (lgamma(n + 1) - (n + 1/2) log(n) + n - log(2 pi)/2 kept 1e-14 of absolute
# error, 44 eps); below 1 the definition, whose terms are below 4 there (an absolute error of
# a few ulps of 1). Off the table below 6 it costs about 50 ns, lgamma 16.
_STIRLERR = Helper("stirlerr", """
def h_stirlerr(n):
    if not n > T(0.0):
        if n == T(0.0):
            return T(math.inf)
        return T(math.nan)
    if n == T(math.inf):
        return T(0.0)
    if n <= T(15.0) and T(2.0) * n == math.floor(T(2.0) * n):
        halves = (T(0.15342640972002736), T(0.08106146679532726), T(0.05481412105191765),
                  T(0.0413406959554093), T(0.03316287351993629), T(0.02767792568499834),
                  T(0.023746163656297496), T(0.020790672103765093), T(0.018488450532673187),
                  T(0.016644691189821193), T(0.015134973221917378), T(0.013876128823070748),
                  T(0.012810465242920227), T(0.01189670994589177), T(0.011104559758206917),
                  T(0.010411265261972096), T(0.009799416126158804), T(0.009255462182712733),
                  T(0.008768700134139386), T(0.00833056343336287), T(0.00793411456431402),
                  T(0.007573675487951841), T(0.007244554301320383), T(0.00694284010720953),
                  T(0.006665247032707682), T(0.006408994188004207), T(0.006171712263039458),
                  T(0.0059513701127588475), T(0.0057462165130101155), T(0.005554733551962801))
        return halves[int(T(2.0) * n) - 1]
    if n < T(1.0):
        return math.lgamma(n + T(1.0)) - (n + T(0.5)) * math.log(n) + n - T(0.9189385332046728)
    total = T(0.0)
    while n < T(6.0):
        t = T(1.0) / (T(2.0) * n + T(1.0))
        q = t * t
        high = T(1 / 21) + q * (T(1 / 23) + q * (T(1 / 25) + q * (T(1 / 27) + q * (
            T(1 / 29) + q * (T(1 / 31) + q * (T(1 / 33) + q * (T(1 / 35) + q * T(1 / 37))))))))
        total += q * (T(1 / 3) + q * (T(1 / 5) + q * (T(1 / 7) + q * (T(1 / 9) + q * (
            T(1 / 11) + q * (T(1 / 13) + q * (T(1 / 15) + q * (T(1 / 17) + q * (
                T(1 / 19) + q * high)))))))))
        n += T(1.0)
    q = T(1.0) / (n * n)
    if n > T(200.0):
        return total + (T(1 / 12) - q * (T(1 / 360) - q * T(1 / 1260))) / n
    if n > T(15.0):
        return total + (T(1 / 12) - q * (T(1 / 360) - q * (T(1 / 1260) - q * (T(1 / 1680) - q * (
            T(1 / 1188) - q * (T(691 / 360360) - q * T(1 / 156))))))) / n
    tail = T(43867 / 244188) - q * (T(174611 / 125400) - q * (T(854513 / 63756) - q * (
        T(236364091 / 1506960) - q * (T(8553103 / 3900) - q * (T(23749461029 / 657720) - q * (
            T(8615841276005 / 12460140) - q * T(7709321041217 / 505920)))))))
    return total + (T(1 / 12) - q * (T(1 / 360) - q * (T(1 / 1260) - q * (T(1 / 1680) - q * (
        T(1 / 1188) - q * (T(691 / 360360) - q * (T(1 / 156) - q * (
            T(3617 / 122400) - q * tail)))))))) / n
""")

# x log(x/m) + m - x. Where |v| < 1/4, v = (x - m)/(x + m) (m within a factor 5/3 of x, so
# m - x is exact): Loader's series (x - m) v + 2 x (v^3/3 + v^5/5 + ...), 14 terms (the next
# is 1e-18 of the sum at |v| = 1/4), whose first term (x - m)^2/(x + m) is the sum to within
# |v|/3; beyond, the definition, where the result is at least a fifth of its largest term.
# x = 0 gives m; m = 0 or an infinite argument +inf (NaN where both are infinite).
_BD0 = Helper("bd0", """
def h_bd0(x, m):
    if not (x >= T(0.0) and m >= T(0.0)):
        return T(math.nan)
    if x == T(0.0):
        return m
    if x == T(math.inf) or m == T(math.inf):
        if x == m:
            return T(math.nan)
        return T(math.inf)
    d = m - x
    v = -d / (x + m)
    if abs(v) < T(0.25):
        q = v * v
        series = T(1 / 3) + q * (T(1 / 5) + q * (T(1 / 7) + q * (T(1 / 9) + q * (T(1 / 11) + q * (
            T(1 / 13) + q * (T(1 / 15) + q * (T(1 / 17) + q * (T(1 / 19) + q * (T(1 / 21) + q * (
                T(1 / 23) + q * (T(1 / 25) + q * (T(1 / 27) + q * T(1 / 29)))))))))))))
        return -d * v + T(2.0) * x * v * q * series
    ratio = x / m
    if ratio > T(0.0) and ratio < T(math.inf):
        return x * math.log(ratio) + d
    return x * (math.log(x) - math.log(m)) + d
""")

# The same two algorithms on whole arrays for the PyTorch and JAX spellings (``xp`` the array
# module, ``lgamma`` its log-gamma): where-selects in the helpers' order of cases, the
# recurrence unrolled to its 5 steps, the asymptotic series to its 16 terms at every n (the
# terms the helper leaves out above 15 are below 1e-19) and the table left to the series.
_STIRLING_STEP = [1 / k for k in range(3, 39, 2)]
_STIRLING_SERIES = [1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360, 1 / 156,
                    -3617 / 122400, 43867 / 244188, -174611 / 125400, 854513 / 63756,
                    -236364091 / 1506960, 8553103 / 3900, -23749461029 / 657720,
                    8615841276005 / 12460140, -7709321041217 / 505920]
_BD0_SERIES = [1 / k for k in range(3, 31, 2)]


def _polynomial(coefficients, q):
    """c0 + c1 q + c2 q^2 + ..., by Horner's rule."""
    total = coefficients[-1]
    for c in reversed(coefficients[:-1]):
        total = c + q * total
    return total


def stirlerr_on_arrays(xp, lgamma, n):
    """``h_stirlerr`` on an array of ``xp`` (``torch`` or ``jax.numpy``), whose log-gamma is
    ``lgamma``."""
    inside = (n > 0) & (n < math.inf)
    x = xp.where(inside, n, 1.0)
    small = lgamma(x + 1.0) - (x + 0.5) * xp.log(x) + x - 0.9189385332046728
    total = xp.zeros_like(x)
    m = x
    for _ in range(5):
        below = m < 6.0
        t2 = 1.0 / ((2.0 * m + 1.0) * (2.0 * m + 1.0))
        total = total + xp.where(below, t2 * _polynomial(_STIRLING_STEP, t2), 0.0)
        m = xp.where(below, m + 1.0, m)
    series = total + _polynomial(_STIRLING_SERIES, 1.0 / (m * m)) / m
    value = xp.where(x < 1.0, small, series)
    value = xp.where(n == math.inf, 0.0, value)
    return xp.where(n > 0, value, xp.where(n == 0, math.inf, math.nan))


def bd0_on_arrays(xp, x, m):
    """``h_bd0`` on arrays of ``xp`` (``torch`` or ``jax.numpy``)."""
    d = m - x
    v = -d / (x + m)
    q = v * v
    series = -d * v + 2.0 * x * v * q * _polynomial(_BD0_SERIES, q)
    ratio = x / m
    direct = xp.where((ratio > 0) & (ratio < math.inf), x * xp.log(ratio),
                      x * (xp.log(x) - xp.log(m))) + d
    value = xp.where(abs(v) < 0.25, series, direct)
    infinite = (x == math.inf) | (m == math.inf)
    value = xp.where(infinite, xp.where(x == m, math.nan, math.inf), value)
    value = xp.where(x == 0, m, value)
    return xp.where((x >= 0) & (m >= 0), value, math.nan)


def _stirlerr_partials(build, n, a, wanted):
    # d/dn [lgamma(n + 1) - (n + 1/2) log(n) + n] = digamma(n + 1) - log(n) - 1/(2n): right,
    # but it cancels at large n (the losses take their derivatives from other forms)
    return [build("sub", build("sub", build("digamma", build("add", a, _ONE)), build("log", a)),
                  build("div", _HALF, a))]


def _bd0_partials(build, n, x, m, wanted):
    # d/dx = log(x/m), d/dm = 1 - x/m
    return [build("log", build("div", x, m)) if wanted[0] else None,
            build("sub", _ONE, build("div", x, m)) if wanted[1] else None]


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


def _special(name: str, doc: str, helper: Helper, partials, latex: str, torch,
             **traits) -> Op:
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
    _special("stirlerr", "log(x!) - [(x + 1/2) log(x) - x + log(2π)/2], the error of "
             "Stirling's formula (Loader's stirlerr), exact at any x; +inf at 0, 0 at +inf, "
             "NaN below 0",
             _STIRLERR, _stirlerr_partials, r"\operatorname{stirlerr}",
             lambda t: lambda n: stirlerr_on_arrays(t, t.lgamma, n)),
    Op("bd0", 2, doc="a log(a/b) + b - a, the Poisson deviance term of a count a at the mean "
       "b (Loader's bd0), without cancellation where b is close to a; b at a = 0, NaN for a "
       "negative argument",
       reference=reference_from_helper(_BD0), partials=_bd0_partials, kernel=_BD0,
       latex=r"\operatorname{bd_0}", torch=lambda t: lambda x, m: bd0_on_arrays(t, x, m),
       jax="h.bd0({0}, {1})", callable_as="bd0"),
)
