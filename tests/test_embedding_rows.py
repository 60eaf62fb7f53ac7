"""Rows (N, D) within pair sums: ``rowsum(u * partner(v))`` of matrix inputs is the dot
product of u's row i and v's row j for each pair (i, j) of a group, so that NT-Xent
(optax.losses.ntxent: cosine similarities) and Keras' circle loss (dot products) are prelude
losses of embeddings, with exact gradients and diagonal Hessians with respect to the (N, D)
embeddings.

Each is checked against independent references: optax's and Keras' own functions (one
group: they know no groups), and hand-written JAX formulas (masked N x N matrices of the
pairs within groups) whose ``jax.grad`` and ``jax.hessian`` diagonal are the gradient's and
Hessian's references; with group ids and with one group, in float64 and float32, on the
serial and parallel CPU kernels and under the CUDA simulator.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from coupled import assert_simulated_cuda_matches_cpu
from sweeps import SAMPLING

import lossdsl
from lossdsl.errors import LossError, LossShapeError

TAU = 0.2  # exp(c / tau) up to e^5: the softmax far from uniform
NTXENT = f"loss ntxent_rows = ntxent(y, s, g, {TAU})"
CIRCLE = "loss circle_rows = circle(y, s, g)"  # Keras' defaults, gamma=80, margin=0.4
EPS = float(np.finfo(np.float64).eps)


@functools.cache
def compiled(text: str, target: str = "cpu", reduction: str = "sum") -> lossdsl.CompiledLoss:
    return lossdsl.compile(text, target=target, reduction=reduction)


def data(seed: int, one_group: bool, n: int = 12, width: int = 3,
         unit: bool = False) -> dict[str, np.ndarray]:
    """Labels of 3 classes, each sample with a positive and a negative partner in its group
    (group ids shuffled; one constant id for one group); ``unit``: rows of norm 1 (Keras'
    circle loss expects normalized embeddings)."""
    rng = np.random.default_rng(seed)
    y = np.tile([0.0, 1.0, 2.0], n)[:n]
    g = np.zeros(n) if one_group else np.repeat([7.0, 3.0], n // 2)
    order = rng.permutation(n)
    s = rng.normal(0.0, 1.0, (n, width))
    if unit:
        s /= np.linalg.norm(s, axis=1, keepdims=True)
    return {"y": y[order], "g": g[order], "s": s}


def masks(d: dict) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (i, j), i != j, of a group: (positives, negatives)."""
    same = (d["g"][:, None] == d["g"][None, :]) & ~np.eye(d["g"].size, dtype=bool)
    positive = same & (d["y"][:, None] == d["y"][None, :])
    return positive, same & ~positive


def ntxent_reference(jnp, d: dict):
    """optax.losses.ntxent's formula (its source) within groups: cosine similarities over
    tau, for each positive pair -log(e^c_ij / (e^c_ij + the row's negatives)), the mean over
    the positive pairs."""
    positive, negative = masks(d)

    def total(s):
        norms = jnp.sqrt(jnp.maximum(jnp.sum(s**2, axis=1), EPS))
        c = (s @ s.T) / (norms[:, None] * norms[None, :]) / TAU
        negatives = jnp.sum(jnp.where(negative, jnp.exp(c), 0.0), axis=1, keepdims=True)
        log_softmax = c - jnp.log(jnp.exp(c) + negatives)
        return -jnp.sum(jnp.where(positive, log_softmax, 0.0)) / positive.sum()
    return total


def circle_reference(jnp, jax, d: dict, gamma: float = 80.0, margin: float = 0.4):
    """Keras' circle loss (keras.src.losses.losses.circle, its source) per sample, within
    groups."""
    positive, negative = masks(d)

    def per_sample(s):
        distance = jnp.maximum(1 - s @ s.T, 0.0)
        pos = -gamma * jnp.maximum(margin + distance, 0.0) * (margin - distance)
        neg = gamma * jnp.maximum(1 + margin - distance, 0.0) * (1 - margin - distance)
        return jax.nn.softplus(jax.nn.logsumexp(jnp.where(positive, pos, -jnp.inf), axis=1)
                               + jax.nn.logsumexp(jnp.where(negative, neg, -jnp.inf), axis=1))
    return per_sample


