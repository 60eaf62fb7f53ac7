"""lossdsl.keras.Loss(..., ignore_class=...), checked against Keras' own
``SparseCategoricalCrossentropy(from_logits=True, ignore_class=...)``: values and gradients
under every Keras reduction, weighted or not, with a Keras mask, an all-ignored batch, a fit
and saving; on the JAX backend in this process and the PyTorch and TensorFlow backends in a
subprocess each (Keras picks its backend at import)."""

from __future__ import annotations

import textwrap

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

TEXT = "sparse_cce_logits(y, z)"
IGNORE = -1
REDUCTIONS = ("sum_over_batch_size", "sum", "mean_with_sample_weight", "none")


def _data(n: int = 8, classes: int = 4, seed: int = 0
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 logits, integer labels with two of them ignored, sample weights."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    labels[1] = labels[4] = IGNORE
    return logits, labels, rng.uniform(0.5, 2.0, n).astype(np.float32)


def _keras(reduction: str) -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE,
                                                      reduction=reduction)


@pytest.fixture(scope="module")
def losses() -> dict[str, lossdsl.keras.Loss]:
    """sparse_cce_logits with ignore_class=-1, one per Keras reduction."""
    return {r: lossdsl.keras.Loss(TEXT, reduction=r, ignore_class=IGNORE) for r in REDUCTIONS}


def _value_and_gradient(loss: keras.losses.Loss, labels: np.ndarray, logits: np.ndarray,
                        weight: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    value = np.asarray(loss(labels, logits, sample_weight=weight))
    gradient = jax.grad(lambda z: jnp.sum(loss(labels, z, sample_weight=weight)))(
        jnp.asarray(logits))
    return value, np.asarray(gradient)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_values_and_gradients_equal_keras_own(losses, reduction, weighted):
    """Keras divides sum_over_batch_size by the samples kept, mean_with_sample_weight by
    their weights' total; the ignored samples' values and gradients are 0."""
    logits, labels, weights = _data()
    weight = weights if weighted else None
    value, gradient = _value_and_gradient(losses[reduction], labels, logits, weight)
    expected, expected_gradient = _value_and_gradient(_keras(reduction), labels, logits,
                                                      weight)
    assert value.shape == expected.shape
    np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-5, atol=1e-7)
    assert (gradient[labels == IGNORE] == 0).all()
    if reduction == "sum_over_batch_size":  # lossdsl's own mean with ignore_index
        kept = lossdsl.compile(TEXT, reduction="mean", ignore_index=IGNORE)
        np.testing.assert_allclose(value, kept(y=labels, z=logits.astype(np.float64),
                                               sample_weight=weight), rtol=1e-6)


def test_the_numbers_keras_gives():
    """What Keras' reductions with ignore_class are, written out: the sum over the samples
    kept over their count (not the batch's), or over their weights' total."""
    logits, labels, weights = _data()
    kept = labels != IGNORE
    z = logits.astype(np.float64)
    per_sample = np.log(np.exp(z).sum(1)) - z[np.arange(len(z)), np.where(kept, labels, 0)]
    per_sample = np.where(kept, per_sample, 0.0)
    for reduction, expected in (
            ("sum_over_batch_size", (weights * per_sample).sum() / kept.sum()),
            ("sum", (weights * per_sample).sum()),
            ("mean_with_sample_weight", (weights * per_sample).sum() / weights[kept].sum())):
        for loss in (_keras(reduction), lossdsl.keras.Loss(TEXT, reduction=reduction,
                                                           ignore_class=IGNORE)):
            np.testing.assert_allclose(float(loss(labels, logits, sample_weight=weights)),
                                       expected, rtol=1e-6)


def test_an_all_ignored_batch_gives_zero_as_keras_does(losses):
    """Keras' reduction divides with divide_no_nan: 0, with zero gradients, under every
    reduction (where lossdsl's own reduction='mean' raises)."""
    logits, _, weights = _data(seed=1)
    labels = np.full(len(logits), IGNORE)
    for reduction, loss in losses.items():
        for weight in (None, weights):
            value, gradient = _value_and_gradient(loss, labels, logits, weight)
            expected, _ = _value_and_gradient(_keras(reduction), labels, logits, weight)
            np.testing.assert_array_equal(value, expected)
            assert not value.any() and not gradient.any()


def test_a_mask_on_y_pred_combines_with_the_ignored_samples(losses):
    """A Keras mask on y_pred (a Masking layer's) and the ignored labels drop their samples
    together, as for Keras' own loss."""
    logits, labels, weights = _data(seed=2)
    mask = np.array([True, True, False, True, True, True, False, True])
    for reduction in ("sum_over_batch_size", "mean_with_sample_weight"):
        results = []
        for loss in (losses[reduction], _keras(reduction)):
            prediction = jnp.asarray(logits)
            set_keras_mask(prediction, jnp.asarray(mask))
            results.append(float(loss(labels, prediction, sample_weight=weights)))
        np.testing.assert_allclose(results[0], results[1], rtol=1e-6)


