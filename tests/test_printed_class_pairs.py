"""Printed derivatives of class pair sums are loss text again.

``L.derivative(x)`` prints the gradient as loss-language source. Within a class pair sum it
must write what the language reads: ``partnersum(e)`` for each class's sum over its partner
classes (not ``rowsum``), ``classnum()`` for the class index and ``partner(classnum())`` for
the partner class's (not ``class_index(0)`` for both, which read as an always-false
condition), ``classpairsum(e)`` for a row's total. Each printed gradient is compiled again as
a loss (``N`` and ``K`` given as numbers) and must give the numbers of the kernel's gradient,
and the first expressions' gradients are also checked against JAX's autodiff of the formula
written by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

import lossdsl

ROWS, CLASSES = 5, 4
RNG = np.random.default_rng(26)
Z = RNG.normal(size=(ROWS, CLASSES))
Y = (RNG.random((ROWS, CLASSES)) < 0.5).astype(float)

# (loss, inputs other than z)
CASES = [
    # a cumulative sum over a row's columns, x + sum of the columns below: the case
    ("rowsum(z*partnersum(where(partner(classnum()) < classnum(), partner(z), 0)))", ()),
    ("rowsum(partnersum(partner(z)*z))", ()),
    ("classpairsum(softplus(partner(z) - z)*y)", ("y",)),
    ("classpairsum(exp(partner(z) - z)*(partner(classnum()) > classnum()))", ()),
    ("rowsum(partnersum(partner(softmax(z))*y))", ("y",)),
    ("multilabel_margin(y, z)", ("y",)),
    ("rowsum(z*partnersum(where(partner(y) > y, softplus(partner(z) - z), 0)))", ("y",)),
]


def inputs_of(names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {"z": Z, **{name: Y for name in names}}


@pytest.mark.parametrize("text, others", CASES, ids=[text for text, _ in CASES])
def test_printed_gradient_compiles_to_the_kernels_gradient(text, others):
    loss = lossdsl.compile(text)
    printed = str(loss.derivative("z"))
    assert "class_index" not in printed and "at_partner" not in printed
    given = inputs_of(others)
    again = lossdsl.compile(printed, reduction="none")
    sizes = {name: float(size) for name, size in (("N", ROWS), ("K", CLASSES))
             if name in again.inputs}
    values = again(**{name: given[name] for name in again.inputs if name in given}, **sizes)
    np.testing.assert_allclose(np.broadcast_to(values, Z.shape), loss.grad("z", **given),
                               rtol=1e-12, atol=1e-15)


def test_the_printed_condition_tells_the_partner_class_from_the_class():
    loss = lossdsl.compile(CASES[0][0])
    printed = str(loss.derivative("z"))
    assert "partner(classnum()) < classnum()" in printed
    assert "classnum() < partner(classnum())" in printed
    assert "partnersum(" in printed and "rowsum(" not in printed


def test_the_partner_classes_are_counted_as_k_minus_1():
    # a summand without a partner read counts K - 1 times per class
    loss = lossdsl.compile("classpairsum(z*z)", reduction="sum")
    printed = str(loss.derivative("z"))
    assert "K - 1" in printed
    again = lossdsl.compile(printed, reduction="none")
    np.testing.assert_allclose(again(z=Z, K=float(CLASSES)), 2 * (CLASSES - 1) * Z,
                               rtol=1e-14)


def jax_gradient(text: str, others: tuple[str, ...]) -> np.ndarray:
    """JAX's gradient of the first cases written by hand with an (N, K, K) broadcast
    ([n, k, c]: class k and its partner class c, the diagonal left out), averaged over the
    rows and classes as the default reduction does."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    off_diagonal = 1 - jnp.eye(CLASSES)
    below = (jnp.arange(CLASSES)[None, :] < jnp.arange(CLASSES)[:, None]).astype(float)

    def cumulative(z):  # [k, c]: c below k
        return jnp.mean(jnp.sum(z * jnp.sum(below[None] * z[:, None, :], axis=2), axis=1))

    def product(z):
        pairs = z[:, None, :] * z[:, :, None] * off_diagonal
        return jnp.mean(jnp.sum(pairs, axis=(1, 2)))

    def softplus_gap(z):
        gap = z[:, None, :] - z[:, :, None]
        pairs = jax.nn.softplus(gap) * jnp.asarray(Y)[:, :, None] * off_diagonal
        return jnp.mean(jnp.sum(pairs, axis=(1, 2)))

    formulas = {CASES[0][0]: cumulative, CASES[1][0]: product, CASES[2][0]: softplus_gap}
    with jax.enable_x64(True):
        return np.asarray(jax.grad(formulas[text])(jnp.asarray(Z)))


