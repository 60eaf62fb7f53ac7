"""The JAX backend's printer: a typed, optimised graph as ``jax.numpy`` source.

:class:`JaxPrinter` prints each elementwise operation with the ``jax`` spelling of its
registry record (:mod:`lossdsl.ops`) and has a method for each other IR operation
(``print_<op>``: leaves, reductions, lookups), each returning a ``jax.numpy`` expression of
its arguments' names. The
generated module defines ``build(T, jnp, lax, h)``, which returns ``run(a0, a1, ..., s0, ...)``
computing the graph's roots for inputs ``a<k>`` and params ``s<k>`` in dtype ``T``; ``h`` is
this module (the stable helpers below, written with ``jax.numpy`` so that JAX can trace,
batch and differentiate them).

The arithmetic is the Numba kernels', operation for operation: the same optimised graph
(with ``sigmoid``, ``softplus`` and ``log_sigmoid`` kept whole, as helpers whose JAX
derivative is right at 0, where the kernels expand them through a shared ``exp(-|x|)``), the
same special-case powers (``x^2`` is ``x * x``), the helpers' branches as ``where`` selects
(``digamma``'s recurrence unrolled to its fixed bound), NaN-propagating ``min``/``max`` whose
ties go to the first argument, ``rowsum(x * onehot(y))`` read as the single column
``x[i, y_i]`` (``emit.pick_parts``), and a carrier ``x - stop_gradient(x)`` 0 even where
``x`` is not finite (``h.carrier``: the kernels drop it, the carriers phase). Generated
source never contains user text: inputs and params get generated names and numbers are
re-emitted with ``repr(float)``.

This module does not import JAX: the generated code receives ``jax.numpy`` and ``jax.lax``
from :mod:`lossdsl.jax`, and the helpers find them through :func:`_jnp` when first called.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import LossError
from ..ir.axes import Axis, partner_of
from ..ir.node import Node
from ..ir.visit import NodeVisitor
from ..ops import find, operations
from ..ops.primitives import ROW
from ..ops.scans import SCANS, is_column_total
from ..ops.special import bd0_on_arrays, stirlerr_on_arrays
from ..passes.rules.expand import carrier_of
from .emit import pick_parts

__all__ = ["JaxPrinter", "Program", "generate", "labels_read_exactly",
           "lookup_reads_as_given", "printable_operations"]


def _jnp():
    import jax.numpy as jnp

    return jnp


def _number(value: float) -> str:
    """A Python float literal for ``value`` (``repr`` of inf and NaN is not source)."""
    if math.isnan(value):
        return "math.nan"
    if math.isinf(value):
        return "math.inf" if value > 0 else "-math.inf"
    return repr(float(value))


# ---------------------------------------------------------------------------------------------
# Stable helpers, as the kernels' (emit.HELPERS), written as where-selects. Each branch not
# taken is computed on a safe argument, so that no NaN from it reaches JAX's derivative of a
# select (0 * NaN) when JAX differentiates these helpers itself (third derivatives, inputs
# lossdsl has no symbolic derivative for).


def _where(condition: Any, a: Any, b: Any) -> Any:
    return _jnp().where(condition, a, b)


def _poles(x: Any) -> Any:
    """NaN, -inf and the non-positive integers: where the polygamma helpers return NaN."""
    jnp = _jnp()
    return jnp.isnan(x) | (x == -math.inf) | ((x <= 0) & (x == jnp.floor(x)))


def _reflection_start(x: Any) -> tuple[Any, Any, Any, Any]:
    """(pole, x0, reflect, pi) for the polygamma helpers: the poles, ``x`` with the poles and
    +inf (whose values are set at the end) replaced by the safe 1.0, where the reflection
    applies, and pi in ``x``'s dtype."""
    pole = _poles(x)
    x0 = _where(pole | (x == math.inf), 1.0, x)
    return pole, x0, x0 < 0.5, _jnp().asarray(math.pi, x.dtype)


def _reduced(x: Any) -> Any:
    """x - round(x), exact: the reflections' tan, sin and cos of pi x at pi times it, as the
    kernels' helpers (pi x rounds to an absolute error near |x| ulp)."""
    return x - _jnp().floor(x + 0.5)


def _polygamma_end(x: Any, pole: Any, value: Any, at_infinity: Any) -> Any:
    """``value`` with the helpers' special values: ``at_infinity`` at +inf, NaN at poles."""
    value = _where(x == math.inf, at_infinity, value)
    return _where(pole, _jnp().asarray(math.nan, x.dtype), value)


def lgamma(x: Any) -> Any:
    """log|Gamma(x)|, +inf at the poles (as the kernels' ``h_lgamma``)."""
    jnp = _jnp()
    from jax import lax

    pole = (x <= 0) & (x == jnp.floor(x))
    return _where(pole, jnp.asarray(math.inf, x.dtype), lax.lgamma(_where(pole, 1.0, x)))


def stirlerr(x: Any) -> Any:
    """The error of Stirling's formula (as the kernels' ``h_stirlerr``)."""
    from jax import lax

    return stirlerr_on_arrays(_jnp(), lax.lgamma, x)


def bd0(x: Any, m: Any) -> Any:
    """Loader's deviance term x log(x/m) + m - x (as the kernels' ``h_bd0``)."""
    return bd0_on_arrays(_jnp(), x, m)


def digamma(x: Any) -> Any:
    """psi(x): reflection below 0.5, recurrence up to 16, the asymptotic series."""
    jnp = _jnp()
    pole, x0, reflect, pi = _reflection_start(x)
    result = _where(reflect, -(pi / jnp.tan(pi * _reduced(_where(reflect, x0, 0.25)))), 0.0)
    x1 = _where(reflect, 1.0 - x0, x0)
    for _ in range(16):  # x1 >= 0.5: at most sixteen steps reach 16
        small = x1 < 16.0
        result = result - _where(small, 1.0 / x1, 0.0)
        x1 = _where(small, x1 + 1.0, x1)
    q = 1.0 / (x1 * x1)
    series = q * (1 / 12 - q * (1 / 120 - q * (1 / 252 - q * (1 / 240 - q * (1 / 132)))))
    return _polygamma_end(x, pole, result + jnp.log(x1) - 0.5 / x1 - series, x)


