"""Softmaxes over each sample's partners: a pair sum inside a nonlinear function (a log, a
softplus of two logsumexps) whose derivative the partners read, the structure of NT-Xent
(optax.losses.ntxent) and Keras' circle loss. Their exact diagonal Hessian needs, for each
pair (i, j), the derivative of the partner's pair sum with respect to sample i.

Each is checked against an independent reference: Keras' ``circle`` on embeddings of one
column (its similarity is the raw dot product, ``s_i s_j``), and hand-written JAX formulas
(masked N x N matrices) whose ``jax.grad`` and ``jax.hessian`` diagonal are the gradient's
and Hessian's references; with group ids and with all samples in one group, in float64 and
float32, on the serial and parallel CPU kernels and under the CUDA simulator.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from coupled import assert_simulated_cuda_matches_cpu

import lossdsl
from lossdsl.errors import LossError

GAMMA, MARGIN = 2.0, 0.25
TAU = 0.5

# Keras' circle loss (keras.losses.circle, remove_diagonal=True) of embeddings with one
# column: the similarity of a pair is s_i s_j, its distance d = max(1 - s_i s_j, 0); each
# sample's loss is softplus(logsumexp over its positives + logsumexp over its negatives)
CIRCLE = (
    f"def dist(s) = max(1 - s*partner(s), 0)\n"
    f"loss circle1 = softplus("
    f"log(pairsum(where(y == partner(y), exp(-{GAMMA}*max({MARGIN} + dist(s), 0)"
    f"*({MARGIN} - dist(s))), 0), g))"
    f" + log(pairsum(where(y != partner(y), exp({GAMMA}*max({1 + MARGIN} - dist(s), 0)"
    f"*({1 - MARGIN} - dist(s))), 0), g)))"
)
# NT-Xent's normalisation (optax.losses.ntxent) of a bounded similarity tanh(s_i) tanh(s_j):
# each positive pair (i, j) scores softplus(log(sum over i's negatives of exp(sim/tau)) -
# sim_ij/tau), i.e. -log(exp(sim_ij/tau) / (exp(sim_ij/tau) + i's negatives)), and the total
# is divided by the number of positive pairs
NTXENT = (
    f"def sim(s) = tanh(s)*partner(tanh(s))/{TAU}\n"
    "loss ntxent1 = count_as(pairsum(where(y == partner(y), "
    "softplus(log(pairsum(where(y != partner(y), exp(sim(s)), 0), g)) - sim(s)), 0), g), "
    "pairsum(y == partner(y), g))"
)


@functools.cache
def compiled(text: str, target: str = "cpu", reduction: str = "sum") -> lossdsl.CompiledLoss:
    return lossdsl.compile(text, target=target, reduction=reduction)


def data(seed: int, one_group: bool, n: int = 14) -> dict[str, np.ndarray]:
    """Labels of 3 classes, each sample with a positive and a negative partner in its group
    (the group ids shuffled; one constant id for one group)."""
    rng = np.random.default_rng(seed)
    y = np.tile([0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0], 2)[:n]
    g = np.zeros(n) if one_group else np.repeat([7.0, 3.0], n // 2)
    order = rng.permutation(n)
    return {"y": y[order], "g": g[order], "s": rng.normal(0.0, 0.7, n)}


def masks(d: dict) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (i, j), i != j, of a group: (positives, negatives)."""
    same = (d["g"][:, None] == d["g"][None, :]) & ~np.eye(d["g"].size, dtype=bool)
    positive = same & (d["y"][:, None] == d["y"][None, :])
    return positive, same & ~positive


def circle_reference(jnp, jax, d: dict):
    """Keras' circle loss of one-column embeddings, per sample, written in JAX from its
    source (keras.src.losses.losses.circle), within groups."""
    positive, negative = masks(d)

    def per_sample(s):
        distance = jnp.maximum(1 - s[:, None] * s[None, :], 0.0)
        pos = -GAMMA * jnp.maximum(MARGIN + distance, 0.0) * (MARGIN - distance)
        neg = GAMMA * jnp.maximum(1 + MARGIN - distance, 0.0) * (1 - MARGIN - distance)
        return jax.nn.softplus(jax.nn.logsumexp(jnp.where(positive, pos, -jnp.inf), axis=1)
                               + jax.nn.logsumexp(jnp.where(negative, neg, -jnp.inf), axis=1))
    return per_sample


def ntxent_reference(jnp, jax, d: dict):
    """optax.losses.ntxent's normalisation (its source) of the similarity tanh(s_i)
    tanh(s_j), within groups: the mean over positive pairs of -log softmax."""
    positive, negative = masks(d)

    def total(s):
        sim = jnp.tanh(s)[:, None] * jnp.tanh(s)[None, :] / TAU
        negatives = jnp.sum(jnp.where(negative, jnp.exp(sim), 0.0), axis=1, keepdims=True)
        log_softmax = sim - jnp.log(jnp.exp(sim) + negatives)
        return -jnp.sum(jnp.where(positive, log_softmax, 0.0)) / positive.sum()
    return total


def fused(loss: lossdsl.CompiledLoss, d: dict) -> list:
    """[value, gradient, Hessian diagonal] with respect to s, from one kernel."""
    return loss.compute(True, ("s",), ("s",), {k: d[k] for k in loss.inputs}, None)