def fused(loss: lossdsl.CompiledLoss, d: dict) -> list:
    """[value, gradient, Hessian diagonal] with respect to s, from one kernel: under reduction
    "none" the value is the sum of the per-sample values (the derivatives are the sum's)."""
    results = list(loss.compute(True, ("s",), ("s",), {k: d[k] for k in loss.inputs}, None))
    if loss.reduction == "none":
        results[0] = float(np.sum(results[0]))
    return results


def reference_of(name: str, jnp, jax, d: dict):
    if name == "ntxent":
        return ntxent_reference(jnp, d)
    per_sample = circle_reference(jnp, jax, d)
    return lambda s: jnp.sum(per_sample(s))


#: circle's reduction: on CI (tests/sweeps.py's SAMPLING) "none", whose fused kernel is the one
#: tests/test_library.py's circle case compiles (there, on CI: values, the gradient and the
#: Hessian diagonal in s), loaded from the disk cache instead of a second cold pair kernel
#: over rows (about 20 CPU-seconds); "sum" in full runs.
CIRCLE_REDUCTION = "none" if SAMPLING else "sum"


def loss_of(name: str, target: str = "cpu") -> lossdsl.CompiledLoss:
    # ntxent counts each sample's positive pairs: the mean is over the positive pairs
    return (compiled(NTXENT, target, "mean") if name == "ntxent"
            else compiled(CIRCLE, target, CIRCLE_REDUCTION))


def test_ntxent_is_optax_ntxent(jax_x64):
    optax = pytest.importorskip("optax")
    jnp = jax_x64.numpy
    d = data(0, one_group=True)
    expected = optax.losses.ntxent(jnp.asarray(d["s"]), jnp.asarray(d["y"].astype(int)), TAU)
    assert float(ntxent_reference(jnp, d)(d["s"])) == pytest.approx(float(expected), rel=1e-13)
    value, gradient, _ = fused(loss_of("ntxent"), d)
    assert value == pytest.approx(float(expected), rel=1e-13)
    expected_gradient = jax_x64.grad(lambda s: optax.losses.ntxent(
        s, jnp.asarray(d["y"].astype(int)), TAU))(jnp.asarray(d["s"]))
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-10, atol=1e-14)


def test_circle_is_keras_circle_at_its_default_gamma(jax_x64):
    keras = pytest.importorskip("keras")
    d = data(0, one_group=True, unit=True)
    expected = np.asarray(keras.losses.circle(d["y"].astype(np.int32), d["s"]))
    assert np.abs(expected).max() > 50  # gamma = 80: exp of the terms would overflow float32
    circle = compiled(CIRCLE, reduction="none")
    arguments = {k: d[k] for k in ("y", "s", "g")}
    # on CI the per-sample values of the fused kernel the other tests read (see
    # CIRCLE_REDUCTION); in full runs those of the kernel __call__ compiles
    values = (circle.compute(True, ("s",), ("s",), arguments, None)[0] if SAMPLING
              else circle(**arguments))
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)  # keras: float32
    jnp = jax_x64.numpy
    np.testing.assert_allclose(values, circle_reference(jnp, jax_x64, d)(d["s"]), rtol=1e-13)


# On CI (tests/sweeps.py's SAMPLING) one group only for ntxent and groups only for circle,
# and float32 and threads for ntxent only (tests/test_library.py checks circle's float32
# kernel): each case traces and compiles a JAX Hessian or a pair kernel over rows of its own
@pytest.mark.parametrize("name, one_group", [
    (name, one_group) for name in ("ntxent", "circle") for one_group in (True, False)
    if not SAMPLING or one_group == (name == "ntxent")],
    ids=lambda v: {True: "one group", False: "groups"}.get(v, v) if isinstance(v, bool) else v)
