"""Value, gradient and Hessian of built-ins where the old formula cancelled, overflowed or
underflowed, in float32 and float64, against mpmath at the very inputs the kernel sees.

Each case failed before its fix: the cross-entropies' Hessian q - q*q was 0 or
an ulp of 1 for a confident class (44% off at float32 z = (17, 0, 0)), gamma's y exp(-z)
overflowed (float32 inf at y = 1e-5, z = -90) and gaussian_nll's (p - y)^2 overflowed where
the loss is 5e29. One fused kernel per loss and dtype (value, gradient and Hessian together).
"""

from __future__ import annotations

import functools
import math

import mpmath
import numpy as np
import pytest

import lossdsl

DTYPES = [np.float32, np.float64]


@functools.cache
def compiled(call: str) -> lossdsl.CompiledLoss:
    return lossdsl.compile(call, reduction="none")


def evaluate(call: str, wrt: str, **inputs):
    """(value, gradient, Hessian diagonal) from one fused kernel, as tests/test_accuracy.py."""
    return compiled(call).compute(True, (wrt,), (wrt,), inputs, None)


def exact(x) -> mpmath.mpf:
    return mpmath.mpf(float(x))


def rounded(values, dtype) -> np.ndarray:
    """mpmath values rounded to ``dtype`` (through float64: no double rounding matters at
    these tolerances; values beyond float64 become +-inf)."""
    out = []
    for v in values:
        try:
            out.append(float(v))
        except OverflowError:
            out.append(np.inf if v > 0 else -np.inf)
    with np.errstate(over="ignore"):
        return np.array(out, np.float64).astype(dtype)