def test_the_jax_circle_formula_is_keras_circle(jax_x64):
    keras = pytest.importorskip("keras")
    jnp = jax_x64.numpy
    d = data(0, one_group=True)
    expected = keras.losses.circle(d["y"].astype(np.int32), d["s"][:, None], gamma=GAMMA,
                                   margin=MARGIN, remove_diagonal=True)
    np.testing.assert_allclose(circle_reference(jnp, jax_x64, d)(d["s"]),
                               np.asarray(expected), rtol=1e-5, atol=1e-6)  # keras: float32
    # and lossdsl's, per sample, is the same as Keras' (float32) and the JAX formula's
    values = compiled(CIRCLE, reduction="none")(**{k: d[k] for k in ("y", "s", "g")})
    np.testing.assert_allclose(values, np.asarray(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("one_group", [True, False], ids=["one group", "groups"])
@pytest.mark.parametrize("name", ["circle", "ntxent"])
def test_values_gradients_and_exact_hessians_are_jax_autodiff(jax_x64, name, one_group):
    jnp = jax_x64.numpy
    d = data(1, one_group)
    if name == "circle":
        per_sample = circle_reference(jnp, jax_x64, d)
        text, reference = CIRCLE, lambda s: jnp.sum(per_sample(s))
        loss = compiled(text)
    else:
        text, reference = NTXENT, ntxent_reference(jnp, jax_x64, d)
        loss = compiled(text, reduction="mean")  # count_as: per positive pair
    value, gradient, hessian = fused(loss, d)
    assert value == pytest.approx(float(reference(d["s"])), rel=1e-12)
    np.testing.assert_allclose(gradient, jax_x64.grad(reference)(d["s"]), rtol=1e-10,
                               atol=1e-13)
    np.testing.assert_allclose(hessian, np.diag(jax_x64.jit(jax_x64.hessian(reference))(d["s"])),
                               rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("text, reduction", [(CIRCLE, "sum"), (NTXENT, "mean")],
                         ids=["circle", "ntxent"])
def test_float32_and_threads_agree_with_float64(text, reduction):
    d = data(2, one_group=False)
    serial = fused(compiled(text, reduction=reduction), d)
    threaded = fused(compiled(text, "parallel", reduction), d)
    for a, b in zip(threaded, serial):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    single = fused(compiled(text, "parallel", reduction),
                   {k: v.astype(np.float32) for k, v in d.items()})
    assert single[1].dtype == single[2].dtype == np.float32
    for a, b in zip(single, serial):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_near_identical_samples_keep_exact_derivatives(jax_x64):
    """Samples with the same score (identical one-column embeddings) and scores far apart:
    still the references' numbers."""
    jnp = jax_x64.numpy
    d = data(3, one_group=True)
    d["s"][:4] = 0.3
    d["s"][4] = 0.3 + 1e-9
    d["s"][5] = -3.0
    per_sample = circle_reference(jnp, jax_x64, d)
    reference = lambda s: jnp.sum(per_sample(s))  # noqa: E731
    value, gradient, hessian = fused(compiled(CIRCLE), d)
    assert value == pytest.approx(float(reference(d["s"])), rel=1e-12)
    np.testing.assert_allclose(gradient, jax_x64.grad(reference)(d["s"]), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(hessian, np.diag(jax_x64.jit(jax_x64.hessian(reference))(d["s"])),
                               rtol=1e-10, atol=1e-12)


def test_jax_prints_them_with_the_kernels_numbers(jax_x64):
    import lossdsl.jax

    d = data(4, one_group=False)
    arguments = {k: d[k] for k in ("y", "s", "g")}
    loss = lossdsl.jax.loss(CIRCLE, reduction="sum")
    value, gradient, hessian = fused(compiled(CIRCLE), d)
    assert float(loss(**arguments)) == pytest.approx(value, rel=1e-12)
    grad = jax_x64.grad(lambda s: loss(**{**arguments, "s": s}))
    np.testing.assert_allclose(grad(d["s"]), gradient, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(np.diag(jax_x64.jacfwd(grad)(d["s"])), hessian, rtol=1e-10,
                               atol=1e-13)


def test_cuda_kernels_match_the_cpu_under_the_simulator():
    assert_simulated_cuda_matches_cpu(
        "data = {'y': np.array([0., 1, 0, 1, 1, 0]), 'g': np.array([4, 4, 9, 9, 4, 9]), "
        "'s': rng.normal(0.0, 0.7, 6)}",
        [CIRCLE], "s", atol=1e-12)


def test_a_partner_read_coupled_through_a_sum_over_the_samples_has_no_exact_hessian():
    """The partner's log-normaliser depends on every sample through mean(s): its derivative
    at another sample is not a pair's alone, and the Hessian says so (the gradient is
    exact)."""
    loss = compiled("log(pairsum(exp(s*partner(s) + mean(s)), g))")
    d = {"s": np.random.default_rng(5).normal(size=6), "g": np.zeros(6)}
    assert np.all(np.isfinite(loss.grad("s", **d)))
    with pytest.raises(LossError, match="exact Hessian of a pair sum reading at the partners"):
        loss.grad_and_hessian("s", **d)
