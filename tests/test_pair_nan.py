"""A pair sum of a sample alone in its group is empty (0): the derivatives of a function of
it must not be NaN there (``passes/diff.unbroadcast``: a sum over an empty row of partners is
0, also where ``make`` took a factor that is infinite there, ``1/0``, out of the sum).

``softplus(log(pairsum(exp(partner(s) - s), g)))`` is 0 at such a sample (``softplus(-inf)``)
and so is its gradient; the chain rule gave ``sigmoid(-inf) * (1/0) * 0``, NaN. Checked
against JAX's autodiff of the masked logsumexp (``jax.nn.logsumexp(..., where=mask)``) at
samples alone in their groups and in groups of 2 to 5, on every target, with a weight read
at the partner, and for the log alone (-inf, derivative 0).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import lossdsl


@functools.cache
def compiled(text: str, target: str) -> lossdsl.CompiledLoss:
    return lossdsl.compile(text, target=target, reduction="sum")


G = np.array([3, 0, 3, 7, 0, 3, 5, 9, 9, 3, 9, 0, 3])  # 7 and 5 alone, groups of 2 to 5
S = np.array([0.3, -1.2, 0.5, 2.0, 0.7, 1.1, -0.4, 0.9, -2.2, 1.6, 0.1, -0.8, 0.0])
C = np.array([0.5, 2.0, 1.0, 1.5, 0.3, 0.7, 1.1, 0.2, 0.9, 1.3, 0.6, 1.8, 0.4])
ALONE = np.array([np.sum(G == g) == 1 for g in G])


def softplus_of_log(s, c, mask, jax):
    return jax.numpy.sum(jax.nn.softplus(
        jax.nn.logsumexp(s[None, :] - s[:, None], axis=1, where=mask)))


def weighted_softplus_of_log(s, c, mask, jax):
    return jax.numpy.sum(jax.nn.softplus(
        jax.nn.logsumexp(s[None, :] - s[:, None], axis=1, b=c[None, :], where=mask)))


def log_alone(s, c, mask, jax):
    """The log of the pair sum alone: -inf at a sample alone, derivatives 0 there."""
    return jax.nn.logsumexp(s[None, :] - s[:, None], axis=1, where=mask)


CASES = [
    ("softplus(log(pairsum(exp(partner(s) - s), g)))", softplus_of_log),
    ("softplus(log(pairsum(partner(c)*exp(partner(s) - s), g)))", weighted_softplus_of_log),
    ("log(pairsum(exp(partner(s) - s), g))", log_alone),
]


@pytest.mark.parametrize("text, formula", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("target", ["cpu", "parallel", "cuda"])
def test_gradient_and_hessian_at_samples_alone_match_jax(text, formula, target,
                                                         jax_x64) -> None:
    jax = jax_x64
    jnp = jax.numpy
    mask = jnp.asarray((G[:, None] == G[None, :]) & ~np.eye(G.size, dtype=bool))
    loss = compiled(text, target)
    inputs = {name: {"s": S, "g": G, "c": C}[name] for name in loss.inputs}
    value, gradient, hessian = loss.compute(True, ("s",), ("s",), inputs, None)

    def total(s):
        return jnp.sum(formula(s, jnp.asarray(C), mask, jax))

    s = jnp.asarray(S)
    expected_gradient = np.asarray(jax.grad(total)(s))
    expected_hessian = np.diag(np.asarray(jax.hessian(total)(s)))
    assert value == pytest.approx(float(total(s)), rel=1e-12)  # -inf for the log alone
    assert not np.isnan(gradient).any() and not np.isnan(hessian).any()
    assert np.all(gradient[ALONE] == 0.0) and np.all(hessian[ALONE] == 0.0)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(hessian, expected_hessian, rtol=1e-12, atol=1e-14)
