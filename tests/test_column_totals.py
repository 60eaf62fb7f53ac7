"""Column totals over all the samples: ``colsum(e)``, and the generalized Dice loss whose class
weights are pooled over a batch of images (``generalized_dice_batch``), as optax's.

``colsum(e)`` gives every row each column's total of ``e`` over all the samples (of a vector,
the total). Its values, gradients and exact diagonal Hessians are compared with JAX's
autodiff of the same formulas written by hand (``jax.grad``, the diagonal of
``jax.hessian``) on every target (CPU serial and parallel, CUDA in Numba's simulator, the
printed JAX backend). The pooled Dice loss is compared with
``optax.losses.multiclass_generalized_dice_loss`` of the whole ``(B, P, K)`` batch in value,
gradient and Hessian diagonal, on probabilities and on logits, with and without the
background class. Kernels are compiled once per module and shared.
"""

from __future__ import annotations

import numpy as np
import pytest

import lossdsl

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

ROWS, CLASSES = 6, 3
RNG = np.random.default_rng(59)
Z = RNG.normal(size=(ROWS, CLASSES))
V = RNG.normal(size=ROWS)
Y = RNG.random((ROWS, CLASSES))


# loss text -> (its inputs, the variable, the formula summed over the samples in JAX)
def _matrix_of_squares(z, y, v):
    return jnp.sum(z * jnp.sum(z * z, axis=0))


def _vector_total(z, y, v):
    return jnp.sum(v * jnp.sum(v ** 2) + jnp.sin(jnp.sum(v)))


def _softmax_total(z, y, v):
    softmax = jax.nn.softmax(z, axis=1)
    return jnp.sum(y / (jnp.sum(softmax, axis=0) ** 2 + 1))


def _with_a_sum(z, y, v):
    return jnp.sum(jnp.log1p(jnp.sum(z, axis=0) ** 2) * z) / jnp.sum(z * z)


FORMULAS = {
    "rowsum(z*colsum(z*z))": ("z", _matrix_of_squares),
    "v*colsum(v^2) + sin(colsum(v))": ("v", _vector_total),
    "rowsum(y/(colsum(softmax(z))^2 + 1))": ("z", _softmax_total),
    "rowsum(log1p(colsum(z)^2)*z)/sum(z*z)": ("z", _with_a_sum),
}
TARGETS = ["cpu", "parallel", "cuda"]


def given_inputs(text: str) -> dict[str, np.ndarray]:
    everything = {"z": Z, "y": Y, "v": V}
    return {name: everything[name] for name in ("z", "y", "v") if name in text}


def jax_reference(text: str) -> tuple[float, np.ndarray, np.ndarray]:
    """The value, gradient and Hessian diagonal of ``text`` summed over the samples."""
    variable, formula = FORMULAS[text]
    with jax.enable_x64(True):
        given = {"z": jnp.asarray(Z), "y": jnp.asarray(Y), "v": jnp.asarray(V)}

        def of(x):
            return formula(**{**given, variable: x})

        x = given[variable]
        hessian = np.asarray(jax.jit(jax.hessian(of))(x)).reshape(x.size, x.size)
        return (float(of(x)), np.asarray(jax.grad(of)(x)),
                hessian.diagonal().reshape(x.shape))


@pytest.fixture(scope="module", params=TARGETS)
def compiled(request):
    """Every formula compiled for one target, summed over the samples."""
    return {text: lossdsl.compile(text, reduction="sum", target=request.param)
            for text in FORMULAS}


