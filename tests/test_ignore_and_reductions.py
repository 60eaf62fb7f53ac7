"""``ignore_index`` (PyTorch's ``ignore_index=-100``, Keras' ``ignore_class``) and the anchors'
reductions ``"batchmean"`` (PyTorch's KLDivLoss) and ``"sum_over_batch_size"`` (Keras).

Values and gradients are compared with ``torch.nn.functional`` (float64, to 1e-12) where
PyTorch has the loss, else with the anchors' formulas written out in NumPy; Hessian
diagonals with ``torch.autograd.functional.hessian`` or the closed forms; every derivative
also with central finite differences. Each case asks ONE fused kernel for the value, the
gradient and the Hessian (``_compute``), as tests/backend/test_cuda.py does, so that a target costs
one compilation per case. target="cuda" runs under Numba's CUDA simulator without a GPU
(tests/conftest.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lossdsl
from lossdsl.errors import LossDomainError, LossError, LossShapeError

pytestmark = pytest.mark.filterwarnings(
    "ignore:(invalid value|divide by zero|overflow) encountered:RuntimeWarning")

TARGETS = ("cpu", "parallel", "cuda")
IGNORE = -100
N, K = 11, 4
TOL = 1e-12


def host(value: Any) -> Any:
    """A result as NumPy (device arrays come back from target="cuda" device inputs)."""
    if hasattr(value, "copy_to_host"):
        return value.copy_to_host()
    return value


def fused(compiled: lossdsl.CompiledLoss, wrt: str, sample_weight: Any = None,
          **inputs: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """(value, gradient, Hessian diagonal) from one fused kernel."""
    value, gradient, hessian = compiled.compute(True, (wrt,), (wrt,), inputs, sample_weight)
    return host(value), host(gradient), host(hessian)


def close(actual: Any, expected: Any, tol: float = TOL) -> None:
    """Equal to ``tol`` relative to the largest expected magnitude (absolute near 0)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * scale)


