"""Derivatives and values a stability journey found wrong, against mpmath or closed forms.

Each case failed before its fix: xlogy's gradient in x was 0 at x = 0 (a where-select in the
prelude masked it); the masked partials of pow and xlog1py dropped a Hessian term where both
arguments depend on the input; pow's partial overflowed for a tiny base; the polygamma
reflections lost digits near negative poles (tan(pi x) of a large x); tanh's derivative
1 - tanh^2 was 0 from |x| = 19; and (c*x)*y was reassociated to c*(x*y), which overflowed.
One kernel per expression and dtype (value, gradient and Hessian together).
"""

from __future__ import annotations

import functools

import mpmath
import numpy as np
import pytest
import scipy.special

import lossdsl

mpmath.mp.dps = 50


@functools.cache
def compiled(text: str) -> lossdsl.CompiledLoss:
    return lossdsl.compile(text, reduction="none")


def evaluate(text: str, dtype=np.float64, wrt: str = "x", hessian: bool = True, **inputs):
    """(value, gradient[, Hessian diagonal]) in ``wrt``, from one fused kernel."""
    arrays = {name: np.asarray(values, dtype=dtype) for name, values in inputs.items()}
    return compiled(text).compute(True, (wrt,), (wrt,) if hessian else (), arrays, None)


def mp_derivatives(function, x: float) -> tuple[float, float, float]:
    """(f, f', f'') at x by mpmath (50 digits; a true 0 comes out near 1e-100)."""
    point = mpmath.mpf(x)
    return tuple(float(mpmath.diff(function, point, k)) for k in range(3))


# --- xlogy: a primitive whose partial in x is log(y) also at x = 0 -----------------------


def test_xlogy_values_are_scipys_including_x_equal_zero():
    x = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.5, -2.0, 3.0])
    y = np.array([0.0, -1.0, np.inf, np.nan, 2.0, 0.25, 7.0, 0.0])
    value, _, _ = evaluate("xlogy(x, y)", x=x, y=y)
    np.testing.assert_allclose(value, scipy.special.xlogy(x, y), rtol=1e-15)


def test_xlogy_gradient_in_x_at_zero_is_log_y():
    y = np.array([2.0, 0.5, 1e-300, 1e300])
    _, gradient, hessian = evaluate("xlogy(x, y)", x=np.zeros(4), y=y)
    np.testing.assert_allclose(gradient, [float(mpmath.log(v)) for v in y], rtol=1e-15)
    np.testing.assert_array_equal(hessian, 0.0)


def test_xlogy_derivatives_at_0_log_0_are_0():
    # the one point where both partials are masked (as PyTorch's): js_div's entropy terms
    # cancel there, and -inf + inf would be NaN at y = p = 0 (its true derivative log(2)/2)
    _, gradient, _ = evaluate("xlogy(x, y)", x=[0.0], y=[0.0])
    assert gradient[0] == 0.0
    _, gradient, _ = evaluate("js_div(y, x)", x=[[0.0, 0.5, 0.5]], y=[[0.0, 1.0, 0.0]])
    assert gradient[0, 0] == pytest.approx(float(mpmath.log(2)) / 2, rel=1e-15)


def test_xlogy_gradient_in_y_is_x_over_y_and_0_only_at_the_pole():
    x = np.array([0.0, 0.0, 2.0, -3.0])
    y = np.array([0.0, 4.0, 4.0, 0.5])
    _, gradient, _ = evaluate("xlogy(x, y)", wrt="y", x=x, y=y)
    np.testing.assert_allclose(gradient, [0.0, 0.0, 0.5, -6.0], rtol=1e-15)


@pytest.mark.parametrize("x", [0.0, 0.5, 3.0])
def test_hessian_through_xlogy_where_both_arguments_move(x):
    # d2/dx2 x log(1 + x) = 1/(1 + x) + 1/(1 + x)^2: 2 at 0, where the masked form gave 0
    value, gradient, hessian = evaluate("xlogy(x, 1 + x)", x=[x])
    expected = mp_derivatives(lambda t: t * mpmath.log(1 + t), x)
    np.testing.assert_allclose([value[0], gradient[0], hessian[0]], expected, rtol=1e-14,
                               atol=1e-90)


# --- masked partials keep their own derivatives ---------------------------------------


@pytest.mark.parametrize("text, function, x", [
    ("(x + 2)^x", lambda t: (t + 2) ** t, 0.0),
    ("x^(x - 1)", lambda t: t ** (t - 1), 1.0),
    ("xlog1py(x, x)", lambda t: t * mpmath.log1p(t), 0.0),
    ("x^y", None, 0.0),
])
def test_hessian_where_a_masked_partial_is_zero(text, function, x):
    if function is None:  # x^y at x = 0, y = 2: d2/dx2 = y (y - 1) x^(y - 2) = 2
        _, gradient, hessian = evaluate(text, x=[x], y=[2.0])
        np.testing.assert_allclose([gradient[0], hessian[0]], [0.0, 2.0], rtol=1e-15)
        return
    value, gradient, hessian = evaluate(text, x=[x])
    np.testing.assert_allclose([value[0], gradient[0], hessian[0]],
                               mp_derivatives(function, x), rtol=1e-14, atol=1e-90)