def test_values_gradients_and_exact_hessians_are_jax_autodiff(jax_x64, name, one_group):
    jnp = jax_x64.numpy
    d = data(1, one_group, unit=name == "circle")
    reference = reference_of(name, jnp, jax_x64, d)
    value, gradient, hessian = fused(loss_of(name), d)
    assert gradient.shape == hessian.shape == d["s"].shape
    assert value == pytest.approx(float(reference(d["s"])), rel=1e-12)
    scale = np.abs(gradient).max()
    np.testing.assert_allclose(gradient, jax_x64.grad(reference)(d["s"]), rtol=1e-10,
                               atol=1e-13 * scale)
    full = np.asarray(jax_x64.jit(jax_x64.hessian(reference))(d["s"]))
    expected = np.einsum("idid->id", full)  # d2 L / d s_id^2
    np.testing.assert_allclose(hessian, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())


def circle_defined_reference(jnp, jax, d: dict, gamma: float = 80.0, margin: float = 0.4):
    """Keras' circle loss summed over the samples, a sample without positives or without
    negatives (whose loss is softplus(-inf) = 0) written as 0 itself: Keras' and
    jax.nn.logsumexp's derivatives at an empty logsumexp are NaN."""
    positive, negative = masks(d)
    scored = positive.any(axis=1) & negative.any(axis=1)

    def total(s):
        distance = jnp.maximum(1 - s @ s.T, 0.0)
        pos = -gamma * jnp.maximum(margin + distance, 0.0) * (margin - distance)
        neg = gamma * jnp.maximum(1 + margin - distance, 0.0) * (1 - margin - distance)
        both = (jax.nn.logsumexp(jnp.where(positive, pos, -1e300), axis=1)
                + jax.nn.logsumexp(jnp.where(negative, neg, -1e300), axis=1))
        return jnp.sum(jnp.where(scored, jax.nn.softplus(jnp.where(scored, both, 0.0)), 0.0))
    return total


@pytest.mark.parametrize("name", ["ntxent", "circle"])
def test_samples_alone_or_without_negatives_have_finite_exact_derivatives(jax_x64, name):
    """A group of positives only, a sample alone in its group, samples without positives:
    their softmaxes are empty (log 0), their losses 0, and the derivatives stay the
    references' (no NaN from 0 * inf)."""
    jnp = jax_x64.numpy
    d = data(1, one_group=False, unit=name == "circle")
    d["y"][:3], d["g"][:3], d["g"][3] = 0.0, 5.0, 11.0
    reference = (ntxent_reference(jnp, d) if name == "ntxent"
                 else circle_defined_reference(jnp, jax_x64, d))
    value, gradient, hessian = fused(loss_of(name), d)
    assert value == pytest.approx(float(reference(d["s"])), rel=1e-12)
    np.testing.assert_allclose(gradient, jax_x64.grad(reference)(d["s"]), rtol=1e-10,
                               atol=1e-13 * np.abs(gradient).max())
    expected = np.einsum("idid->id", np.asarray(jax_x64.hessian(reference)(d["s"])))
    np.testing.assert_allclose(hessian, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("name", ["ntxent"] if SAMPLING else ["ntxent", "circle"])
def test_float32_and_threads_agree_with_float64(name):
    d = data(2, one_group=False, unit=name == "circle")
    serial = fused(loss_of(name), d)
    threaded = fused(loss_of(name, "parallel"), d)
    for a, b in zip(threaded, serial):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())
    single = fused(loss_of(name, "parallel"), {k: v.astype(np.float32) for k, v in d.items()})
    assert single[1].dtype == single[2].dtype == np.float32
    for a, b in zip(single, serial):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4 * np.abs(b).max())