def labelled(seed: int = 0, ignored: tuple[int, ...] = (1, 4, 9)):
    """Logits (N, K) and float labels with some rows ignored."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=(N, K))
    y = rng.integers(0, K, N).astype(np.float64)
    y[list(ignored)] = IGNORE
    return z, y


def torch_ce(z: np.ndarray, y: np.ndarray, reduction: str, weight: np.ndarray | None = None,
             ignore_index: int = IGNORE, smoothing: float = 0.0):
    """(value, gradient, Hessian diagonal) of F.cross_entropy; reduction "none" is
    differentiated through its sum (each row's own derivatives, as lossdsl's "none")."""
    labels = torch.tensor(y, dtype=torch.long)
    classes = None if weight is None else torch.tensor(weight)

    def loss(logits):
        return F.cross_entropy(logits, labels, weight=classes, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=smoothing)

    logits = torch.tensor(z, requires_grad=True)
    value = loss(logits)
    value.sum().backward()
    hessian = torch.autograd.functional.hessian(lambda t: loss(t).sum(), torch.tensor(z))
    diagonal = hessian.reshape(z.size, z.size).diagonal().reshape(z.shape)
    return value.detach().numpy(), logits.grad.numpy(), diagonal.numpy()


# ------------------------------------------------------------------ ignore_index vs PyTorch

@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sparse_cce_logits_matches_torch_ignore_index(target, reduction):
    z, y = labelled()
    compiled = lossdsl.compile("sparse_cce_logits(y, z)", target=target, reduction=reduction,
                               ignore_index=IGNORE)
    value, gradient, hessian = fused(compiled, "z", y=y, z=z)
    expected = torch_ce(z, y, reduction)
    close(value, expected[0])
    close(gradient, expected[1])
    close(hessian, expected[2])
    ignored = y == IGNORE
    assert np.all(gradient[ignored] == 0) and np.all(hessian[ignored] == 0)
    if reduction == "none":
        assert np.all(value[ignored] == 0)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("reduction", ["weighted_mean", "sum", "none"])
def test_class_weights_as_sample_weights_match_torch(target, reduction):
    """PyTorch's weight= (per class) is sample_weight=weight[y]; its weighted mean divides by
    the weights of the rows kept: reduction="weighted_mean"."""
    z, y = labelled(1)
    classes = np.array([0.5, 2.0, 1.25, 3.0])
    weight = classes[np.where(y == IGNORE, 0, y).astype(int)]
    weight[y == IGNORE] = 7.0  # an ignored row's weight counts for nothing either
    compiled = lossdsl.compile("sparse_cce_logits(y, z)", target=target, reduction=reduction,
                               ignore_index=IGNORE)
    value, gradient, hessian = fused(compiled, "z", sample_weight=weight, y=y, z=z)
    expected = torch_ce(z, y, "mean" if reduction == "weighted_mean" else reduction, classes)
    close(value, expected[0])
    close(gradient, expected[1])
    close(hessian, expected[2])


def test_label_smoothing_and_other_ignore_values_match_torch():
    """ignore_index is any integer: a valid class (Keras' ignore_class=0, a "void" class)
    drops the rows of that class; label smoothing as PyTorch's."""
    z, y = labelled(2, ignored=())
    compiled = lossdsl.compile("sparse_cce_logits(y, z, 0.1)", ignore_index=0)
    value, gradient, hessian = fused(compiled, "z", y=y, z=z)
    expected = torch_ce(z, y, "mean", ignore_index=0, smoothing=0.1)
    assert np.any(y == 0)
    close(value, expected[0])
    close(gradient, expected[1])
    close(hessian, expected[2])


@pytest.mark.parametrize("target", TARGETS)
def test_sparse_cce_keras_ignore_class_with_weights(target):
    """Keras' SparseCategoricalCrossentropy(ignore_class=c) under its default reduction
    sum_over_batch_size with sample weights: sum(w*l) over the kept rows divided by their
    count (Keras adds 1e-7 to the count; lossdsl divides by the count itself)."""
    rng = np.random.default_rng(3)
    p = rng.uniform(0.01, 1.0, size=(N, K))
    _, y = labelled(3)
    w = rng.uniform(0.2, 3.0, N)
    compiled = lossdsl.compile("sparse_cce(y, p)", target=target,
                               reduction="sum_over_batch_size", ignore_index=IGNORE)
    value, gradient, hessian = fused(compiled, "p", sample_weight=w, y=y, p=p)
    kept = y != IGNORE
    labels = np.where(kept, y, 0).astype(int)
    total = p.sum(axis=1, keepdims=True)
    q = np.clip(p / total, 1e-7, 1 - 1e-7)
    losses = -np.log(q[np.arange(N), labels])
    close(value, np.sum((w * losses)[kept]) / kept.sum())
    # d/dp_k of -log(p_y/sum(p)) = 1/sum(p) - [k = y]/p_y; second derivative
    # -1/sum(p)^2 + [k = y]/p_y^2 (no clipping is active at these p)
    onehot = np.eye(K)[labels]
    scale = (w * kept / kept.sum())[:, None]
    close(gradient, scale * (1 / total - onehot / p))
    close(hessian, scale * (-1 / total**2 + onehot / p**2))


def test_ignored_rows_with_non_finite_scores_stay_out():
    """An ignored row's scores are never part of the result: infinite or NaN logits there
    leave value, gradient and Hessian of the other rows as they are, and its own 0."""
    z, y = labelled(4)
    wild = z.copy()
    wild[1] = [np.inf, -np.inf, np.nan, 1e300]
    wild[4, 0] = -np.inf
    compiled = lossdsl.compile("sparse_cce_logits(y, z)", ignore_index=IGNORE)
    clean = fused(compiled, "z", y=y, z=z)
    for got, want in zip(fused(compiled, "z", y=y, z=wild), clean):
        close(got, want)
        assert np.all(np.isfinite(got))


def test_pick_of_kept_rows_reads_one_column():
    """-inf logits of other classes (masked-out classes) are fine in kept rows too: the pick
    reads z[i, y_i] alone, never -inf * 0 = NaN."""
    z, y = labelled(5)
    z[0, :] = [-np.inf, 0.3, -np.inf, -1.0]
    y[0] = 1
    compiled = lossdsl.compile("sparse_cce_logits(y, z)", ignore_index=IGNORE)
    value, gradient, hessian = fused(compiled, "z", y=y, z=z)
    expected = torch_ce(z, y, "mean")
    close(value, expected[0])
    close(gradient, expected[1])
    close(hessian[1:], expected[2][1:])  # torch's double backward gives NaN at -inf logits
    assert np.all(np.isfinite(hessian))


@pytest.mark.parametrize("loss", [
    "gce_logits(y, z)",
    "multiclass_hinge(y, z)",
    "rowsum(rowof(C, y)*softmax(z))",
    "sparse_cce_logits(y, z) + 0.01*l2(z)",
])
def test_other_label_losses_drop_ignored_rows(loss):
    """Any loss that reads labels (pick, onehot, rowof) drops the ignored rows: the result is
    the loss over the kept rows alone, and the derivatives agree with finite differences.
    A lookup table is never read at the ignored value (it would be out of its bounds). A
    batch term (0.01*l2(z), over every z) is added once, ignored rows or not."""
    z, y = labelled(6)
    cost = np.random.default_rng(6).uniform(0, 2, size=(K, K))
    extra = {"C": cost} if "rowof" in loss else {}
    per_row = loss.partition(" + 0.01*l2(z)")[0]
    compiled = lossdsl.compile(loss, ignore_index=IGNORE)
    kept = y != IGNORE
    value, gradient, hessian = fused(compiled, "z", y=y, z=z, **extra)
    expected_value, expected_grad, expected_hess = 0.0, np.zeros_like(z), np.zeros_like(z)
    if per_row != loss:  # the batch term 0.01*sum(z^2)
        expected_value, expected_grad = 0.01 * np.sum(z**2), 0.02 * z
        expected_hess = np.full_like(z, 0.02)
    kept_value, kept_grad, kept_hess = fused(lossdsl.compile(per_row), "z", y=y[kept],
                                             z=z[kept], **extra)
    expected_grad[kept] += kept_grad
    expected_hess[kept] += kept_hess
    close(value, expected_value + kept_value)
    close(gradient, expected_grad)
    close(hessian, expected_hess)
    check_finite_differences(compiled, "z", {"y": y, "z": z, **extra}, gradient, hessian)


def check_finite_differences(compiled, wrt, inputs, gradient, hessian, sample_weight=None,
                             step=1e-5, tol=1e-6):
    """Central differences of the value (gradient) and of the gradient (Hessian diagonal)
    at every element of ``inputs[wrt]``."""
    x = np.asarray(inputs[wrt], dtype=np.float64)
    numeric_grad, numeric_hess = np.zeros_like(x), np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += step
        down[index] -= step
        at_up, at_down = {**inputs, wrt: up}, {**inputs, wrt: down}
        numeric_grad[index] = (compiled(sample_weight, **at_up)
                               - compiled(sample_weight, **at_down)) / (2 * step)
        numeric_hess[index] = (compiled.grad(wrt, sample_weight, **at_up)[index]
                               - compiled.grad(wrt, sample_weight, **at_down)[index]) / (2 * step)
    close(gradient, numeric_grad, tol)
    close(hessian, numeric_hess, tol)


# ------------------------------------------------------------------ ignore_index on the device

def test_device_labels_are_checked_and_counted_on_the_device():
    """Labels already on the device (target="cuda"): the ignored ones are counted there by
    one small kernel, a bad one still raises, and results match PyTorch."""
    from numba import cuda

    z, y = labelled(7)
    compiled = lossdsl.compile("sparse_cce_logits(y, z)", target="cuda", ignore_index=IGNORE)
    value, gradient, hessian = fused(compiled, "z", y=cuda.to_device(y), z=cuda.to_device(z))
    expected = torch_ce(z, y, "mean")
    close(value, expected[0])
    close(gradient, expected[1])
    close(hessian, expected[2])
    bad = y.copy()
    bad[6] = K
    with pytest.raises(LossDomainError, match=r"found 4(\.0)? at index 6"):
        compiled(y=cuda.to_device(bad), z=cuda.to_device(z))
    with pytest.raises(LossDomainError, match="every label of 'y' equals ignore_index"):
        compiled(y=cuda.to_device(np.full(N, float(IGNORE))), z=cuda.to_device(z))


# ------------------------------------------------------------------ all ignored, errors

@pytest.mark.parametrize("reduction", ["mean", "weighted_mean", "batchmean",
                                       "sum_over_batch_size"])
def test_all_ignored_mean_is_an_error_not_nan(reduction):
    """PyTorch returns nan for the mean over no rows; lossdsl raises, with the position of
    the labels in the loss text."""
    z, _ = labelled()
    y = np.full(N, float(IGNORE))
    compiled = lossdsl.compile("sparse_cce_logits(y, z)", reduction=reduction,
                               ignore_index=IGNORE)
    assert np.isnan(torch_ce(z, y, "mean")[0])
    with pytest.raises(LossDomainError, match="every label of 'y' equals ignore_index=-100") \
            as caught:
        compiled.grad("z", y=y, z=z)
    assert caught.value.span is not None and caught.value.span.column > 1


def test_all_ignored_sum_and_none_are_zero():
    z, _ = labelled()
    y = np.full(N, float(IGNORE))
    for reduction in ("sum", "none"):
        compiled = lossdsl.compile("sparse_cce_logits(y, z)", reduction=reduction,
                                   ignore_index=IGNORE)
        value, gradient, hessian = fused(compiled, "z", y=y, z=z)
        assert np.all(value == 0) and np.all(gradient == 0) and np.all(hessian == 0)
        close(value, torch_ce(z, y, reduction)[0])


@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_weighted_mean_over_weights_summing_to_zero_is_an_error_not_nan(target):
    """sum(w*l)/sum(w) with sum(w) = 0 (or not finite) was a silent NaN; as the mean over no
    samples above, an error, on the general path and on the planned small call alike."""
    z, y = labelled(ignored=())
    compiled = lossdsl.compile("sparse_cce_logits(y, z)", target, reduction="weighted_mean")
    ones = np.ones(N)
    for _ in range(2):  # the second call runs the plan the first one made
        close(compiled(y=y, z=z, sample_weight=ones), torch_ce(z, y, "mean")[0])
    (plan,) = [p for p in compiled._plans.values() if p is not None]
    assert plan.run({"y": y, "z": z}, ones, compiled.params, target, None) is not None
    assert plan.run({"y": y, "z": z}, np.zeros(N), compiled.params, target, None) is None
    for weights in (np.zeros(N), np.r_[1.0, -1.0, np.zeros(N - 2)], np.r_[np.nan, ones[1:]],
                    np.zeros(N, np.float32)):
        for call in (compiled, lambda **kw: compiled.grad("z", **kw)):
            with pytest.raises(LossDomainError, match="sample_weight sums to .*weighted_mean"):
                call(y=y, z=z, sample_weight=weights)
    close(compiled(y=y, z=z, sample_weight=ones), torch_ce(z, y, "mean")[0])  # plan still good
    # the other reductions do not divide by the weights: 0 for weights of 0
    for reduction in ("mean", "sum"):
        zero = lossdsl.compile("sparse_cce_logits(y, z)", target, reduction=reduction)
        assert zero(y=y, z=z, sample_weight=np.zeros(N)) == 0.0


@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_weighted_mean_whose_kept_weights_sum_to_zero_is_an_error_not_nan(target):
    """With ignore_index the weighted mean divides by the weights of the samples kept: where
    those sum to 0 (the ignored rows holding all the weight) it was NaN, though the weights'
    total was not 0; an error on the general path, the planned small call and lossdsl.jax."""
    import lossdsl.jax

    z, y = labelled()  # rows 1, 4 and 9 ignored
    weights = np.zeros(N)
    weights[[1, 4, 9]] = 1.0
    compiled = lossdsl.compile("sparse_cce_logits(y, z)", target, reduction="weighted_mean",
                               ignore_index=IGNORE)
    some = weights.copy()
    some[0] = 2.0
    for _ in range(2):  # the second call runs the plan the first one made
        kept = y != IGNORE
        expected = F.cross_entropy(torch.tensor(z[kept]), torch.tensor(y[kept]).long(),
                                   reduction="none").numpy()
        close(compiled(y=y, z=z, sample_weight=some), expected[0])  # row 0 alone weighs
        for call in (compiled, lambda **kw: compiled.grad("z", **kw)):
            with pytest.raises(LossDomainError, match="samples not ignored sums to 0.0"):
                call(y=y, z=z, sample_weight=weights)
    jax_loss = lossdsl.jax.loss("sparse_cce_logits(y, z)", reduction="weighted_mean",
                                ignore_index=IGNORE)
    with pytest.raises(LossDomainError, match="samples not ignored sums to 0.0"):
        jax_loss(y=y.astype(int), z=z, sample_weight=weights)
    with pytest.raises(LossDomainError, match="sample_weight sums to 0.0"):
        lossdsl.jax.loss("sparse_cce_logits(y, z)", reduction="weighted_mean")(
            y=np.zeros(N, int), z=z, sample_weight=np.zeros(N))


def test_other_bad_labels_still_raise():
    z, y = labelled()
    compiled = lossdsl.compile("sparse_cce_logits(y, z)", ignore_index=IGNORE)
    for bad in (-1.0, float(K), 1.5, np.nan):
        labels = y.copy()
        labels[5] = bad
        with pytest.raises(LossDomainError, match="must hold integers in \\[0, 4\\)"):
            compiled(y=labels, z=z)
    with pytest.raises(LossDomainError):  # without ignore_index, -100 is a bad label
        lossdsl.compile("sparse_cce_logits(y, z)")(y=y, z=z)


def test_ignore_index_errors_point_at_the_loss():
    with pytest.raises(LossError, match="ignore_index needs a loss that reads integer "
                                        "labels") as caught:
        lossdsl.compile("mse(y, p)", ignore_index=IGNORE)
    assert caught.value.span is not None
    with pytest.raises(LossError, match="ignore_index must be an integer"):
        lossdsl.compile("sparse_cce_logits(y, z)", ignore_index=-0.5)
    with pytest.raises(LossError, match="ignore_index must be an integer"):
        lossdsl.compile("sparse_cce_logits(y, z)", ignore_index="-100")
    z, y = labelled()
    two = lossdsl.compile("pick(z, y) + pick(z, t)", ignore_index=IGNORE)
    with pytest.raises(LossShapeError, match="exactly one label input") as caught:
        two(y=y, t=np.zeros(N), z=z)
    assert caught.value.span is not None
    scalar = lossdsl.compile("sparse_cce_logits(y, z)", ignore_index=IGNORE)
    with pytest.raises(LossShapeError, match="one per sample"):
        scalar(y=2, z=z)
    batch = lossdsl.compile("sparse_cce_logits(y, z) + mean(pick(z, y))", ignore_index=IGNORE)
    with pytest.raises(LossShapeError, match="also read by a batch term"):
        batch(y=y, z=z)
    dice = lossdsl.compile("1 - sum(pick(z, y))/sum(rowsum(z))", ignore_index=IGNORE)
    with pytest.raises(LossShapeError, match="one value per sample"):
        dice(y=y, z=z)


# ------------------------------------------------------------------ batchmean, sum_over_batch_size

@pytest.mark.parametrize("target", TARGETS)
def test_batchmean_matches_torch_kl_div(target):
    """PyTorch's F.kl_div(log_p, y, reduction="batchmean"): the elementwise KL summed over
    every element, divided by the number of rows N (not N*K)."""
    rng = np.random.default_rng(8)
    log_p = np.log(rng.dirichlet(np.ones(K), N))
    y = rng.dirichlet(np.ones(K), N)
    y[2, 1] = 0.0  # 0 log 0 = 0, as PyTorch's
    compiled = lossdsl.compile("xlogy(y, y) - y*log_p", target=target, reduction="batchmean")
    value, gradient, hessian = fused(compiled, "log_p", y=y, log_p=log_p)
    log_pt = torch.tensor(log_p, requires_grad=True)
    expected = F.kl_div(log_pt, torch.tensor(y), reduction="batchmean")
    expected.backward()
    close(value, expected.item())
    close(gradient, log_pt.grad.numpy())
    close(hessian, np.zeros((N, K)))
    # the per-row form (kl_div_log) under "mean" is the same number
    close(lossdsl.compile("kl_div_log(y, log_p)", target=target)(y=y, log_p=log_p),
          expected.item())


@pytest.mark.parametrize("target", TARGETS)
def test_batchmean_weighted_and_batch_terms(target):
    """batchmean with sample weights: sum(w*l)/N over every element; a batch term is added
    once. Against the formulas in NumPy and finite differences."""
    rng = np.random.default_rng(9)
    y, p = rng.normal(size=(N, K)), rng.normal(size=(N, K))
    w = rng.uniform(0.1, 2.0, N)
    compiled = lossdsl.compile("(p - y)^2*exp(0.3*p) + 0.1*l2(p)", target=target,
                               reduction="batchmean")
    value, gradient, hessian = fused(compiled, "p", sample_weight=w, y=y, p=p)
    r, e = p - y, np.exp(0.3 * p)
    ww = w[:, None]
    close(value, np.sum(ww * r**2 * e) / N + 0.1 * np.sum(p**2))
    close(gradient, ww * (2 * r + 0.3 * r**2) * e / N + 0.2 * p)
    close(hessian, ww * (2 + 1.2 * r + 0.09 * r**2) * e / N + 0.2)
    if target == "cpu":
        check_finite_differences(compiled, "p", {"y": y, "p": p}, gradient, hessian, w)


@pytest.mark.parametrize("target", TARGETS)
def test_sum_over_batch_size_is_keras_weighted(target):
    """Keras' default reduction with sample weights: sum(w*l) divided by the number of
    elements, not by sum(w) (keras/src/losses/loss.py reduce_values). A loss with a value per
    class counts N*K elements, as Keras' losses average the last axis first."""
    rng = np.random.default_rng(10)
    y, p = rng.uniform(size=(N, K)), rng.uniform(0.05, 0.95, size=(N, K))
    w = rng.uniform(0.1, 2.0, N)
    compiled = lossdsl.compile("bce(y, p)", target=target, reduction="sum_over_batch_size")
    value, gradient, hessian = fused(compiled, "p", sample_weight=w, y=y, p=p)
    q = np.clip(p, 1e-7, 1 - 1e-7)
    keras_losses = -(y * np.log(q) + (1 - y) * np.log(1 - q)).mean(axis=1)  # per sample
    close(value, np.sum(w * keras_losses) / N)
    assert abs(value - np.sum(w * keras_losses) / np.sum(w)) > 1e-3  # not the weighted mean
    ww = w[:, None] / (N * K)
    close(gradient, ww * ((1 - y) / (1 - p) - y / p))
    close(hessian, ww * ((1 - y) / (1 - p)**2 + y / p**2))
    mean = lossdsl.compile("bce(y, p)", target=target)
    close(mean(w, y=y, p=p), value)
    if target == "cpu":
        check_finite_differences(compiled, "p", {"y": y, "p": p}, gradient, hessian, w)


def test_batchmean_with_ignore_index_divides_by_rows_kept():
    """Ignored rows leave the batch: batchmean (and sum_over_batch_size) divide by the rows
    kept, like PyTorch's mean under ignore_index."""
    z, y = labelled(11)
    expected = torch_ce(z, y, "mean")
    for reduction in ("batchmean", "sum_over_batch_size"):
        compiled = lossdsl.compile("sparse_cce_logits(y, z)", reduction=reduction,
                                   ignore_index=IGNORE)
        value, gradient, hessian = fused(compiled, "z", y=y, z=z)
        close(value, expected[0])
        close(gradient, expected[1])
        close(hessian, expected[2])


def test_unknown_reduction_lists_the_choices():
    with pytest.raises(LossError, match="batchmean, sum_over_batch_size"):
        lossdsl.compile("mse(y, p)", reduction="batch_mean")


def test_integer_labels_float32_pickling_and_printing():
    """int64 labels (what PyTorch takes) and float32 scores; a pickled compiled loss keeps
    its ignore_index; the symbolic derivative names the count of samples kept."""
    import pickle

    from lossdsl.latex import to_latex

    z, y = labelled(12)
    labels = y.astype(np.int64)
    compiled = pickle.loads(pickle.dumps(
        lossdsl.compile("sparse_cce_logits(y, z)", ignore_index=IGNORE)))
    assert compiled.ignore_index == IGNORE
    value, gradient = compiled.value_and_grad("z", y=labels, z=z.astype(np.float32))
    expected = torch_ce(z, y, "mean")
    assert gradient.dtype == np.float32
    close(value, expected[0], 1e-6)
    close(gradient, expected[1], 1e-6)
    derivative = compiled.derivative("z")
    assert "N_kept" in str(derivative) and "-100 != y" in str(derivative)
    assert r"N_{\text{kept}}" in to_latex(derivative)


@pytest.mark.parametrize("front_end", ["xgboost", "dask", "scipy"])
def test_integrations_refuse_a_loss_compiled_with_ignore_index(front_end):
    """These integrations recompile a loss from its definition: a compiled ignore_index would
    be dropped and the ignored rows counted, so they refuse it (lossdsl.torch carries it
    over: tests/integrations/test_torch_ignore_index.py)."""
    pytest.importorskip({"xgboost": "xgboost", "dask": "dask", "scipy": "scipy"}[front_end])
    import importlib

    compiled = lossdsl.compile("sparse_cce_logits(y, z)", ignore_index=-100)
    module = importlib.import_module(f"lossdsl.{front_end}")
    make = {"xgboost": lambda: module.objective(compiled),
            "dask": lambda: module.compile(compiled),
            "scipy": lambda: module.objective(compiled, "z", shape=(4, 3))}[front_end]
    with pytest.raises(lossdsl.LossError, match="ignore_index"):
        make()
