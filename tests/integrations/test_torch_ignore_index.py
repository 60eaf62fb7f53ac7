"""lossdsl.torch's ignore_index, checked against PyTorch's ``F.cross_entropy(...,
ignore_index=-100)`` (and ``F.nll_loss``, and the same formulas written in torch with the
ignored rows masked): values and gradients under every reduction, second derivatives
(create_graph=True), torch.func transforms and forward mode, class weights, the per-entry
backward pass of reduction="none" and the errors."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import lossdsl  # noqa: E402
import lossdsl.torch as lt  # noqa: E402

IGNORE = -100
SPARSE = "sparse_cce_logits(y, z)"
REDUCTIONS = ("mean", "sum", "none")
DTYPES = (torch.float32, torch.float64)
TOLERANCE = {torch.float32: {"rtol": 1e-5, "atol": 1e-6},
             torch.float64: {"rtol": 1e-12, "atol": 1e-14}}


def _data(n: int = 8, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 logits (n, classes) and labels with two of them ignored."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, dtype=torch.float64, generator=generator)
    labels = torch.randint(0, classes, (n,), generator=generator)
    labels[1] = labels[4] = IGNORE
    return logits, labels


def _leaf(z: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return z.detach().to(dtype).clone().requires_grad_(True)


def _upstream(reduction: str, n: int, dtype: torch.dtype) -> torch.Tensor:
    """The incoming gradient: 1 for a reduced loss, distinct per sample for "none"."""
    if reduction == "none":
        return torch.linspace(-1.0, 2.0, n, dtype=dtype)
    return torch.tensor(1.0, dtype=dtype)


@pytest.fixture(scope="module")
def sparse() -> dict[str, lt.TorchLoss]:
    """sparse_cce_logits with ignore_index=-100, one module per reduction (compiled once)."""
    return {r: lt.loss(SPARSE, reduction=r, target="cpu", ignore_index=IGNORE)
            for r in REDUCTIONS}


@pytest.fixture(scope="module")
def weighted() -> dict[str, lt.TorchLoss]:
    """Class-weighted, label-smoothed cross entropy with ignore_index, per reduction."""
    return {r: lt.loss("sparse_cce_logits(y, z, 0.1, weight=cw)", reduction=r, target="cpu",
                       ignore_index=IGNORE) for r in REDUCTIONS}


@pytest.fixture(scope="module")
def elementwise() -> dict[str, lt.TorchLoss]:
    """A loss elementwise in z that reads labels (one-vs-rest BCE on one-hot targets): its
    diagonal Hessian is the whole second derivative, so create_graph=True goes through."""
    return {r: lt.loss("rowsum(bce_logits(onehot(y), z))", reduction=r, target="cpu",
                       ignore_index=IGNORE) for r in REDUCTIONS}


def _masked(per_sample: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-sample values reduced as PyTorch's ignore_index reduces them: the ignored ones 0
    and out of the mean's denominator."""
    kept = labels != IGNORE
    values = torch.where(kept, per_sample, torch.zeros_like(per_sample))
    if reduction == "none":
        return values
    return values.sum() / (kept.sum() if reduction == "mean" else 1)


def _one_vs_rest(z: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
    """rowsum(bce_logits(onehot(y), z)) written in torch, the ignored rows masked."""
    targets = F.one_hot(labels.clamp(min=0), z.shape[1]).to(z.dtype)
    per_sample = F.binary_cross_entropy_with_logits(z, targets, reduction="none").sum(1)
    return _masked(per_sample, labels, reduction)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_values_and_gradients_equal_cross_entropy(sparse, reduction, dtype):
    """(input, target) as F.cross_entropy takes them: the same values and gradients."""
    logits, labels = _data()
    ours, theirs = _leaf(logits, dtype), _leaf(logits, dtype)
    value = sparse[reduction](ours, labels)
    expected = F.cross_entropy(theirs, labels, ignore_index=IGNORE, reduction=reduction)
    assert value.dtype == dtype and value.shape == expected.shape
    torch.testing.assert_close(value, expected, **TOLERANCE[dtype])
    if reduction == "none":
        assert (value[labels == IGNORE] == 0).all()
    upstream = _upstream(reduction, len(labels), dtype)
    value.backward(upstream)
    expected.backward(upstream)
    assert ours.grad.dtype == dtype
    torch.testing.assert_close(ours.grad, theirs.grad, **TOLERANCE[dtype])
    assert (ours.grad[labels == IGNORE] == 0).all()
    # keywords bind the same way
    torch.testing.assert_close(sparse[reduction](z=logits.to(dtype), y=labels),
                               expected.detach(), **TOLERANCE[dtype])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_class_weights_and_label_smoothing_equal_cross_entropy(weighted, reduction):
    """PyTorch's weight= (the mean divides by the kept samples' class weights) and
    label_smoothing= with ignore_index."""
    logits, labels = _data(seed=1)
    class_weight = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    ours, theirs = _leaf(logits), _leaf(logits)
    value = weighted[reduction](z=ours, y=labels, cw=class_weight)
    expected = F.cross_entropy(theirs, labels, weight=class_weight, ignore_index=IGNORE,
                               reduction=reduction, label_smoothing=0.1)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-14)
    upstream = _upstream(reduction, len(labels), torch.float64)
    value.backward(upstream)
    expected.backward(upstream)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_second_derivatives_equal_torch_autograd(elementwise, reduction, dtype):
    """grad(create_graph=True), then the gradient of a function of that gradient: the
    create_graph path's gradient and diagonal Hessian kernels drop the ignored rows too."""
    logits, labels = _data(seed=2)
    ours, theirs = _leaf(logits, dtype), _leaf(logits, dtype)
    upstream = _upstream(reduction, len(labels), dtype)
    (gradient,) = torch.autograd.grad(elementwise[reduction](ours, labels), ours, upstream,
                                      create_graph=True)
    (expected,) = torch.autograd.grad(_one_vs_rest(theirs, labels, reduction), theirs,
                                      upstream, create_graph=True)
    torch.testing.assert_close(gradient, expected, **TOLERANCE[dtype])
    (second,) = torch.autograd.grad((gradient ** 3).sum(), ours)
    (expected_second,) = torch.autograd.grad((expected ** 3).sum(), theirs)
    torch.testing.assert_close(second, expected_second, **TOLERANCE[dtype])
    assert (second[labels == IGNORE] == 0).all()
    assert second.abs().sum() > 0


