"""Diagonal Hessians of pair sums and class pair sums whose summands read the variable at the
partner: ``pairsum(partner(s), g)``, ``classpairsum(exp(partner(z)))`` and their kin, on
their own, with the sample's own values and under a sum over the samples; and of pair sums
under ``log`` whose row a mask leaves without a term (the Hessian there is 0, not NaN).

Each loss's value, gradient and diagonal Hessian are checked against ``jax.hessian`` of a
hand-written JAX formula (the pairs as a masked N x N matrix, the class pairs as an (N, K, K)
array with its diagonal masked), and a few under the CUDA simulator against the CPU kernels.
Forms whose exact Hessian lossdsl does not give are a ``LossError``, never a number.
"""

from __future__ import annotations

import numpy as np
import pytest
from coupled import assert_simulated_cuda_matches_cpu

import lossdsl
from lossdsl.errors import LossError

GROUPS = np.array([0, 0, 0, 1, 1])
SCORES = np.array([0.3, -1.2, 0.5, 2.0, 0.7])
WEIGHTS = np.array([0.4, 1.1, -0.3, 0.8, 1.5])
LABELS = np.array([0.0, 0.0, 1.0, 1.0, 1.0])  # sample 2 has no partner of its label, 3 and 4
# none of another one


def sample_inputs() -> dict[str, np.ndarray]:
    """Five samples in two groups (of 3 and 2), the variable s and two per-sample inputs."""
    return {"s": SCORES, "g": GROUPS, "t": WEIGHTS, "y": LABELS}


def class_inputs() -> dict[str, np.ndarray]:
    """Three rows of four classes."""
    return {"z": np.random.default_rng(0).normal(size=(3, 4))}


def pair_mask(jnp, g):
    """1 at the pairs (i, j) of distinct samples of one group, else 0."""
    same = g[:, None] == g[None, :]
    return jnp.where(same & ~jnp.eye(g.size, dtype=bool), 1.0, 0.0)


def pairsum(jnp, g, e):
    """Each sample's sum of ``e[i, j]`` (an N x N matrix) over its partners j."""
    return (pair_mask(jnp, g) * e).sum(axis=1)


def at_partner(x):
    """``x[j]`` at every pair (i, j): an N x N matrix."""
    return x[None, :] + 0 * x[:, None]


def safe_log(jnp, x):
    """``log(x)``, -inf at 0, with the derivatives of ``where``: finite where ``x`` is 0."""
    positive = x > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), -jnp.inf)


def class_pairs(jnp, z, e):
    """Each row's sum of ``e[i, k, c]`` over the ordered pairs (k, c) of distinct classes."""
    off = 1.0 - jnp.eye(z.shape[1])
    return (off[None] * e).sum(axis=(1, 2))


