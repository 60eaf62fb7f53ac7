"""Group sums of (N, K) matrices: ``groupsum(x, g)`` gives each row its group's column sums,
and the per-image Dice, Tversky and generalized Dice losses of the prelude (a batch of images
laid out as the rows of all their pixels, one image id per row) built on it.

References: optax's ``dice_loss`` and ``multiclass_generalized_dice_loss`` on (B, pixels, K)
arrays (JAX autodiff of them for gradients and Hessian diagonals), per-group NumPy sums, and
central finite differences; never lossdsl itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from coupled import assert_simulated_cuda_matches_cpu, central_differences
from sweeps import SAMPLING

import lossdsl
from lossdsl.errors import LossDomainError, LossError, LossShapeError

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

B, P, K = 3, 5, 4  # images, pixels per image, classes


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def batch():
    """One-hot targets and logits (B, P, K), class 3 absent from image 0, and lossdsl's
    layout: the (B*P, K) rows and the image id of each."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, K, (B, P))
    labels[0] = np.where(labels[0] == 3, 0, labels[0])
    y = np.eye(K)[labels]
    z = rng.normal(0.0, 1.5, (B, P, K))
    return y, z, y.reshape(-1, K), z.reshape(-1, K), np.repeat(np.arange(B), P)


def _reference(function, y, z, n_rows):
    """(value, gradient, Hessian diagonal) of ``function(z)`` by JAX autodiff, reshaped to
    lossdsl's (rows, K) layout."""
    flat = jnp.asarray(z.reshape(n_rows, K))
    value = function(flat)
    gradient = _compiled(jax.grad, function, flat)
    hessian = _compiled(jax.hessian, function, flat).reshape(n_rows * K, n_rows * K).diagonal()
    return float(value), np.asarray(gradient), np.asarray(hessian).reshape(n_rows, K)


def _compiled(transform, function, flat):
    """``transform(function)(flat)`` compiled once by XLA rather than run op by op (the full
    Hessian of a loop over images is many ops); eagerly where optax checks a traced value in
    Python (its probabilities)."""
    try:
        return jax.jit(transform(function))(flat)
    except jax.errors.TracerBoolConversionError:
        return transform(function)(flat)


