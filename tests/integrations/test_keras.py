"""lossdsl.keras: a lossdsl loss as a Keras 3 loss, on the JAX backend (in this process) and the
PyTorch and TensorFlow backends (in subprocesses, since Keras picks its backend once, at
import), checked against the Numba kernels and against Keras' own weighting, masking and
reduction."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from keras_backends import OTHER_BACKENDS, keras_on_jax, run_on_backend

keras = keras_on_jax()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from keras.src.backend import set_keras_mask  # noqa: E402

import lossdsl  # noqa: E402
import lossdsl.keras  # noqa: E402
from lossdsl import LossError  # noqa: E402
from lossdsl.api import loss_from_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TEXT = "asymmetric_l1(y, p, 4, 1)"
KERNEL_REDUCTION = {"sum_over_batch_size": "mean", "sum": "sum", None: "none", "none": "none"}


class Reference(keras.losses.Loss):
    """asymmetric_l1(y, p, 4, 1) written with keras.ops, as a Keras user would: what Keras'
    own __call__ makes of weights, masks and reductions."""

    def call(self, y_true, y_pred):
        y_true = keras.ops.reshape(y_true, (-1,))
        y_pred = keras.ops.reshape(y_pred, (-1,))
        d = y_true - y_pred
        return keras.ops.where(y_pred < y_true, 4.0 * d, -d)


def data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n).astype(np.float32)
    p = rng.normal(size=(n, 1)).astype(np.float32)  # a Dense(1) output
    w = rng.uniform(0.0, 2.0, size=n).astype(np.float32)
    return y, p, w


def kernel(reduction, y, p, w=None):
    compiled = lossdsl.compile(TEXT, reduction=KERNEL_REDUCTION[reduction])
    return np.asarray(compiled(y=y.astype(np.float64), p=p.reshape(-1).astype(np.float64),
                               sample_weight=None if w is None else w.astype(np.float64)))


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", None, "none"])
def test_unweighted_loss_equals_the_kernels(reduction):
    y, p, _ = data()
    value = np.asarray(lossdsl.keras.Loss(TEXT, reduction=reduction)(y, p))
    expected = kernel(reduction, y, p)
    assert value.shape == expected.shape
    np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "none"])
def test_weighted_loss_equals_the_kernels(reduction):
    """Keras' weighted sum_over_batch_size is sum(w * loss) / N, as lossdsl's weighted mean."""
    y, p, w = data()
    loss = lossdsl.keras.Loss(TEXT, reduction=reduction)
    np.testing.assert_allclose(np.asarray(loss(y, p, sample_weight=w)),
                               kernel(reduction, y, p, w), rtol=1e-6, atol=1e-6)
    weighted = lossdsl.keras.Loss(TEXT, reduction="mean_with_sample_weight")
    np.testing.assert_allclose(np.asarray(weighted(y, p, sample_weight=w)),
                               kernel("sum", y, p, w) / w.astype(np.float64).sum(), rtol=1e-6)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "none",
                                       "mean_with_sample_weight"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_weights_masks_and_reductions_follow_keras(reduction, weighted, masked):
    y, p, w = data(seed=1)
    mask = np.arange(len(y)) % 3 != 0
    ours, reference = lossdsl.keras.Loss(TEXT, reduction=reduction), Reference(
        reduction=reduction)
    results = []
    for loss in (ours, reference):
        prediction = jnp.asarray(p)
        if masked:
            set_keras_mask(prediction, jnp.asarray(mask))
        results.append(np.asarray(loss(y, prediction, sample_weight=w if weighted else None)))
    assert results[0].shape == results[1].shape
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-7)
    if masked and not weighted and reduction == "sum":  # the mask drops those samples
        np.testing.assert_allclose(results[0], kernel("sum", y[mask], p[mask]), rtol=1e-6)


def test_classification_losses_equal_keras_own():
    """Keras hands lossdsl float32 labels; class indices and binary labels still work."""
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(16, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 16)
    np.testing.assert_allclose(
        np.asarray(lossdsl.keras.Loss("sparse_cce_logits(y, z)")(labels, logits)),
        np.asarray(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            labels, logits)), rtol=1e-6)
    binary = rng.normal(size=(16, 1)).astype(np.float32)
    targets = rng.integers(0, 2, 16).astype(np.float32)
    weights = rng.uniform(size=16).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(lossdsl.keras.Loss("bce_logits(y, z)")(targets, binary, weights)),
        np.asarray(keras.losses.BinaryCrossentropy(from_logits=True)(
            targets, binary, weights)), rtol=1e-6)
    one_hot = np.eye(4, dtype=np.float32)[labels]
    np.testing.assert_allclose(
        np.asarray(lossdsl.keras.Loss("categorical_hinge(y, z)")(one_hot, logits)),
        np.asarray(keras.losses.CategoricalHinge()(one_hot, logits)), rtol=1e-6)
    with pytest.raises(LossError, match=r"integers in \[0, 4\)"):
        lossdsl.keras.Loss("sparse_cce_logits(y, z)")(np.array([0.0, 1.0, 7.0]), logits[:3])


def test_a_masking_layer_drops_the_padded_steps():
    """A sequence model's Masking layer: the loss Keras reports is the kernel's mean over the
    steps that are not padding."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(32, 6, 2)).astype(np.float32)
    x[:, 4:] = 0.0  # padding
    y = rng.normal(size=(32, 6)).astype(np.float32)
    model = keras.Sequential([keras.Input((6, 2)), keras.layers.Masking(0.0),
                              keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss=lossdsl.keras.Loss(TEXT))
    reported = model.evaluate(x, y, batch_size=32, verbose=0)
    predicted = np.asarray(model.predict(x, verbose=0))[:, :4]
    np.testing.assert_allclose(reported, kernel("sum_over_batch_size", y[:, :4].reshape(-1),
                                                predicted.reshape(-1, 1)), rtol=1e-6)


def test_gradient_equals_the_kernels():
    y, p, w = data(seed=2)
    loss = lossdsl.keras.Loss(TEXT)
    gradient = jax.grad(lambda q: loss(y, q, sample_weight=w))(jnp.asarray(p))
    compiled = lossdsl.compile(TEXT, reduction="mean")
    expected = compiled.grad("p", y=y.astype(np.float64), p=p.reshape(-1).astype(np.float64),
                             sample_weight=w.astype(np.float64))
    np.testing.assert_allclose(np.asarray(gradient).reshape(-1), expected, rtol=1e-6,
                               atol=1e-7)
    # and under jit, as Keras' JAX trainer runs it
    jitted = jax.jit(jax.grad(lambda q: loss(y, q, sample_weight=w)))(jnp.asarray(p))
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(gradient), rtol=1e-6)