def test_the_dot_product_of_two_inputs_and_its_transpose():
    """u's row i with v's row j: the gradient with respect to v collects the pairs where v is
    the partner's (sum_j w_ji u_jd), against the formula in NumPy."""
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=(7, 2)), rng.normal(size=(7, 2))
    g = np.array([1.0, 2, 1, 1, 2, 2, 1])
    loss = compiled("pairsum(exp(rowsum(u * partner(v))), g)")
    same = (g[:, None] == g[None, :]) & ~np.eye(7, dtype=bool)
    weights = np.where(same, np.exp(u @ v.T), 0.0)
    assert loss(u=u, v=v, g=g) == pytest.approx(weights.sum(), rel=1e-14)
    np.testing.assert_allclose(loss.grad("u", u=u, v=v, g=g), weights @ v, rtol=1e-13)
    np.testing.assert_allclose(loss.grad("v", u=u, v=v, g=g), weights.T @ u, rtol=1e-13)
    # d2/du_id2 of sum_ij exp(u_i . v_j) = sum_j exp(u_i . v_j) v_jd^2
    _, hessian = loss.grad_and_hessian("u", u=u, v=v, g=g)
    np.testing.assert_allclose(hessian, weights @ v**2, rtol=1e-13)


def test_jax_prints_them_with_the_kernels_numbers(jax_x64):
    import lossdsl.jax

    d = data(4, one_group=False)
    arguments = {k: d[k] for k in ("y", "s", "g")}
    loss = lossdsl.jax.loss(NTXENT, reduction="mean")
    value, gradient, hessian = fused(loss_of("ntxent"), d)
    assert float(loss(**arguments)) == pytest.approx(value, rel=1e-12)
    grad = jax_x64.grad(lambda s: loss(**{**arguments, "s": s}))
    np.testing.assert_allclose(grad(d["s"]), gradient, rtol=1e-10, atol=1e-14)
    full = np.asarray(jax_x64.jacfwd(grad)(d["s"]))
    np.testing.assert_allclose(np.einsum("idid->id", full), hessian, rtol=1e-9, atol=1e-13)


def test_cuda_kernels_match_the_cpu_under_the_simulator():
    assert_simulated_cuda_matches_cpu(
        "data = {'y': np.array([0., 1, 0, 1, 1, 0]), 'g': np.array([4, 4, 9, 9, 4, 9]), "
        "'s': rng.normal(0.0, 0.7, (6, 3))}",
        [NTXENT, CIRCLE], "s", atol=1e-12)


@pytest.mark.parametrize("text, inputs, error, message", [
    # a pair's rows are read as a dot product, nothing else
    ("pairsum(s * partner(s), g)", {}, LossShapeError, r"rowsum\(u \* partner\(v\)\)"),
    ("pairsum(rowsum(s * partner(s) * s), g)", {}, LossShapeError,
     r"rowsum\(u \* partner\(v\)\)"),
    ("pairsum(rowsum(partner(s)), g)", {}, LossShapeError, r"rowsum\(u \* partner\(v\)\)"),
    ("pairsum(rowsum(s * partner(s)) * s, g)", {}, LossShapeError, "only as the dot product"),
    ("rowsum(s * partner(s)) + pairsum(partner(x), g)", {"x": np.zeros(5)}, LossShapeError,
     "only defined within a pair sum"),
    # the two rows of a dot product have one width
    ("pairsum(rowsum(s * partner(v)), g)", {"v": np.zeros((5, 4))}, LossShapeError,
     "disagree"),
], ids=["no rowsum", "not a dot product", "a row at the partner", "rows meet pairs",
        "outside a pair sum", "widths differ"])
def test_what_rows_cannot_do_is_an_error_that_says_why(text, inputs, error, message):
    d = {"s": np.zeros((5, 3)), "g": np.zeros(5), **inputs}
    with pytest.raises(error, match=message):
        lossdsl.compile(text)(**d)


