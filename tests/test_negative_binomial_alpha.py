"""negative_binomial's derivatives with respect to its dispersion alpha, against mpmath
differentiating the exact log-pmf (loggamma, 60 digits).

They were those of the former form y softplus(-w) + softplus(w)/alpha - log_poch(1/alpha, y),
whose terms of size y/alpha and mu/alpha cancel towards the Poisson limit: a Hessian of -1.0
for -0.0167 at (y, z, alpha) = (1, -2, 1e-8), of -1.3e-29 for +5.5e-40 at (0, -30, 1). They
are now written as G = r^2 (g(r + y) - g(r)) - r^2 psi2(v) (r = 1/alpha, g = digamma - log,
psi2(v) = log1p(v) - v/(1 + v), v = alpha (mu - y)/(1 + alpha y)) and its derivative, carried
by stop_gradient (regression.loss): within 1e-12 of mpmath for counts y in 0..1e8, z in
-30..30, alpha in 1e-10..1e3 (the value and the derivatives in z are unchanged).
"""

from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np
import pytest

import lossdsl
from lossdsl import compiler

LOSS = "negative_binomial(y, z, alpha)"


def exact_alpha_derivatives(y: float, z: float, alpha: float) -> tuple[float, float, float]:
    """The NB2 negative log-likelihood and its first two derivatives in alpha (mpmath)."""
    with mpmath.workdps(60):
        y, mu = mpmath.mpf(y), mpmath.exp(mpmath.mpf(z))

        def nll(a):
            return -(mpmath.loggamma(y + 1 / a) - mpmath.loggamma(1 / a)
                     - mpmath.loggamma(y + 1) - mpmath.log1p(a * mu) / a
                     + y * mpmath.log(a * mu / (1 + a * mu)))

        at = mpmath.mpf(alpha)
        return float(nll(at)), float(mpmath.diff(nll, at, 1)), float(mpmath.diff(nll, at, 2))


COUNTS = [0.0, 1.0, 2.0, 3.0, 7.0, 50.0, 1e3, 1e5, 1e8]
SCORES = [-30.0, -5.0, -2.0, 0.0, 0.3, 3.0, 10.0, 30.0]
DISPERSIONS = [1e-10, 1e-8, 1e-5, 1e-3, 0.05, 0.1, 0.2, 1.0, 9.9, 1e3]


@pytest.fixture(scope="module")
def loss() -> lossdsl.CompiledLoss:
    return lossdsl.compile(LOSS, reduction="none")


@pytest.fixture(scope="module")
def grid() -> tuple[np.ndarray, ...]:
    points = np.array(list(itertools.product(COUNTS, SCORES, DISPERSIONS)))
    exact = np.array([exact_alpha_derivatives(*p) for p in points])
    return points[:, 0], points[:, 1], points[:, 2], exact[:, 0], exact[:, 1], exact[:, 2]


@pytest.mark.parametrize(("y", "z", "alpha", "hessian"), [
    (1.0, -2.0, 1e-8, -0.01666313739308017),   # was -1.0
    (0.0, 0.3, 1e-8, 1.6397353576362137),      # was 4.0
    (50.0, 3.0, 1e-8, 25655.591926358393),     # was 25536
    (0.0, -30.0, 1.0, 5.4626750826591936e-40),  # was -1.26e-29
])
def test_issue_points(y, z, alpha, hessian):
    summed = lossdsl.compile(LOSS, reduction="sum")
    found = summed.hessian("alpha", y=np.array([y]), z=np.array([z]), alpha=np.array([alpha]))
    np.testing.assert_allclose(found, [hessian], rtol=1e-13)
    _, gradient, expected = exact_alpha_derivatives(y, z, alpha)
    np.testing.assert_allclose(expected, hessian, rtol=1e-13)
    np.testing.assert_allclose(summed.grad("alpha", y=np.array([y]), z=np.array([z]),
                                           alpha=np.array([alpha])), [gradient], rtol=1e-14)


def test_alpha_derivatives_match_mpmath_on_a_grid(loss, grid):
    y, z, alpha, _, gradient, hessian = grid
    found_gradient, found_hessian = loss.grad_and_hessian("alpha", y=y, z=z, alpha=alpha)
    # the worst points (measured 5.6e-13) lie where digamma(1/alpha + y) - digamma(1/alpha)
    # is taken (alpha > 0.1); towards the Poisson limit they are within a few ulps
    np.testing.assert_allclose(found_gradient, gradient, rtol=2e-12, atol=0)
    np.testing.assert_allclose(found_hessian, hessian, rtol=2e-12, atol=0)
    near_poisson = alpha <= 1e-5
    np.testing.assert_allclose(found_gradient[near_poisson], gradient[near_poisson], rtol=1e-14)


def test_alpha_derivatives_of_fractional_counts(loss):
    # a fractional count's Hessian passes through 0 near the Poisson limit (y = 1/2: -3e-12
    # at alpha = 1e-10, where the terms are of size y^2): an absolute error of 1e-16 of them
    points = np.array(list(itertools.product([0.5, 1.5, 2.5, 1e4 + 0.5], [-30.0, 0.0, 3.0],
                                             [1e-8, 1e-3, 0.5, 20.0])))
    y, z, alpha = points.T
    exact = np.array([exact_alpha_derivatives(*p) for p in points])
    gradient, hessian = loss.grad_and_hessian("alpha", y=y, z=z, alpha=alpha)
    scale = 1 + y**2 + np.exp(2 * z)
    assert np.all(np.abs(gradient - exact[:, 1]) <= 1e-11 * np.abs(exact[:, 1]) + 1e-15 * scale)
    assert np.all(np.abs(hessian - exact[:, 2]) <= 1e-11 * np.abs(exact[:, 2]) + 1e-15 * scale)