def assert_ulps(actual, expected, dtype, ulps: float, what: str):
    """|actual - expected| within ``ulps`` spacings of ``expected`` (at least of the smallest
    subnormal), infinities equal."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected).astype(np.float64)
    infinite = np.isinf(expected)
    np.testing.assert_array_equal(actual[infinite], expected[infinite], err_msg=what)
    spacing = np.maximum(np.spacing(np.abs(expected.astype(dtype))).astype(np.float64),
                         float(np.finfo(dtype).smallest_subnormal))
    error = np.abs(actual - expected)[~infinite] / spacing[~infinite]
    assert np.all(error <= ulps), (f"{what}: errors in ulps {error}\nactual   {actual}\n"
                                   f"expected {expected}")


# ----------------------------------------------------------------------------- cross-entropy

_ROWS = [[17.0, 0.0, 0.0], [20.0, 0.0, 0.0], [40.0, 0.0, 0.0], [1e4, 0.0, -1e4],
         [30.0, 30.0, 0.0], [16.0, 15.9, -3.0], [0.5, 0.0, 0.0], [1.0, 2.0, 3.0],
         [-3.0, 7.5, -1.25]]


def exact_softmax_hessian(z):
    """q_k (1 - q_k) per entry of each row, 1 - q_k summed from the other terms."""
    out = []
    for row in z:
        x = [exact(v) for v in row]
        m = max(x)
        e = [mpmath.exp(v - m) for v in x]
        s = sum(e)
        out.append([e[k] / s * (s - e[k]) / s for k in range(len(e))])
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("call", ["sparse_cce_logits(y, z)", "cce_logits(y, z)"])
def test_cross_entropy_hessian_of_a_confident_class(dtype, call):
    # q - q*q was 1.19e-7 at float32 z = (17, 0, 0) (exact 8.28e-8), 0 from (20, 0, 0), and
    # 0 in float64 at (40, 0, 0) (exact 8.5e-18)
    with mpmath.workdps(60):
        z = np.array(_ROWS, dtype)
        labels = np.zeros(len(z), np.int64)
        y = labels if call.startswith("sparse") else np.eye(3, dtype=dtype)[labels]
        _, _, hessian = evaluate(call, "z", y=y, z=z)
        expected = np.array([rounded(h, dtype) for h in exact_softmax_hessian(z)])
    # exp(z - max) carries the rounding of z - max: |z - max| eps of relative error
    gap = np.abs(z - z.max(axis=1, keepdims=True)).astype(np.float64)
    for k in range(z.shape[1]):
        bound = 8 + gap[:, k].max()
        assert_ulps(hessian[:, k], expected[:, k], dtype, bound, f"Hessian column {k}")


# ----------------------------------------------------------------------------- gamma


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("call", ["gamma(y, z)", "tweedie(y, z, 2)"])
def test_gamma_where_exp_of_the_score_overflows(dtype, call):
    # y exp(-z): inf at float32 y = 1e-5, z = -90 (exact 1.22e34); exp(-100) subnormal at
    # y = 1e30, z = 100 (Hessian 3.7e-14 lost its digits); tweedie's power 2 is the same
    y = np.array([1e-5, 1e-30, 1e30, 1e30, 1.0, 3.3, 1e5, 2.0], dtype)
    z = np.array([-90.0, -104.0, 100.0, 176.0, 0.5, -20.0, 90.0, 700.0], dtype)
    value, gradient, hessian = evaluate(call, "z", y=y, z=z)
    with mpmath.workdps(60):
        t = [exact(b) * mpmath.exp(-exact(a)) for a, b in zip(z, y)]
        v = rounded((exact(a) + u for a, u in zip(z, t)), dtype)
        g = rounded((1 - u for u in t), dtype)
        h = rounded(t, dtype)
    assert_ulps(value, v, dtype, 3, "value")
    assert_ulps(gradient, g, dtype, 3, "gradient")
    assert_ulps(hessian, h, dtype, 3, "Hessian")


# ----------------------------------------------------------------------------- gaussian_nll


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_gaussian_nll_where_the_square_overflows(dtype):
    # (p - y)^2 was inf at float32 p = var = 1e30 (the loss is 5e29 + log(1e30)/2)
    p = np.array([1e30, -1e30, 1e19, 1.5, 1e4], dtype)
    var = np.array([1e30, 1e30, 1e20, 1e-7, 0.3], dtype)
    y = np.ones_like(p)
    value, gradient, hessian = evaluate("gaussian_nll(y, p, var)", "p", y=y, p=p, var=var)
    with mpmath.workdps(60):
        v_ = [max(exact(v), exact(dtype(1e-6))) for v in var]
        r = [exact(a) - exact(b) for a, b in zip(p, y)]
        v = rounded((0.5 * (mpmath.log(s) + d**2 / s) for d, s in zip(r, v_)), dtype)
        g = rounded((d / s for d, s in zip(r, v_)), dtype)
        h = rounded((1 / s for s in v_), dtype)
    assert_ulps(value, v, dtype, 4, "value")
    assert_ulps(gradient, g, dtype, 4, "gradient")
    assert_ulps(hessian, h, dtype, 4, "Hessian")


# ----------------------------------------------------------------------------- aft_extreme


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_aft_extreme_left_censored_far_left(dtype):
    # -log1mexp(-exp(w)), w = (log(y_upper) - z)/sigma: exp(w) overflowed from float32
    # z = -100 (float64 -750) and the gradient and Hessian were NaN where both are 0
    z = np.array([-1e4, -750.0, -100.0, -88.0, -10.0, -3.0, 0.0, 3.0, 10.0], dtype)
    sigma = np.full_like(z, 0.5)
    upper = np.ones_like(z)
    value, gradient, hessian = evaluate("aft_extreme(y, z, y_upper, sigma)", "z",
                                        y=np.zeros_like(z), y_upper=upper, z=z, sigma=sigma)
    with mpmath.workdps(80):
        w = [(mpmath.log(exact(u)) - exact(a)) / exact(s) for u, a, s in zip(upper, z, sigma)]
        big = [mpmath.exp(x) for x in w]
        v = rounded((-mpmath.log1p(-mpmath.exp(-e)) for e in big), dtype)
        # dL/dw = -E/expm1(E), d2L/dw2 = -E (expm1(E) - E e^E)/expm1(E)^2; dw/dz = -1/sigma
        g = rounded((e / mpmath.expm1(e) / exact(s) for e, s in zip(big, sigma)), dtype)
        h = rounded((-e * (mpmath.expm1(e) - e * mpmath.exp(e)) / mpmath.expm1(e)**2
                     / exact(s)**2 for e, s in zip(big, sigma)), dtype)
        # w carries the rounding of log(y_upper) - z: E |w| eps of relative error
        bound = 8 + 4 * max(float(e * abs(x)) for e, x in zip(big, w) if e < 1e3)
    assert np.all(np.isfinite(gradient)) and np.all(np.isfinite(hessian))
    assert_ulps(value, v, dtype, bound, "value")
    assert_ulps(gradient, g, dtype, bound, "gradient")
    assert_ulps(hessian, h, dtype, bound, "Hessian")


# ----------------------------------------------------------------------------- count likelihoods
#
# Large counts with small residuals: the values added terms of size y log(y) that cancel
# (lgamma(y + 1) against log_poch(1/alpha, y), y log(y) against y log(p)). They are now Loader's
# saddle-point form (stirlerr, bd0), with the derivatives of the former form. The tolerance is
# a few ulps plus what the rounding of the kernel's own intermediate values moves the exact
# value by: exp(z) and the shifted score w = z + log(alpha) (the value's slope times |w| eps)
# and 1/alpha (its slope in log(alpha) times eps), in ulps of the value.

_COUNTS = [0.0, 1.0, 2.0, 10.0, 1e3, 1e6, 1e8, 1e9]
_RESIDUALS = [0.0, 1e-3, -1e-3, 1.0, -3.0]  # z - log(y); 0 for y = 0 is z = 0
_DISPERSIONS = [1e-8, 1e-4, 0.3, 1.0, 1e3]


def count_grid(dtype, dispersions=(1.0,)):
    """(y, z, alpha) of every count, residual and dispersion, rounded to ``dtype``."""
    rows = [(y, (math.log(y) if y > 0 else 0.0) + r, a)
            for y in _COUNTS for r in _RESIDUALS for a in dispersions]
    return tuple(np.array(column, dtype) for column in zip(*rows))


def exact_negative_binomial(y, z, alpha):
    """(value, d/dz, d2/dz2, d/dlog(alpha)) of the NB2 negative log-likelihood at the very
    inputs given, from its definition with lgamma."""
    y, z, a = exact(y), exact(z), exact(alpha)
    r, mu = 1 / a, mpmath.exp(z)
    value = -(mpmath.loggamma(y + r) - mpmath.loggamma(r) - mpmath.loggamma(y + 1)
              + r * mpmath.log(r / (r + mu)) + (y * mpmath.log(mu / (r + mu)) if y else 0))
    slope = (mu - y) / (1 + a * mu)
    curvature = mu * (1 + a * y) / (1 + a * mu) ** 2
    in_r = -(mpmath.digamma(y + r) - mpmath.digamma(r) + mpmath.log(r / (r + mu)) + 1
             - (r + y) / (r + mu))
    return value, slope, curvature, -r * in_r


def assert_within(actual, expected, dtype, allowed_ulps, what: str, absolute=0.0):
    """|actual - expected| within ``allowed_ulps`` (an array) spacings of ``expected`` plus
    ``absolute``."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    spacing = np.maximum(np.spacing(np.abs(expected.astype(dtype))).astype(np.float64),
                         float(np.finfo(dtype).smallest_subnormal))
    error = np.maximum(np.abs(actual - expected) - absolute, 0.0) / spacing
    worst = int(np.argmax(error / allowed_ulps))
    assert np.all(error <= allowed_ulps), (
        f"{what}: {error[worst]:.3g} ulps where {allowed_ulps[worst]:.3g} are allowed at "
        f"element {worst}: {actual[worst]!r} for {expected[worst]!r}")


