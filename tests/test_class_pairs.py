"""Sums over the pairs of a row's classes: ``classpairsum(e)`` with ``partner(x)`` reading x
at the partner class, and the prelude's ``multilabel_margin`` built on it.

Every number is compared with an independent reference: PyTorch's
``F.multilabel_margin_loss`` (value and gradient, its index targets built from the multi-hot
matrix), JAX's autodiff of the same formula written by hand with an (N, K, K) broadcast
(gradient and full Hessian, whose diagonal is compared), and central finite differences of
the value. Kernels are compiled once per module and shared.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lossdsl

MARGIN = "multilabel_margin(y, z)"
# a smooth summand: softplus of the pair's score gap, a factor read at the partner class
# alone, and a softmax read at the partner class (a row's normaliser within it), under an
# outer log1p that couples every pair of a row (its Hessian goes through the row's total)
SMOOTH = ("log1p(classpairsum(y*softplus(partner(z) - z)*exp(0.3*partner(z))"
          "*(1 + onehot(0, 5)*partner(softmax(z)))))")


def torch_targets(y: np.ndarray) -> torch.Tensor:
    """PyTorch's targets for multi-hot rows ``y``: each row's class indices, then -1."""
    targets = -np.ones(y.shape, dtype=np.int64)
    for row, labels in enumerate(y):
        classes = np.flatnonzero(labels)
        targets[row, :classes.size] = classes
    return torch.as_tensor(targets)


def torch_margin(y: np.ndarray, z: np.ndarray, reduction: str) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's value and the gradient of its summed values."""
    scores = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    value = F.multilabel_margin_loss(scores, torch_targets(y), reduction=reduction)
    value.sum().backward()
    return value.detach().numpy(), scores.grad.numpy()


def smooth_reference(y: np.ndarray, z, jnp):
    """``SMOOTH`` summed over the rows, written with an (N, K, K) broadcast: [n, k, c] is
    the pair of class k and its partner class c, the diagonal k = c left out."""
    width = z.shape[1]
    softmax = jnp.exp(z - jnp.max(z, axis=1, keepdims=True))
    softmax = softmax / jnp.sum(softmax, axis=1, keepdims=True)
    first = (jnp.arange(width) == 0).astype(z.dtype)
    gap = z[:, None, :] - z[:, :, None]
    softplus = jnp.maximum(gap, 0) + jnp.log1p(jnp.exp(-jnp.abs(gap)))
    pairs = (y[:, :, None] * softplus * jnp.exp(0.3 * z[:, None, :])
             * (1 + first[:, None] * softmax[:, None, :]))
    pairs = pairs * (1 - jnp.eye(width))
    return jnp.sum(jnp.log1p(jnp.sum(pairs, axis=(1, 2))))


@functools.cache
def smooth_reference_derivatives(jax) -> tuple[float, np.ndarray, np.ndarray]:
    """(value, gradient, full Hessian) of ``smooth_reference`` at ``smooth_inputs()``, by
    JAX's autodiff, jitted (op by op, jax.hessian of the (N, K, K) broadcast takes 10 s)
    and computed once for the tests that compare with it."""
    jnp = jax.numpy
    y, z = smooth_inputs()

    def value(v):
        return smooth_reference(y, v, jnp)

    at = jnp.asarray(z)
    full = np.asarray(jax.jit(jax.hessian(value))(at)).reshape(z.size, z.size)
    return float(value(at)), np.asarray(jax.jit(jax.grad(value))(at)), full