# (loss text, the per-sample values of s and the other inputs d in JAX, with jnp as given)
SAMPLE_CASES = [
    ("square(pairsum(partner(s), g))",
     lambda jnp, s, d: pairsum(jnp, d["g"], at_partner(s)) ** 2),
    ("log(pairsum(exp(partner(s)), g))",
     lambda jnp, s, d: jnp.log(pairsum(jnp, d["g"], at_partner(jnp.exp(s))))),
    ("square(pairsum(partner(s)*t, g))",
     lambda jnp, s, d: pairsum(jnp, d["g"], s[None, :] * d["t"][:, None]) ** 2),
    ("square(pairsum(partner(s)*s, g))",
     lambda jnp, s, d: pairsum(jnp, d["g"], s[None, :] * s[:, None]) ** 2),
    ("exp(0.1*pairsum(partner(s), g))",
     lambda jnp, s, d: jnp.exp(0.1 * pairsum(jnp, d["g"], at_partner(s)))),
    ("log(pairsum(exp(partner(s))*t + 1, g))",
     lambda jnp, s, d: jnp.log(pairsum(jnp, d["g"], jnp.exp(s)[None, :] * d["t"][:, None] + 1))),
    ("log(pairsum(exp(partner(s))*stop_gradient(partner(t)), g))",
     lambda jnp, s, d: jnp.log(pairsum(jnp, d["g"], jnp.exp(s)[None, :] * d["t"][None, :]))),
    # reading s at i as well (this one was right before the fix too)
    ("square(pairsum(partner(s) + s, g))",
     lambda jnp, s, d: pairsum(jnp, d["g"], s[None, :] + s[:, None]) ** 2),
    # the partner's s under a function of its own, the sample's own s outside
    ("square(pairsum(exp(partner(s))*s, g))",
     lambda jnp, s, d: pairsum(jnp, d["g"], jnp.exp(s)[None, :] * s[:, None]) ** 2),
    ("square(pairsum(square(partner(s)), g))",
     lambda jnp, s, d: pairsum(jnp, d["g"], at_partner(s ** 2)) ** 2),
    ("log(pairsum(exp(partner(s)), g)) - s",
     lambda jnp, s, d: jnp.log(pairsum(jnp, d["g"], at_partner(jnp.exp(s)))) - s),
    ("pairsum(partner(s), g)*pairsum(partner(s)*s, g)",
     lambda jnp, s, d: (pairsum(jnp, d["g"], at_partner(s))
                        * pairsum(jnp, d["g"], s[None, :] * s[:, None]))),
    # under a sum over the samples: each sample's value depends on its partners' s
    ("square(sum(pairsum(partner(s), g)))",
     lambda jnp, s, d: jnp.zeros_like(s).at[0].set(
         pairsum(jnp, d["g"], at_partner(s)).sum() ** 2)),
    ("square(sum(s*pairsum(partner(s), g)))",
     lambda jnp, s, d: jnp.zeros_like(s).at[0].set(
         (s * pairsum(jnp, d["g"], at_partner(s))).sum() ** 2)),
    ("log(sum(exp(s))) * pairsum(partner(s), g)",
     lambda jnp, s, d: jnp.log(jnp.exp(s).sum()) * pairsum(jnp, d["g"], at_partner(s))),
    # a row that its mask leaves without a term: log(0) = -inf, softplus(-inf) = 0
    ("softplus(log(pairsum(where(y == partner(y), exp(partner(s)*s), 0), g))"
     " + log(pairsum(where(y != partner(y), exp(partner(s)*s), 0), g)))",
     lambda jnp, s, d: jnp.logaddexp(0.0, (
         safe_log(jnp, pairsum(jnp, d["g"], jnp.where(d["y"][:, None] == d["y"][None, :],
                                                      jnp.exp(s[None, :] * s[:, None]), 0.0)))
         + safe_log(jnp, pairsum(jnp, d["g"], jnp.where(d["y"][:, None] != d["y"][None, :],
                                                        jnp.exp(s[None, :] * s[:, None]), 0.0)))))),
    ("softplus(log(pairsum(where(y != partner(y), exp(partner(s) - s), 0), g)))",
     lambda jnp, s, d: jnp.logaddexp(0.0, safe_log(jnp, pairsum(
         jnp, d["g"], jnp.where(d["y"][:, None] != d["y"][None, :],
                                jnp.exp(s[None, :] - s[:, None]), 0.0))))),
    ("softplus(log(pairsum(where(y != partner(y), exp(s), 0), g)))",
     lambda jnp, s, d: jnp.logaddexp(0.0, safe_log(jnp, pairsum(
         jnp, d["g"], jnp.where(d["y"][:, None] != d["y"][None, :],
                                at_partner(jnp.exp(s)).T, 0.0))))),
    ("softplus(log(pairsum(where(y > partner(y), exp(partner(s)*s), 0), g))"
     " - log(pairsum(where(y < partner(y), exp(partner(s)*s), 0), g)))",
     lambda jnp, s, d: jnp.logaddexp(0.0, (
         safe_log(jnp, pairsum(jnp, d["g"], jnp.where(d["y"][:, None] > d["y"][None, :],
                                                      jnp.exp(s[None, :] * s[:, None]), 0.0)))
         - safe_log(jnp, pairsum(jnp, d["g"], jnp.where(d["y"][:, None] < d["y"][None, :],
                                                        jnp.exp(s[None, :] * s[:, None]), 0.0)))))),
]