def test_gradient_penalty_through_nll_equals_nll_loss():
    """nll(y, log_p) after torch's log_softmax: a gradient penalty (double backward) as
    F.nll_loss(..., ignore_index=-100) gives it."""
    module = lt.loss("nll(y, log_p)", target="cpu", ignore_index=IGNORE)
    logits, labels = _data(seed=3)
    ours, theirs = _leaf(logits), _leaf(logits)
    (gradient,) = torch.autograd.grad(module(F.log_softmax(ours, -1), labels), ours,
                                      create_graph=True)
    (expected,) = torch.autograd.grad(F.nll_loss(F.log_softmax(theirs, -1), labels,
                                                 ignore_index=IGNORE), theirs,
                                      create_graph=True)
    torch.testing.assert_close(gradient, expected, rtol=1e-12, atol=1e-14)
    (second,) = torch.autograd.grad((gradient ** 2).sum(), ours)
    (expected_second,) = torch.autograd.grad((expected ** 2).sum(), theirs)
    torch.testing.assert_close(second, expected_second, rtol=1e-12, atol=1e-14)


def test_torch_func_transforms_and_forward_mode(sparse, elementwise):
    """grad, jacfwd and jvp (forward mode), vmap (each slice its own mean) and
    vmap(grad), jacrev/jacfwd of reduction="none", hessian of an elementwise loss."""
    func = torch.func
    logits, labels = _data(seed=4)
    mean, none = sparse["mean"], sparse["none"]

    def reference(z: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        return F.cross_entropy(z, y, ignore_index=IGNORE, reduction=reduction)

    def close(found: torch.Tensor, expected: torch.Tensor) -> None:
        torch.testing.assert_close(found, expected, rtol=1e-12, atol=1e-14)

    close(func.grad(lambda z: mean(z, labels))(logits),
          func.grad(lambda z: reference(z, labels))(logits))
    close(func.jacfwd(lambda z: mean(z, labels))(logits),
          func.jacrev(lambda z: reference(z, labels))(logits))
    tangent = torch.linspace(-1.0, 1.0, logits.numel(), dtype=torch.float64).reshape(
        logits.shape)
    close(func.jvp(lambda z: mean(z, labels), (logits,), (tangent,))[1],
          func.jvp(lambda z: reference(z, labels), (logits,), (tangent,))[1])
    batches, batch_labels = logits.reshape(2, 4, 4), labels.reshape(2, 4)
    close(func.vmap(mean)(batches, batch_labels), func.vmap(reference)(batches, batch_labels))
    close(func.vmap(func.grad(mean))(batches, batch_labels),
          func.vmap(func.grad(reference))(batches, batch_labels))
    close(func.jacrev(lambda z: none(z, labels))(logits),
          func.jacrev(lambda z: reference(z, labels, "none"))(logits))
    close(func.jacfwd(lambda z: none(z, labels))(logits),
          func.jacrev(lambda z: reference(z, labels, "none"))(logits))
    close(func.hessian(lambda z: elementwise["mean"](z, labels))(logits),
          func.hessian(lambda z: _one_vs_rest(z, labels, "mean"))(logits))


def test_values_per_entry_coupled_in_a_row_take_their_incoming_gradients():
    """-onehot(y) * log_softmax(z) with reduction="none": (N, K) values, whose (N, K)
    incoming gradients go through the upstream-weighted loss (compiled with the
    ignore_index too)."""
    module = lt.loss("-onehot(y) * log_softmax(z)", reduction="none", target="cpu",
                     ignore_index=IGNORE)
    logits, labels = _data(n=6, classes=3, seed=5)
    ours, theirs = _leaf(logits), _leaf(logits)
    value = module(ours, labels)
    kept = (labels != IGNORE)[:, None]
    expected = -F.one_hot(labels.clamp(min=0), 3) * F.log_softmax(theirs, -1) * kept
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-14)
    upstream = torch.linspace(-1.0, 2.0, 18, dtype=torch.float64).reshape(6, 3)
    value.backward(upstream)
    expected.backward(upstream)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-12, atol=1e-14)
    assert all(compiled.ignore_index == IGNORE
               for compiled in (module._cpu, *module._summed.values(),
                                *module._weighted.values()))


