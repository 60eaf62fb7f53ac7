"""Loader's stirlerr and bd0 (lossdsl/ops/special.py) against mpmath at 60 digits.

Both are the pieces of the count likelihoods' saddle-point values (negative_binomial,
poisson and poisson_log with full=1): each is checked in the float32 and float64 kernels and
in the NumPy reference (constant folding), from their small arguments through 1e15, where
their textbook formulas (lgamma(n + 1) - (n + 1/2) log(n) + n - log(2 pi)/2, x log(x/m) + m - x)
keep no digit, and at their edges (0, inf, NaN, negative).
"""

from __future__ import annotations

import functools

import mpmath
import numpy as np
import pytest

import lossdsl
from lossdsl import ops

DTYPES = [np.float32, np.float64]
_N = [1e-6, 1e-3, 0.1, 0.4, 0.5, 0.999, 1.0, 1.5, 2.0, 2.5, 3.7, 6.0, 7.0, 7.999, 8.0,
      8.5, 15.0, 100.0, 200.0, 201.0, 1e3, 1e4, 1e6, 1e8, 1e9, 1e15]
# (x, m): next to each other (Loader's series), a factor apart, and far apart either way
_PAIRS = [(1.0, 1.1), (5.0, 3.9), (5.0, 4.1), (5.0, 2.0), (5.0, 12.0), (1e8, 1e8 + 1e4),
          (1e8, 1e8 - 3.0), (1e9, 1e9 + 1.0), (1e8, 1.7e8), (1e-3, 1e8), (1e8, 1e-3),
          (1.0, 1e-30), (3.0, 4.0), (7.0, 7.0), (2.0, 2.0 * (1 - 2**-20))]


@functools.cache
def kernel(call: str) -> lossdsl.CompiledLoss:
    return lossdsl.compile(call, reduction="none")


def exact_stirlerr(n) -> mpmath.mpf:
    n = mpmath.mpf(float(n))
    return mpmath.loggamma(n + 1) - (n + mpmath.mpf(0.5)) * mpmath.log(n) + n - mpmath.log(
        2 * mpmath.pi) / 2


def exact_bd0(x, m) -> mpmath.mpf:
    x, m = mpmath.mpf(float(x)), mpmath.mpf(float(m))
    return x * mpmath.log(x / m) + m - x


def errors_in_ulps(actual, expected, dtype) -> np.ndarray:
    expected = np.asarray(expected, np.float64)
    spacing = np.spacing(np.abs(expected).astype(dtype)).astype(np.float64)
    return np.abs(np.asarray(actual, np.float64) - expected) / spacing


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_stirlerr_against_mpmath(dtype):
    n = np.array(_N, dtype)
    with mpmath.workdps(60):
        expected = np.array([float(exact_stirlerr(v)) for v in n])
    actual = kernel("stirlerr(n)")(n=n)
    # below 1 the definition's terms reach 4 in size: a few ulps of them, absolutely
    allowed = np.where(n < 1, 4 * np.spacing(dtype(4)) / np.spacing(expected.astype(dtype)), 4)
    assert np.all(errors_in_ulps(actual, expected, dtype) <= allowed), (actual, expected)
    reference = ops.find("stirlerr").reference(n.astype(np.float64))
    if dtype == np.float64:
        assert np.all(errors_in_ulps(reference, expected, dtype) <= allowed)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_bd0_against_mpmath(dtype):
    x, m = (np.array(column, dtype) for column in zip(*_PAIRS))
    with mpmath.workdps(60):
        expected = np.array([float(exact_bd0(a, b)) for a, b in zip(x, m)])
    actual = kernel("bd0(x, m)")(x=x, m=m)
    assert np.all(errors_in_ulps(actual, expected, dtype) <= 4), (actual, expected)
    if dtype == np.float64:
        reference = ops.find("bd0").reference(x, m)
        assert np.all(errors_in_ulps(reference, expected, dtype) <= 4)


def test_edges():
    stirlerr, bd0 = kernel("stirlerr(n)"), kernel("bd0(x, m)")
    inf, nan = np.inf, np.nan
    np.testing.assert_array_equal(stirlerr(n=np.array([0.0, -0.0, inf, -1.0, nan])),
                                  [inf, inf, 0.0, nan, nan])
    x = np.array([0.0, 0.0, 2.0, inf, 2.0, inf, -1.0, 2.0, nan])
    m = np.array([3.0, 0.0, 0.0, 2.0, inf, inf, 1.0, -1.0, 1.0])
    np.testing.assert_array_equal(bd0(x=x, m=m), [3.0, 0.0, inf, inf, inf, nan, nan, nan, nan])


def test_derivatives_of_bd0():
    # d/dm = 1 - x/m and d/dx = log(x/m): the records' rules, in a kernel
    x, m = np.array([1e8, 5.0, 0.5]), np.array([1e8 + 1e4, 2.0, 3.0])
    loss = kernel("bd0(x, m)")
    _, gradient, hessian = loss.compute(True, ("m",), ("m",), {"x": x, "m": m}, None)
    np.testing.assert_allclose(gradient, 1 - x / m, rtol=1e-12)
    np.testing.assert_allclose(hessian, x / m**2, rtol=1e-12)
    _, gradient = loss.compute(True, ("x",), (), {"x": x, "m": m}, None)
    np.testing.assert_allclose(gradient, np.log(x / m), rtol=1e-12)