def test_labels_in_a_column_jit_and_a_class_inside_the_range(losses):
    """(N, 1) label columns (keras.datasets'), the gradient under jit, and an ignore_class
    that names a real class (a background class 0)."""
    logits, labels, _ = _data(seed=3)
    loss = losses["sum_over_batch_size"]
    np.testing.assert_allclose(float(loss(labels[:, None], logits)),
                               float(_keras("sum_over_batch_size")(labels[:, None], logits)),
                               rtol=1e-6)
    jitted = jax.jit(jax.grad(lambda z: loss(labels, z)))(jnp.asarray(logits))
    np.testing.assert_allclose(jitted, _value_and_gradient(loss, labels, logits, None)[1],
                               rtol=1e-6)
    background = np.where(labels == IGNORE, 0, labels)
    ours = lossdsl.keras.Loss(TEXT, ignore_class=0)
    theirs = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    np.testing.assert_allclose(float(ours(background, logits)),
                               float(theirs(background, logits)), rtol=1e-6)


def test_labels_out_of_range_raise(losses):
    """Keras reads them unchecked; lossdsl raises for any that is not ignore_class."""
    logits, labels, _ = _data(seed=4)
    for bad in (-2, 4):
        wrong = labels.copy()
        wrong[0] = bad
        with pytest.raises(LossError, match=r"integers in \[0, 4\)"):
            losses["sum_over_batch_size"](wrong, logits)


def test_fit_config_and_saving(losses, tmp_path):
    """A short fit reports Keras' own loss; get_config and keras.saving keep
    ignore_class."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    labels = rng.integers(0, 4, 64)
    labels[::5] = IGNORE
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=losses["sum_over_batch_size"])
    history = model.fit(x, labels, epochs=5, batch_size=64, shuffle=False, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    reported = model.evaluate(x, labels, batch_size=64, verbose=0)
    expected = _keras("sum_over_batch_size")(labels, model.predict(x, verbose=0))
    np.testing.assert_allclose(reported, float(expected), rtol=1e-6)
    config = losses["sum"].get_config()
    assert config["ignore_class"] == IGNORE
    again = lossdsl.keras.Loss.from_config(config)
    assert again.ignore_class == IGNORE and "ignore_class=-1" in repr(again)
    assert "ignore_class" not in lossdsl.keras.Loss(TEXT).get_config()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.loss.ignore_class == IGNORE


def test_refusals():
    """ignore_class needs a loss whose y_true holds class indices, and an integer."""
    with pytest.raises(LossError, match="ignore_class=-1.*reads integer labels"):
        lossdsl.keras.Loss("asymmetric_l1(y, p, 4, 1)", ignore_class=IGNORE)
    with pytest.raises(LossError, match="ignore_class=0.5.*integer label value"):
        lossdsl.keras.Loss(TEXT, ignore_class=0.5)
    with pytest.raises(LossError, match="ignore_class masks .* class index"):
        lossdsl.keras.Loss("nll(z, y)", ignore_class=IGNORE)


# The PyTorch and TensorFlow backends, in a subprocess each: values and gradients equal
# Keras' own loss under every reduction, weighted or not, and an all-ignored batch gives 0.
BACKEND_SCRIPT = textwrap.dedent('''
    import json
    import keras
    import numpy as np
    import lossdsl.keras

    backend = keras.backend.backend()

    def value_and_gradient(loss, labels, logits, weight):
        # numpy and gradient: keras_backends.BACKEND_HELPERS, run before this script
        value = numpy(loss(labels, logits, sample_weight=weight))
        return value, gradient(loss, labels, logits, sample_weight=weight)

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 8)
    labels[1] = labels[4] = -1
    weights = rng.uniform(0.5, 2.0, 8).astype(np.float32)
    errors = {}
    for reduction in ("sum_over_batch_size", "sum", "mean_with_sample_weight", "none"):
        ours = lossdsl.keras.Loss("sparse_cce_logits(y, z)", reduction=reduction,
                                  ignore_class=-1)
        theirs = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=-1, reduction=reduction)
        for weight in (None, weights):
            for batch in (labels, np.full(8, -1)):
                found = value_and_gradient(ours, batch, logits, weight)
                wanted = value_and_gradient(theirs, batch, logits, weight)
                what = (f"{reduction} weighted={weight is not None} "
                        f"all_ignored={bool((batch == -1).all())}")
                errors[what] = [float(np.max(np.abs(f - w))) for f, w in zip(found, wanted)]
    print("RESULT " + json.dumps({"backend": backend, "errors": errors}))
''')


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_the_other_backends_equal_keras_own(backend):
    out = run_on_backend(backend, BACKEND_SCRIPT)
    assert len(out["errors"]) == 16
    for what, (value_error, gradient_error) in out["errors"].items():
        assert value_error < 1e-5 and gradient_error < 1e-6, (what, value_error,
                                                                gradient_error)