def test_an_all_ignored_batch(sparse):
    """PyTorch's mean over no samples is nan; lossdsl raises, saying what to do. The sum is
    0 (as PyTorch's), and so are the per-sample values and the gradients."""
    logits, _ = _data(seed=6)
    labels = torch.full((len(logits),), IGNORE)
    assert torch.isnan(F.cross_entropy(logits, labels, ignore_index=IGNORE))
    with pytest.raises(lossdsl.LossError, match="ignore_index=-100.*reduction='sum'"):
        sparse["mean"](logits, labels)
    for reduction in ("sum", "none"):
        z = _leaf(logits)
        value = sparse[reduction](z, labels)
        torch.testing.assert_close(value, F.cross_entropy(logits, labels, ignore_index=IGNORE,
                                                          reduction=reduction))
        value.sum().backward()
        assert (z.grad == 0).all()


def test_labels_out_of_range_still_raise(sparse):
    logits, labels = _data(seed=7)
    for bad in (-1, 4):
        wrong = labels.clone()
        wrong[0] = bad
        with pytest.raises(lossdsl.LossError, match=r"integers in \[0, 4\)"):
            sparse["mean"](logits, wrong)


def test_an_ignore_index_inside_the_classes():
    """ignore_index may name a real class (a background class 0), as PyTorch allows."""
    module = lt.loss(SPARSE, target="cpu", ignore_index=0)
    logits, labels = _data(seed=8)
    labels = labels.clamp(min=0)
    ours, theirs = _leaf(logits), _leaf(logits)
    module(ours, labels).backward()
    F.cross_entropy(theirs, labels, ignore_index=0).backward()
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-12, atol=1e-14)


def test_a_compiled_loss_carries_its_ignore_index():
    """A CompiledLoss compiled with ignore_index (refused before) carries it; a conflicting
    explicit value is an error, the same one is accepted."""
    compiled = lossdsl.compile(SPARSE, ignore_index=IGNORE)
    module = lt.loss(compiled, target="cpu")
    assert module.ignore_index == IGNORE
    logits, labels = _data(seed=9)
    torch.testing.assert_close(module(logits, labels),
                               F.cross_entropy(logits, labels, ignore_index=IGNORE))
    assert lt.TorchLoss(compiled, target="cpu", ignore_index=-100).ignore_index == IGNORE
    with pytest.raises(lossdsl.LossError, match="compiled with ignore_index=-100.*255"):
        lt.loss(compiled, ignore_index=255)


def test_repr_and_refusals():
    assert "ignore_index=-100" in repr(lt.loss(SPARSE, target="cpu", ignore_index=IGNORE))
    assert "ignore_index" not in repr(lt.loss(SPARSE, target="cpu"))
    with pytest.raises(lossdsl.LossError, match="reads integer labels"):
        lt.loss("huber(y, p)", ignore_index=IGNORE)
    with pytest.raises(lossdsl.LossError, match="must be an integer label value"):
        lt.loss(SPARSE, ignore_index=0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cuda_tensors_drop_the_ignored_rows(sparse, reduction):
    """CUDA tensors go to the CUDA kernels, compiled with the ignore_index too."""
    logits, labels = _data(seed=10)
    ours, theirs = _leaf(logits.cuda()), _leaf(logits.cuda())
    value = sparse[reduction](ours, labels.cuda())
    expected = F.cross_entropy(theirs, labels.cuda(), ignore_index=IGNORE,
                               reduction=reduction)
    torch.testing.assert_close(value, expected)
    upstream = _upstream(reduction, len(labels), torch.float64).cuda()
    value.backward(upstream)
    expected.backward(upstream)
    torch.testing.assert_close(ours.grad, theirs.grad)
    if reduction == "mean":
        with pytest.raises(lossdsl.LossError, match="ignore_index"):
            sparse[reduction](logits.cuda(), torch.full_like(labels, IGNORE).cuda())