def _check(compiled, reference, wrt="z", **inputs):
    """The loss's value, gradient and Hessian diagonal in ``wrt`` against ``reference``: from
    the kernels users call (``__call__``, ``grad_and_hessian``), except on CI (CI=true without
    LOSSDSL_FULL_SWEEPS=1), where all three come from the one fused kernel that computes them
    (one cold compile instead of two per loss; the methods' kernels differ from it only in
    the outputs they keep, and run on these losses in tests/test_library.py's full run)."""
    value, gradient, hessian = reference
    if SAMPLING:
        got_value, got_gradient, got_hessian = compiled.compute(True, (wrt,), (wrt,), inputs,
                                                                None)
    else:
        got_value = compiled(**inputs)
        got_gradient, got_hessian = compiled.grad_and_hessian(wrt, **inputs)
    assert got_value == pytest.approx(value, rel=1e-12, abs=1e-15)
    scale = np.abs(hessian).max()
    np.testing.assert_allclose(got_gradient, gradient, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(got_hessian, hessian, rtol=1e-9, atol=1e-12 * scale)


WEIGHTS = np.array([0.5, 1.0, 2.0, 1.5])


@pytest.mark.parametrize("ignore_background", [0, 1])
@pytest.mark.parametrize("logits", [True, False], ids=["logits", "probabilities"])
def test_dice_images_is_optax_dice_loss_averaged_over_the_images(batch, ignore_background,
                                                                 logits):
    y, z, rows_y, rows_z, g = batch

    def optax_loss(flat):
        scores = flat.reshape(B, P, K)
        predictions = scores if logits else jax.nn.softmax(scores, axis=-1)
        # optax's smooth is added to sum(y p) and to half of sum(y) + sum(p): smooth/2
        return jnp.mean(optax.losses.dice_loss(
            predictions if logits else scores, jnp.asarray(y), smooth=0.5,
            class_weights=jnp.asarray(WEIGHTS), ignore_background=bool(ignore_background),
            apply_softmax=logits))

    if logits:
        compiled = lossdsl.compile(f"dice_images_logits(y, z, g, weight=w, "
                                   f"ignore_background={ignore_background})")
        _check(compiled, _reference(optax_loss, y, z, B * P), y=rows_y, z=rows_z, g=g,
               w=WEIGHTS)
    else:  # probabilities: the reference's input is the softmax itself
        p = np.asarray(jax.nn.softmax(rows_z, axis=-1))
        compiled = lossdsl.compile(f"dice_images(y, z, g, weight=w, "
                                   f"ignore_background={ignore_background})")

        def on_probabilities(flat):
            return jnp.mean(optax.losses.dice_loss(
                flat.reshape(B, P, K), jnp.asarray(y), smooth=0.5,
                class_weights=jnp.asarray(WEIGHTS), ignore_background=bool(ignore_background),
                apply_softmax=False))

        _check(compiled, _reference(on_probabilities, y, p, B * P), y=rows_y, z=p, g=g,
               w=WEIGHTS)


@pytest.mark.parametrize("ignore_background", [0, 1])
def test_tversky_images_logits_is_optax_dice_loss_with_alpha_and_beta(batch,
                                                                       ignore_background):
    y, z, rows_y, rows_z, g = batch

    def optax_loss(flat):
        return jnp.mean(optax.losses.dice_loss(
            flat.reshape(B, P, K), jnp.asarray(y), alpha=0.3, beta=0.7, smooth=1.0,
            class_weights=jnp.asarray(WEIGHTS), ignore_background=bool(ignore_background)))

    compiled = lossdsl.compile(f"tversky_images_logits(y, z, g, 0.3, 0.7, weight=w, "
                               f"ignore_background={ignore_background})")
    _check(compiled, _reference(optax_loss, y, z, B * P), y=rows_y, z=rows_z, g=g, w=WEIGHTS)


def _optax_generalized_dice_per_image(y, sizes, ignore_background, logits=True):
    """The mean over images of optax's generalized Dice loss of each image alone (class
    frequencies of that image), for images of ``sizes`` pixels laid out one after another."""
    bounds = np.r_[0, np.cumsum(sizes)]

    def loss(flat):
        return jnp.mean(jnp.stack([
            optax.losses.multiclass_generalized_dice_loss(
                flat[start:stop][None], jnp.asarray(y[start:stop][None]), smooth=0.5,
                ignore_background=bool(ignore_background), apply_softmax=logits)
            for start, stop in zip(bounds[:-1], bounds[1:])]))

    return loss


@pytest.mark.parametrize("ignore_background", [0, 1])
def test_generalized_dice_images_logits_is_optax_of_each_image(batch, ignore_background):
    y, z, rows_y, rows_z, g = batch
    loss = _optax_generalized_dice_per_image(rows_y, [P] * B, ignore_background)
    compiled = lossdsl.compile(f"generalized_dice_images_logits(y, z, g, "
                               f"ignore_background={ignore_background})")
    _check(compiled, _reference(loss, rows_y, rows_z, B * P), y=rows_y, z=rows_z, g=g)


def test_one_image_is_optax_generalized_dice_of_the_batch(batch):
    """With one image, the per-image class frequencies are optax's of the batch."""
    y, z, *_ = batch
    image_y, image_z = y[:1], z[:1]

    def optax_loss(flat):
        return optax.losses.multiclass_generalized_dice_loss(
            flat.reshape(1, P, K), jnp.asarray(image_y), smooth=0.5)

    compiled = lossdsl.compile("generalized_dice_images_logits(y, z, g)")
    _check(compiled, _reference(optax_loss, image_y, image_z, P), y=image_y[0],
           z=image_z[0], g=np.zeros(P, int))


def test_images_of_different_sizes_in_any_order(batch):
    """Ragged images, their rows shuffled: each image counts once in the mean whatever its
    size, and every per-row result follows its row."""
    rng = np.random.default_rng(5)
    sizes = [2, 7, 4]
    rows = sum(sizes)
    y = np.eye(K)[rng.integers(0, K, rows)]
    z = rng.normal(size=(rows, K))
    ids = np.repeat([10, -3, 4], sizes)  # any integers
    loss = _optax_generalized_dice_per_image(y, sizes, 0)
    value, gradient, hessian = _reference(loss, y, z, rows)

    def per_image_dice(flat):
        bounds = np.r_[0, np.cumsum(sizes)]
        return jnp.mean(jnp.stack([
            jnp.mean(optax.losses.dice_loss(flat[a:b][None], jnp.asarray(y[a:b][None]),
                                            smooth=0.5)) for a, b in zip(bounds[:-1],
                                                                         bounds[1:])]))

    dice = _reference(per_image_dice, y, z, rows)
    order = rng.permutation(rows)
    for text, (v, gr, h) in [("generalized_dice_images_logits(y, z, g)",
                              (value, gradient, hessian)),
                             ("dice_images_logits(y, z, g)", dice)]:
        compiled = lossdsl.compile(text)
        _check(compiled, (v, gr[order], h[order]), y=y[order], z=z[order], g=ids[order])


@pytest.fixture(scope="module")
def column_sums():
    """groupsum of a matrix against per-group NumPy sums: data and the compiled loss."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(9, 3))
    w = rng.normal(size=(9, 3))
    g = np.array([4, 1, 4, 2, 1, 4, 2, 2, 7])
    return x, w, g, lossdsl.compile("sum(rowsum(w*groupsum(x^2, g)^2))")


def test_groupsum_of_a_matrix_gives_each_row_its_groups_column_sums(column_sums):
    x, w, g, compiled = column_sums
    totals = np.stack([(x**2)[g == g[i]].sum(axis=0) for i in range(len(g))])
    assert compiled(x=x, w=w, g=g) == pytest.approx(float((w * totals**2).sum()), rel=1e-13)
    per_row = lossdsl.compile("groupsum(x, g)", reduction="none")
    mean = lossdsl.compile("groupmean(x, g)", reduction="none")
    counts = np.array([np.count_nonzero(g == g[i]) for i in range(len(g))])
    np.testing.assert_allclose(per_row(x=x, g=g),
                               np.stack([x[g == g[i]].sum(axis=0) for i in range(len(g))]),
                               rtol=1e-14)
    np.testing.assert_allclose(mean(x=x, g=g), per_row(x=x, g=g) / counts[:, None],
                               rtol=1e-14)


def test_groupsum_of_a_matrix_has_exact_derivatives_by_finite_differences(column_sums):
    x, w, g, compiled = column_sums
    gradient, hessian = compiled.grad_and_hessian("x", x=x, w=w, g=g)
    expected_gradient, expected_hessian = central_differences(
        lambda values: compiled(x=values, w=w, g=g), x)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hessian, expected_hessian, rtol=1e-5, atol=1e-5)


def test_new_group_ids_of_the_same_shape_regroup_the_rows(column_sums):
    """Calls one after another with other ids of the same shape (the kernels read each row's
    group total through the row's group in a table of totals, both made anew when any id
    changes and kept when none does): value, gradient and Hessian diagonal of
    L = sum_ik w_ik T_ik^2 (T_ik: the column total of x^2 over row i's group), whose
    derivatives in x_jk are 4 x_jk T_jk S_jk and 4 S_jk (T_jk + 2 x_jk^2), S_jk the sum of
    w_ik over j's group."""
    x, w, g, compiled = column_sums
    for ids in (g, np.roll(g, 1), g[::-1].copy(), g):
        same = ids[:, None] == ids[None, :]  # same[i, j]: rows i and j in one group
        totals = same.astype(float) @ x**2
        weights = same.astype(float) @ w
        assert compiled(x=x, w=w, g=ids) == pytest.approx(float((w * totals**2).sum()),
                                                          rel=1e-13)
        gradient, hessian = compiled.grad_and_hessian("x", x=x, w=w, g=ids)
        np.testing.assert_allclose(gradient, 4 * x * totals * weights, rtol=1e-13)
        np.testing.assert_allclose(hessian, 4 * weights * (totals + 2 * x**2), rtol=1e-13)


def test_group_totals_of_inputs_in_their_own_dtype():
    """The summands of a group total that are an input are summed as given (integer counts
    here, with float32 scores: a float32 kernel) in float64, as NumPy sums them."""
    rng = np.random.default_rng(13)
    counts = rng.integers(0, 1000, (7, 3))
    p = rng.normal(size=(7, 3)).astype(np.float32)
    g = np.array([2, 0, 2, 1, 0, 2, 5], np.int32)
    per_row = lossdsl.compile("groupsum(x, g) * p", reduction="none")
    got = per_row(x=counts, p=p, g=g)
    assert got.dtype == np.float32
    totals = np.stack([counts[g == g[i]].sum(axis=0) for i in range(g.size)])
    np.testing.assert_allclose(got, totals * p.astype(np.float64), rtol=1e-6)


def test_parallel_float32_and_the_jax_backend_agree_with_optax(batch):
    y, z, rows_y, rows_z, g = batch

    def optax_loss(flat):
        return jnp.mean(optax.losses.dice_loss(flat.reshape(B, P, K), jnp.asarray(y),
                                               smooth=0.5))

    reference = _reference(optax_loss, y, z, B * P)
    _check(lossdsl.compile("dice_images_logits(y, z, g)", target="parallel"), reference,
           y=rows_y, z=rows_z, g=g)
    single = lossdsl.compile("dice_images_logits(y, z, g)")
    value32 = single(y=rows_y.astype(np.float32), z=rows_z.astype(np.float32), g=g)
    assert value32 == pytest.approx(reference[0], rel=1e-6)
    gradient32 = single.grad("z", y=rows_y.astype(np.float32), z=rows_z.astype(np.float32),
                             g=g)
    assert gradient32.dtype == np.float32
    np.testing.assert_allclose(gradient32, reference[1], rtol=1e-4, atol=1e-7)
    front_end = pytest.importorskip("lossdsl.jax")
    loss = front_end.loss("dice_images_logits(y, z, g)")
    assert float(loss(y=rows_y, z=rows_z, g=g)) == pytest.approx(reference[0], rel=1e-12)
    printed = jax.grad(lambda scores: loss(y=rows_y, z=scores, g=g))(jnp.asarray(rows_z))
    np.testing.assert_allclose(printed, reference[1], rtol=1e-10, atol=1e-14)


def test_cuda_kernels_match_the_cpu_under_the_simulator():
    """A few hundred rows of images of different sizes in shuffled order."""
    assert_simulated_cuda_matches_cpu(
        "rows, classes = 300, 4\n"
        'data = {"y": np.eye(classes)[rng.integers(0, classes, rows)], '
        '"z": rng.normal(size=(rows, classes)), "g": rng.integers(0, 9, rows), '
        '"w": rng.uniform(0.5, 2.0, classes)}',
        ["dice_images_logits(y, z, g, weight=w, ignore_background=1)",
         "generalized_dice_images_logits(y, z, g)", "sum(rowsum(groupmean(z, g)^2*y))"],
        "z", 1e-15)


def test_group_ids_of_matrices_are_checked(batch):
    _, _, rows_y, rows_z, g = batch
    compiled = lossdsl.compile("dice_images_logits(y, z, g)")
    for bad in (g + 0.5, np.where(np.arange(g.size) == 3, np.nan, g)):
        with pytest.raises(LossDomainError, match="must be integers"):
            compiled(y=rows_y, z=rows_z, g=bad)
        with pytest.raises(LossDomainError, match="must be integers"):  # twice: no fast path
            compiled(y=rows_y, z=rows_z, g=bad)
    # float32 kernels would round ids 2**25 and 2**25 + 1 to one group
    far = g + 2**25
    with pytest.raises(LossDomainError, match="cannot tell"):
        compiled(y=rows_y.astype(np.float32), z=rows_z.astype(np.float32), g=far)
    assert compiled(y=rows_y, z=rows_z, g=far) == pytest.approx(
        compiled(y=rows_y, z=rows_z, g=g), rel=1e-15)
    with pytest.raises(LossShapeError, match="must be a vector"):
        compiled(y=rows_y, z=rows_z, g=rows_y)
    front_end = pytest.importorskip("lossdsl.jax")  # its ids were grouped by value, 0.5 too
    with pytest.raises(LossDomainError, match="must be integers"):
        front_end.loss("dice_images_logits(y, z, g)")(y=rows_y, z=rows_z, g=g + 0.5)


def test_what_cannot_sum_columns_is_refused(batch):
    _, _, rows_y, rows_z, g = batch
    for text in ("sum(rowsum(groupmax(z, g)))", "sum(rowsum(group_softmax(z, g)))"):
        with pytest.raises(LossShapeError, match="only groupsum and groupmean"):
            lossdsl.compile(text)(z=rows_z, g=g)
    dask_array = pytest.importorskip("dask.array")
    dask_front_end = pytest.importorskip("lossdsl.dask")
    with pytest.raises(LossError, match="does not lay out across chunks"):
        dask_front_end.compile("dice_images_logits(y, z, g)")(
            y=dask_array.from_array(rows_y, chunks=5), z=dask_array.from_array(rows_z, chunks=5),
            g=dask_array.from_array(g, chunks=5))