def ordinary(seed: int = 0, rows: int = 7, width: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Multi-hot targets (with a row of no target and one of every target) and scores."""
    rng = np.random.default_rng(seed)
    y = (rng.random((rows, width)) < 0.4).astype(np.float64)
    y[0], y[1] = 0.0, 1.0
    return y, rng.normal(0.0, 1.5, (rows, width))


def extreme() -> tuple[np.ndarray, np.ndarray]:
    """Scores of 1e4 and integer scores whose gaps sit exactly at the hinge (1 - gap = 0)."""
    y = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 1], [1, 0, 0, 0]], dtype=np.float64)
    z = np.array([[1e4, -1e4, 3.0, 2.0],     # target 1e4 clears every margin
                  [-1e4, 1e4, -1e4, 1e4],    # 1e4 non-target against 1e4 target: margin 1
                  [2.0, 1.0, 1.0, 0.0],      # gaps of exactly 1: on the hinge's kink
                  [0.0, 1.0, -1.0, 0.0]], dtype=np.float64)  # a tie (gap 0) and gap -1
    return y, z


@pytest.fixture(scope="module")
def margin_losses() -> dict[str, lossdsl.CompiledLoss]:
    return {reduction: lossdsl.compile(MARGIN, reduction=reduction)
            for reduction in ("mean", "sum", "none")}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("inputs", [ordinary, extreme], ids=["ordinary", "extreme"])
def test_margin_value_and_gradient_match_torch(margin_losses, reduction, inputs):
    y, z = inputs()
    expected_value, expected_gradient = torch_margin(y, z, reduction)
    loss = margin_losses[reduction]
    value, gradient = loss.value_and_grad("z", y=y, z=z)
    np.testing.assert_allclose(value, expected_value, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-13, atol=1e-15)


def test_margin_rows_without_pairs_are_zero(margin_losses):
    y, z = ordinary()
    values = margin_losses["none"](y=y, z=z)
    gradient = margin_losses["none"].grad("z", y=y, z=z)
    assert values[0] == 0.0 and values[1] == 0.0  # no target, every target: no pair
    assert np.all(gradient[:2] == 0.0)


def test_margin_default_reduction_is_torchs_mean():
    y, z = ordinary(3)
    expected, _ = torch_margin(y, z, "mean")
    np.testing.assert_allclose(lossdsl.compile(MARGIN)(y=y, z=z), expected, rtol=1e-13)


def central_hessian_diagonal(value, z: np.ndarray, step: float) -> np.ndarray:
    """d^2 value / dz_q^2 for every element q, by central differences of the value."""
    hessian = np.empty_like(z)
    centre = value(z)
    for q in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[q] += step
        down[q] -= step
        hessian[q] = (value(up) - 2 * centre + value(down)) / step**2
    return hessian


def test_margin_hessian_matches_finite_differences(margin_losses):
    # away from the kinks the hinge is linear in every score: the exact diagonal is 0
    y, z = ordinary(4)
    loss = margin_losses["sum"]
    expected = central_hessian_diagonal(lambda v: loss(y=y, z=v), z, 1e-4)
    _, hessian = loss.grad_and_hessian("z", y=y, z=z)
    np.testing.assert_allclose(hessian, expected, atol=1e-6)
    assert np.all(hessian == 0.0)


@pytest.fixture(scope="module")
def smooth_loss() -> lossdsl.CompiledLoss:
    return lossdsl.compile(SMOOTH, reduction="sum")


def smooth_inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    y = (rng.random((4, 5)) < 0.5).astype(np.float64)
    return y, rng.normal(0.0, 1.0, (4, 5))


def test_smooth_summand_matches_jax_autodiff(smooth_loss, jax_x64):
    y, z = smooth_inputs()
    expected_value, expected_gradient, full = smooth_reference_derivatives(jax_x64)
    # value, gradient and Hessian from one kernel (shared with the next test)
    actual_value, gradient, hessian = smooth_loss.compute(True, ("z",), ("z",),
                                                          {"y": y, "z": z})
    np.testing.assert_allclose(actual_value, expected_value, rtol=1e-13)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(hessian, full.diagonal().reshape(z.shape), rtol=1e-12,
                               atol=1e-14)


def test_smooth_hessian_matches_finite_differences(smooth_loss):
    y, z = smooth_inputs()
    expected = central_hessian_diagonal(lambda v: smooth_loss(y=y, z=v), z, 1e-4)
    hessian = smooth_loss.compute(True, ("z",), ("z",), {"y": y, "z": z})[2]
    np.testing.assert_allclose(hessian, expected, rtol=1e-5,
                               atol=1e-6)


def test_parallel_target_matches_torch():
    y, z = ordinary(6, rows=40)
    loss = lossdsl.compile(MARGIN, reduction="sum", target="parallel")
    expected_value, expected_gradient = torch_margin(y, z, "sum")
    value, gradient = loss.value_and_grad("z", y=y, z=z)
    np.testing.assert_allclose(value, expected_value, rtol=1e-13)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-13, atol=1e-15)


def test_cuda_target_matches_torch_and_jax(jax_x64):
    # the CUDA simulator (tests/conftest.py) where no GPU is present: small rows
    y, z = extreme()
    margin = lossdsl.compile(MARGIN, reduction="sum", target="cuda")
    expected_value, expected_gradient = torch_margin(y, z, "sum")
    value, gradient = margin.value_and_grad("z", y=y, z=z)
    np.testing.assert_allclose(value, expected_value, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(gradient), expected_gradient, rtol=1e-13, atol=1e-15)
    y, z = smooth_inputs()
    smooth = lossdsl.compile(SMOOTH, reduction="sum", target="cuda")
    _, hessian = smooth.grad_and_hessian("z", y=y, z=z)
    full = smooth_reference_derivatives(jax_x64)[2]
    np.testing.assert_allclose(np.asarray(hessian), full.diagonal().reshape(z.shape),
                               rtol=1e-12, atol=1e-14)


def test_jax_backend_matches_torch_and_autodiff(jax_x64):
    import lossdsl.jax

    jax, jnp = jax_x64, jax_x64.numpy
    y, z = ordinary(8)
    margin = lossdsl.jax.loss(MARGIN, reduction="mean")
    expected_value, expected_gradient = torch_margin(y, z, "mean")
    value, gradient = jax.value_and_grad(lambda v: margin(y=jnp.asarray(y), z=v))(jnp.asarray(z))
    np.testing.assert_allclose(float(value), expected_value, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(gradient), expected_gradient, rtol=1e-13, atol=1e-15)
    y, z = smooth_inputs()
    smooth = lossdsl.jax.loss(SMOOTH, reduction="sum")
    printed = lambda v: smooth(y=jnp.asarray(y), z=v)  # noqa: E731
    by_hand_value, _, by_hand_hessian = smooth_reference_derivatives(jax)
    np.testing.assert_allclose(float(printed(jnp.asarray(z))), by_hand_value, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(jax.jit(jax.hessian(printed))(jnp.asarray(z))),
                               by_hand_hessian.reshape(z.shape * 2), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("text, ranks, message", [
    ("partner(z) - z", {"z": 2}, "within a pair sum"),
    ("classpairsum(classpairsum(partner(z) - z)*partner(z))", {"z": 2}, "within the summand"),
    ("classpairsum(pairsum(partner(s), q)*partner(z))", {"z": 2, "s": 1, "q": 1},
     "within the summand"),
    ("classpairsum(partner(p) - p)", {"p": 1}, "must have classes"),
    ("classpairsum(rowsum(partner(z))*z)", {"z": 2}, "rowsum of values read at the partner"),
])
def test_misuse_is_a_positioned_loss_error(text, ranks, message):
    loss = lossdsl.compile(text)
    shapes = {2: (3, 4), 1: (3,)}
    inputs = {name: np.zeros(shapes[rank]) for name, rank in ranks.items()}
    with pytest.raises(lossdsl.LossError, match=message) as caught:
        loss(**inputs)
    assert caught.value.line is not None and caught.value.column is not None


def test_index_targets_given_as_rows_are_a_domain_error(margin_losses):
    y, z = ordinary()
    with pytest.raises(lossdsl.LossDomainError, match="must be 0 or 1"):
        margin_losses["mean"](y=torch_targets(y).numpy().astype(np.float64), z=z)


def far_apart(dtype) -> tuple[np.ndarray, np.ndarray]:
    """Scores at the ends of the dtype's range: pairs whose hinge is +-inf, and pairs left
    out (two targets, two non-targets) whose hinge is inf."""
    big = float(np.finfo(dtype).max) * 0.9
    y = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=dtype)
    z = np.array([[big, -big, -big],        # the target clears every margin: 0
                  [big, -big, -big],        # a target level with the non-target: 1/3
                  [big, -big, big],         # the target far below the non-targets: inf
                  [-big, big, -big]], dtype=dtype)  # as row 1, the targets swapped: 1/3
    return y, z


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_margin_pairs_left_out_add_zero_at_extreme_scores(margin_losses, dtype):
    # the pairs' mask multiplied the hinge, 0 * inf: NaN for 0 (torch) at scores of -+1e308
    y, z = far_apart(dtype)
    loss = margin_losses["none"]
    value, gradient = loss.value_and_grad("z", y=y, z=z)
    scores = torch.tensor(z, requires_grad=True)
    expected = F.multilabel_margin_loss(scores, torch_targets(y), reduction="none")
    expected.sum().backward()
    assert not np.any(np.isnan(value)) and not np.any(np.isnan(gradient))
    np.testing.assert_array_equal(value, expected.detach().numpy())
    np.testing.assert_allclose(gradient, scores.grad.numpy(), rtol=1e-6)
    assert value[0] == 0.0 and value[2] == np.inf
    _, hessian = loss.grad_and_hessian("z", y=y, z=z)
    assert np.all(hessian == 0.0)
    # the example
    single = loss(y=np.array([[1.0, 0.0]], dtype=dtype),
                  z=np.array([[np.finfo(dtype).max, -np.finfo(dtype).max]], dtype=dtype))
    assert single.tolist() == [0.0]


def test_a_class_pair_sum_of_rows_whose_samples_are_paired():
    """A matrix (N, K) whose samples a pair sum also pairs (refused before rows could meet
    pairs): each row's class pair sum is its own, the pair sum reads the partners' s."""
    rng = np.random.default_rng(0)
    z, s = rng.normal(size=(6, 3)), rng.normal(size=6)
    g = np.array([0.0, 0, 1, 1, 1, 0])
    loss = lossdsl.compile("classpairsum(partner(z))*s + pairsum(partner(s), g)",
                           reduction="none")
    same = (g[:, None] == g[None, :]) & ~np.eye(6, dtype=bool)
    pairs = 2 * z.sum(axis=1)  # sum over k of sum over c != k of z_ic, K = 3
    np.testing.assert_allclose(loss(z=z, s=s, g=g), pairs * s + same @ s, rtol=1e-13)
    np.testing.assert_allclose(loss.grad("z", z=z, s=s, g=g), np.repeat(2 * s[:, None], 3, 1),
                               rtol=1e-13)
    np.testing.assert_allclose(loss.grad("s", z=z, s=s, g=g), pairs + same.sum(axis=1),
                               rtol=1e-13)