def test_a_pair_of_rows_coupled_through_a_sum_over_the_samples_has_no_exact_hessian():
    """Each pair reads mean(rowsum(s^2)), a sum over every sample: its derivative at another
    sample is not a pair's alone, and the Hessian says so (the gradient is exact)."""
    loss = compiled("pairsum(exp(rowsum(s * partner(s)) + mean(rowsum(s^2))), g)")
    rng = np.random.default_rng(5)
    d = {"s": rng.normal(size=(6, 2)), "g": np.zeros(6)}
    same = ~np.eye(6, dtype=bool)
    shift = np.mean(np.sum(d["s"]**2, axis=1))
    weights = np.where(same, np.exp(d["s"] @ d["s"].T + shift), 0.0)
    expected = 2 * weights @ d["s"] + weights.sum() * 2 * d["s"] / 6
    np.testing.assert_allclose(loss.grad("s", **d), expected, rtol=1e-13)
    with pytest.raises(LossError, match="exact Hessian of a pair sum of rows"):
        loss.grad_and_hessian("s", **d)


def test_a_maximum_over_the_partners_has_no_derivative_and_says_so():
    """pairmax's first maximum sits at a partner slot that no transposed pair names: its
    derivative is refused with what to write instead (pair_logsumexp holds it constant)."""
    loss = compiled("pairmax(rowsum(s * partner(s)), g)")
    d = {"s": np.random.default_rng(6).normal(size=(5, 2)), "g": np.zeros(5)}
    same = ~np.eye(5, dtype=bool)
    np.testing.assert_allclose(loss(**d), np.where(same, d["s"] @ d["s"].T, -np.inf).max(1).sum())
    with pytest.raises(LossError, match=r"stop_gradient\(pairmax"):
        loss.grad("s", **d)


def test_the_numpy_reference_evaluates_rows_in_pairs_as_the_kernels_do():
    """lossdsl.reference runs pairdot (the value) and pairmatvec (the gradient) on the
    binder's layout of the partners."""
    from lossdsl import reference
    from lossdsl.binding import pair_layout
    from lossdsl.ir.axes import Axis
    from lossdsl.passes import diff

    d = data(5, one_group=False)
    loss = compiled("pairsum(exp(rowsum(u * partner(v))), g)", reduction="none")
    u, v = d["s"], d["s"][::-1].copy()
    spec = loss.specialization({"u": 2, "v": 2, "g": 1}, False)
    offsets, partners = pair_layout("g", d["g"], None)
    sample = Axis(spec.shapes.input_axes["u"][0])
    layout = {"counts": {sample: u.shape[0], sample.classes(): u.shape[1]},
              "offsets": {sample.items(): offsets}, "partners": {sample.items(): partners}}
    arrays = {"u": u, "v": v, "g": d["g"]}
    (value,) = reference.evaluate([spec.objective.value], arrays, **layout)
    np.testing.assert_allclose(value, loss(**arrays), rtol=1e-13)
    for name in ("u", "v"):
        (gradient,) = reference.evaluate([diff.grad(spec.objective.total, spec.typed[name])],
                                         arrays, **layout)
        np.testing.assert_allclose(gradient, loss.grad(name, **arrays), rtol=1e-12)


def test_cuda_block_per_row_kernels_match_the_cpu_under_the_simulator():
    """The block-per-row kernels (forced for every width) split a row's partner sums of rows
    (pairmatvec, filled before the loop over the columns) over the block's threads as they
    split the columns: 11 columns over the simulator's 8 threads, some with two, some one."""
    assert_simulated_cuda_matches_cpu(
        "from lossdsl.backend.cuda import runtime as rt\n"
        "rt.ROW_BLOCK_MIN_WIDTH = 0\n"
        "data = {'y': np.array([0., 1, 0, 1, 1, 0]), 'g': np.array([4, 4, 9, 9, 4, 9]), "
        "'s': rng.normal(0.0, 0.7, (6, 11))}",
        [NTXENT], "s", atol=1e-12)
