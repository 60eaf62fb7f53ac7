"""Defects of the contrastive losses (``ntxent``, ``circle``, ``pair_logsumexp``) found by a
journey through (N, D) embedding rows inside pair sums.

* A NaN (or inf) embedding gave a loss of 0: ``pair_logsumexp`` told an empty pair sum by
  ``sum > 0``, which a NaN sum fails, so it took the empty branch (-inf, softplus 0). NaN now
  propagates to the value, the gradient and the Hessian, as optax.losses.ntxent and
  keras.losses.circle give it, while an empty pair row keeps its -inf (a loss of 0).
* Integer labels compared inside the loss (``y == partner(y)``, ``where(y == 3, ...)``) were
  rounded by the kernel's float dtype: 2**24 and 2**24 + 1 are one float32, so NT-Xent made
  every pair a positive. Such inputs are refused on every path (general, printed and
  interpreted small-call plans, parallel, Dask, lossdsl.torch).
* ``ntxent(y, s, 0)`` was refused at the prelude's ``pairmax``, which the user never wrote:
  the error now points at the user's argument, names the parameter and says what to write.

References: optax.losses.ntxent, and hand-written masked JAX formulas (keras.losses.circle's,
checked against Keras in tests/test_embedding_pairs.py) whose jax.grad and jax.hessian give
the derivatives.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from test_library import CASES, fused_outputs

import lossdsl
from lossdsl.errors import LossDomainError, LossError

EPS64 = float(np.finfo(np.float64).eps)


@functools.cache
def compiled(text: str, reduction: str = "none") -> lossdsl.CompiledLoss:
    return lossdsl.compile(text, reduction=reduction)


def kernel_results(text: str, **arrays: np.ndarray) -> list:
    """[values, gradient, Hessian diagonal] with respect to s (the summed loss's derivatives)
    from one kernel: each kernel of ntxent and circle is a large compile, and this one is
    tests/test_library.py's (reduction "none", the outputs its case of ``text`` asks for), so
    that one file loads what the other compiled."""
    case = next(case for case in CASES if case.call == text)
    # and test_library's dtypes (float labels, integer groups), which the compiled
    # signature is of; labels float64 would round are left as they are (refused)
    if np.issubdtype(arrays["y"].dtype, np.integer) and np.abs(arrays["y"]).max() < 2**24:
        arrays = {**arrays, "y": arrays["y"].astype(np.float64)}
    if np.all(arrays["g"] == np.round(arrays["g"])):
        arrays = {**arrays, "g": arrays["g"].astype(np.int64)}
    gradients, hessians = fused_outputs(case)
    results = compiled(text).compute(True, gradients, hessians, arrays, None)
    return [results[0], results[1 + gradients.index("s")],
            results[1 + len(gradients) + hessians.index("s")]]


def fused(text: str, **arrays: np.ndarray) -> list:
    """[value, gradient, Hessian diagonal] of the summed loss (see :func:`kernel_results`)."""
    values, gradient, hessian = kernel_results(text, **arrays)
    return [np.sum(values), gradient, hessian]


def embeddings(seed: int, n: int = 7, d: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, d))
    return s / np.linalg.norm(s, axis=1, keepdims=True)


def masks(y: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's positives (same label, same group, not itself) and negatives."""
    same = (g[:, None] == g[None, :]) & ~np.eye(len(y), dtype=bool)
    positive = same & (y[:, None] == y[None, :])
    return positive, same & ~positive


def ntxent_total(y: np.ndarray, g: np.ndarray, tau: float = 0.07):
    """The sum over the positive pairs of optax's NT-Xent term, a function of s (JAX)."""
    import jax.numpy as jnp

    positive, negative = masks(y, g)

    def total(s):
        norms = jnp.sqrt(jnp.maximum(jnp.sum(s**2, axis=1), EPS64))
        c = (s @ s.T) / (norms[:, None] * norms[None, :]) / tau
        negatives = jnp.sum(jnp.where(negative, jnp.exp(c), 0.0), axis=1, keepdims=True)
        return jnp.sum(jnp.where(positive, jnp.log(jnp.exp(c) + negatives) - c, 0.0))
    return total


def circle_samples(y: np.ndarray, g: np.ndarray, gamma: float = 80.0, margin: float = 0.4):
    """keras.losses.circle of each sample (0 without positives or negatives), a function of s
    (JAX): softplus of the logsumexps over its positives and over its negatives."""
    import jax
    import jax.numpy as jnp

    positive, negative = masks(y, g)
    scored = positive.any(axis=1) & negative.any(axis=1)

    def per_sample(s):
        d = jnp.maximum(1 - s @ s.T, 0.0)
        p = -gamma * jnp.maximum(margin + d, 0.0) * (margin - d)
        n = gamma * jnp.maximum(1 + margin - d, 0.0) * (1 - margin - d)
        both = (jax.nn.logsumexp(jnp.where(positive, p, -jnp.inf), axis=1, where=positive)
                + jax.nn.logsumexp(jnp.where(negative, n, -jnp.inf), axis=1, where=negative))
        return jnp.where(scored, jax.nn.softplus(jnp.where(scored, both, 0.0)), 0.0)
    return per_sample


def hessian_diagonal(f, s: np.ndarray) -> np.ndarray:
    import jax
    import jax.numpy as jnp

    return np.einsum("idid->id", np.asarray(jax.hessian(f)(jnp.asarray(s))))


# ------------------------------------------------------------------------------ NaN and inf

def test_a_nan_embedding_gives_optax_s_nan_not_zero(jax_x64):
    """The journey's reproducer: a NaN coordinate made ntxent 0.0 (optax: nan); its value,
    gradient and Hessian are NaN now, per sample too."""
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    s = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8], [np.nan, 1.0]])
    y, g = np.array([0, 0, 1, 1, 2]), np.zeros(5)
    assert np.isnan(float(optax.losses.ntxent(jnp.asarray(s), jnp.asarray(y))))
    value, gradient, hessian = fused("ntxent(y, s, g)", y=y, s=s, g=g)
    assert np.isnan(value) and np.isnan(gradient).any() and np.isnan(hessian).any()
    # without the NaN row: optax's mean over the 4 positive pairs
    value, _, _ = fused("ntxent(y, s, g)", y=y[:4], s=s[:4], g=g[:4])
    assert value / 4 == pytest.approx(
        float(optax.losses.ntxent(jnp.asarray(s[:4]), jnp.asarray(y[:4]))), rel=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_embeddings_propagate_as_the_references(jax_x64, bad):
    """circle per sample (Keras' NaN/inf pattern: an inf row gives inf at itself and NaN at
    samples that pair it with another inf product), and ntxent's total, with their gradients,
    against JAX's autodiff of the masked formulas, NaN where they are NaN."""
    import jax

    y, g = np.array([0, 1, 2, 0, 1, 2, 0]), np.zeros(7)
    s = embeddings(3)
    s[3, 1] = bad
    per_sample = circle_samples(y, g)
    found = kernel_results("circle(y, s, g)", y=y, s=s, g=g)[0]
    expected = np.asarray(per_sample(s))
    assert not np.isfinite(expected).all()  # the reference is not finite either
    np.testing.assert_allclose(found, expected, rtol=1e-10)  # NaN where NaN, inf where inf
    assert np.isnan(fused("circle(y, s, g)", y=y, s=s, g=g)[1]).any()
    total = ntxent_total(y, g)
    value, gradient, _ = fused("ntxent(y, s, g)", y=y, s=s, g=g)
    assert np.isnan(value) and np.isnan(float(total(s)))
    expected_gradient = np.asarray(jax.grad(total)(s))
    assert np.isnan(gradient[np.isnan(expected_gradient)]).all()


def test_an_empty_pair_row_keeps_its_zero_and_finite_derivatives(jax_x64):
    """Samples without negatives (one label in their group) or without any partner (alone)
    score 0 with derivatives 0: the empty sum is still -inf inside, never NaN."""
    import jax

    y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    g = np.array([5, 5, 5, 5, 2, 2, 9, 4])  # group 2: no negatives; 9 and 4: alone
    s = embeddings(4, n=8)
    total = ntxent_total(y, g)
    value, gradient, hessian = fused("ntxent(y, s, g)", y=y, s=s, g=g)
    assert value == pytest.approx(float(total(s)), rel=1e-12)
    np.testing.assert_allclose(gradient, jax.grad(total)(s), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(hessian, hessian_diagonal(total, s),
                               rtol=1e-9, atol=1e-12)
    assert not gradient[4:].any()
    per_sample = circle_samples(y, g)
    value, gradient, hessian = fused("circle(y, s, g)", y=y, s=s, g=g)
    summed = lambda s: per_sample(s).sum()  # noqa: E731
    assert value == pytest.approx(float(summed(s)), rel=1e-12)
    np.testing.assert_allclose(gradient, jax.grad(summed)(s), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(hessian, hessian_diagonal(summed, s), rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------- labels the dtype rounds

S4 = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, -0.6]])


@pytest.mark.parametrize("dtype, base", [(np.float32, 2**24), (np.float64, 2**53)])
def test_labels_the_kernel_dtype_rounds_are_refused(dtype, base):
    """The journey's reproducer: labels 2**24 and 2**24 + 1 are one float32 (every pair a
    positive, loss 0.0); 2**53 and 2**53 + 1 one float64. Refused, naming the label; labels
    beyond 2**53 that float64 holds exactly (even ones up to 2**54) compute as 0/1 labels."""
    y = np.array([base, base + 1, base, base + 1])
    s, g = S4.astype(dtype), np.zeros(4, dtype)
    with pytest.raises(LossDomainError, match=r"'y' is compared.*numpy.unique") as caught:
        fused("ntxent(y, s, g)", y=y, s=s, g=g)
    assert caught.value.index == 1 and caught.value.input == "y"
    with pytest.raises(LossDomainError, match="'y' is compared"):
        compiled("ntxent(y, s, g)")(y=y, s=s, g=g)  # refused before a kernel is built
    if dtype == np.float32:
        return  # (a float32 kernel of ntxent is one more large compile)
    exact = np.array([base, base + 2, base, base + 2])
    found = fused("ntxent(y, s, g)", y=exact, s=s, g=g)[0]
    assert found == fused("ntxent(y, s, g)", y=exact - base, s=s, g=g)[0] > 0


def test_computed_comparisons_of_large_integer_targets_are_not_refused():
    """Only identities are refused: an integer target compared through arithmetic
    (huber's |y - p| < delta) or with another input (y > p) rounds as its arithmetic does."""
    y = np.array([2**24 + 1, 2**24 + 3], np.int64)
    p = np.array([2**24, 2**24 + 8], np.float32)
    for text in ("huber(y, p, 1.0)", "where(y > p, y - p, 2*(p - y))"):
        expected = lossdsl.compile(text)(y=y.astype(np.float32), p=p)
        assert lossdsl.compile(text)(y=y, p=p) == expected, text


WHERE = "where(y == 3, (p - 1)^2, p^2)"


def where_reference(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.where(y == 3, (p - 1) ** 2, p**2)))