def trigamma(x: Any) -> Any:
    """psi'(x), as the kernels' ``h_trigamma``."""
    jnp = _jnp()
    pole, x0, reflect, pi = _reflection_start(x)
    s = jnp.sin(pi * _reduced(_where(reflect, x0, 0.25)))
    result = _where(reflect, pi * pi / (s * s), 0.0)
    sign = _where(reflect, -1.0, 1.0)
    x1 = _where(reflect, 1.0 - x0, x0)
    inner = jnp.zeros_like(x1)
    for _ in range(16):
        small = x1 < 16.0
        inner = inner + _where(small, 1.0 / (x1 * x1), 0.0)
        x1 = _where(small, x1 + 1.0, x1)
    r = 1.0 / x1
    q = r * r
    inner = inner + (r + 0.5 * q + r * q * (1 / 6 - q * (1 / 30 - q * (1 / 42 - q * (
        1 / 30 - q * (5 / 66))))))
    return _polygamma_end(x, pole, result + sign * inner, 0.0)


def tetragamma(x: Any) -> Any:
    """psi''(x), as the kernels' ``h_tetragamma`` (recurrence up to 16)."""
    jnp = _jnp()
    pole, x0, reflect, pi = _reflection_start(x)
    xr = _reduced(_where(reflect, x0, 0.25))
    r = pi / jnp.sin(pi * xr)
    result = _where(reflect, -2.0 * r * r * r * jnp.sin(pi * (0.5 - jnp.abs(xr))), 0.0)
    x1 = _where(reflect, 1.0 - x0, x0)
    for _ in range(16):
        small = x1 < 16.0
        result = result - _where(small, 2.0 / (x1 * x1 * x1), 0.0)
        x1 = _where(small, x1 + 1.0, x1)
    r = 1.0 / x1
    q = r * r
    value = result - q * (1.0 + r + q * (0.5 - q * (1 / 6 - q * (1 / 6 - q * (
        0.3 - q * (5 / 6 - q * (691 / 210)))))))
    return _polygamma_end(x, pole, value, -0.0)


def _ndtr_tail_terms(x: Any) -> Any:
    """S(x) - 1, S(x) = Phi(x) (-x) / phi(x) for x <= -10: its asymptotic series' 20 terms
    after the leading 1."""
    jnp = _jnp()
    q = 1.0 / (x * x)
    term, total = jnp.ones_like(x), jnp.zeros_like(x)
    odd = 1.0
    for _ in range(20):
        term = term * (-odd * q)
        total = total + term
        odd += 2.0
    return total


def _ndtr_tail(x: Any) -> Any:
    """Phi(x) (-x) / phi(x) for x <= -10: its asymptotic series, 20 terms."""
    return 1.0 + _ndtr_tail_terms(x)


def log_ndtr(x: Any) -> Any:
    """log Phi(x), as the kernels' ``h_log_ndtr``."""
    jnp = _jnp()
    from jax import lax

    right = jnp.log1p(-0.5 * lax.erfc(_where(x > 0.0, x, 1.0) * 0.7071067811865476))
    middle_x = _where((x > -10.0) & (x <= 0.0), x, -1.0)
    middle = jnp.log(0.5 * lax.erfc(middle_x * -0.7071067811865476))
    tail_x = _where(x > -10.0, -10.0, x)  # NaN stays NaN: it takes this branch
    tail = (-0.5 * tail_x * tail_x - jnp.log(-tail_x) - 0.9189385332046728
            + jnp.log(_ndtr_tail(tail_x)))
    return _where(x > 0.0, right, _where(x > -10.0, middle, tail))


def ndtr_ratio(x: Any) -> Any:
    """phi(x)/Phi(x), as the kernels' ``h_ndtr_ratio``."""
    jnp = _jnp()
    from jax import lax

    head_x = _where(x > -10.0, x, 0.0)
    density = jnp.exp(-0.5 * head_x * head_x) * 0.3989422804014327
    head = density / (0.5 * lax.erfc(head_x * -0.7071067811865476))
    tail_x = _where(x > -10.0, -10.0, x)
    return _where(x > -10.0, head, -tail_x / _ndtr_tail(tail_x))


def ndtr_gap(x: Any) -> Any:
    """x + phi(x)/Phi(x), as the kernels' ``h_ndtr_gap`` (the series without its leading 1
    in the left tail)."""
    head_x = _where(x > -10.0, x, 0.0)
    tail_x = _where(x > -10.0, -10.0, x)
    gap = _ndtr_tail_terms(tail_x)
    return _where(x > -10.0, head_x + ndtr_ratio(head_x), tail_x * gap / (1.0 + gap))


def log1mexp(x: Any) -> Any:
    """log(1 - e^x): -expm1 near 0, log1p of -e^x far from it."""
    jnp = _jnp()
    near = x > -0.6931471805599453
    return _where(near, jnp.log(-jnp.expm1(_where(near, x, -1.0))),
                  jnp.log1p(-jnp.exp(_where(near, -1.0, x))))


def logaddexp(a: Any, b: Any) -> Any:
    """log(e^a + e^b), equal arguments first (two equal infinities give that infinity).
    JAX's derivative is sigmoid(a - b) and sigmoid(b - a), finite everywhere: 1/2 each where
    the arguments are equal (written ``a/2 + b/2``, which is ``a`` there), also at two -inf
    (the empty sums of a log-domain scan, where jnp.logaddexp's derivative is NaN)."""
    jnp = _jnp()
    equal = a == b
    d = _where(equal, 0.0, a - b)
    positive = d > 0.0
    return _where(equal, 0.5 * a + 0.5 * b + 0.6931471805599453,
                  _where(positive, a + jnp.log1p(jnp.exp(-_where(positive, d, 0.0))),
                         b + jnp.log1p(jnp.exp(_where(positive, 0.0, d)))))


def _x_times_log_value(x: Any, y: Any, log1p: bool) -> Any:
    """x log(u), u = y or 1 + y: 0 where x = 0 unless y is NaN (as the kernels' helpers)."""
    jnp = _jnp()
    zero = (x == 0.0) & ~jnp.isnan(y)
    if log1p:
        return _where(zero, 0.0, x * jnp.log1p(_where(zero, 0.0, y)))
    return _where(zero, 0.0, x * jnp.log(_where(zero, 1.0, y)))