def regression(n=128, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x @ np.array([1.0, 2.0, -1.0], np.float32)
         + rng.normal(size=n).astype(np.float32) + 0.5)
    return x, y


def test_compile_and_fit_on_the_jax_backend():
    keras.utils.set_random_seed(0)
    x, y = regression()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=lossdsl.keras.Loss(TEXT))
    before = kernel("sum_over_batch_size", y, np.asarray(model.predict(x, verbose=0)))
    history = model.fit(x, y, epochs=20, batch_size=len(y), shuffle=False, verbose=0)
    losses = history.history["loss"]
    # one batch an epoch: the loss Keras reports is the loss before that epoch's step
    np.testing.assert_allclose(losses[0], before, rtol=1e-6)
    assert losses[-1] < 0.7 * losses[0]
    after = kernel("sum_over_batch_size", y, np.asarray(model.predict(x, verbose=0)))
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=len(y), verbose=0), after,
                               rtol=1e-6)
    w = np.random.default_rng(6).uniform(0.0, 2.0, size=len(y)).astype(np.float32)
    weighted = kernel("sum_over_batch_size", y, np.asarray(model.predict(x, verbose=0)), w)
    np.testing.assert_allclose(model.evaluate(x, y, sample_weight=w, batch_size=len(y),
                                              verbose=0), weighted, rtol=1e-6)


def test_get_config_and_keras_saving_round_trip(tmp_path):
    text = "param under = 4.0\nasymmetric_l1(y, p, under, 1)"
    loss = lossdsl.keras.Loss(text, {"under": 9.0}, reduction="sum", name="stock")
    config = loss.get_config()
    assert config == {"name": "stock", "reduction": "sum", "loss": text,
                      "params": {"under": 9.0}}
    y, p, _ = data(seed=4)
    expected = np.asarray(loss(y, p))
    again = lossdsl.keras.Loss.from_config(config)
    np.testing.assert_allclose(np.asarray(again(y, p)), expected)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, lossdsl.keras.Loss) and restored.reduction == "sum"
    np.testing.assert_allclose(np.asarray(restored(y, p)), expected)
    # the params count: under=9 is not the text's default 4
    assert not np.allclose(np.asarray(lossdsl.keras.Loss(text, reduction="sum")(y, p)),
                           expected)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss=loss)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.loss, lossdsl.keras.Loss)
    assert loaded.loss.get_config() == config