@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_the_small_call_plans_refuse_them_after_a_good_call(target):
    """A comparison outside pair sums (where(y == 3, ...)) on the fast path: a printed plan,
    then the same plan interpreted, answer a good call and leave a rounded one to the general
    path, which refuses it; an int32 label in a float64 kernel is never checked."""
    p = np.linspace(-1, 1, 6).astype(np.float32)
    good = np.array([3, 1, 3, 0, 2, 3])
    rounded = np.array([3, 1, 3, 0, 2**24 + 3, 3])  # 2**24 + 3 reads as 2**24 + 4 in float32
    loss = lossdsl.compile(WHERE, target=target)
    for _ in range(2):  # the general path, then the plan
        assert loss(y=good, p=p) == pytest.approx(where_reference(good, p), rel=1e-6)
    (plan,) = [plan for plan in loss._plans.values() if plan is not None]
    assert plan.runner is not None
    with pytest.raises(LossDomainError, match=r"'y' is compared.*float32.*float64") as caught:
        loss(y=rounded, p=p)
    assert caught.value.index == 4 and plan.compared == ("y",)
    plan.runner = None  # interpreted
    assert loss(y=good, p=p) == pytest.approx(where_reference(good, p), rel=1e-6)
    with pytest.raises(LossDomainError, match="'y' is compared"):
        loss(y=rounded, p=p)
    # float64 holds every int32: such a plan checks nothing, and computes as the reference
    loss64 = lossdsl.compile(WHERE, target=target)
    wide = rounded.astype(np.int32)
    for _ in range(2):
        assert loss64(y=wide, p=p.astype(np.float64)) == pytest.approx(
            where_reference(wide, p.astype(np.float64)), rel=1e-13)
    assert all(plan.compared == () for plan in loss64._plans.values() if plan is not None)