def negative_binomial_reference(y, z, alpha, dtype, digits: int = 80):
    """(value, gradient, Hessian, shift, moved) at ``digits`` digits: ``shift`` bounds how
    far the rounding of z + log(alpha) moves the value in units of its slope, ``moved`` the
    value's change from the rounding of the inputs themselves (in the value's units)."""
    with mpmath.workdps(digits):
        rows = [exact_negative_binomial(*point) for point in zip(y, z, alpha)]
        v, g, h, in_alpha = (np.array([float(row[k]) for row in rows]) for k in range(4))
    eps = float(np.finfo(dtype).eps)
    shift = np.abs(z.astype(np.float64)) + np.abs(np.log(alpha.astype(np.float64))) + 2
    moved = (np.abs(g) * shift + 2 * np.abs(in_alpha)) * eps
    return v, g, h, shift, moved


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_negative_binomial_at_large_counts_with_small_residuals(dtype):
    # at y = 1e8, z = log(y), alpha = 1 the value was 0 in float32 for 19.42 and 1e7 ulps off
    # in float64; at y = 1e6, alpha = 1e-8 float32 gave 6 for 7.83
    y, z, alpha = count_grid(dtype, _DISPERSIONS)
    value, gradient, hessian = evaluate("negative_binomial(y, z, alpha)", "z",
                                        y=y, z=z, alpha=alpha)
    v, g, h, shift, moved = negative_binomial_reference(y, z, alpha, dtype)
    eps = float(np.finfo(dtype).eps)
    assert_within(value, v, dtype, 8 + 2 * moved / (eps * np.abs(v)), "value")
    # the gradient (mu - y)/(1 + alpha mu) subtracts terms of size (y + mu)/(1 + alpha mu)
    scale = (y + np.exp(z.astype(np.float64))) / (1 + alpha * np.exp(z.astype(np.float64)))
    assert_within(gradient, g, dtype, np.full(len(g), 8.0), "gradient", 8 * eps * scale * shift)
    assert_within(hessian, h, dtype, 8 + 2 * shift, "Hessian")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_negative_binomial_at_small_counts(dtype):
    # the former form was 20 to 100 ulps off at counts and 1/alpha up to 30 too (lgamma
    # terms of size 100 for values of size 1); the saddle-point form is within a few
    rng = np.random.default_rng(7)
    y = rng.integers(0, 31, 200).astype(dtype)
    alpha = (1 / rng.uniform(0.05, 30.0, 200)).astype(dtype)
    z = (np.log(np.maximum(y, 0.5)) + rng.normal(0.0, 1.0, 200)).astype(dtype)
    value = compiled("negative_binomial(y, z, alpha)")(y=y, z=z, alpha=alpha)
    v, _, _, _, moved = negative_binomial_reference(y, z, alpha, dtype, 60)
    eps = float(np.finfo(dtype).eps)
    assert_within(value, v, dtype, 6 + 2 * moved / (eps * np.abs(v)), "value")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_negative_binomial_far_from_the_count(dtype):
    # mu e^80 times the count or below it: a mean of the other outcome underflows (bd0 of 0 is
    # infinite), and the value comes from its logarithm; the former form cancelled there too
    # (y = 1e6, alpha = 1e3 at z = log(y) + 80: float32 21.0 for 20.8096, float64 1.9e5 ulps
    # off)
    # a zero count's mean far below 1 (where boosting drives zero counts) gave NaN on the way
    y = np.repeat(np.array([3.0, 3.0, 1e3, 1e3, 1e6, 1e6, 0.0, 0.0], dtype), 3)
    z = (np.log(np.maximum(y.astype(np.float64), 1.0))
         + np.tile(np.repeat([80.0, -80.0], 3), 4)).astype(dtype)
    alpha = np.tile(np.array([1.0, 1e-3, 1e3], dtype), 8)
    value, gradient, hessian = evaluate("negative_binomial(y, z, alpha)", "z",
                                        y=y, z=z, alpha=alpha)
    v, g, h, shift, moved = negative_binomial_reference(y, z, alpha, dtype)
    eps = float(np.finfo(dtype).eps)
    assert_within(value, v, dtype, 8 + 2 * moved / (eps * np.abs(v)), "value")
    # a Hessian of 1.8e-38 in float32 (y = 1e6 at mu = y e^-80) is next to the subnormals
    tiny = 4 * float(np.finfo(dtype).tiny)
    assert_within(gradient, g, dtype, 8 + 2 * shift, "gradient", tiny)
    assert_within(hessian, h, dtype, 8 + 2 * shift, "Hessian", tiny)


