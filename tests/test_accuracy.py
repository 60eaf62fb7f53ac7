"""Numerical accuracy of built-ins where the textbook formula loses it (issue 10, section 2).

Each test compares the kernels with an exact reference (mpmath at 60 digits, evaluated at the
very floating-point inputs the kernel sees) or with PyTorch, in value, gradient and diagonal
Hessian, in the regime where a formula used to cancel, overflow or make NaN: targets of 1e6
and beyond, residuals up to +-inf, -inf logits, counts near their predicted mean, logits far
from 0. Derivatives whose formula changed are also checked against central finite
differences, so an exact-looking reference cannot hide a wrong derivative.
"""

from __future__ import annotations

import functools

import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lossdsl
from lossdsl import catalog

mpmath.mp.dps = 60
EPS = {np.float64: np.finfo(np.float64).eps, np.float32: float(np.finfo(np.float32).eps)}
DTYPES = [np.float64, np.float32]


@functools.cache
def compiled(call: str) -> lossdsl.CompiledLoss:
    return lossdsl.compile(call, reduction="none")


def evaluate(call: str, wrt: str, **inputs):
    """(value, gradient, Hessian diagonal) of ``call`` per element, from ONE fused kernel.

    ``compute`` is what ``__call__`` and ``grad_and_hessian`` call with a part of these outputs;
    asking for all three compiles one kernel per loss and dtype instead of two (each costs 0.5-1 s
    cold), as tests/backend/test_cuda.py and tests/ops/test_tails.py do. The value-only and
    gradient+Hessian kernels of the library's losses are tested in tests/test_library.py."""
    value, gradient, hessian = compiled(call).compute(True, (wrt,), (wrt,), inputs, None)
    return value, gradient, hessian


def value_of(call: str, wrt: str, **inputs):
    """The value of ``call`` per element, from the fused kernel :func:`evaluate` compiles."""
    return evaluate(call, wrt, **inputs)[0]


def exact(x) -> mpmath.mpf:
    """The exact value of a float (or float32) input."""
    return mpmath.mpf(float(x))


def to_float(values) -> np.ndarray:
    return np.array([float(v) for v in values], dtype=np.float64)