def test_value_and_score_in_z_are_the_exact_ones(loss, grid):
    y, z, alpha, value, _, _ = grid
    found, gradient = loss.value_and_grad("z", y=y, z=z, alpha=alpha)
    np.testing.assert_allclose(found, value, rtol=1e-13, atol=1e-300)
    mu = np.exp(z)  # the score (mu - y)/(1 + alpha mu), to ulps of its terms where mu = y
    expected = (mu - y) / (1 + alpha * mu)
    assert np.all(np.abs(gradient - expected) <= 1e-12 * np.abs(expected)
                  + 1e-14 * (y + mu) / (1 + alpha * mu))


def test_float32_alpha_derivatives_are_sane():
    points = np.array(list(itertools.product(COUNTS[:7], SCORES[:-1], DISPERSIONS)))
    y, z, alpha = points.T.astype(np.float32)
    loss = lossdsl.compile(LOSS, reduction="none")
    gradient, hessian = loss.grad_and_hessian("alpha", y=y, z=z, alpha=alpha)
    assert gradient.dtype == np.float32 and np.all(np.isfinite(gradient))
    assert np.all(np.isfinite(hessian))
    wide = [a.astype(np.float64) for a in (y, z, alpha)]
    g64, h64 = loss.grad_and_hessian("alpha", y=wide[0], z=wide[1], alpha=wide[2])
    # within 1e-3 of float64 at the same inputs (the worst, 1.6e-4: y = 3, z = 10,
    # alpha = 9.9, where the gradient -8.6e-5 is the difference of terms near 1e-2)
    np.testing.assert_allclose(gradient, g64, rtol=1e-3, atol=0)
    np.testing.assert_allclose(hessian, h64, rtol=1e-3, atol=0)


def test_scores_log_dispersion_derivatives_near_the_poisson_limit():
    # negative_binomial_scores reads alpha = exp(z1): d/dz1 = alpha G, d2/dz1^2 = alpha^2 H
    # + alpha G, which kept an absolute error of 1e-16 (a relative 1e-8 at alpha = 1e-8)
    scores = lossdsl.compile("negative_binomial_scores(y, z)", reduction="none")
    y = np.array([1.0, 0.0, 50.0, 7.0])
    z = np.array([[-2.0, math.log(1e-8)], [0.3, math.log(1e-8)], [3.0, math.log(1e-6)],
                  [1.0, -20.0]])
    gradient, hessian = scores.grad_and_hessian("z", y=y, z=z)
    for i in range(len(y)):
        alpha = math.exp(z[i, 1])
        _, g, h = exact_alpha_derivatives(y[i], z[i, 0], alpha)
        np.testing.assert_allclose(gradient[i, 1], alpha * g, rtol=1e-13)
        np.testing.assert_allclose(hessian[i, 1], alpha**2 * h + alpha * g, rtol=1e-12)


def test_the_z_kernels_take_no_alpha_derivative_terms():
    """The boosting path (gradient and Hessian in z) computes none of the alpha terms."""
    loss = lossdsl.compile(LOSS)
    spec = loss.specialization(loss.default_ranks())
    for want_value in (False, True):
        request = compiler.KernelRequest(np.dtype("float64"), "cpu", want_value, ("z",), ("z",))
        source = compiler.generate_source(spec, request).source
        assert "digamma" not in source and "trigamma" not in source


def exact_digamma_gap(y: float, alpha: float) -> tuple[float, float]:
    """r^2 (g(r + y) - g(r)), r = 1/alpha, g = digamma - log, and its derivative in alpha."""
    with mpmath.workdps(60):
        y = mpmath.mpf(y)

        def gap(a):
            r = 1 / a
            return r**2 * (mpmath.digamma(r + y) - mpmath.log(r + y)
                           - mpmath.digamma(r) + mpmath.log(r))

        at = mpmath.mpf(alpha)
        return float(gap(at)), float(mpmath.diff(gap, at))


def test_digamma_gap_building_block_on_both_sides_of_its_switch():
    # core.loss's digamma_gap: the asymptotic series (alpha <= 0.1, built from powers of
    # 1/(1 + alpha y)^2) and the difference of digammas (fed r = 16 where not selected)
    points = np.array(list(itertools.product([0.0, 0.5, 1.0, 7.0, 1e3, 1e8],
                                             [1e-10, 1e-4, 0.0999, 0.1, 0.1001, 0.5, 50.0])))
    y, alpha = points.T
    gap = lossdsl.compile("digamma_gap(alpha, y)", reduction="none")
    slope = lossdsl.compile("digamma_gap_slope(alpha, y)", reduction="none")
    exact = np.array([exact_digamma_gap(*p) for p in zip(y, alpha)])
    np.testing.assert_allclose(gap(alpha=alpha, y=y), exact[:, 0], rtol=1e-13, atol=1e-50)
    # the slope's worst, 2.2e-12 at y = 1/2 just above the switch, is the digammas' and
    # trigammas' difference (as in HEAD); the series' (8 terms), 6.4e-13 at r = 10, is 1e-14
    # towards the Poisson limit
    np.testing.assert_allclose(slope(alpha=alpha, y=y), exact[:, 1], rtol=5e-12, atol=1e-50)
    near = alpha <= 1e-4
    np.testing.assert_allclose(slope(alpha=alpha, y=y)[near], exact[near, 1], rtol=1e-14,
                               atol=1e-50)