def test_pow_derivatives_stay_finite_for_a_tiny_base():
    # x^x (log x + 1) and x^x ((log x + 1)^2 + 1/x): b a^(b-1) overflowed at a = 5e-324,
    # and b (b-1) a^(b-2) at 1e-300
    x = np.array([5e-324, 1e-300, 1e-20, 0.3])
    _, gradient, hessian = evaluate("x^x", x=x)
    point = [mpmath.mpf(float(v)) for v in x]
    expected_gradient = [float(t ** t * (mpmath.log(t) + 1)) for t in point]
    expected_hessian = [float(t ** t * ((mpmath.log(t) + 1) ** 2 + 1 / t)) for t in point]
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-13)
    np.testing.assert_allclose(hessian[1:], expected_hessian[1:], rtol=1e-13)


@pytest.mark.parametrize("x, y, expected", [
    (0.0, 0.5, np.inf), (0.0, 0.0, 0.0), (0.0, 1.0, 1.0), (0.0, 2.5, 0.0), (0.0, -1.0, -np.inf),
    (-2.0, 3.0, 12.0), (-2.0, -1.0, -0.25), (4.0, 0.5, 0.25), (4.0, 0.0, 0.0),
    (0.25, 2.5, 2.5 * 0.25 ** 1.5)])
def test_pow_partial_in_the_base_at_the_edges(x, y, expected):
    # b a^(b-1), and 0 at a = b = 0 (a^0 = 1 does not move)
    _, gradient, _ = evaluate("x^y", x=[x], y=[y])
    assert gradient[0] == pytest.approx(expected, rel=1e-14)


# --- the polygamma reflections near negative poles ------------------------------------

POLES = [-9999.999999, -1e4 + 1e-6, -100.000001, -9999.7, -0.4999999999, -37.5, -3.25]


@pytest.mark.parametrize("x", POLES)
def test_digamma_value_and_derivatives_near_negative_poles(x):
    value, gradient, hessian = evaluate("digamma(x)", x=[x])
    point = mpmath.mpf(x)
    expected = [float(mpmath.psi(k, point)) for k in range(3)]
    np.testing.assert_allclose([value[0], gradient[0], hessian[0]], expected, rtol=1e-12)


@pytest.mark.parametrize("x", POLES)
def test_trigamma_and_tetragamma_values_near_negative_poles(x):
    value, gradient = evaluate("trigamma(x)", hessian=False, x=[x])
    tetragamma = compiled("tetragamma(x)")(x=np.array([x]))
    point = mpmath.mpf(x)
    np.testing.assert_allclose([value[0], gradient[0], tetragamma[0]],
                               [float(mpmath.psi(1, point)), float(mpmath.psi(2, point)),
                                float(mpmath.psi(2, point))], rtol=1e-12)


def test_jax_polygamma_helpers_near_negative_poles():
    jax = pytest.importorskip("jax")
    import lossdsl.jax

    x = np.array(POLES)
    with jax.enable_x64(True):
        values = [np.asarray(lossdsl.jax.loss(f"{name}(x)", reduction="none")(x=x))
                  for name in ("digamma", "trigamma", "tetragamma")]
    for k, value in enumerate(values):
        np.testing.assert_allclose(value, [float(mpmath.psi(k, mpmath.mpf(v))) for v in x],
                                   rtol=1e-12, err_msg=f"polygamma({k})")


# --- tanh's derivative in the tails ---------------------------------------------------


@pytest.mark.parametrize("dtype, xs", [
    (np.float64, [0.0, 0.7, -3.0, 19.5, 20.0, -30.0, 300.0]),
    (np.float32, [0.7, -3.0, 9.5, -12.0, 40.0]),
])
def test_tanh_gradient_and_hessian_exact_in_the_tails(dtype, xs):
    _, gradient, hessian = evaluate("tanh(x)", dtype=dtype, x=xs)
    sech2 = [mpmath.sech(mpmath.mpf(v)) ** 2 for v in xs]
    second = [-2 * mpmath.tanh(mpmath.mpf(v)) * s for v, s in zip(xs, sech2)]
    tolerance = 1e-14 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(gradient, np.array(sech2, dtype=float).astype(dtype),
                               rtol=tolerance, atol=0)
    np.testing.assert_allclose(hessian, np.array(second, dtype=float).astype(dtype),
                               rtol=tolerance, atol=0)


# --- reassociation of products with a constant far from 1 -----------------------------


@pytest.mark.parametrize("dtype, text, x, y, expected", [
    (np.float32, "(1e-30*x)*y", 1e30, 1e30, 1e30),
    (np.float64, "(1e-300*x)*y", 1e150, 1e200, 1e50),
    (np.float32, "(1e30*x)*y", 1e-30, 1e-30, 1e-30),
])
def test_a_constant_far_from_1_stays_where_it_was_written(dtype, text, x, y, expected):
    value, _, _ = evaluate(text, dtype=dtype, x=[x], y=[y])
    assert value[0] == pytest.approx(expected, rel=1e-6)
