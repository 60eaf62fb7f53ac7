"""Small defects of the last session, each with the test that failed before its fix.

* label-scale predictions (:func:`lossdsl.implied.label_scale`) of a loss whose gradient is
  not finite beyond the labels it takes (``mse(log(y), p)`` at y < 0): the bracket stopped
  at the first such label ("no sign change") instead of closing in on the labels it takes;
* :mod:`lossdsl.dask`: the scalar glue's division by a count total of 0 printed NumPy's
  RuntimeWarning before the LossDomainError (dask computes the glue outside ``run``'s
  errstate);
* :mod:`lossdsl.jax`: the all-ignored message lacked the kernels' "(PyTorch returns nan)".
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lossdsl.errors import LossDomainError, LossError
from lossdsl.implied import label_scale


# ------------------------------------------------------------------ label-scale predictions
def _log_mse_gradient(scores: np.ndarray, sign: float):
    """d/dp of (sign*log(sign*y) - p)^2 for each row's score, NaN where sign*y < 0 (log of a
    negative label): the gradient falls as the label rises, as label_scale expects."""
    def gradient(labels: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        p = scores if rows is None else scores[rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            return 2.0 * (p - sign * np.log(sign * labels))
    return gradient


def test_label_scale_backs_off_labels_where_the_gradient_is_not_finite():
    """Trained on labels in [1, 10], rows whose answer is below them (0.3, 1e-3): the first
    doubling stepped to y = -8, where log(y) is NaN, and stopped there. The answer is the
    closed form exp(p); the mirror image (labels in [-10, -1], the loss not finite above 0)
    finds -exp(-p) the same way."""
    expected = np.array([0.3, 1e-3, 2.5, 50.0, 1e-12])
    found = label_scale(_log_mse_gradient(np.log(expected), 1.0), expected.size, (1.0, 10.0),
                        "mse(log(y), p)")
    np.testing.assert_allclose(found, expected, rtol=1e-12)
    found = label_scale(_log_mse_gradient(-np.log(expected), -1.0), expected.size,
                        (-10.0, -1.0), "mse(-log(-y), p)")
    np.testing.assert_allclose(found, -expected, rtol=1e-12)


def test_label_scale_without_a_root_among_finite_gradients_is_refused_naming_where():
    """dl/dz < 0 at every label > 0 and NaN at every other: no label-scale prediction, an
    error that says where the gradient stopped being finite (not an endless search)."""
    def gradient(labels: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        return np.where(labels > 0, -1.0, np.nan)

    with pytest.raises(LossError, match=r"row 0: dl/dz does not change sign .* not finite at "
                                        r"the labels below"):
        label_scale(gradient, 2, (1.0, 10.0), "the loss")


def test_a_linear_model_predicts_below_and_above_its_training_labels():
    """lossdsl.linear.LossRegressor("mse(log(y), p)") fitted on labels 10^x in [1, 10]:
    predict at x = log10(0.3) raised "implies no label-scale prediction"; the prediction is
    exp of the score (the label whose log is the score)."""
    from lossdsl.linear import LossRegressor

    x = np.linspace(0.0, 1.0, 40)[:, None]
    model = LossRegressor("mse(log(y), p)").fit(x, 10.0 ** x[:, 0])
    assert not model.identity_link_
    new = np.array([[np.log10(0.3)], [0.5], [np.log10(50.0)]])
    predicted = model.predict(new)
    np.testing.assert_allclose(predicted, np.exp(model.predict_raw(new)), rtol=1e-12)
    assert predicted[0] < 0.31 and predicted[2] > 49  # below and above the labels' range


# ------------------------------------------------------------------ dask's glue
def test_dask_count_total_of_zero_raises_without_a_runtime_warning():
    """count_as counts that total 0 over every chunk: the mean's 1/total in the lazy glue
    printed "divide by zero encountered" before the LossDomainError."""
    da = pytest.importorskip("dask.array")
    import lossdsl.dask

    loss = lossdsl.dask.compile("count_as(square(y - p), s)")
    y, p, s = da.ones(8, chunks=4), da.zeros(8, chunks=4), da.zeros(8, chunks=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for result in (lambda: loss(y=y, p=p, s=s), lambda: loss.grad("p", y=y, p=p, s=s),
                       lambda: loss.value_and_grad("p", y=y, p=p, s=s)[0]):
            with pytest.raises(LossDomainError, match=r"count_as\(l, s\) sum to 0\.0"):
                result().compute()


def test_dask_glue_of_a_zero_total_is_nan_silently_as_one_call_is():
    """A loss that divides by its own sum (no count to check): 0/0 is NaN without a warning
    on NumPy arrays (run's errstate); through dask it warned. Results stay NumPy's float64."""
    da = pytest.importorskip("dask.array")
    import lossdsl.dask

    text = "sum(y*p)/sum(y)"
    y, p = np.zeros(6), np.arange(6.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        single = lossdsl.compile(text, reduction="sum").value_and_grad("p", y=y, p=p)
        value, gradient = lossdsl.dask.compile(text, reduction="sum").value_and_grad(
            "p", y=da.from_array(y, chunks=2), p=da.from_array(p, chunks=2))
        value, gradient = value.compute(), gradient.compute()
    assert np.isnan(value) and np.isnan(single[0])
    np.testing.assert_array_equal(gradient, single[1])
    assert type(value) is np.float64 and type(gradient) is np.ndarray
    value = lossdsl.dask.compile(text, reduction="sum")(y=da.from_array(y + 1, chunks=2),
                                                        p=da.from_array(p, chunks=2))
    assert type(value.compute()) is np.float64 and value.compute() == pytest.approx(2.5)


# ------------------------------------------------------------------ lossdsl.jax's message
def test_jax_all_ignored_message_is_the_kernels():
    """Every label ignored under a mean: the kernels say "(PyTorch returns nan)" and point
    at the label in the loss text; lossdsl.jax said neither."""
    pytest.importorskip("jax")
    import lossdsl.jax

    text = "sparse_cce_logits(y, z)"
    y = np.full(5, -100.0)
    z = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(LossDomainError) as kernels:
        lossdsl.compile(text, ignore_index=-100)(y=y, z=z)
    with pytest.raises(LossDomainError) as printed:
        lossdsl.jax.loss(text, ignore_index=-100)(y=y, z=z)
    assert "(PyTorch returns nan)" in str(printed.value)
    assert str(printed.value) == str(kernels.value)