def test_bad_input_raises_loss_error(monkeypatch):
    with pytest.raises(LossError):
        lossdsl.keras.Loss("asymmetric_l1(y, p, 4")  # a syntax error
    with pytest.raises(LossError, match="not an input or param|unknown|under"):
        lossdsl.keras.Loss("param under = 4.0\nasymmetric_l1(y, p, under, 1)", {"undr": 1.0})
    with pytest.raises(LossError, match="under"):
        lossdsl.keras.Loss("param under = 4.0\nasymmetric_l1(y, p, under, 1)", {"under": "x"})
    with pytest.raises(LossError, match="mapping"):
        lossdsl.keras.Loss(TEXT, 4.0)
    with pytest.raises(LossError, match="3 input"):
        lossdsl.keras.Loss("w * abs(y - p)")
    with pytest.raises(LossError, match="cannot tell"):
        lossdsl.keras.Loss("abs(a - b)")
    with pytest.raises(TypeError, match="loss text"):
        lossdsl.keras.Loss(loss_from_text(TEXT))
    with pytest.raises(LossError, match="needs 'loss'"):
        lossdsl.keras.Loss.from_config({"name": "x", "reduction": "sum"})
    y, p, _ = data()
    monkeypatch.setattr(keras.backend, "backend", lambda: "numpy")
    with pytest.raises(LossError, match="jax, tensorflow, torch, not 'numpy'"):
        lossdsl.keras.Loss(TEXT)(y, p)


def test_a_count_as_mean_is_refused_under_keras_means():
    """Keras' mean reductions divide the per-sample values by the batch size, not by the
    counts' total of count_as (PyTorch's class-weighted mean): 2.09 for torch's 1.52."""
    text = "count_as(where(y == 0, 2, 1)*(logsumexp(z) - pick(z, y)), where(y == 0, 2, 1))"
    for reduction in ("sum_over_batch_size", "mean_with_sample_weight"):
        with pytest.raises(LossError, match="count_as counts"):
            lossdsl.keras.Loss(text, reduction=reduction)
    z = np.random.default_rng(0).normal(size=(8, 3))
    y = np.array([0, 1, 2, 0, 1, 0, 2, 2])
    summed = float(lossdsl.keras.Loss(text, reduction="sum")(y, z))
    s = np.where(y == 0, 2.0, 1.0)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(summed, -(s * log_p[np.arange(8), y]).sum(), rtol=1e-6)
    lossdsl.keras.Loss("sparse_cce_logits(y, z)")  # class weights of 1: the batch size