@pytest.mark.parametrize("text", list(FORMULAS))
def test_value_gradient_and_hessian_match_jax(compiled, text):
    loss, given = compiled[text], given_inputs(text)
    variable = FORMULAS[text][0]
    value, gradient, hessian = jax_reference(text)
    # one fused kernel (value, gradient, Hessian): a third of the compile time of three
    ours = loss.compute(True, (variable,), (variable,), given)
    np.testing.assert_allclose(ours[0], value, rtol=1e-12)
    np.testing.assert_allclose(ours[1], gradient, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(ours[2], hessian, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("text", list(FORMULAS))
def test_printed_jax_backend_matches_autodiff(jax_x64, text):
    import lossdsl.jax

    variable = FORMULAS[text][0]
    printed = lossdsl.jax.loss(text, reduction="sum")
    given = {name: jnp.asarray(a) for name, a in given_inputs(text).items()}
    value, gradient, hessian = jax_reference(text)

    def of(x):
        return printed(**{**given, variable: x})

    x = given[variable]
    np.testing.assert_allclose(float(of(x)), value, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(jax.grad(of)(x)), gradient, rtol=1e-11, atol=1e-13)
    full = np.asarray(jax.jit(jax.hessian(of))(x)).reshape(x.size, x.size)
    np.testing.assert_allclose(full.diagonal().reshape(x.shape), hessian, rtol=1e-10,
                               atol=1e-12)


def test_each_row_gets_its_columns_totals():
    loss = lossdsl.compile("colsum(z)", reduction="none")
    np.testing.assert_allclose(loss(z=Z), np.broadcast_to(Z.sum(axis=0), Z.shape),
                               rtol=1e-14)
    total = lossdsl.compile("colsum(v)", reduction="none")
    np.testing.assert_allclose(total(v=V), np.full(ROWS, V.sum()), rtol=1e-14)


def test_printed_derivative_is_loss_text():
    loss = lossdsl.compile("rowsum(z*colsum(z*z))", reduction="sum")
    printed = str(loss.derivative("z"))
    assert "colsum(" in printed and "groupsum" not in printed
    again = lossdsl.compile(printed, reduction="none")
    np.testing.assert_allclose(again(z=Z), jax_reference("rowsum(z*colsum(z*z))")[1],
                               rtol=1e-12)


@pytest.mark.parametrize("text, inputs, message", [
    ("colsum(3) + v", {"v": V}, "a number has no samples"),
    ("groupsum(v, g) + colsum(v)", {"v": V, "g": np.zeros(ROWS)}, "use sum"),
    ("pairsum(partner(v), g) + colsum(v)", {"v": V, "g": np.zeros(ROWS)}, "use sum"),
    ("classpairsum(partner(colsum(z))*z)", {"z": Z}, "not from colsum"),
])
def test_misuse_is_a_positioned_loss_error(text, inputs, message):
    with pytest.raises(lossdsl.LossError, match=message) as caught:
        lossdsl.compile(text)(**inputs)
    assert caught.value.line is not None


def test_ignore_index_and_dask_refuse_column_totals():
    labels = np.array([0, 1, 2, -100, 1, 0])
    with pytest.raises(lossdsl.LossShapeError, match="colsum"):
        lossdsl.compile("sparse_cce_logits(y, z - colsum(z))", ignore_index=-100)(y=labels, z=Z)
    lossdsl_dask = pytest.importorskip("lossdsl.dask")
    with pytest.raises(lossdsl.LossError, match=r"colsum.*whole arrays"):
        lossdsl_dask.compile("rowsum(z*colsum(z))")


# ------------------------------------------------------------------ the pooled Dice loss
IMAGES, PIXELS = 3, 4


def dice_batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-hot targets and logits of a (B, P, K) batch (class 2 absent from the second
    image: its own frequency would be 0, the batch's is not), and probabilities."""
    labels = np.array([[0, 1, 2, 1], [0, 1, 1, 0], [2, 2, 0, 1]])
    targets = np.eye(CLASSES)[labels]
    logits = np.random.default_rng(13).normal(size=(IMAGES, PIXELS, CLASSES))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    return targets, logits, probabilities


@pytest.fixture(scope="module")
def pooled_losses():
    return {(form, background): lossdsl.compile(
        f"generalized_dice_batch{form}(y, x, g, 1.0, {background})")
        for form in ("", "_logits") for background in (0, 1)}


@pytest.mark.parametrize("form", ["", "_logits"])
@pytest.mark.parametrize("background", [0, 1])
def test_pooled_generalized_dice_matches_optax(pooled_losses, form, background):
    targets, logits, probabilities = dice_batch()
    scores = logits if form else probabilities
    loss = pooled_losses[(form, background)]
    ids = np.repeat(np.arange(IMAGES), PIXELS).astype(float)
    given = {"y": targets.reshape(-1, CLASSES), "x": scores.reshape(-1, CLASSES), "g": ids}

    def reference(x):  # lossdsl's smooth is optax's doubled (2 I + s)/(Y + P + s)
        return optax.losses.multiclass_generalized_dice_loss(
            x, jnp.asarray(targets), smooth=0.5, apply_softmax=bool(form),
            ignore_background=bool(background))

    with jax.enable_x64(True):
        x = jnp.asarray(scores)
        value = float(reference(x))
        gradient = np.asarray(jax.grad(reference)(x)).reshape(-1, CLASSES)
        size = scores.size
        hessian = np.asarray(_jitted(jax.hessian, reference, x)).reshape(size, size).diagonal()
    ours = loss.compute(True, ("x",), ("x",), given)  # one fused kernel
    np.testing.assert_allclose(ours[0], value, rtol=1e-12)
    np.testing.assert_allclose(ours[1], gradient, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(ours[2], hessian.reshape(-1, CLASSES), rtol=1e-9, atol=1e-15)


def _jitted(transform, function, x):
    """``transform(function)(x)`` compiled once by XLA rather than run op by op (a full
    Hessian is many ops); eagerly where optax checks a traced value in Python (its
    probabilities)."""
    try:
        return jax.jit(transform(function))(x)
    except jax.errors.TracerBoolConversionError:
        return transform(function)(x)


def test_pooled_weights_differ_from_each_images_own(pooled_losses):
    # the per-image form weighs the second image's absent class 2 by 1/(0 + 1e-7): the two
    # losses must not agree, or the test above could not tell them apart
    targets, _, probabilities = dice_batch()
    ids = np.repeat(np.arange(IMAGES), PIXELS).astype(float)
    given = {"y": targets.reshape(-1, CLASSES), "p": probabilities.reshape(-1, CLASSES),
             "g": ids}
    own = lossdsl.compile("generalized_dice_images(y, p, g)")(**given)
    pooled = pooled_losses[("", 0)](**{"y": given["y"], "x": given["p"], "g": ids})
    assert abs(own - pooled) > 1e-3


def test_pooled_generalized_dice_derivatives_in_the_targets_match_optax(pooled_losses):
    # the targets enter both the pooled weights (colsum) and each image's sums (groupsum):
    # the Hessian goes through a group's total nested with a column total
    _, _, probabilities = dice_batch()
    soft_targets = np.random.default_rng(5).random((IMAGES, PIXELS, CLASSES))
    ids = np.repeat(np.arange(IMAGES), PIXELS).astype(float)
    loss = pooled_losses[("", 0)]
    given = {"y": soft_targets.reshape(-1, CLASSES), "x": probabilities.reshape(-1, CLASSES),
             "g": ids}

    def reference(y):
        return optax.losses.multiclass_generalized_dice_loss(
            jnp.asarray(probabilities), y, smooth=0.5, apply_softmax=False)

    with jax.enable_x64(True):
        y = jnp.asarray(soft_targets)
        gradient = np.asarray(jax.grad(reference)(y)).reshape(-1, CLASSES)
        size = soft_targets.size
        hessian = np.asarray(_jitted(jax.hessian, reference, y)).reshape(size, size).diagonal()
    _, ours_gradient, ours_hessian = loss.compute(True, ("y",), ("y",), given)
    np.testing.assert_allclose(ours_gradient, gradient, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(ours_hessian, hessian.reshape(-1, CLASSES), rtol=1e-9,
                               atol=1e-15)


@pytest.mark.parametrize("text", ["rowsum(colsum(groupsum(z, q)*z)*z)",
                                  "rowsum(groupsum(colsum(z*z)*z, q))"])
def test_column_totals_nested_with_group_totals_match_jax(text):
    ids = np.array([0.0, 0.0, 1.0, 1.0, 2.0, 2.0])

    def per_group(a):
        return jnp.stack([a[ids == k].sum(axis=0) for k in range(3)])[ids.astype(int)]

    def inner(z):
        return jnp.sum(jnp.sum(per_group(z) * z, axis=0) * z)

    def outer(z):
        return jnp.sum(per_group(jnp.sum(z * z, axis=0) * z))

    formula = inner if text.startswith("rowsum(colsum") else outer
    loss = lossdsl.compile(text, reduction="sum")
    with jax.enable_x64(True):
        z = jnp.asarray(Z)
        gradient = np.asarray(jax.grad(formula)(z))
        hessian = np.asarray(jax.jit(jax.hessian(formula))(z)).reshape(Z.size, Z.size).diagonal()
    ours_gradient, ours_hessian = loss.compute(False, ("z",), ("z",), {"z": Z, "q": ids})
    np.testing.assert_allclose(ours_gradient, gradient, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(ours_hessian, hessian.reshape(Z.shape), rtol=1e-12, atol=1e-13)