def assert_close(actual, expected, atol, rtol, what: str):
    """|actual - expected| <= atol + rtol |expected|, with infinities equal in sign."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    infinite = np.isinf(expected)
    np.testing.assert_array_equal(actual[infinite], expected[infinite], err_msg=what)
    error = np.abs(actual[~infinite] - expected[~infinite])
    bound = atol + rtol * np.abs(expected[~infinite])
    assert np.all(error <= bound), (
        f"{what}: errors {error}\nbounds {bound}\nactual   {actual}\nexpected {expected}")


def check_finite_differences(call: str, wrt: str, inputs: dict, step: float = 1e-4,
                             rtol: float = 1e-6):
    """The float64 gradient and Hessian diagonal against central differences of the value.

    Elementwise losses perturb every element at once (each sample's loss depends on its own
    element only); losses over a class row perturb one column at a time."""
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    x = inputs[wrt].astype(np.float64)
    _, gradient, hessian = evaluate(call, wrt, **inputs)
    columns = [None] if x.ndim == 1 else range(x.shape[1])
    fd_gradient, fd_hessian = np.zeros_like(x), np.zeros_like(x)
    for column in columns:
        h = step * np.maximum(1.0, np.abs(x))
        if column is not None:
            h = np.where(np.arange(x.shape[1]) == column, h, 0.0)
        values = [value_of(call, wrt, **{**inputs, wrt: x + s * h}) for s in (-1.0, 0.0, 1.0)]
        width = h if column is None else h[:, column]
        first = (values[2] - values[0]) / (2 * width)
        second = (values[2] - 2 * values[1] + values[0]) / width**2
        if column is None:
            fd_gradient, fd_hessian = first, second
        else:
            fd_gradient[:, column], fd_hessian[:, column] = first, second
    scale = 1.0 + np.abs(gradient)
    assert np.all(np.abs(gradient - fd_gradient) <= rtol * 100 * scale), (gradient, fd_gradient)
    assert np.all(np.abs(hessian - fd_hessian) <= 1e-3 * (1.0 + np.abs(hessian))), (
        hessian, fd_hessian)


# ----------------------------------------------------------------------------- log_cosh


def exact_log_cosh(y, p):
    """log cosh r, tanh r, sech^2 r of the exact residual of the inputs."""
    r = [exact(b) - exact(a) for a, b in zip(y, p)]
    return (to_float(mpmath.log(mpmath.cosh(v)) for v in r),
            to_float(mpmath.tanh(v) for v in r), to_float(mpmath.sech(v) ** 2 for v in r))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_log_cosh_keeps_the_residual_whole_at_large_targets(dtype):
    # The case, y = 1e6 and p = y + 1e-3, gave 5.000458e-07 (exact 4.9999996e-07): the
    # residual p - y was split into ((softplus - y) + p), rounding at the scale of y.
    y = np.array([1e6, -3e7, 1e9, 5e3, 1e12, -2.5e8], dtype)
    small = np.array([1e-3, 0.25, -2.0, 0.1, 3e-4, 7.0]) * (1.0 if dtype == np.float64 else 1e3)
    p = (y + small).astype(dtype)
    value, gradient, hessian = evaluate("log_cosh(y, p)", "p", y=y, p=p)
    v, g, h = exact_log_cosh(y, p)
    eps = EPS[dtype]
    # log cosh r = (softplus(2r) + softplus(-2r))/2 - log 2 cancels log 2 for small r: an
    # absolute error of a few ulps of log 2, never one of the scale of y.
    assert_close(value, v, atol=2 * eps, rtol=4 * eps, what="value")
    assert_close(gradient, g, atol=2 * eps, rtol=4 * eps, what="gradient")
    assert_close(hessian, h, atol=2 * eps, rtol=4 * eps, what="Hessian")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_log_cosh_of_equal_arguments_is_exactly_zero(dtype):
    magnitudes = 10.0 ** np.arange(-8, 24, 0.5)
    y = (np.random.default_rng(0).normal(0.0, 1.0, magnitudes.size) * magnitudes).astype(dtype)
    value, gradient, hessian = evaluate("log_cosh(y, p)", "p", y=y, p=y.copy())
    assert np.all(value == 0.0), value[value != 0.0]
    assert np.all(gradient == 0.0) and np.all(hessian == 1.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_log_cosh_at_infinite_and_huge_residuals(dtype):
    # r + softplus(-2 r) was -inf + inf = NaN at r = -inf
    r = np.array([-np.inf, np.inf, -1e30, 1e30, -50.0, 50.0], dtype)
    value, gradient, hessian = evaluate("log_cosh(y, p)", "p", y=np.zeros_like(r), p=r)
    v, g, h = exact_log_cosh(np.zeros(4), r[2:])
    assert_close(value, [np.inf, np.inf, *v], 0.0, 2 * EPS[dtype], "value")
    assert_close(gradient, [-1.0, 1.0, *g], 0.0, 2 * EPS[dtype], "gradient")
    assert_close(hessian, [0.0, 0.0, *h], 1e-30, 8 * EPS[dtype], "Hessian")


def test_a_residual_written_by_the_user_stays_one_node():
    # Keras' own form of log-cosh, written in a loss file: the built-in no longer has a bare
    # residual term, but a user's sum of terms still has its residual split.
    y = np.array([1e6, 1e9])
    p = y + np.array([1e-3, 0.5])
    value = compiled("(p - y) + softplus(-2*(p - y)) - log(2)")(y=y, p=p)
    assert_close(value, exact_log_cosh(y, p)[0], 2 * EPS[np.float64], 4 * EPS[np.float64],
                 "value")


def test_log_cosh_derivatives_match_finite_differences():
    r = np.array([-4.0, -1.0, -0.3, 0.0, 0.2, 0.9, 3.0, 12.0])
    check_finite_differences("log_cosh(y, p)", "p", {"y": np.full_like(r, 2.0), "p": 2.0 + r})


# ----------------------------------------------------------------------------- pseudo_huber


def exact_pseudo_huber(r, delta):
    """delta^2 (sqrt(1 + t^2) - 1), delta t / sqrt(1 + t^2), (1 + t^2)^(-3/2), t = r/delta."""
    delta = exact(delta)
    t = [exact(v) / delta for v in r]
    s = [mpmath.sqrt(1 + v**2) for v in t]
    return (to_float(delta**2 * (b - 1) for b in s), to_float(delta * a / b for a, b in zip(t, s)),
            to_float(1 / b**3 for b in s))


@pytest.mark.parametrize("delta", [1.0, 0.3, 2.5])
def test_pseudo_huber_is_exact_for_infinite_and_overflowing_residuals(delta):
    # r^2 overflowed beyond 1.3e154: inf/inf = NaN for a finite value, NaN at r = +-inf
    finite = np.array([1.4e154, -2e154, 1e200, -1e300, 1.7e308, 1e9, -3.0, 0.0])
    r = np.concatenate([[np.inf, -np.inf], finite])
    value, gradient, hessian = evaluate(f"pseudo_huber(y, p, {delta})", "p",
                                        y=np.zeros_like(r), p=r)
    v, g, h = exact_pseudo_huber(finite, delta)
    eps = EPS[np.float64]
    assert_close(value, [np.inf, np.inf, *v], 1e-300, 4 * eps, "value")
    assert_close(gradient, [delta, -delta, *g], 1e-300, 4 * eps, "gradient")
    assert_close(hessian, [0.0, 0.0, *h], 1e-300, 8 * eps, "Hessian")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("delta", [1.0, 0.3])
def test_pseudo_huber_hessian_keeps_its_precision_far_out(dtype, delta):
    # The Hessian 1/(1 + t^2)^(3/2) of r^2/(1 + sqrt(1 + t^2)), differentiated as written, is a
    # difference of terms of size 1/|t|: 0.3% wrong at r = 100 in float32, 4e8 times too large
    # at r = 1e12 in float64.
    magnitudes = 10.0 ** np.arange(-8.0, 13.0)
    r = np.concatenate([magnitudes, -magnitudes, [delta, -delta]]).astype(dtype)
    y = np.full_like(r, 0.5)
    p = (y + r).astype(dtype)
    value, gradient, hessian = evaluate(f"pseudo_huber(y, p, {delta})", "p", y=y, p=p)
    v, g, h = exact_pseudo_huber([exact(b) - exact(a) for a, b in zip(y, p)], delta)
    eps = EPS[dtype]
    assert_close(value, v, 0.0, 4 * eps, "value")
    assert_close(gradient, g, 0.0, 4 * eps, "gradient")
    assert_close(hessian, h, 0.0, 16 * eps, "Hessian")


def test_a_nan_residual_gives_nan_derivatives_through_max_and_min():
    """max(|r|, delta) at a NaN residual: both comparisons are false, and the derivative went
    wholly to delta's side (0), so pseudo_huber's gradient and Hessian were 0 where its value
    is NaN (PyTorch's autograd of sqrt(1 + r^2) - 1 gives NaN)."""
    for call in ("pseudo_huber(y, p)", "pseudo_huber(y, p, 0.3)"):
        value, gradient, hessian = evaluate(call, "p", y=np.array([0.0, np.nan, 0.0]),
                                            p=np.array([np.nan, 1.0, 0.5]))
        assert np.isnan(value[:2]).all() and np.isnan(gradient[:2]).all()
        assert np.isnan(hessian[:2]).all() and np.isfinite([gradient[2], hessian[2]]).all()
    r = torch.tensor([float("nan")], dtype=torch.float64, requires_grad=True)
    (torch.sqrt(1 + r**2) - 1).sum().backward()
    assert torch.isnan(r.grad).all()


@pytest.mark.parametrize("delta", [1.0, 0.3])
def test_pseudo_huber_derivatives_match_finite_differences(delta):
    # both branches, either side of |r| = delta, and r = 0
    r = delta * np.array([-40.0, -3.0, -1.2, -0.8, -0.1, 0.0, 0.5, 0.95, 1.05, 2.0, 25.0])
    check_finite_differences(f"pseudo_huber(y, p, {delta})", "p",
                             {"y": np.full_like(r, -1.0), "p": -1.0 + r}, step=1e-5)


# ----------------------------------------------------------------------------- fair


def exact_fair(r, c):
    """c^2 (u - log1p(u)) with u = |r|/c, c r/(|r| + c), c^2/(|r| + c)^2 (LightGBM's fair)."""
    c = exact(c)
    return (to_float(c**2 * (abs(v) / c - mpmath.log1p(abs(v) / c)) for v in r),
            to_float(c * v / (abs(v) + c) for v in r),
            to_float(c**2 / (abs(v) + c) ** 2 for v in r))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("c", [1.0, 2.5])
def test_fair_keeps_its_digits_at_small_and_infinite_residuals(dtype, c):
    # differentiated as written, the gradient was c (1 - 1/(1 + u)): 0 for 1e-8 in float32,
    # 9e-5 relative off at 1e-12 in float64; the value c |r| - c^2 log1p(u) cancelled too
    # (float32's Hessian is subnormal beyond |r| = 1e18)
    magnitudes = 10.0 ** np.arange(-12.0, 16.0 if dtype is np.float32 else 31.0, 3.0)
    r = np.concatenate([magnitudes, -magnitudes, [0.3, -0.7]]).astype(dtype)
    value, gradient, hessian = evaluate(f"fair(y, p, {c})", "p", y=np.zeros_like(r), p=r)
    v, g, h = exact_fair([exact(x) for x in r], c)
    eps = EPS[dtype]
    assert_close(value, v, 1e-300, 4 * eps, "value")
    assert_close(gradient, g, 1e-300, 4 * eps, "gradient")
    assert_close(hessian, h, 1e-300, 8 * eps, "Hessian")
    ends = np.array([np.inf, -np.inf, 0.0, np.nan], dtype)
    value, gradient, hessian = evaluate(f"fair(y, p, {c})", "p", y=np.zeros_like(ends), p=ends)
    np.testing.assert_array_equal(value, [np.inf, np.inf, 0.0, np.nan])
    np.testing.assert_array_equal(gradient, [c, -c, 0.0, np.nan])
    np.testing.assert_array_equal(hessian, [0.0, 0.0, 1.0, np.nan])


def test_fair_derivatives_match_finite_differences():
    r = np.array([-40.0, -3.0, -0.1, 0.05, 0.5, 2.0, 25.0])
    check_finite_differences("fair(y, p, 1.5)", "p", {"y": np.full_like(r, 2.0), "p": 2.0 + r},
                             step=1e-5)
    # c's derivatives are the value's own
    c = np.array([0.5, 1.0, 2.0, 3.0, 0.8, 1.2, 4.0])
    check_finite_differences("fair(y, p, c)", "c", {"y": np.zeros_like(r), "p": r, "c": c},
                             step=1e-5)


# ----------------------------------------------------------------------------- msle


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_msle_keeps_its_digits_at_large_targets_with_small_residuals(dtype):
    # log1p(p) - log1p(y) cancelled: 1.8e-4 relative off at y = 1e8, p = y + 1e-3
    y = np.array([1e8, 1e8, 3e4, 0.0, 0.0, 1e20, 2.0, 1e-9, 7.0], dtype)
    p = np.array([1e8 + 8.0, 1e8 - 7.0, 3e4 + 0.25, 1e20, 0.3, 1.0, 1.9, 3.0, 7.0], dtype)
    value, gradient, hessian = evaluate("msle(y, p)", "p", y=y, p=p)
    eps = mpmath.mpf(1e-7)
    v, g, h = [], [], []
    for a, b in zip(p, y):
        a, b = max(exact(a), eps), max(exact(b), eps)
        d = mpmath.log1p(a) - mpmath.log1p(b)
        v.append(d**2), g.append(2 * d / (1 + a)), h.append(2 * (1 - d) / (1 + a) ** 2)
    # (float32's Hessian at p = 1e20 is subnormal: absolute precision there)
    tolerance, tiny = 8 * EPS[dtype], 16 * float(np.finfo(dtype).tiny)
    assert_close(value, to_float(v), tiny, tolerance, "value")
    assert_close(gradient, to_float(g), tiny, tolerance, "gradient")
    assert_close(hessian, to_float(h), tiny, tolerance, "Hessian")


# ----------------------------------------------------------------------------- negative binomial


def exact_negative_binomial(y, z, alpha):
    """NB2 negative log-likelihood, score (mu - y)/(1 + alpha mu), and its derivative."""
    a = exact(alpha)
    values, scores, curvatures = [], [], []
    for yi, zi in zip(y, z):
        yi, mu = exact(yi), mpmath.exp(exact(zi))
        log_pmf = (mpmath.loggamma(yi + 1 / a) - mpmath.loggamma(1 / a) - mpmath.loggamma(yi + 1)
                   - mpmath.log1p(a * mu) / a + yi * mpmath.log(a * mu / (1 + a * mu)))
        values.append(-log_pmf)
        scores.append((mu - yi) / (1 + a * mu))
        curvatures.append(mu * (1 + a * yi) / (1 + a * mu) ** 2)
    return to_float(values), to_float(scores), to_float(curvatures)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("alpha", [1.0, 0.5, 3.0])
def test_negative_binomial_gradient_is_the_score_near_the_mean(dtype, alpha):
    # (y + 1/alpha) sigmoid(w) - y cancelled y against y: at y = 1e6, z = 13.8 float32 gave
    # -0.0625 for -0.01563.
    y = np.array([1e6, 1e6, 3e7, 1e4, 50.0, 3.0, 0.0, 2e5], dtype)
    z = np.array([13.8, np.log(1e6) + 1e-4, np.log(3e7) - 2e-3, np.log(1e4), np.log(50.0) + 0.3,
                  -2.0, 1.5, 20.0], dtype)
    value, gradient, hessian = evaluate(f"negative_binomial(y, z, {alpha})", "z", y=y, z=z)
    v, g, h = exact_negative_binomial(y, z, alpha)
    eps = EPS[dtype]
    # the score's own scale: each of y sigmoid(-w) and sigmoid(w)/alpha is known to a few ulps
    mu = np.exp(z.astype(float))
    scale = (np.abs(y.astype(float)) + mu) / (1 + alpha * mu)
    assert np.all(np.abs(gradient - g) <= 8 * eps * scale), (gradient, g)
    assert_close(hessian, h, 0.0, 8 * eps, "Hessian")
    if dtype == np.float64:  # the lgamma terms carry an error of the size of lgamma(y + 1)
        lgamma_scale = to_float(abs(mpmath.loggamma(exact(b) + 1)) + 1 for b in y)
        assert np.all(np.abs(value - v) <= 16 * eps * lgamma_scale), (value, v)


@pytest.mark.parametrize("alpha", [1e-4, 1e-8, 1e-12, 1e-30])
def test_negative_binomial_near_the_poisson_limit_keeps_its_value(alpha):
    # lgamma(y + 1/alpha) - lgamma(1/alpha) cancelled: 1e-7 relative at alpha = 1e-8, 4e-3 at
    # 1e-12; log_poch's Stirling series keeps it
    y = np.array([0.0, 3.0, 50.0, 1e4, 2.0])
    z = np.array([1.0, 1.0, 3.0, 9.0, -30.0])
    value, gradient, _ = evaluate(f"negative_binomial(y, z, {alpha})", "z", y=y, z=z)
    v, g, _ = exact_negative_binomial(y, z, alpha)
    eps = EPS[np.float64]
    # lgamma(y + 1) carries an error of its own size, as above, and softplus(w)/alpha one of
    # |w| = |z + log(alpha)| ulps of itself (w is rounded before exp sees it)
    lgamma_scale = to_float(abs(mpmath.loggamma(exact(b) + 1)) + 1 for b in y)
    rounding = np.abs(v) * (abs(np.log(alpha)) + np.abs(z) + 1)
    assert np.all(np.abs(value - v) <= 16 * eps * (lgamma_scale + rounding)), (value, v)
    mu = np.exp(z)  # the gradient is a difference of terms of this size, as above
    score_scale = (np.abs(y) + mu) / (1 + alpha * mu) * (abs(np.log(alpha)) + np.abs(z) + 1)
    assert np.all(np.abs(gradient - g) <= 8 * eps * score_scale), (gradient, g)


@pytest.mark.parametrize("x", [0.5, 7.0, 999.0, 1000.0, 3e4, 1e12, 1e100, 1e300])
def test_log_poch_is_the_log_rising_factorial(x):
    y = np.array([0.0, 1.0, 3.5, 50.0, 1e6, 1e13])
    value, gradient, _ = evaluate("log_poch(x, y)", "x", x=np.full(y.size, x), y=y)
    with mpmath.workdps(400):  # lgamma(1e300) has 303 digits before the point
        exact_value = to_float(mpmath.loggamma(exact(x) + exact(b)) - mpmath.loggamma(exact(x))
                               for b in y)
        exact_gradient = to_float(mpmath.digamma(exact(x) + exact(b))
                                  - mpmath.digamma(exact(x)) for b in y)
    # below x = 1000 the difference of two lgammas: an error of the size of lgamma(x)
    scale = 1.0 if x >= 1000 else float(abs(mpmath.loggamma(exact(x)))) + 1.0
    assert_close(value, exact_value, 8 * EPS[np.float64] * scale, 8 * EPS[np.float64], "value")
    if x <= 1e100:  # beyond, y/x^2 underflows in the gradient (which is below 1e-100 there)
        assert_close(gradient, exact_gradient, 1e-300, 1e-10, "gradient")
    assert np.all(np.isfinite(gradient))


@pytest.mark.parametrize("alpha", [1.0, 0.5, 3.0])
def test_negative_binomial_derivatives_match_finite_differences(alpha):
    y = np.array([0.0, 1.0, 4.0, 20.0, 300.0, 7.0])
    z = np.array([-1.0, 0.2, 1.3, 3.1, 5.5, 2.0])
    check_finite_differences(f"negative_binomial(y, z, {alpha})", "z", {"y": y, "z": z})


# ----------------------------------------------------------------------------- cross-entropy


LOGITS_WITH_MINUS_INFINITY = np.array([[0.0, 1.0, -np.inf], [2.0, -np.inf, -np.inf],
                                       [-np.inf, 0.5, -1.5], [1.0, -2.0, 0.5]])
LABELS = np.array([0, 0, 2, 1])


@pytest.mark.parametrize("call, smoothing", [("label_smoothing(y, z)", 0.1),
                                             ("cce_logits(y, z, 0.2)", 0.2),
                                             ("cce_logits(y, z)", 0.0)])
def test_cross_entropy_with_minus_infinity_logits_matches_pytorch(call, smoothing):
    # A -inf logit of a class the target gives no mass made 0 * -inf = NaN. PyTorch gives +inf
    # with label smoothing (the smoothed target puts mass on that class) and, with class-index
    # targets, the finite cross-entropy without it (its probability targets make NaN there).
    z, y = LOGITS_WITH_MINUS_INFINITY, np.eye(3)[LABELS]
    zt = torch.tensor(z, requires_grad=True)
    expected = F.cross_entropy(zt, torch.tensor(LABELS), label_smoothing=smoothing,
                               reduction="none")
    (expected_gradient,) = torch.autograd.grad(expected.sum(), zt)
    value, gradient, hessian = evaluate(call, "z", y=y, z=z)
    np.testing.assert_allclose(value, expected.detach().numpy(), rtol=1e-15)
    if smoothing:  # every row but the last has a -inf logit
        assert np.all(value[:-1] == np.inf) and np.isfinite(value[-1])
    np.testing.assert_allclose(gradient, expected_gradient.numpy(), rtol=1e-14, atol=1e-16)
    q = torch.softmax(torch.tensor(z), 1).numpy()
    np.testing.assert_allclose(hessian, q * (1 - q), rtol=1e-14, atol=1e-16)


def test_cross_entropy_with_soft_targets_on_a_minus_infinity_logit_is_infinite():
    z = np.array([[0.0, 1.0, -np.inf]])
    for call in ("cce_logits(y, z)", "label_smoothing(y, z)"):
        assert value_of(call, "z", y=np.array([[0.5, 0.3, 0.2]]), z=z)[0] == np.inf


def test_categorical_focal_logits_with_a_minus_infinity_logit_of_an_absent_class():
    # 0 * exp(...) * -inf was NaN; a class with y_k = 0 contributes 0, as at any finite logit
    z, y = LOGITS_WITH_MINUS_INFINITY, np.eye(3)[LABELS]
    finite = np.where(np.isinf(z), -1e30, z)  # softmax 0 there, like -inf
    with_infinity = evaluate("categorical_focal_logits(y, z)", "z", y=y, z=z)
    with_finite = evaluate("categorical_focal_logits(y, z)", "z", y=y, z=finite)
    np.testing.assert_array_equal(with_infinity[0], with_finite[0])
    # derivatives where another logit than the largest is finite: row 1 ([2, -inf, -inf])
    # differentiates a logsumexp of a row of -inf only, whose softmax is 0/0
    rows = np.isfinite(z).sum(axis=1) > 1
    for found, expected in zip(with_infinity[1:], with_finite[1:]):
        np.testing.assert_array_equal(found[rows], expected[rows])


def test_logsumexp_of_infinite_rows_is_infinite():
    # the max shift of an infinite maximum made z - max NaN; SciPy's logsumexp gives +-inf
    z = np.array([[-np.inf, -np.inf], [np.inf, 1.0], [1e4, 1e4], [np.inf, -np.inf]])
    values = compiled("logsumexp(z)")(z=z)
    np.testing.assert_array_equal(values, [-np.inf, np.inf, 1e4 + np.log(2), np.inf])


def test_cross_entropy_derivatives_match_finite_differences():
    rng = np.random.default_rng(3)
    y = rng.dirichlet(np.ones(4), 6)
    y[:2] = np.eye(4)[[1, 3]]  # and exact zeros, which the definition now tests for
    check_finite_differences("label_smoothing(y, z)", "z", {"y": y, "z": rng.normal(0, 2, (6, 4))})


# ----------------------------------------------------------------------------- softmax


def _expected_cost_errors(z, cost, labels):
    """Worst errors of the float32 gradient and Hessian of expected_cost, lossdsl's and
    PyTorch's, each relative to its element's natural scale q_k max|C[y]| (the size of the
    terms the gradient q_k (C[y, k] - sum_j C[y, j] q_j) is made of)."""
    exact_g, exact_h, scale = [], [], []
    for row, c in zip(z, cost[labels]):
        row, c = [exact(v) for v in row], [exact(v) for v in c]
        shift = max(row)
        e = [mpmath.exp(v - shift) for v in row]
        q = [v / sum(e) for v in e]
        mean_cost = sum(a * b for a, b in zip(c, q))
        exact_g.append(to_float(b * (a - mean_cost) for a, b in zip(c, q)))
        exact_h.append(to_float(b * (a - mean_cost) * (1 - 2 * b) for a, b in zip(c, q)))
        scale.append(to_float(b * max(abs(v) for v in c) for b in q))
    exact_g, exact_h, scale = map(np.array, (exact_g, exact_h, scale))
    normal = scale > 1e-30  # leave out probabilities that underflow float32

    gradient, hessian = compiled("expected_cost(y, z, C)").grad_and_hessian(
        "z", y=labels, z=z, C=cost)
    zt = torch.tensor(z, requires_grad=True)
    total = (torch.tensor(cost)[torch.tensor(labels)] * torch.softmax(zt, 1)).sum()
    (torch_g,) = torch.autograd.grad(total, zt, create_graph=True)
    torch_h = np.stack([torch.autograd.grad(torch_g[:, k].sum(), zt, retain_graph=True)[0][:, k]
                        .numpy() for k in range(z.shape[1])], axis=1)

    def worst(actual, reference):
        return float(np.max(np.abs(np.asarray(actual, float) - reference)[normal] / scale[normal]))

    return ((worst(gradient, exact_g), worst(hessian, exact_h)),
            (worst(torch_g.detach().numpy(), exact_g), worst(torch_h, exact_h)))


@pytest.mark.parametrize("offset", [0.0, 80.0, -80.0, 1000.0])
def test_expected_cost_float32_derivatives_are_as_accurate_as_pytorchs(offset):
    # softmax was exp(z - (max + log sum)) in the value and exp(z - max)/sum in the derivative
    # of log sum: two roundings of one probability, the first off by an ulp of the logits' size
    # (18x PyTorch's error at logits near 1000, 8x near 80).
    rng = np.random.default_rng(7)
    z = (rng.normal(0.0, 3.0, (200, 5)) + offset).astype(np.float32)
    cost = rng.integers(0, 10, (5, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 200)
    ours, theirs = _expected_cost_errors(z, cost, labels)
    for mine, torch_error, what in zip(ours, theirs, ("gradient", "Hessian")):
        assert mine <= max(2 * torch_error, 8 * EPS[np.float32]), (what, mine, torch_error)


def test_expected_cost_derivatives_match_finite_differences():
    rng = np.random.default_rng(11)
    inputs = {"y": rng.integers(0, 4, 6), "z": rng.normal(0.0, 2.0, (6, 4)) + 30.0,
              "C": rng.uniform(0.0, 5.0, (4, 4))}
    check_finite_differences("expected_cost(y, z, C)", "z", inputs)


LARGE_LOGITS = {np.float64: 1e4, np.float32: 80.0}


def _rows_at_large_logits(dtype):
    big = LARGE_LOGITS[dtype]
    z = np.array([[big, big - 1, -big, 0.0], [-big, -big + 0.5, -big - 3.0, -big + 0.25],
                  [big, big, big - 0.125, big - 40.0], [0.3, -0.2, 1.1, 0.0]], dtype)
    exact_log_q = []
    for row in z:
        row = [exact(v) for v in row]
        lse = mpmath.log(sum(mpmath.exp(v) for v in row))
        exact_log_q.append([v - lse for v in row])
    return z, exact_log_q


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_log_softmax_and_softmax_at_large_logits_are_exact(dtype):
    # z - (max + log sum) rounded max + log sum at the scale of the logits: 1e-12 absolute
    # error at +-1e4 in float64, 1e-6 at 80 in float32. (z - max) - log sum is exact near the
    # maximum. Each class is read with pick, as a sparse cross-entropy written by hand does.
    z, exact_log_q = _rows_at_large_logits(dtype)
    eps, tiny = EPS[dtype], np.finfo(dtype).tiny
    for k in range(z.shape[1]):
        labels = np.full(z.shape[0], k)
        log_q = compiled("pick(log_softmax(z), y)")(y=labels, z=z)
        q = compiled("pick(softmax(z), y)")(y=labels, z=z)
        expected_log_q = to_float(row[k] for row in exact_log_q)
        expected_q = to_float(mpmath.exp(row[k]) for row in exact_log_q)
        assert_close(log_q, expected_log_q, 0.0, 2 * eps, f"log_softmax, class {k}")
        assert_close(q, np.where(expected_q < tiny, 0.0, expected_q), tiny, 4 * eps,
                     f"softmax, class {k}")


def test_log_softmax_as_the_whole_loss_at_large_logits_is_exact():
    z, exact_log_q = _rows_at_large_logits(np.float64)
    log_q = compiled("log_softmax(z)")(z=z)
    assert_close(log_q, to_float(v for row in exact_log_q for v in row).reshape(z.shape), 0.0,
                 2 * EPS[np.float64], "log_softmax")


# ----------------------------------------------------------------------------- Dice


def optax_dice_loss(probabilities, targets, smooth, alpha=0.5, beta=0.5):
    """optax.dice_loss on probabilities, transcribed from optax/losses/_segmentation.py:
    1 - (I + smooth)/(I + alpha (P - I) + beta (T - I) + smooth), I = sum(p t), P = sum(p),
    T = sum(t)."""
    intersection = np.sum(probabilities * targets)
    fp, fn = np.sum(probabilities) - intersection, np.sum(targets) - intersection
    return 1 - (intersection + smooth) / (intersection + alpha * fp + beta * fn + smooth)


@pytest.mark.parametrize("smooth", [1.0, 0.3, 5.0])
def test_dice_smooth_is_optax_smooth_halved_as_documented(smooth):
    rng = np.random.default_rng(5)
    y, p = rng.choice([0.0, 1.0], 12), rng.uniform(0.0, 1.0, 12)
    dice = lossdsl.compile(f"dice(y, p, smooth={smooth})")(y=y, p=p)
    assert dice == pytest.approx(optax_dice_loss(p, y, smooth / 2), rel=1e-14)
    assert dice != pytest.approx(optax_dice_loss(p, y, smooth), rel=1e-6)
    tversky = lossdsl.compile(f"tversky(y, p, 0.3, 0.7, smooth={smooth})")(y=y, p=p)
    assert tversky == pytest.approx(optax_dice_loss(p, y, smooth, 0.3, 0.7), rel=1e-14)
    assert "optax.dice_loss(smooth=smooth/2)" in catalog.entry("dice").reference


@pytest.mark.parametrize("exponent", [2.0, 1.0, 0.0, 0.5])
def test_power_derivatives_at_zero_are_pytorchs_where_a_param_is_the_exponent(exponent):
    """x^k at x = 0 with k given at call time: d/dx is k x^(k-1) but 0 at k = 0 (x^0 is 1
    for every x), d/dk is x^k log x but 0 at x = 0 (0^k is 0 or 1 for every k), as PyTorch
    gives them; they were NaN (0 * inf, 0 * log 0) where a literal exponent, folded, was
    right. The second derivative at k = 1 is 0 (and at k = 0, where PyTorch says NaN)."""
    power = compiled("x^k")
    x, k = np.array([0.0]), np.array([exponent])
    gradient, hessian = power.grad_and_hessian("x", x=x, k=k)
    base = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    level = torch.tensor([exponent], dtype=torch.float64, requires_grad=True)
    expected_x, expected_k = torch.autograd.grad((base ** level).sum(), (base, level))
    np.testing.assert_array_equal(gradient, expected_x.numpy())
    np.testing.assert_array_equal(power.grad("k", x=x, k=k), expected_k.numpy())
    assert hessian[0] == {2.0: 2.0, 1.0: 0.0, 0.0: 0.0, 0.5: -np.inf}[exponent]


def test_focal_with_gamma_as_a_param_is_the_literals():
    y, p = np.array([1.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.7])
    literal, given = compiled("focal(y, p, gamma=0.0)"), compiled("focal(y, p, gamma=g)")
    for task in ("grad", "hessian"):
        np.testing.assert_array_equal(getattr(given, task)("p", y=y, p=p, g=np.array(0.0)),
                                      getattr(literal, task)("p", y=y, p=p))


def test_probit_hessian_keeps_its_digits_far_in_the_tail():
    """d2/dz2 of -log Phi(-z) is r (r - z), r = phi(z)/Phi(-z): r - z cancels two terms of
    size z (at z = 1e8 the Hessian was 1.49, at 1e9 0); the series of its tail keeps it."""
    loss = compiled("probit_bce(y, z)")
    z = np.array([5.0, 9.0, 11.0, 40.0, 1e5, 1e6, 1e7, 1e8, 1e9])
    hessian = loss.hessian("z", y=np.zeros(z.size), z=z)

    def exact(x: float) -> float:
        with mpmath.workdps(40):
            return float(mpmath.diff(lambda t: -mpmath.log(mpmath.ncdf(-t)), x, 2))

    expected = [exact(x) for x in z[:4]] + list(1.0 - 1.0 / z[4:] ** 2)
    np.testing.assert_allclose(hessian, expected, rtol=1e-11)  # x + r loses 2 digits at -9
    single = loss.hessian("z", y=np.zeros(3, np.float32), z=z[[0, 3, 4]].astype(np.float32))
    np.testing.assert_allclose(single, np.array(expected)[[0, 3, 4]], rtol=2e-6)


def test_hessian_of_a_log_of_a_large_argument_keeps_both_terms():
    """log(u)'' = u''/u - (u'/u)^2: printed as u' * (u' * (1/u/u)), the 1/u/u underflowed from
    u = 1.3e154 and the Hessian kept u''/u alone (1 for 0 at p = 400 for log(cosh(p)))."""
    p = np.array([5.0, 400.0, 700.0])
    hessian = lossdsl.compile("log(cosh(p))", reduction="none").hessian("p", p=p)
    sech = 2.0 * np.exp(-p) / (1.0 + np.exp(-2.0 * p))  # 1/cosh(p), without cosh's overflow
    np.testing.assert_allclose(hessian, sech**2, rtol=1e-9, atol=1e-300)
    hessian = lossdsl.compile("log1p(2^p)", reduction="none").hessian("p", p=p)
    s = 1.0 / (1.0 + 2.0 ** -p)
    np.testing.assert_allclose(hessian, np.log(2.0) ** 2 * s * (1 - s), rtol=1e-9, atol=1e-12)
    hessian = lossdsl.compile("log1p(p^2)", reduction="none").hessian("p", p=np.array([1e100]))
    assert hessian[0] == pytest.approx(-2e-200, rel=1e-12)