def test_negative_binomial_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    y, z, alpha = count_grid(np.float64, _DISPERSIONS)
    # scipy's logpmf subtracts lgammas too: exact at moderate counts and dispersions only
    keep = (y <= 1e3) & (alpha >= 1e-4)
    y, z, alpha = y[keep], z[keep], alpha[keep]
    value = compiled("negative_binomial(y, z, alpha)")(y=y, z=z, alpha=alpha)
    expected = -stats.nbinom.logpmf(y, 1 / alpha, 1 / (1 + alpha * np.exp(z)))
    np.testing.assert_allclose(value, expected, rtol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_negative_binomial_scores_at_large_counts(dtype):
    # the same value with a modelled dispersion; its derivatives in the log dispersion are
    # those of the former form, which did not cancel
    y = np.array([1e8, 1e8, 1e6, 1e3, 7.0], dtype)
    z = np.array([[math.log(1e8), 0.0], [math.log(1e8) + 1e-3, -5.0],
                  [math.log(1e6), math.log(1e-8)], [math.log(1e3), 2.0], [1.0, -1.0]], dtype)
    loss = compiled("negative_binomial_scores(y, z)")
    value, gradient, hessian = loss.compute(True, ("z",), ("z",), {"y": y, "z": z}, None)
    with mpmath.workdps(80):
        rows = [exact_negative_binomial(a, b, mpmath.exp(exact(c))) for a, (b, c) in zip(y, z)]
        v, g, h, in_alpha = (np.array([float(row[k]) for row in rows]) for k in range(4))
    eps = float(np.finfo(dtype).eps)
    shift = np.abs(z[:, 0].astype(np.float64)) + np.abs(z[:, 1].astype(np.float64)) + 2
    moved = (np.abs(g) * shift + 2 * np.abs(in_alpha)) * eps
    assert_within(value, v, dtype, 8 + 2 * moved / (eps * np.abs(v)), "value")
    np.testing.assert_allclose(gradient[:, 0], g, rtol=0, atol=64 * eps * float(np.max(y)))
    np.testing.assert_allclose(gradient[:, 1], in_alpha, rtol=1e-4 if dtype == np.float32
                               else 1e-9, atol=64 * eps * float(np.max(y)))
    assert_within(hessian[:, 0], h, dtype, 8 + 2 * shift, "Hessian")


def exact_poisson(y, p, eps=0.0):
    """(value, d/dp, d2/dp2) of PyTorch's full Poisson NLL on the rate p (its Stirling term
    y log y - y + log(2 pi y)/2 for y > 1)."""
    y, m = exact(y), exact(p) + exact(eps)
    stirling = y * mpmath.log(y) - y + mpmath.log(2 * mpmath.pi * y) / 2 if y > 1 else 0
    return exact(p) - y * mpmath.log(m) + stirling, 1 - y / m, y / m**2


def exact_poisson_log(y, z):
    """(value, d/dz, d2/dz2) of the full Poisson NLL on the log rate z."""
    y, z = exact(y), exact(z)
    stirling = y * mpmath.log(y) - y + mpmath.log(2 * mpmath.pi * y) / 2 if y > 1 else 0
    return mpmath.exp(z) - y * z + stirling, mpmath.exp(z) - y, mpmath.exp(z)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_poisson_full_at_large_counts_with_small_residuals(dtype):
    # full=1 added y log(y) - y to p - y log(p): float32 gave 128 for 10.13 at y = p = 1e8
    y, z, _ = count_grid(dtype)
    p = np.exp(z.astype(np.float64)).astype(dtype)
    value, gradient, hessian = evaluate("poisson(y, p, full=1)", "p", y=y, p=p)
    with mpmath.workdps(80):
        rows = [exact_poisson(a, b, dtype(1e-8)) for a, b in zip(y, p)]
        v, g, h = (np.array([float(row[k]) for row in rows]) for k in range(3))
    # p + eps rounds: the value moves by |p - y| eps
    residual = np.abs(p.astype(np.float64) - y)
    assert_within(value, v, dtype, 8 + 4 * residual / np.abs(v), "value")
    # 1 - y/p subtracts y/p from 1: an absolute error of a few eps y/p
    eps = float(np.finfo(dtype).eps)
    assert_within(gradient, g, dtype, np.full(len(g), 8.0), "gradient",
                  4 * eps * y / p.astype(np.float64))
    assert_within(hessian, h, dtype, np.full(len(h), 8.0), "Hessian")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_poisson_log_full_at_large_counts_with_small_residuals(dtype):
    # y = 1e8, z = log(y): float32 gave -128 for 10.13, float64 was 1e7 ulps off
    y, z, _ = count_grid(dtype)
    value, gradient, hessian = evaluate("poisson_log(y, z, full=1)", "z", y=y, z=z)
    with mpmath.workdps(80):
        rows = [exact_poisson_log(a, b) for a, b in zip(y, z)]
        v, g, h = (np.array([float(row[k]) for row in rows]) for k in range(3))
    # exp(z) rounds: the value moves by |exp(z) - y| eps, and exp(z) - y by exp(z) eps
    mu = np.exp(z.astype(np.float64))
    assert_within(value, v, dtype, 8 + 4 * np.abs(mu - y) / np.abs(v), "value")
    assert_within(gradient, g, dtype, np.full(len(g), 8.0), "gradient",
                  4 * float(np.finfo(dtype).eps) * mu)
    assert_within(hessian, h, dtype, np.full(len(h), 8.0), "Hessian")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_poisson_log_full_far_below_the_count(dtype):
    # exp(z) below 1e-30 (0 in float32 from z = -104): the value is y (log(y) - z) + exp(z)
    # - y + log(2 pi y)/2, finite, where bd0(y, 0) is infinite
    y = np.array([3.0, 1e3, 1e6, 1e8], dtype)
    z = np.array([-80.0, -120.0, -200.0, -1e4 if dtype == np.float64 else -300.0], dtype)
    value, gradient, hessian = evaluate("poisson_log(y, z, full=1)", "z", y=y, z=z)
    with mpmath.workdps(80):
        rows = [exact_poisson_log(a, b) for a, b in zip(y, z)]
        v, g, h = (rounded([row[k] for row in rows], dtype) for k in range(3))
    assert_ulps(value, v, dtype, 4, "value")
    assert_ulps(gradient, g, dtype, 4, "gradient")
    assert_ulps(hessian, h, dtype, 4, "Hessian")
