"""lossdsl.jax's derivatives laid out like their input, against JAX's autodiff of the same
losses written by hand in jax.numpy.

The printed gradient and Hessian diagonal of an input have the axes of the IR, which are not
always the input's: a grouped loss's diagonal may be one value per group (one slot per group
in the printed array, which has to be read at each sample's group), and the derivative of an
(N, K) input that is the same for every class is one value per sample (N,), which NumPy's
broadcasting would line up with the classes (transposed where N == K, a shape error where
not; likewise a class pair sum's). Each case is the full ``jax.hessian`` / ``jax.grad`` /
``jax.jacfwd`` of a ``lossdsl.jax`` loss against the one of the formula written with ``jnp``
(groups as a mask of equal ids), eagerly and under ``jit``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lossdsl.jax

TOLERANCE = dict(rtol=1e-12, atol=1e-12)
GROUP_IDS = np.array([1, 0, 1, 2, 4, 4, 4])  # groups of 2, 1, 1 and 3 samples, not in runs
RNG = np.random.default_rng(7)
P = RNG.normal(size=GROUP_IDS.size)
Y = RNG.normal(size=GROUP_IDS.size)
C = RNG.normal(size=GROUP_IDS.size)


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


def _same_group(ids: np.ndarray) -> jax.Array:
    """[i, j] = 1 where samples i and j are in the same group."""
    return jnp.asarray(ids[:, None] == ids[None, :], jnp.float64)


def _groupsum_of_squares(p: jax.Array) -> jax.Array:
    # each sample's groupsum(p^2, g), summed over the samples
    return jnp.sum(_same_group(GROUP_IDS) @ p ** 2)


def _groupmean_of_errors(p: jax.Array) -> jax.Array:
    same = _same_group(GROUP_IDS)
    return jnp.sum(same @ (Y - p) ** 2 / jnp.sum(same, axis=1))


def _error_over_group_size(p: jax.Array) -> jax.Array:
    return jnp.sum((Y - p) ** 2 / jnp.sum(_same_group(GROUP_IDS), axis=1))


def _groupmax_times_square(p: jax.Array) -> jax.Array:
    # each sample's groupmax(c, g) times its own p^2
    group_max = jnp.max(jnp.where(_same_group(GROUP_IDS) > 0, C[None, :], -jnp.inf), axis=1)
    return jnp.sum(group_max * p ** 2)


# (loss text, the same total written by hand as a function of p); reduction="sum"
GROUPED = {
    "groupsum(p^2, g)": _groupsum_of_squares,
    "groupmean((y - p)^2, g)": _groupmean_of_errors,
    "(y - p)^2/groupsum(1 + 0*p, g)": _error_over_group_size,
    "groupmax(c, g)*p^2": _groupmax_times_square,
}


@pytest.fixture(scope="module")
def grouped_losses() -> dict[str, lossdsl.jax.JaxLoss]:
    return {text: lossdsl.jax.loss(text, reduction="sum") for text in GROUPED}


def _of_p(f: lossdsl.jax.JaxLoss) -> Callable[[jax.Array], jax.Array]:
    """The loss as a function of the prediction p alone (the other inputs fixed)."""
    others = {"y": Y, "g": GROUP_IDS, "c": C}
    return lambda p: f(p=p, **{name: others[name] for name in f.inputs if name != "p"})


@pytest.mark.parametrize("text", list(GROUPED))
def test_hessian_of_a_grouped_loss_is_read_at_each_samples_group(grouped_losses, text):
    f, reference = _of_p(grouped_losses[text]), GROUPED[text]
    np.testing.assert_allclose(f(P), reference(P), **TOLERANCE)
    np.testing.assert_allclose(jax.grad(f)(P), jax.grad(reference)(P), **TOLERANCE)
    expected = jax.hessian(reference)(P)
    np.testing.assert_allclose(jax.hessian(f)(P), expected, **TOLERANCE)
    np.testing.assert_allclose(jax.jit(jax.hessian(f))(P), expected, **TOLERANCE)


def test_hessian_of_a_grouped_loss_matches_the_kernels():
    """The CPU kernel's documented diagonal Hessian of the same loss: 2 x the group's size."""
    text = "groupsum(p^2, g)"
    kernel = lossdsl.compile(text, reduction="sum").hessian("p", p=P, g=GROUP_IDS)
    np.testing.assert_allclose(kernel, 2.0 * np.sum(GROUP_IDS[:, None] == GROUP_IDS, axis=1))
    f = _of_p(lossdsl.jax.loss(text, reduction="sum"))
    np.testing.assert_allclose(np.diag(jax.hessian(f)(P)), kernel, **TOLERANCE)


# ---------------------------------------------------------------- (N, K) inputs, (N,) derivatives

# (loss text, the total written by hand as a function of (w, z)): derivatives with respect
# to z the same for every class of a row (w_i, 2 w_i)
PER_ROW = {
    "rowsum(w*z)": lambda w, z: jnp.sum(w[:, None] * z),
    "rowsum(w*z^2)": lambda w, z: jnp.sum(w[:, None] * z ** 2),
}
SHAPES = [(3, 3), (2, 3), (4, 2)]  # N == K (transposed before), N != K (a raw ValueError)


@pytest.fixture(scope="module")
def per_row_losses() -> dict[tuple[str, str], lossdsl.jax.JaxLoss]:
    return {(text, reduction): lossdsl.jax.loss(text, reduction=reduction)
            for text in PER_ROW for reduction in ("sum", "mean", "none")}


def _of_z(f: lossdsl.jax.JaxLoss, w: np.ndarray) -> Callable[[jax.Array], jax.Array]:
    """The loss as a function of the scores z alone (the weights w fixed)."""
    return lambda z: f(w=w, z=z)


def _rows(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(sum(shape))
    return rng.normal(size=shape[0]), rng.normal(size=shape)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("text", list(PER_ROW))
def test_per_row_derivative_of_a_matrix_input_is_spread_along_its_classes(
        per_row_losses, text, shape):
    w, z = _rows(shape)

    def reference(z):
        return PER_ROW[text](w, z)

    for reduction, scale in (("sum", 1.0), ("mean", 1.0 / shape[0])):
        f = _of_z(per_row_losses[(text, reduction)], w)
        np.testing.assert_allclose(jax.grad(f)(z), scale * jax.grad(reference)(z), **TOLERANCE)
        np.testing.assert_allclose(jax.jit(jax.grad(f))(z), scale * jax.grad(reference)(z),
                                   **TOLERANCE)
        np.testing.assert_allclose(jax.hessian(f)(z), scale * jax.hessian(reference)(z),
                                   **TOLERANCE)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("text", list(PER_ROW))
def test_per_sample_jacobian_of_a_matrix_input(per_row_losses, text, shape):
    """reduction="none": row i's value depends on row i of z; the Jacobian (N, N, K)."""
    w, z = _rows(shape)
    per_sample = PER_ROW[text]

    def reference(z):
        return jax.vmap(lambda w_i, z_i: per_sample(w_i[None], z_i[None]))(w, z)

    f = _of_z(per_row_losses[(text, "none")], w)
    np.testing.assert_allclose(jax.jacfwd(f)(z), jax.jacfwd(reference)(z), **TOLERANCE)
    np.testing.assert_allclose(jax.jacrev(f)(z), jax.jacrev(reference)(z), **TOLERANCE)