def _x_times_log_partials(x: Any, y: Any, log1p: bool) -> tuple[Any, Any]:
    """(d/dx, d/dy) of x log(u): log(u) and x/u, both 0 only at x = 0 on the pole u = 0
    (lossdsl's own partials, ``ops.logistic._masked_log_partials``). Written with the
    "double where" (the pole's u read as 1), so that JAX's derivatives of them, the second
    derivatives, are 1/u, -x/u^2 and 0, not 0 * inf at the pole."""
    jnp = _jnp()
    pole = (x == 0.0) & (y == (-1.0 if log1p else 0.0))
    u = 1.0 + y if log1p else y
    safe = _where(pole, 1.0, u)
    log_u = jnp.log1p(_where(pole, 0.0, y)) if log1p else jnp.log(safe)
    return _where(pole, 0.0, log_u), _where(pole, 0.0, x / safe)


_X_TIMES_LOG: dict[bool, Any] = {}


def _x_times_log(log1p: bool) -> Any:
    """xlogy (``log1p`` False) or xlog1py as a custom_jvp: the where that makes the value 0
    at x = 0 would make JAX's derivative in x 0 there too, where it is log(u) (the value
    moves with x: xlogy(h, y) = h log(y)); the tangent is lossdsl's partials instead, which
    JAX differentiates for every higher order."""
    if log1p not in _X_TIMES_LOG:
        import jax

        @jax.custom_jvp
        def x_times_log(x, y):
            return _x_times_log_value(x, y, log1p)

        @x_times_log.defjvp
        def x_times_log_jvp(primals, tangents):
            (x, y), (dx, dy) = primals, tangents
            by_x, by_y = _x_times_log_partials(x, y, log1p)
            return x_times_log(x, y), by_x * dx + by_y * dy

        _X_TIMES_LOG[log1p] = x_times_log
    return _X_TIMES_LOG[log1p]


def xlog1py(x: Any, y: Any) -> Any:
    """x log1p(y), 0 where x = 0 unless y is NaN; its derivative in x is log1p(y), also at
    x = 0 (see :func:`_x_times_log`)."""
    return _x_times_log(True)(x, y)


def xlogy(x: Any, y: Any) -> Any:
    """x log(y), 0 where x = 0 unless y is NaN (as the kernels' ``h_xlogy``); its
    derivative in x is log(y), also at x = 0 (see :func:`_x_times_log`)."""
    return _x_times_log(False)(x, y)


# The logistic helpers below are smooth at 0 but written in two branches through |x|; JAX
# differentiates |x| at 0 as sign(0) = 0, which would make sigmoid'(0) 0. Each takes |x| as
# x on the branch x >= 0 (derivative 1 there) and its other pieces on that same side at 0,
# so that JAX's derivative at 0 is the x >= 0 branch's, the true one.

def _magnitude(x: Any) -> Any:
    """|x|, differentiated by JAX as 1 at 0 (the branch x >= 0)."""
    return _where(x >= 0.0, x, -x)