def test_lossdsl_torch_refuses_them_too():
    torch = pytest.importorskip("torch")
    import lossdsl.torch

    criterion = lossdsl.torch.loss(WHERE)
    p = torch.linspace(-1, 1, 6, requires_grad=True)  # float32
    with pytest.raises(LossDomainError, match="'y' is compared"):
        criterion(y=torch.tensor([3, 1, 3, 0, 2**24 + 3, 3]), p=p)
    good = np.array([3, 1, 3, 0, 2, 3])
    assert float(criterion(y=torch.tensor(good), p=p)) == pytest.approx(
        where_reference(good, p.detach().numpy()), rel=1e-6)


def test_dask_refuses_them():
    da = pytest.importorskip("dask.array")
    import lossdsl.dask

    p = da.from_array(np.linspace(-1, 1, 6).astype(np.float32), chunks=3)
    y = da.from_array(np.array([3, 1, 3, 0, 2**24 + 3, 3]), chunks=3)
    loss = lossdsl.dask.compile(WHERE)
    with pytest.raises(LossDomainError, match="'y' is compared"):
        loss(y=y, p=p)
    good = np.array([3, 1, 3, 0, 2, 3])
    assert float(loss(y=da.from_array(good, chunks=3), p=p).compute()) == pytest.approx(
        where_reference(good, np.linspace(-1, 1, 6).astype(np.float32)), rel=1e-6)


# ------------------------------------------------------------ group ids written as a number

@pytest.mark.parametrize("text, written", [
    ("ntxent(y, s, 0)", "ntxent(y, s, g)"),
    ("circle(y, s, 0, gamma=4)", "circle(y, s, g, gamma=4)"),
    ("ntxent(y, s, g=1 + 0*y)", "ntxent(y, s, g=g)"),
])
def test_group_ids_written_as_a_number_are_refused_at_the_users_call(text, written):
    """ntxent(y, s, 0) (one group, as optax and Keras take two inputs) was refused at the
    prelude's pairmax (prelude/core.loss:24:63), which the user never wrote: now at the
    user's argument, naming the def's parameter and its declaration, with the call to write."""
    with pytest.raises(LossError, match="must be an input") as caught:
        lossdsl.compile(text)
    error = caught.value
    assert error.file is None and error.column == 1 + text.index("0" if "1 +" not in text else "1")
    assert f"{text.split('(')[0]}'s 'g' must be an input" in error.message
    assert "batch.loss" in error.message and written in error.hint
    assert ("numpy.zeros(N)" in error.hint) == ("1 +" not in text)
    assert lossdsl.compile(written.replace("g=g", "g"))  # it compiles