def test_import_lossdsl_does_not_import_keras():
    code = "import sys, lossdsl; assert 'keras' not in sys.modules, 'keras imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_missing_tensorflow_backend_is_explained():
    """Keras' default backend is TensorFlow: without it, importing lossdsl.keras says what to
    set instead of only 'No module named tensorflow' (TensorFlow hidden from the import
    system where it is installed)."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    code = "import sys; sys.modules['tensorflow'] = None; import lossdsl.keras"
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "set KERAS_BACKEND=jax (or torch)" in done.stderr, done.stderr[-2000:]


def dice_inputs():
    """Masks, probabilities and sample weights for the Dice losses (their own seed), in this
    process and in the backends' script (which has this function's source)."""
    dice_rng = np.random.default_rng(11)
    masks = (dice_rng.random((8, 6)) > 0.5).astype(np.float32)
    probs = dice_rng.uniform(0.05, 0.95, (8, 6)).astype(np.float32)
    return masks, probs, dice_rng.uniform(0.0, 2.0, 8).astype(np.float32)


def _generalized_dice_rows(masks, probs, weight):
    """generalized_dice_rows(y, p) written with jax.numpy, reduced as Keras'
    sum_over_batch_size: its value and its gradient in p (JAX's autodiff)."""

    def value(p):
        class_weight = 1 / (masks.sum(-1) ** 2 + 1e-7)
        dice = 1 - (2 * (masks * p).sum(-1) + 1) / (masks.sum(-1) + p.sum(-1) + 1)
        return jnp.sum(weight * class_weight / class_weight.mean() * dice) / len(masks)

    return jax.value_and_grad(value)(jnp.asarray(probs))


BACKEND_SCRIPT = textwrap.dedent('''
    import json, os
    import numpy as np
    import keras
    import lossdsl
    import lossdsl.keras
    from lossdsl import LossError
''') + inspect.getsource(dice_inputs) + textwrap.dedent('''

    TEXT = "asymmetric_l1(y, p, 4, 1)"
    compiled = {r: lossdsl.compile(TEXT, reduction=r) for r in ("mean", "sum", "none")}
    rng = np.random.default_rng(0)
    y = rng.normal(size=40).astype(np.float32)
    p = rng.normal(size=(40, 1)).astype(np.float32)
    w = rng.uniform(0.0, 2.0, size=40).astype(np.float32)
    y64, p64, w64 = y.astype(np.float64), p.reshape(-1).astype(np.float64), w.astype(np.float64)
    out = {"backend": keras.backend.backend(), "errors": {}, "refused": {}}
    for keras_reduction, reduction in (("sum_over_batch_size", "mean"), ("sum", "sum"),
                                       ("none", "none")):
        value = lossdsl.keras.Loss(TEXT, reduction=keras_reduction)(y, p)
        expected = compiled[reduction](y=y64, p=p64)
        out["errors"][keras_reduction] = float(np.max(np.abs(
            numpy(value) - expected) / np.maximum(1.0, np.abs(expected))))
    logits = rng.normal(size=(16, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 16)
    ours = lossdsl.keras.Loss("sparse_cce_logits(y, z)")(labels, logits)
    theirs = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    out["errors"]["sparse_cce_logits"] = abs(float(ours) - float(theirs)) / float(theirs)
    expected = lossdsl.compile("sparse_cce_logits(y, z)").grad(
        "z", y=labels, z=logits.astype(np.float64))
    out["errors"]["sparse_cce_logits gradient"] = float(np.max(np.abs(
        gradient(lossdsl.keras.Loss("sparse_cce_logits(y, z)"), labels, logits) - expected)))
    found = gradient(lossdsl.keras.Loss(TEXT), y, p, sample_weight=w)
    expected = compiled["mean"].grad("p", y=y64, p=p64, sample_weight=w64)
    out["errors"]["gradient"] = float(np.max(np.abs(found.reshape(-1) - expected)))
    # per-sample values coupled through the batch's mean: the incoming gradients as weights
    centred = "square(y - p + mean(p) - mean(y))"
    found = gradient(lossdsl.keras.Loss(centred), y, p, sample_weight=w)
    expected = lossdsl.compile(centred).grad("p", y=y64, p=p64, sample_weight=w64)
    out["errors"]["coupled samples gradient"] = float(np.max(np.abs(
        found.reshape(-1) - expected)))

    # one value per entry of (N, 3): Keras' (N, 3) incoming gradients, entry by entry
    wide = rng.normal(size=(8, 3)).astype(np.float32)
    y_wide = rng.normal(size=(8, 3)).astype(np.float32)
    expected = compiled["mean"].grad("p", y=y_wide.astype(np.float64),
                                     p=wide.astype(np.float64))
    out["errors"]["(N, 3) gradient"] = float(np.max(np.abs(
        gradient(lossdsl.keras.Loss(TEXT), y_wide, wide) - expected)))
    # entries coupled by a softmax over the row (refused before): the loss times Keras'
    # incoming gradients, summed; against the same values written with keras.ops
    class SoftmaxEntries(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return -y_true * keras.ops.log_softmax(y_pred, axis=-1)

    out["errors"]["coupled entries gradient"] = float(np.max(np.abs(
        gradient(lossdsl.keras.Loss("-y * log_softmax(z)"), np.abs(y_wide), wide)
        - gradient(SoftmaxEntries(), np.abs(y_wide), wide))))

    # Dice over each row (Keras' Dice(axis=-1)) and over the whole batch (Dice(): one number,
    # refused before), Tversky over each row, with and without sample weights: values and
    # gradients equal Keras' own losses (lossdsl's smooth 0; Keras adds 1e-7 to the
    # denominator, and its Tversky's alpha weighs sum(y (1 - p)), lossdsl's beta)
    masks, probs, dice_weight = dice_inputs()
    out["dice"] = {}
    for text, theirs in (("dice_rows(y, p, 0)", keras.losses.Dice(axis=-1)),
                         ("dice(y, p, 0)", keras.losses.Dice()),
                         ("tversky_rows(y, p, 0.3, 0.7, 0)",
                          keras.losses.Tversky(alpha=0.7, beta=0.3, axis=-1))):
        ours = lossdsl.keras.Loss(text)
        for weight in (None, dice_weight):
            found = float(numpy(ours(masks, probs, sample_weight=weight)))
            wanted = float(numpy(theirs(masks, probs, sample_weight=weight)))
            what = f"{text}{' weighted' if weight is not None else ''}"
            out["errors"][what] = abs(found - wanted) / abs(wanted)
            found_gradient = gradient(ours, masks, probs, sample_weight=weight)
            out["errors"][what + " gradient"] = float(np.max(np.abs(
                found_gradient - gradient(theirs, masks, probs, sample_weight=weight))))
            out["dice"][what] = [found, found_gradient.tolist()]
    # the generalised Dice couples the rows through the batch's mean of the class weights
    generalized = lossdsl.keras.Loss("generalized_dice_rows(y, p)")
    out["dice"]["generalized"] = [
        float(numpy(generalized(masks, probs, sample_weight=dice_weight))),
        gradient(generalized, masks, probs, sample_weight=dice_weight).tolist()]

    # a short fit of a segmentation-like model on dice_rows
    keras.utils.set_random_seed(0)
    pixel_rng = np.random.default_rng(12)  # rng's draws below stay as they were
    pixels = pixel_rng.normal(size=(64, 4)).astype(np.float32)
    truth = (pixels @ pixel_rng.normal(size=(4, 6)).astype(np.float32) > 0).astype(np.float32)
    segmenter = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, "sigmoid")])
    segmenter.compile(optimizer=keras.optimizers.SGD(0.5),
                      loss=lossdsl.keras.Loss("dice_rows(y, p, 0)"), jit_compile=False)
    before = float(numpy(keras.losses.Dice(axis=-1)(
        truth, segmenter.predict(pixels, verbose=0))))
    history = segmenter.fit(pixels, truth, epochs=10, batch_size=64, shuffle=False, verbose=0)
    out["dice fit"] = [before, history.history["loss"]]
    keras.utils.set_random_seed(0)
    x = rng.normal(size=(128, 3)).astype(np.float32)
    t = (x @ np.array([1.0, 2.0, -1.0], np.float32) + rng.normal(size=128).astype(np.float32)
         + 0.5)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=lossdsl.keras.Loss(TEXT),
                  jit_compile=False)
    before = compiled["mean"](y=t.astype(np.float64),
                              p=model.predict(x, verbose=0).reshape(-1).astype(np.float64))
    history = model.fit(x, t, epochs=20, batch_size=128, shuffle=False, verbose=0)
    out["before"], out["losses"] = float(before), history.history["loss"]
    w = rng.uniform(0.0, 2.0, size=128).astype(np.float32)
    out["weighted"] = model.evaluate(x, t, sample_weight=w, batch_size=128, verbose=0)
    out["weighted_kernel"] = float(compiled["mean"](
        y=t.astype(np.float64), p=model.predict(x, verbose=0).reshape(-1).astype(np.float64),
        sample_weight=w.astype(np.float64)))
    if out["backend"] == "tensorflow":  # XLA cannot compile a call back to the host
        model.compile(optimizer="sgd", loss=lossdsl.keras.Loss(TEXT), jit_compile=True)
        try:
            model.fit(x, t, epochs=1, batch_size=128, verbose=0)
        except LossError as error:
            out["refused"]["xla"] = str(error)
    print("RESULT " + json.dumps(out))
''')


# TensorFlow's run also checks the XLA refusal.
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_compile_and_fit_on_the_other_backends(backend):
    """Each backend in a subprocess (Keras picks its backend at import): values, gradients
    and a fit equal to the kernels, and the refusals."""
    out = run_on_backend(backend, BACKEND_SCRIPT)
    for what, error in out["errors"].items():
        assert error < 1e-6, (what, error)
    dice = out["dice"]
    masks, probs, dice_weight = dice_inputs()
    generalized_value, generalized_gradient = _generalized_dice_rows(masks, probs, dice_weight)
    np.testing.assert_allclose(dice["generalized"][0], generalized_value, rtol=1e-5)
    np.testing.assert_allclose(dice["generalized"][1], generalized_gradient, rtol=1e-4,
                               atol=1e-7)
    for what, (value, gradient) in dice.items():  # the JAX backend's (in this process)
        if what == "generalized":
            continue
        loss = lossdsl.keras.Loss(what.removesuffix(" weighted"))
        weight = dice_weight if what.endswith("weighted") else None
        np.testing.assert_allclose(value, float(loss(masks, probs, sample_weight=weight)),
                                   rtol=1e-5)
        np.testing.assert_allclose(gradient, jax.grad(
            lambda q, loss=loss, weight=weight: loss(masks, q, sample_weight=weight))(probs),
            rtol=1e-4, atol=1e-7)
    before, dice_losses = out["dice fit"]
    np.testing.assert_allclose(dice_losses[0], before, rtol=1e-5)
    assert dice_losses[-1] < dice_losses[0]
    if backend == "tensorflow":
        assert "jit_compile=False" in out["refused"]["xla"]
    losses = out["losses"]
    np.testing.assert_allclose(losses[0], out["before"], rtol=1e-6)
    assert losses[-1] < 0.7 * losses[0]
    np.testing.assert_allclose(out["weighted"], out["weighted_kernel"], rtol=1e-6)


def test_sparse_labels_in_a_column_are_class_indices():
    """keras.datasets give labels as (N, 1) columns; SparseCategoricalCrossentropy reads
    them as (N,) class indices, and so does a lossdsl loss over classes (it refused them)."""
    rng = np.random.default_rng(0)
    labels, logits = rng.integers(0, 4, 6), rng.normal(size=(6, 4)).astype("float32")
    ours = lossdsl.keras.Loss("sparse_cce_logits(y, z)")(labels[:, None], logits)
    theirs = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels[:, None], logits)
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-6)