CLASS_CASES = [
    ("square(classpairsum(partner(z)))",
     lambda jnp, z: class_pairs(jnp, z, z[:, None, :] + 0 * z[:, :, None]) ** 2),
    ("log(classpairsum(exp(partner(z))))",
     lambda jnp, z: jnp.log(class_pairs(jnp, z, jnp.exp(z)[:, None, :] + 0 * z[:, :, None]))),
    ("log1p(classpairsum(exp(partner(z))))",
     lambda jnp, z: jnp.log1p(class_pairs(jnp, z, jnp.exp(z)[:, None, :] + 0 * z[:, :, None]))),
    ("square(classpairsum(square(partner(z))))",
     lambda jnp, z: class_pairs(jnp, z, (z ** 2)[:, None, :] + 0 * z[:, :, None]) ** 2),
    ("square(sum(classpairsum(partner(z))))",
     lambda jnp, z: jnp.zeros(z.shape[0]).at[0].set(
         class_pairs(jnp, z, z[:, None, :] + 0 * z[:, :, None]).sum() ** 2)),
    ("square(classpairsum(partner(z)*z))",
     lambda jnp, z: class_pairs(jnp, z, z[:, None, :] * z[:, :, None]) ** 2),
]


def reference(jax, total, x):
    """The value, gradient and diagonal of the Hessian of ``total(x)`` by JAX."""
    x = jax.numpy.asarray(x)
    hessian = np.asarray(jax.jit(jax.hessian(total))(x)).reshape(x.size, x.size)
    return float(total(x)), np.asarray(jax.grad(total)(x)), hessian.diagonal().reshape(x.shape)


def assert_matches(loss: lossdsl.CompiledLoss, wrt: str, inputs, expected) -> None:
    # one fused kernel (value, gradient, Hessian): the compile is most of the time
    value, gradient, hessian = loss.compute(True, (wrt,), (wrt,), inputs)
    expected_value, expected_gradient, expected_hessian = expected
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-10, atol=1e-12)
    assert np.isfinite(hessian).all()
    np.testing.assert_allclose(hessian, expected_hessian, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("text, formula", SAMPLE_CASES, ids=[c[0] for c in SAMPLE_CASES])
def test_pair_sums_reading_the_variable_at_the_partner(jax_x64, text, formula):
    jnp = jax_x64.numpy
    loss = lossdsl.compile(text, reduction="sum")
    inputs = {name: value for name, value in sample_inputs().items() if name in loss.inputs}
    others = {name: jnp.asarray(value) for name, value in inputs.items()}
    expected = reference(jax_x64, lambda s: formula(jnp, s, others).sum(), inputs["s"])
    assert_matches(loss, "s", inputs, expected)


@pytest.mark.parametrize("text, formula", CLASS_CASES, ids=[c[0] for c in CLASS_CASES])
def test_class_pair_sums_reading_the_variable_at_the_partner_class(jax_x64, text, formula):
    jnp = jax_x64.numpy
    loss = lossdsl.compile(text, reduction="sum")
    inputs = class_inputs()
    expected = reference(jax_x64, lambda z: formula(jnp, z).sum(), inputs["z"])
    assert_matches(loss, "z", inputs, expected)


def test_the_printed_second_derivative_is_not_zero():
    second = lossdsl.compile("square(pairsum(partner(s), g))", reduction="sum").derivative("s", 2)
    assert str(second) != "0"


@pytest.mark.parametrize("text", [
    "square(pairsum(partner(pairsum(partner(s), g)), g))",  # a pair sum read at the partners
    "log(sum(exp(pairsum(partner(s), g))))",  # read at the partners, through a sum
])
def test_forms_without_an_exact_hessian_are_refused(text):
    loss = lossdsl.compile(text, reduction="sum")
    inputs = {"s": SCORES, "g": GROUPS}
    assert np.isfinite(loss.value_and_grad("s", **inputs)[1]).all()
    with pytest.raises(LossError, match="exact Hessian"):
        loss.grad_and_hessian("s", **inputs)


def test_cuda_simulator_matches_the_cpu():
    data = ("data = {'s': rng.normal(size=7), 'g': np.array([0, 0, 0, 1, 1, 1, 1]), "
            "'y': np.array([0., 0., 1., 1., 1., 1., 1.])}")
    assert_simulated_cuda_matches_cpu(data, [
        "square(pairsum(partner(s), g))",
        "log(pairsum(exp(partner(s)), g))",
        "softplus(log(pairsum(where(y == partner(y), exp(partner(s)*s), 0), g))"
        " + log(pairsum(where(y != partner(y), exp(partner(s)*s), 0), g)))",
    ], "s", atol=1e-12)
    assert_simulated_cuda_matches_cpu("data = {'z': rng.normal(size=(3, 4))}", [
        "square(classpairsum(partner(z)))", "log1p(classpairsum(exp(partner(z))))",
    ], "z", atol=1e-12)