def _carried(x: jax.Array) -> jax.Array:
    """``x - stop_gradient(x)``: 0, whose derivative is x's."""
    return x - jax.lax.stop_gradient(x)


def _class_pair_sum(each_pair: jax.Array) -> jax.Array:
    """``classpairsum`` of [i, k, c] over the pairs of distinct classes k != c of each row."""
    width = each_pair.shape[-1]
    return jnp.sum(each_pair * (1.0 - jnp.eye(width)), axis=(1, 2))


# loss text -> (the other input, whether it is a matrix (N, K) or a vector (N,), the total
# written by hand as a function of z and it): the derivative with respect to z is one value
# per row (the carrier's, the row maximum's of a row of ties)
CLASS_PAIRS = {
    "classpairsum(partner(z)*(y - stop_gradient(y)))":
        ("y", False, lambda z, y: jnp.sum(_class_pair_sum(
            z[:, None, :] * _carried(y)[:, None, None]))),
    "rowmax(-classpairsum(z) + (w - stop_gradient(w)))":
        ("w", True, lambda z, w: jnp.sum(jnp.max(
            -_class_pair_sum(jnp.broadcast_to(z[:, :, None], z.shape + z.shape[-1:]))[:, None]
            + _carried(w), axis=1))),
}


@pytest.mark.parametrize("shape", [(4, 4), (5, 3)])
@pytest.mark.parametrize("text", list(CLASS_PAIRS))
def test_class_pair_sums_of_matrix_inputs(text, shape):
    other, matrix, total = CLASS_PAIRS[text]
    rng = np.random.default_rng(shape[0])
    z, fixed = rng.normal(size=shape), rng.normal(size=shape if matrix else shape[:1])
    f = lossdsl.jax.loss(text, reduction="sum")

    def loss(x):
        return f(z=x, **{other: fixed})

    def reference(x):
        return total(x, fixed)

    np.testing.assert_allclose(loss(z), reference(z), **TOLERANCE)
    np.testing.assert_allclose(jax.grad(loss)(z), jax.grad(reference)(z), **TOLERANCE)
    np.testing.assert_allclose(jax.hessian(loss)(z), jax.hessian(reference)(z), **TOLERANCE)
