"""Value, gradient and Hessian of built-ins where the old formula cancelled, overflowed or
underflowed, in float32 and float64, against mpmath at the very inputs the kernel sees.

Each case failed before its fix: the cross-entropies' Hessian q - q*q was 0 or
an ulp of 1 for a confident class (44% off at float32 z = (17, 0, 0)), gamma's y exp(-z)
overflowed (float32 inf at y = 1e-5, z = -90) and gaussian_nll's (p - y)^2 overflowed where
the loss is 5e29. One fused kernel per loss and dtype (value, gradient and Hessian together).
"""

from __future__ import annotations

import functools

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