@pytest.mark.parametrize("text, others", CASES[:3], ids=[text for text, _ in CASES[:3]])
def test_printed_gradient_matches_jax(text, others):
    printed = str(lossdsl.compile(text).derivative("z"))
    again = lossdsl.compile(printed, reduction="none")
    given = inputs_of(others)
    values = again(**{name: given[name] for name in again.inputs if name in given},
                   N=float(ROWS))
    np.testing.assert_allclose(np.broadcast_to(values, Z.shape), jax_gradient(text, others),
                               rtol=1e-12, atol=1e-15)


# ------------------------------------------------- per-class vectors within class pair sums
#
# classvec(m) within a class pair sum's summand, at the class k or read at the partner class
# c (partner(classvec(m))): its derivatives read it at the other class of each pair, which
# the kernels read at column c of m, so a nonlinear function of the row's total keeps its
# exact Hessian (it was refused as depending "through a row reduction").
M = np.array([0.5, 1.5, 2.0, 0.25])
PER_CLASS = {
    "log1p(classpairsum(softplus(partner(z) - z)*classvec(m)))": False,
    "log1p(classpairsum(softplus(partner(z) - z)*partner(classvec(m))))": True,
}


def per_class_reference(at_partner: bool):
    """JAX's value, gradient and Hessian diagonal of the cases above summed over the rows,
    written with an (N, K, K) broadcast ([n, k, c]: class k and its partner class c)."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    with jax.enable_x64(True):
        weights = jnp.asarray(M)[None, None, :] if at_partner else jnp.asarray(M)[None, :, None]
        off_diagonal = 1 - jnp.eye(CLASSES)

        def of(z):
            gap = z[:, None, :] - z[:, :, None]
            pairs = jax.nn.softplus(gap) * weights * off_diagonal
            return jnp.sum(jnp.log1p(jnp.sum(pairs, axis=(1, 2))))

        z = jnp.asarray(Z)
        full = np.asarray(jax.jit(jax.hessian(of))(z)).reshape(Z.size, Z.size)
        return float(of(z)), np.asarray(jax.grad(of)(z)), full.diagonal().reshape(Z.shape)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
@pytest.mark.parametrize("text", list(PER_CLASS))
def test_per_class_vectors_in_class_pairs_match_jax(text, target):
    loss = lossdsl.compile(text, reduction="sum", target=target)
    value, gradient, hessian = per_class_reference(PER_CLASS[text])
    np.testing.assert_allclose(loss(z=Z, m=M), value, rtol=1e-13)
    np.testing.assert_allclose(loss.grad("z", z=Z, m=M), gradient, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(loss.hessian("z", z=Z, m=M), hessian, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("text", list(PER_CLASS))
def test_per_class_vectors_in_class_pairs_on_the_jax_backend(jax_x64, text):
    import lossdsl.jax

    jnp = jax_x64.numpy
    printed = lossdsl.jax.loss(text, reduction="sum")
    value, gradient, _ = per_class_reference(PER_CLASS[text])
    got, got_gradient = jax_x64.value_and_grad(
        lambda z: printed(z=z, m=jnp.asarray(M)))(jnp.asarray(Z))
    np.testing.assert_allclose(float(got), value, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(got_gradient), gradient, rtol=1e-12, atol=1e-15)


def test_printed_derivative_reads_the_vector_at_the_partner_class():
    text = "classpairsum(softplus(partner(z) - z)*classvec(m))"
    printed = str(lossdsl.compile(text, reduction="sum").derivative("z"))
    assert "partner(classvec(m))" in printed
    again = lossdsl.compile(printed, reduction="none")
    np.testing.assert_allclose(again(z=Z, m=M),
                               lossdsl.compile(text, reduction="sum").grad("z", z=Z, m=M),
                               rtol=1e-13)