@pytest.mark.parametrize("weight_shape", [(6,), (6, 1)], ids=["(N,)", "(N, 1)"])
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "mean_with_sample_weight"])
def test_a_weight_per_sample_of_wide_outputs_weighs_each_entry(reduction, weight_shape):
    """An elementwise loss of (N, K) outputs gives a value per entry; a weight (N,) is
    spread over the row's entries (Keras' weighting could not broadcast it: ValueError), so
    the weighted means are Keras' built-in MSE's. So is a weight (N, 1), which Keras
    broadcasts but whose "mean_with_sample_weight" it divided by the N weights' total (K
    times Keras' own value)."""
    rng = np.random.default_rng(1)
    y, p = rng.random((6, 4)).astype("float32"), rng.random((6, 4)).astype("float32")
    weight = rng.random(6).astype("float32").reshape(weight_shape)
    ours = lossdsl.keras.Loss("mse(y, p)", reduction=reduction)(y, p, sample_weight=weight)
    theirs = keras.losses.MeanSquaredError(reduction=reduction)(y, p, sample_weight=weight)
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-6)
    sparse = lossdsl.keras.Loss("sparse_cce_logits(y, z)", reduction=reduction)
    labels = rng.integers(0, 4, 6)
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
    np.testing.assert_allclose(float(sparse(labels, p, sample_weight=weight)),
                               float(expected(labels, p, sample_weight=weight)), rtol=1e-6)


@pytest.mark.parametrize("reduction", ["sum", None])
def test_a_weight_per_sample_of_a_batch_or_row_loss_weighs_its_value_once(reduction):
    """A batch-level loss (Dice) is one number that Keras weighs by each sample's weight: the
    weight spread over the K entries made "sum" K times Keras' Dice(), and reduction=None
    (N, K) values instead of (N,)."""
    masks, probs, weight = dice_inputs()
    for text, theirs in (("dice(y, p, 0)", keras.losses.Dice(reduction=reduction)),
                         ("dice_rows(y, p, 0)", keras.losses.Dice(reduction=reduction, axis=-1))):
        ours = lossdsl.keras.Loss(text, reduction=reduction)(masks, probs, sample_weight=weight)
        expected = theirs(masks, probs, sample_weight=weight)
        assert np.shape(ours) == np.shape(expected)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), rtol=1e-5)