def softplus(x: Any) -> Any:
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|)."""
    jnp = _jnp()
    return _where(x >= 0.0, x, 0.0) + jnp.log1p(jnp.exp(-_magnitude(x)))


def log_sigmoid(x: Any) -> Any:
    """log sigmoid(x) = min(x, 0) - log1p(e^-|x|)."""
    jnp = _jnp()
    return _where(x < 0.0, x, 0.0) - jnp.log1p(jnp.exp(-_magnitude(x)))


def sigmoid(x: Any) -> Any:
    """1/(1 + e^-x) through e^-|x|."""
    jnp = _jnp()
    e = jnp.exp(-_magnitude(x))
    return _where(x >= 0.0, 1.0, e) / (1.0 + e)


def sign(x: Any) -> Any:
    """-1, 0 or 1; NaN for NaN (``x * 0`` at zero, as the kernels)."""
    return _where(x > 0.0, 1.0, _where(x < 0.0, -1.0, x * 0.0))


def maximum(a: Any, b: Any) -> Any:
    """max(a, b): NaN in ``a`` propagates, ties pick ``a`` (its derivative goes to ``a``)."""
    return _where((a >= b) | _jnp().isnan(a), a, b)


def minimum(a: Any, b: Any) -> Any:
    """min(a, b): NaN in ``a`` propagates, ties pick ``a``."""
    return _where((a <= b) | _jnp().isnan(a), a, b)


def pick(x: Any, labels: Any) -> Any:
    """``x[i, labels_i]``: one column of each row (``rowsum(x * onehot(labels))``)."""
    jnp = _jnp()
    index = labels.astype(jnp.int32)
    return jnp.take_along_axis(x, index[..., None], axis=-1, mode="clip")[..., 0]


def rows(table: Any, labels: Any, samples: int | None) -> Any:
    """Row ``labels_i`` of ``table`` for each sample (``rowof(C, y)``)."""
    jnp = _jnp()
    found = jnp.take(table, labels.astype(jnp.int32), axis=0, mode="clip")
    if found.ndim == 1 and samples is not None:  # one label for every sample
        found = jnp.broadcast_to(found, (samples, found.shape[0]))
    return found


def sparsemax_threshold(x: Any) -> Any:
    """The tau of each row with sum_k max(x_k - tau, 0) = 1, by sorting (as optax's
    ``projection_simplex``); NaN where the kernels give NaN (a NaN or +inf in the row, or
    only -inf). JAX differentiates it through the sort: 1/|support| on the support."""
    jnp = _jnp()
    from jax import lax

    ordered = -jnp.sort(-x, axis=-1)
    totals = jnp.cumsum(ordered, axis=-1)
    sizes = jnp.arange(1, x.shape[-1] + 1, dtype=x.dtype)
    support = lax.stop_gradient(jnp.sum(1.0 + sizes * ordered > totals, axis=-1))
    picked = jnp.take_along_axis(totals, jnp.maximum(support - 1, 0)[..., None], axis=-1)
    tau = (picked[..., 0] - 1.0) / jnp.maximum(support, 1).astype(x.dtype)
    undefined = (support == 0) | jnp.any(jnp.isnan(x) | (x == math.inf), axis=-1)
    return jnp.where(undefined, jnp.asarray(math.nan, x.dtype), tau)


class _Rows:
    """Sums and maxima over each row of a class matrix (``segments`` None) or over each
    group of samples (a slot per sample, as :func:`segment_sum`)."""

    def __init__(self, z: Any, segments: Any):
        self.segments = segments
        self.shape = z.shape[:-1] if segments is None else segments.shape

    def sum(self, values: Any) -> Any:
        if self.segments is None:
            return _jnp().sum(values, axis=-1)
        return segment_sum(values, self.segments)

    def max(self, values: Any) -> Any:
        import jax

        if self.segments is None:
            return _jnp().max(values, axis=-1)
        return jax.ops.segment_max(values, self.segments, num_segments=self.segments.shape[0])

    def at_items(self, values: Any) -> Any:
        return values[..., None] if self.segments is None else values[self.segments]


def _logit_shift_root(z: Any, t: Any, rows: _Rows) -> Any:
    """The kernels' search (``emit.BodyEmitter._emit_logit_shift``) for each row's b with
    ``sum sigmoid(z + b) = t``: Newton steps kept inside a shrinking bracket, the sign of the
    residual from log-domain sums where the terms saturate."""
    import jax

    jnp = _jnp()
    finite = jnp.isfinite(z)
    scores = jnp.where(finite, z, 0.0)
    count = rows.sum(finite.astype(z.dtype))
    target = t - rows.sum((z == math.inf).astype(z.dtype))
    clean = rows.sum(jnp.isnan(z).astype(z.dtype)) == 0
    solvable = clean & (target > 0) & (target < count)
    safe_count = jnp.where(solvable, count, 1.0)
    p = jnp.where(solvable, target / safe_count, 0.5)
    logit = jnp.log(p) - jnp.log1p(-p)
    low = jnp.where(solvable, logit - rows.max(jnp.where(finite, scores, -math.inf)), 0.0)
    high = jnp.where(solvable, logit + rows.max(jnp.where(finite, -scores, -math.inf)), 0.0)
    start = jnp.clip(logit - rows.sum(scores) / safe_count, low, high)
    tolerance = jnp.finfo(z.dtype).eps

    def side_sums(terms, co, taken):
        """log of the sum of exp(terms) over the taken, the largest term, and the sums of
        1 and of co weighted by exp(term - the largest)."""
        largest = rows.max(jnp.where(taken, terms, -math.inf))
        safe = jnp.where(jnp.isfinite(largest), largest, 0.0)
        weights = jnp.where(taken, jnp.exp(terms - rows.at_items(safe)), 0.0)
        scaled, weighted = rows.sum(weights), rows.sum(weights * co)
        log_sum = jnp.where(scaled > 0, largest + jnp.log(jnp.where(scaled > 0, scaled, 1.0)),
                            -math.inf)
        return log_sum, largest, scaled, weighted

    def ratio(a, b):
        return jnp.where(b > 0, a / jnp.where(b > 0, b, 1.0), 0.0)

    def step(state):
        sweep, b, low, high, active = state
        u = scores + rows.at_items(b)
        e = jnp.exp(-jnp.abs(u))
        terms, co = -jnp.abs(u) - jnp.log1p(e), 1.0 / (1.0 + e)
        above = finite & (u >= 0)
        log_a, high_a, scaled_a, weighted_a = side_sums(terms, co, above)
        log_b, high_b, scaled_b, weighted_b = side_sums(terms, co, finite & (u < 0))
        whole = target - rows.sum(above.astype(z.dtype))
        residual = jnp.where(whole != 0, whole + jnp.exp(log_a) - jnp.exp(log_b),
                             log_a - log_b)
        slope = jnp.where(whole != 0,
                          jnp.exp(high_a) * weighted_a + jnp.exp(high_b) * weighted_b,
                          ratio(weighted_a, scaled_a) + ratio(weighted_b, scaled_b))
        low = jnp.where(active & (residual > 0), b, low)
        high = jnp.where(active & (residual < 0), b, high)
        following = b + ratio(residual, slope)
        following = jnp.where((slope > 0) & (low < following) & (following < high),
                              following, 0.5 * low + 0.5 * high)
        done = (residual == 0) | (jnp.abs(following - b) <= 4 * tolerance * (1 + jnp.abs(b)))
        b = jnp.where(active & (residual != 0), following, b)
        return sweep + 1, b, low, high, active & ~done

    def going(state):
        return (state[0] < 1100) & jnp.any(state[4])

    _, root, _, _, _ = jax.lax.while_loop(going, step, (0, start, low, high, solvable))
    shift = jnp.where(solvable, root, math.nan)
    shift = jnp.where(clean & (target == count), math.inf, shift)
    return jnp.where(clean & (target == 0), -math.inf, shift)


def _logit_shift_tangent(z: Any, t: Any, b: Any, dz: Any, dt: Any, rows: _Rows) -> Any:
    """``db = (dt - sum_k sigmoid'(z_k + b) dz_k) / S``, S the row's sum of sigmoid' (the
    implicit function's derivative); 0 where S is 0 (b infinite)."""
    jnp = _jnp()
    finite = jnp.isfinite(z)
    u = jnp.where(finite, z, 0.0) + rows.at_items(jnp.where(jnp.isfinite(b), b, 0.0))
    slope = jnp.where(finite, sigmoid(u) * sigmoid(-u), 0.0)
    total = rows.sum(slope)
    moving = dt - rows.sum(slope * jnp.where(finite, dz, 0.0))
    return jnp.where(total > 0, moving / jnp.where(total > 0, total, 1.0), 0.0)


_LOGIT_SHIFTS: dict[bool, Any] = {}


def _logit_shift_function(segmented: bool) -> Any:
    """The custom_jvp of the shift of a class row (``segmented`` False) or of a group: JAX
    differentiates its tangent rule, which calls the shift again, so every order of
    derivative is the implicit function's."""
    if segmented not in _LOGIT_SHIFTS:
        import jax

        def rows_of(z, segments):
            return _Rows(z, segments if segmented else None)

        @jax.custom_jvp
        def shift(z, t, segments):
            rows = rows_of(z, segments)
            return _logit_shift_root(z, jax.numpy.broadcast_to(t, rows.shape), rows)

        @shift.defjvp
        def shift_jvp(primals, tangents):
            z, t, segments = primals
            dz, dt, _ = tangents
            b = shift(z, t, segments)
            rows = rows_of(z, segments)
            dt = jax.numpy.broadcast_to(dt, rows.shape)
            return b, _logit_shift_tangent(z, t, b, dz, dt, rows)

        _LOGIT_SHIFTS[segmented] = shift
    return _LOGIT_SHIFTS[segmented]


def logit_shift(z: Any, t: Any, segments: Any = None) -> Any:
    """The b of each row (or group: ``segments``) with ``sum sigmoid(z + b) = t``, as the
    kernels find it: -inf at t = 0, +inf at t = the number of finite scores, NaN where no b
    exists or a score is NaN; its derivatives are the implicit function's,
    ``db/dz_k = -sigmoid'(z_k + b) / S`` and ``db/dt = 1/S``."""
    jnp = _jnp()
    z = jnp.asarray(z)
    t = jnp.asarray(t, z.dtype)
    if segments is None:
        return _logit_shift_function(False)(z, t, jnp.zeros((), jnp.int32))
    return _logit_shift_function(True)(z, t, segments)


_CARRIERS: list[Any] = []


def carrier(x: Any) -> Any:
    """``x - stop_gradient(x)`` as the kernels compute it: 0, also where ``x`` is not finite
    (``inf - inf`` is NaN; the carriers phase drops the term, so the kernels' value of ``s +
    stop_gradient(tanh(s) - s)`` at s = inf is tanh's), with the derivatives of ``x`` at
    every order (a custom_jvp whose tangent is ``x``'s)."""
    if not _CARRIERS:
        import jax

        @jax.custom_jvp
        def zero_with_derivatives_of(x):
            return jax.numpy.zeros_like(x)

        @zero_with_derivatives_of.defjvp
        def carried_tangent(primals, tangents):
            (x,), (dx,) = primals, tangents
            return zero_with_derivatives_of(x), dx

        _CARRIERS.append(zero_with_derivatives_of)
    return _CARRIERS[0](x)


def class_index(T: type, samples: int | None, width: int) -> Any:
    """The class index k of each element of a per-class matrix."""
    jnp = _jnp()
    index = jnp.arange(width, dtype=T)
    return index if samples is None else jnp.broadcast_to(index, (samples, width))


# Groups (groupsum(e, g) and its kin): each sample's segment is the rank of its group id
# among the distinct ids, so a group's values are one segment of a segment sum. The number of
# groups is not static under jit, so per-group arrays have one slot per sample: the slots past
# the last group are empty (a sum of nothing) and nothing reads them.

def segment_ids(ids: Any) -> Any:
    """Each sample's segment: the rank of its group id among the distinct ids."""
    jnp = _jnp()
    return jnp.unique(ids, return_inverse=True, size=ids.shape[0])[1].reshape(ids.shape)


def segment_sum(x: Any, segments: Any) -> Any:
    """The sum over each group (a slot per sample)."""
    import jax

    return jax.ops.segment_sum(x, segments, num_segments=segments.shape[0])


def segment_max(x: Any, segments: Any) -> Any:
    """The largest value of each group (NaN propagates, as the kernels' row maximum)."""
    import jax

    jnp = _jnp()
    found = jax.ops.segment_max(x, segments, num_segments=segments.shape[0])
    has_nan = segment_sum(jnp.isnan(x).astype(x.dtype), segments) > 0
    return jnp.where(has_nan, jnp.asarray(math.nan, x.dtype), found)


def group_sizes(T: type, segments: Any) -> Any:
    """The number of samples of each group (0 in the empty slots)."""
    jnp = _jnp()
    return segment_sum(jnp.ones(segments.shape, T), segments)


def group_count(segments: Any) -> Any:
    """The number of groups."""
    jnp = _jnp()
    return jnp.max(segments, initial=-1) + 1


def in_groups(values: Any, segments: Any) -> Any:
    """Per-group ``values`` with the empty slots zeroed (what a sum over groups adds)."""
    jnp = _jnp()
    used = jnp.arange(segments.shape[0]) < group_count(segments)
    return jnp.where(used, values, jnp.zeros_like(values))


def group_total(values: Any, ids: Any) -> Any:
    """Each sample's total of ``values`` over its group of ``ids`` (``sum_group``: how
    ``groupsum`` sums samples with classes), each column of rows (N, K) summed apart; NaN
    for a sample whose id is NaN (in no group, as the kernels' group totals)."""
    jnp = _jnp()
    ids = jnp.asarray(ids)
    segments = segment_ids(ids)
    values = jnp.asarray(values)
    if values.ndim == 0:
        values = jnp.broadcast_to(values, ids.shape)
    totals = segment_sum(values, segments)[segments]
    missing = jnp.isnan(ids).reshape(ids.shape + (1,) * (values.ndim - 1))
    return jnp.where(missing, jnp.asarray(math.nan, totals.dtype), totals)


def column_total(values: Any) -> Any:
    """Each column's total of ``values`` over all the samples, given to every sample
    (``colsum``: a group's total with every sample in one group); of a vector (N,), the
    total given to every sample."""
    jnp = _jnp()
    values = jnp.asarray(values)
    return jnp.broadcast_to(jnp.sum(values, axis=0), values.shape)


# Pairs (pairsum(e, g)): a value per pair of samples is an (N, N) matrix, sample i's row
# holding its partners j; the pairs of distinct samples within a group are a mask of it.

def pair_mask(ids: Any) -> Any:
    """Which (i, j) are pairs: distinct samples of the same group."""
    jnp = _jnp()
    ids = jnp.asarray(ids)
    return (ids[:, None] == ids[None, :]) & ~jnp.eye(ids.shape[0], dtype=bool)


def pair_sum(x: Any, mask: Any) -> Any:
    """The sum of each sample's row over its partners."""
    jnp = _jnp()
    x = jnp.broadcast_to(x, mask.shape)
    return jnp.sum(jnp.where(mask, x, jnp.zeros_like(x)), axis=-1)


def pair_max(x: Any, mask: Any) -> Any:
    """The largest value of each sample's row over its partners (-inf where it has none)."""
    jnp = _jnp()
    x = jnp.broadcast_to(x, mask.shape)
    return jnp.max(jnp.where(mask, x, jnp.full_like(x, -jnp.inf)), axis=-1)


# Class pairs (classpairsum(e)): a value per pair (k, c) of a row's classes is an (N, K, K)
# array, class k's row holding its partner classes c; the pairs are the off-diagonal ones.

def partner_class_sum(x: Any, samples: Any, width: Any) -> Any:
    """The sum of each class's row over its partner classes (the other classes of its row)."""
    jnp = _jnp()
    x = jnp.broadcast_to(x, (samples, width, width))
    return jnp.sum(jnp.where(jnp.eye(width, dtype=bool), jnp.zeros_like(x), x), axis=-1)


def scan(name: str, values: Any, keys: Any, strata: Any) -> Any:
    """Cumulative sum ``name`` (:data:`lossdsl.ops.scans.SCANS`) of ``values`` over the
    samples ordered by ``keys`` within ``strata``: a stable sort, a running sum or logsumexp
    (``lax.associative_scan``, started anew at each stratum), and each sample reads the
    partial sum at the edge of its run of tied keys (static shapes)."""
    import jax

    jnp = _jnp()
    accumulates, direction = SCANS[name]
    keys = jnp.asarray(keys)
    values = jnp.broadcast_to(values, keys.shape)
    strata = jnp.broadcast_to(strata, keys.shape)
    order = jnp.lexsort((keys, strata))  # by stratum, then key: stable
    ordered_keys, ordered_strata, ordered = keys[order], strata[order], values[order]
    new_stratum = jnp.concatenate([jnp.ones(1, bool), ordered_strata[1:] != ordered_strata[:-1]])
    run_start = new_stratum | jnp.concatenate([jnp.ones(1, bool),
                                               ordered_keys[1:] != ordered_keys[:-1]])
    run_end = jnp.concatenate([run_start[1:], jnp.ones(1, bool)])
    positions = jnp.arange(keys.shape[0])
    reverse = direction == "from"
    restarts = jnp.concatenate([new_stratum[1:], jnp.ones(1, bool)]) if reverse else new_stratum
    # logaddexp, not jnp.logaddexp: its derivative at two -inf (a run of masked terms) is
    # finite, so JAX can differentiate a printed gradient's log-domain scans (full Hessians)
    add = jnp.add if accumulates == "sum" else logaddexp

    def combine(left, right):  # a segmented sum: a restart drops what came before
        return (left[0] | right[0], jnp.where(right[0], right[1], add(left[1], right[1])))

    _, partial = jax.lax.associative_scan(combine, (restarts, ordered), reverse=reverse)
    if reverse:  # a run's sum is at its first position
        at = jax.lax.cummax(jnp.where(run_start, positions, 0))
    else:
        at = jax.lax.cummin(jnp.where(run_end, positions, keys.shape[0]), reverse=True)
    return jnp.zeros_like(partial).at[order].set(partial[at])


# ---------------------------------------------------------------------------------------------
# The printer


def lookup_reads_as_given(label: Node) -> bool:
    """Whether the printed lookups (:meth:`JaxPrinter._label_read`) read the labels
    ``label`` as given, not converted to ``T``: those of an input."""
    return label.op == "input"


def labels_read_exactly(label: Node, axis: str, ignored: bool) -> bool:
    """Whether the printed code reads the labels ``label`` indexing ``axis`` only as
    given, so that integer labels are exact however wide the axis: a table's rows, which
    only lookups read (:func:`lookup_reads_as_given`), unless they are the labels of
    ``ignore_index``, which a ``where`` reads in ``T``. Labels of classes are also compared
    with the class index in ``T`` (the one-hot rows of a gradient): in float32, past 2**24,
    a label and its neighbouring classes' indices are one number."""
    return lookup_reads_as_given(label) and Axis(axis).is_table_rows and not ignored


@dataclass(frozen=True)
class Program:
    """A generated module: its source and ``build(T, jnp, lax, h) -> run``."""

    source: str
    build: Callable


class JaxPrinter(NodeVisitor[str]):
    """``jax.numpy`` source for a graph: per node, in topological order, one line assigning
    its expression (``print_<op>(n, *argument names)``, the elementwise operations by their
    registry records) to a variable, the node's result.

    ``inputs`` and ``params`` map loss names to generated argument names; ``lengths`` maps
    each axis (``n0``, ``n0k``, ``t0``, ``n0#kept``) to an expression of its length.
    """

    method_prefix = "print_"
    pass_arguments = True

    def __init__(self, inputs: Mapping[str, str], params: Mapping[str, str],
                 lengths: Mapping[str, str], groups: Mapping[str, str] | None = None,
                 pairs: Mapping[str, str] | None = None):
        super().__init__()
        self.inputs = dict(inputs)
        self.params = dict(params)
        self.lengths = dict(lengths)
        self.constants: dict[str, str] = {}  # literal -> module-level name
        self.lines: list[str] = []  # the body of run, one assignment per node
        # grouped samples: items axis (n<d>g) -> the variable holding each sample's segment
        self.segments: dict[str, str] = {}
        for number, (items, ids) in enumerate((groups or {}).items()):
            self.segments[items] = f"seg{number}"
            self.lines.append(f"        seg{number} = h.segment_ids({ids})")
            self.lengths.setdefault(Axis(items).samples_of(), f"h.group_count(seg{number})")
        # samples in pairs: partners axis (n<d>g) -> the variable holding the mask of pairs
        self.masks: dict[str, str] = {}
        for number, (items, ids) in enumerate((pairs or {}).items()):
            self.masks[items] = f"pairs{number}"
            self.lines.append(f"        pairs{number} = h.pair_mask({ids})")

    def arguments(self, n: Node) -> list[str]:
        return [self._aligned(a, self.visit(a), n) for a in n.args]

    def _segments_of(self, axes: tuple[str, ...] | None) -> str | None:
        """The segment variable of a value over grouped samples' items (or None)."""
        return self.segments.get(axes[1]) if axes is not None and len(axes) == 2 else None

    def finish(self, n: Node, expression: str) -> str:
        variable = f"v{len(self.lines)}"
        self.lines.append(f"        {variable} = {expression}")
        return variable

    def _aligned(self, a: Node, name: str, n: Node) -> str:
        """``a`` broadcast against ``n``: a per-sample vector meets a per-class matrix row by
        row (NumPy would align it with the classes), a group's value each of its samples."""
        if (n.op not in (*ROW, "sum", "class_index", "table_row", "at_partner")
                and a.axes is not None and n.axes is not None and len(n.axes) == 2
                and tuple(a.axes) == tuple(n.axes[:1])):
            segments = self._segments_of(n.axes)
            return f"{name}[{segments}]" if segments else f"{name}[..., None]"
        if (n.op not in (*ROW, "at_partner", "class_index", "table_row") and a.axes
                and n.axes is not None and len(n.axes) == 3 and len(a.axes) < 3):
            # a row's value or a class's own value within a class pair sum's (N, K, K) (the
            # labels of a class index or a table's row read at the partner class are not)
            return f"{name}[..., {', '.join(['None'] * (3 - len(a.axes)))}]"
        return name

    def constant(self, value: float) -> str:
        """The name of a module-level constant of dtype ``T``."""
        literal = _number(value)
        if literal not in self.constants:
            self.constants[literal] = f"K{len(self.constants)}"
        return self.constants[literal]

    def length(self, axis: str) -> str:
        """The expression of an axis' length (a LossError when the inputs do not give it)."""
        if axis not in self.lengths:
            raise LossError(f"the JAX backend does not know the length of axis {axis!r}")
        return self.lengths[axis]

    # ------------------------------------------------------------------ leaves
    def print_const(self, n):
        """A constant."""
        return self.constant(n.value)

    def print_input(self, n):
        """An input, converted to ``T``; read at the partners of a pair sum, a row of every
        sample's value (the pair mask picks the partners)."""
        base = partner_of(n.value)
        if base is not None and not Axis(n.axes[1]).is_ragged and len(n.axes) == 2:
            # a matrix's rows at the partner (pairmatvec's r): row j of the array itself
            return f"jnp.asarray({self.inputs[base]}).astype(T)"
        if base is not None and len(n.axes) == 3:  # at the partner class c of (i, k, c)
            return f"jnp.asarray({self.inputs[base]}).astype(T)[:, None, :]"
        if base is not None:
            return f"jnp.asarray({self.inputs[base]}).astype(T)[None, :]"
        return f"jnp.asarray({self.inputs[n.value]}).astype(T)"

    def print_param(self, n):
        """A param, an argument of ``run`` converted to ``T``."""
        return f"jnp.asarray({self.params[n.value]}).astype(T)"

    def print_count(self, n):
        """The length of an axis (from the inputs' shapes), as a ``T`` scalar; per group,
        the number of its samples."""
        if n.axes and n.value in self.masks:  # a sample's number of partners
            return f"jnp.sum({self.masks[n.value]}, axis=-1).astype(T)"
        if n.axes:
            return f"h.group_sizes(T, {self.segments[n.value]})"
        return f"jnp.asarray({self.length(n.value)}, T)"

    def print_at_partner(self, n, value):
        """A per-sample value at each sample's partners: a row of every sample's value (the
        pair mask picks the partners); a class matrix at the partner classes c of each class
        pair (i, k, c) of a class pair sum: row i's values along c."""
        if len(n.axes) == 3:
            width = self.length(n.axes[1])
            return (f"jnp.broadcast_to({value}, ({self.length(n.axes[0])}, {width}))"
                    "[:, None, :]")
        return f"jnp.broadcast_to({value}, ({self.length(n.axes[0])},))[None, :]"

    def print_pairdot(self, n, u, v):
        """The dot product of u's row i and v's row j for every (i, j): an (N, N) matrix
        (the pair mask picks the pairs)."""
        return f'jnp.einsum("id,jd->ij", {u}, {v})'

    def print_pairmatvec(self, n, weights, rows):
        """The sum over each sample's partners j of w_ij times row j of r: the masked
        (N, N) weights times the (N, D) rows."""
        mask = self.masks[Axis(n.axes[0]).items()]
        return (f'jnp.einsum("ij,jd->id", jnp.where({mask}, jnp.broadcast_to({weights}, '
                f'{mask}.shape), ZERO), {rows})')

    def print_partner_first(self, n, ids):
        """1 where the partner (column) comes before the sample (row) in the order given."""
        samples = self.length(n.axes[0])
        return (f"jnp.where(jnp.arange({samples})[None, :] < jnp.arange({samples})[:, None], "
                "ONE, ZERO)")

    def print_class_index(self, n, label):
        """The class index k of each element of a (N, K) matrix (of grouped samples: each
        sample's own index, which orders a group's samples as the kernels do)."""
        if self._segments_of(n.axes) or len(n.axes) == 3:  # grouped, or the partner class
            return f"jnp.arange({self.length(n.axes[1])}, dtype=T)"
        samples = self.lengths.get(n.axes[0]) if n.axes else None
        return f"h.class_index(T, {samples}, {self.length(n.axes[1])})"

    def print_table_row(self, n, table, labels):
        """Row y_i of a lookup table for each sample; typed on the class pairs (i, k, c) of a
        class pair sum, read at the partner class c: the row along c."""
        samples = self.lengths.get(n.axes[0]) if n.axes else None
        labels = self._label_read(n.args[1], labels)
        if len(n.axes) == 3:
            return f"h.rows({table}, {labels}, {samples})[:, None, :]"
        return f"h.rows({table}, {labels}, {samples})"

    def _label_read(self, label: Node, printed: str) -> str:
        """The labels a lookup (a table's row, a pick, a group total's ids) indexes with:
        where :func:`lookup_reads_as_given`, an input as :meth:`print_input` reads it but not
        converted to ``T``, so that integer labels stay exact (in float32, 2**24 + 1 would
        read as 2**24: the neighbouring row); anything else as ``printed``."""
        if not lookup_reads_as_given(label):
            return printed
        base = partner_of(label.value)
        if base is not None and len(label.axes) == 3:
            return f"jnp.asarray({self.inputs[base]})[:, None, :]"
        if base is not None:
            return f"jnp.asarray({self.inputs[base]})[None, :]"
        return f"jnp.asarray({self.inputs[label.value]})"

    def print_count_as(self, n, value, count):
        """``count_as(l, s)`` is ``l`` (``s`` counts samples in a mean; ``shapes.objective``
        has removed it from the graphs printed)."""
        return value

    # ------------------------------------------------------------------ reductions
    def print_rowsum(self, n, x):
        """The sum over a row's classes; ``rowsum(x * onehot(y))`` reads one column."""
        segments = self._segments_of(n.args[0].axes)
        if segments:
            return f"h.segment_sum({x}, {segments})"
        axes = n.args[0].axes
        if axes is not None and len(axes) == 2 and axes[1] in self.masks:
            return f"h.pair_sum({x}, {self.masks[axes[1]]})"
        if axes is not None and len(axes) == 3:  # over the partner classes c != k
            return (f"h.partner_class_sum({x}, {self.length(axes[0])}, "
                    f"{self.length(axes[1])})")
        parts = pick_parts(n)
        if parts is not None:
            labels = self._label_read(parts[1], self._name_of(parts[1]))
            return f"h.pick({x.removesuffix('[..., None]')}, {labels})"
        return f"jnp.sum({x}, axis=-1)"

    def print_rowmax(self, n, x):
        """The largest element of each row (NaN propagates)."""
        segments = self._segments_of(n.args[0].axes)
        if segments:
            return f"h.segment_max({x}, {segments})"
        axes = n.args[0].axes
        if axes is not None and len(axes) == 2 and axes[1] in self.masks:
            return f"h.pair_max({x}, {self.masks[axes[1]]})"
        return f"jnp.max({x}, axis=-1)"

    def print_sum_group(self, n, values, ids, strata):
        """The total of each sample's group (``groupsum`` of samples with classes: each
        column of rows summed over the group), a segment sum (``h.group_total``). The ids,
        one per sample, are read as given, not aligned with the rows. With a number for the
        ids (``colsum``: every sample in one group), the column totals (``h.column_total``)."""
        if is_column_total(n):
            return f"h.column_total({values})"
        ids = self._label_read(n.args[1], ids.removesuffix("[..., None]"))
        return f"h.group_total({values}, {ids})"

    def print_sparsemax_threshold(self, n, x):
        """Sparsemax's threshold of each row (``h.sparsemax_threshold``, by sorting)."""
        return f"h.sparsemax_threshold({x})"

    def print_logit_shift(self, n, z, t):
        """The shift of each row's (or group's) logits to its target (``h.logit_shift``)."""
        segments = self._segments_of(n.args[0].axes)
        return f"h.logit_shift({z}, {t}, {segments})" if segments else \
            f"h.logit_shift({z}, {t})"

    def print_scan(self, n, values, keys, strata):
        """A cumulative sum in the order of the keys, within strata (``h.scan``)."""
        return f'h.scan("{n.op}", {values}, {keys}, {strata})'

    print_sum_from = print_sum_upto = print_logsumexp_from = print_logsumexp_upto = print_scan

    def print_where(self, n, condition, taken, other):
        """``where(c, a, b)``; a branch ``log(x)`` is printed as the log of x where the
        select takes it and of 1 elsewhere (the "double where"): the same values and, where
        taken, the same derivative, but JAX's derivative of the entries masked out is 0
        instead of 0 * inf = NaN at a masked x = 0 (the masked logs of a log-domain scan's
        adjoint, ``diff._signed_exp_sum``, which JAX differentiates for a risk-set loss's
        full Hessian)."""
        branches = [taken, other]
        for index, branch in enumerate(n.args[1:]):
            if branch.op == "log":
                x = self._aligned(branch.args[0], self.visit(branch.args[0]), n)
                kept = (x, "ONE") if index == 0 else ("ONE", x)
                branches[index] = f"jnp.log(jnp.where({condition} != ZERO, {kept[0]}, {kept[1]}))"
        return self.fallback(n, condition, *branches)

    def print_sub(self, n, a, b):
        """``a - b``; a carrier ``x - stop_gradient(x)`` (``stop_gradient(x) - x``: its
        negation), the value 0 with the derivatives of ``x``, is ``h.carrier(x)``: 0 where
        ``x`` is not finite too, as in the kernels, where ``x - x`` was NaN (the held
        carriers' ``stop_gradient(e) + (x - stop_gradient(x))`` was NaN wherever ``x`` was
        infinite and ``e`` not)."""
        carried = carrier_of(n)
        if carried is None:
            return self.fallback(n, a, b)
        return f"h.carrier({a})" if carried[1] > 0 else f"-h.carrier({b})"

    def print_sum(self, n, x):
        """The sum over the samples (over groups: of the slots that hold one)."""
        axes = n.args[0].axes
        segments = (self.segments.get(Axis(axes[0]).items())
                    if axes and len(axes) == 1 and Axis(axes[0]).is_samples else None)
        if segments:
            return f"jnp.sum(h.in_groups({x}, {segments}))"
        return f"jnp.sum({x})"

    def _name_of(self, n: Node) -> str:
        # the pick's labels are printed before the rowsum (they are under its argument)
        return self.visit(n)

    # ------------------------------------------------------------------ elementwise
    def fallback(self, n: Node, *args: str) -> str:
        """An elementwise operation: the ``jax`` spelling of its registry record (a format
        string over the arguments, or a function of the node and the arguments)."""
        op = find(n.op)
        spelling = op.jax if op is not None else None
        if spelling is None:
            raise LossError(f"the JAX backend cannot print the operation '{n.op}' (it prints "
                            f"{', '.join(printable_operations())})")
        if isinstance(spelling, str):
            return spelling.format(*args)
        return spelling(n, *args)


def printable_operations() -> list[str]:
    """The IR operations the printer handles (every one but the macros that ``shapes.py``
    expands before printing)."""
    return sorted(op.name for op in operations()
                  if hasattr(JaxPrinter, JaxPrinter.method_prefix + op.name)
                  or op.jax is not None)


_ASSIGNED = re.compile(r"\s*(v\d+) = ")
_VARIABLE = re.compile(r"\bv\d+\b")


def _live(lines: list[str], results: list[str]) -> list[str]:
    """``lines`` less the assignments nothing after them reads: the printer visits every
    node, and a label input that only lookups read (they index with the argument itself,
    :meth:`JaxPrinter._label_read`) would leave its conversion to ``T`` unused."""
    read = set(results)
    kept = []
    for line in reversed(lines):
        assigned = _ASSIGNED.match(line)
        if assigned is not None and assigned.group(1) not in read:
            continue
        read.update(_VARIABLE.findall(line))
        kept.append(line)
    return kept[::-1]


def _module(printer: JaxPrinter, roots: list[Node], arguments: list[str]) -> str:
    results = printer.run(roots)
    lines = _live(printer.lines, results)
    constants = [f"    {name} = T({literal})" for literal, name in printer.constants.items()]
    result = "".join(f"{name}, " for name in results)
    return "\n".join([
        "import math", "", "", "def build(T, jnp, lax, h):",
        "    ZERO = T(0.0)", "    ONE = T(1.0)", *constants, "",
        f"    def run({', '.join(arguments)}):", *lines, f"        return ({result})", "",
        "    return run", ""])


def generate(roots: list[Node], inputs: Mapping[str, str], params: Mapping[str, str],
             lengths: Mapping[str, str], groups: Mapping[str, str] | None = None,
             pairs: Mapping[str, str] | None = None) -> Program:
    """The JAX program computing ``roots`` (typed, lowered graphs).

    ``inputs``/``params``: loss name -> generated argument name; ``run`` takes the inputs'
    names then the params', in the mappings' order. ``lengths``: axis -> length expression.
    ``groups``: for grouped samples, their items' axis -> the argument of group ids;
    ``pairs``: for samples paired within groups, their partners' axis -> the same.
    """
    printer = JaxPrinter(inputs, params, lengths, groups, pairs)
    arguments = list(inputs.values()) + list(params.values())
    source = _module(printer, roots, arguments)
    namespace: dict = {}
    exec(compile(source, "<lossdsl.jax>", "exec"), namespace)  # noqa: S102 - our own source
    return Program(source, namespace["build"])
