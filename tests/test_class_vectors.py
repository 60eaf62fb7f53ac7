"""Per-class vectors (K,) bound at call time (``classvec``) and class-weighted means
(``count_as``): the library's ``weight=`` and per-class ``pos_weight=`` against
``torch.nn.functional`` in value, gradient and Hessian diagonal (float64, 1e-12), central
finite differences, every CPU target and the CUDA simulator, and the errors for vectors that
do not fit.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sweeps import SAMPLING

import lossdsl
from lossdsl.errors import LossArityError, LossDomainError, LossError, LossShapeError

TOL = 1e-12
N, K = 24, 5
RNG = np.random.default_rng(20261128)
Z = RNG.normal(0.0, 2.0, (N, K))
LABELS = RNG.integers(0, K, N)
SOFT = RNG.dirichlet(np.ones(K), N)
MULTI = (RNG.random((N, K)) < 0.4).astype(np.float64)
PROBABILITIES = RNG.dirichlet(np.ones(K), N)
W = RNG.uniform(0.2, 3.0, K)
PW = RNG.uniform(0.5, 4.0, K)


def close(actual: Any, expected: Any, tol: float = TOL) -> None:
    """Equal to ``tol`` relative to the largest expected magnitude (absolute near 0)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * scale)


def t(x: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


def torch_reference(function, x: np.ndarray,
                    second: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """(value, gradient, Hessian diagonal) of a scalar torch function of ``x`` (a Hessian of
    zeros when ``second`` is false: torch has no second derivative of multi_margin_loss,
    which is piecewise linear)."""
    xt = t(x, True)
    value = function(xt)
    (gradient,) = torch.autograd.grad(value, xt)
    if not second:
        return value.item(), gradient.numpy(), np.zeros_like(x)
    hessian = torch.autograd.functional.hessian(function, t(x))
    diagonal = hessian.reshape(x.size, x.size).diagonal().reshape(x.shape)
    return value.item(), gradient.numpy(), diagonal.numpy()


_COMPILED: dict[tuple, lossdsl.CompiledLoss] = {}


def compiled(text: str, target: str = "cpu", reduction: str = "mean",
             **options: Any) -> lossdsl.CompiledLoss:
    """One compiled loss per (text, target, reduction, options) for the whole module."""
    key = (text, target, reduction, tuple(sorted(options.items())))
    if key not in _COMPILED:
        _COMPILED[key] = lossdsl.compile(text, target=target, reduction=reduction, **options)
    return _COMPILED[key]


# (loss text, inputs, the input differentiated, torch reference for reduction="mean")
CASES = {
    "sparse_cce_logits": (
        "sparse_cce_logits(y, z, weight=w)", {"y": LABELS, "z": Z, "w": W}, "z",
        lambda z: F.cross_entropy(z, torch.tensor(LABELS), weight=t(W))),
    "sparse_cce_logits_smoothed": (
        "sparse_cce_logits(y, z, 0.1, w)", {"y": LABELS, "z": Z, "w": W}, "z",
        lambda z: F.cross_entropy(z, torch.tensor(LABELS), weight=t(W), label_smoothing=0.1)),
    "sparse_cce": (
        "sparse_cce(y, p, weight=w)", {"y": LABELS, "p": PROBABILITIES, "w": W}, "p",
        lambda p: F.nll_loss(torch.log(torch.clamp(p / p.sum(1, keepdim=True), 1e-7, 1 - 1e-7)),
                             torch.tensor(LABELS), weight=t(W))),
    "cce_logits": (
        "cce_logits(y, z, weight=w)", {"y": SOFT, "z": Z, "w": W}, "z",
        lambda z: F.cross_entropy(z, t(SOFT), weight=t(W))),
    "cce_logits_smoothed": (
        "cce_logits(y, z, 0.2, w)", {"y": SOFT, "z": Z, "w": W}, "z",
        lambda z: F.cross_entropy(z, t(SOFT), weight=t(W), label_smoothing=0.2)),
    "cce": (
        "cce(y, p, 0.1, weight=w)", {"y": SOFT, "p": PROBABILITIES, "w": W}, "p",
        lambda p: -(t(W) * (0.9 * t(SOFT) + 0.1 / K) * torch.log(torch.clamp(
            p / p.sum(1, keepdim=True), 1e-7, 1 - 1e-7))).sum(1).mean()),
    "bce_logits_pos_weight": (
        "bce_logits(y, z, pw)", {"y": MULTI, "z": Z, "pw": PW}, "z",
        lambda z: F.binary_cross_entropy_with_logits(z, t(MULTI), pos_weight=t(PW))),
    "bce_logits_both": (
        "bce_logits(y, z, pw, weight=w)", {"y": MULTI, "z": Z, "pw": PW, "w": W}, "z",
        lambda z: F.binary_cross_entropy_with_logits(z, t(MULTI), weight=t(W),
                                                     pos_weight=t(PW))),
    "multilabel_bce_logits": (
        "multilabel_bce_logits(y, z, weight=w)", {"y": MULTI, "z": Z, "w": W}, "z",
        lambda z: F.multilabel_soft_margin_loss(z, t(MULTI), weight=t(W))),
    "multilabel_bce_logits_pos_weight": (
        "multilabel_bce_logits(y, z, w, pw)", {"y": MULTI, "z": Z, "w": W, "pw": PW}, "z",
        lambda z: F.binary_cross_entropy_with_logits(z, t(MULTI), weight=t(W),
                                                     pos_weight=t(PW))),
    "multilabel_bce": (
        "multilabel_bce(y, p, weight=w)", {"y": MULTI, "p": PROBABILITIES, "w": W}, "p",
        lambda p: F.binary_cross_entropy(p, t(MULTI), weight=t(W).expand(N, K))),
    "multi_margin": (
        "multi_margin(y, z, weight=w)", {"y": LABELS, "z": Z, "w": W}, "z",
        lambda z: F.multi_margin_loss(z, torch.tensor(LABELS), weight=t(W))),
    "multi_margin_squared": (
        "multi_margin_squared(y, z, weight=w)", {"y": LABELS, "z": Z, "w": W}, "z",
        lambda z: F.multi_margin_loss(z, torch.tensor(LABELS), p=2, weight=t(W))),
}

def results(loss: lossdsl.CompiledLoss, wrt: str, inputs: dict[str, Any]) -> list:
    """[value, gradient, Hessian diagonal] of ``loss`` in ``wrt``: from the kernels users call
    (``value_and_grad``, ``hessian``; ``grad`` below), except on CI (CI=true without
    LOSSDSL_FULL_SWEEPS=1), where the one fused kernel that computes all three gives them, and
    the central differences below read their gradients from it too: one cold compile per
    loss instead of three (the methods' kernels differ from it only in the outputs they keep;
    every full run checks them)."""
    if SAMPLING:
        return loss.compute(True, (wrt,), (wrt,), inputs, None)
    value, gradient = loss.value_and_grad(wrt, **inputs)
    return [value, gradient, loss.hessian(wrt, **inputs)]


_REFERENCES: dict[str, tuple] = {}


def reference(case: str) -> tuple[float, np.ndarray, np.ndarray]:
    if case not in _REFERENCES:
        _, inputs, wrt, function = CASES[case]
        _REFERENCES[case] = torch_reference(function, inputs[wrt],
                                            not case.startswith("multi_margin"))
        if case == "multi_margin_squared":  # torch has no double backward here: written out
            z, labels = inputs["z"], inputs["y"]
            picked = z[np.arange(N), labels][:, None]
            active = ((1.0 - picked + z > 0) & (np.arange(K) != labels[:, None])).astype(float)
            scale = 2.0 * W[labels][:, None] / (N * K)
            exact = scale * active
            exact[np.arange(N), labels] = scale[:, 0] * active.sum(axis=1)
            _REFERENCES[case] = (*_REFERENCES[case][:2], exact)
        if case == "multilabel_bce":
            # torch's double backward of binary_cross_entropy divides by max(p (1 - p), 1e-12)
            # and is 8e-8 off at p = 2.5e-5; the written-out diagonal is exact
            p = inputs["p"]
            exact = W * (MULTI / p**2 + (1 - MULTI) / (1 - p) ** 2) / (N * K)
            _REFERENCES[case] = (*_REFERENCES[case][:2], exact)
    return _REFERENCES[case]


# every loss on the serial target; the parallel target (the same kernel body, threaded over
# samples, where compiling costs most) on one loss of each kind of weighting
PARALLEL_CASES = ("sparse_cce_logits_smoothed", "cce_logits", "bce_logits_both")


@pytest.mark.parametrize(("case", "target"), [(case, "cpu") for case in sorted(CASES)]
                         + [(case, "parallel") for case in PARALLEL_CASES])
def test_weighted_losses_equal_torch_in_value_gradient_and_hessian(case, target):
    text, inputs, wrt, _ = CASES[case]
    value, gradient, hessian = reference(case)
    ours, our_gradient, our_hessian = results(compiled(text, target), wrt, inputs)
    close(ours, value)
    close(our_gradient, gradient)
    close(our_hessian, hessian)


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_class_weighted_cross_entropy_sum_and_none_are_torch_s(reduction):
    labels = torch.tensor(LABELS)
    zt = t(Z, True)
    expected = F.cross_entropy(zt, labels, weight=t(W), label_smoothing=0.1,
                               reduction=reduction)
    loss = compiled("sparse_cce_logits(y, z, 0.1, w)", reduction=reduction)
    inputs = {"y": LABELS, "z": Z, "w": W}
    close(loss(**inputs), expected.detach().numpy())
    (gradient,) = torch.autograd.grad(expected.sum(), zt)
    if reduction == "sum":
        close(loss.grad("z", **inputs), gradient.numpy())
    pw = F.binary_cross_entropy_with_logits(t(Z), t(MULTI), pos_weight=t(PW),
                                            reduction=reduction)
    close(compiled("bce_logits(y, z, pw)", reduction=reduction)(y=MULTI, z=Z, pw=PW),
          pw.numpy())


def test_the_weighted_mean_divides_by_the_sum_of_the_label_weights():
    # by hand: sum_i w[y_i] l_i / sum_i w[y_i]; uniform weights are the plain mean
    per_sample = compiled("sparse_cce_logits(y, z)", reduction="none")(y=LABELS, z=Z)
    loss = compiled("sparse_cce_logits(y, z, weight=w)")
    close(loss(y=LABELS, z=Z, w=W), np.sum(W[LABELS] * per_sample) / np.sum(W[LABELS]))
    plain = compiled("sparse_cce_logits(y, z)")(y=LABELS, z=Z)
    close(loss(y=LABELS, z=Z, w=np.full(K, 7.0)), plain)
    close(loss(y=LABELS, z=Z, w=7.0), plain)  # a number: the same weight for every class
    # sample weights: "weighted_mean" divides by sum(v*w[y]), "mean" by sum(w[y])
    v = RNG.uniform(0.0, 2.0, N)
    weighted = compiled("sparse_cce_logits(y, z, weight=w)", reduction="weighted_mean")
    close(weighted(y=LABELS, z=Z, w=W, sample_weight=v),
          np.sum(v * W[LABELS] * per_sample) / np.sum(v * W[LABELS]))
    close(loss(y=LABELS, z=Z, w=W, sample_weight=v),
          np.sum(v * W[LABELS] * per_sample) / np.sum(W[LABELS]))
    # a batch term is added once, outside the weighted mean
    theta = RNG.normal(size=7)
    with_term = compiled("sparse_cce_logits(y, z, weight=w) + 0.5*l2(theta)")
    close(with_term(y=LABELS, z=Z, w=W, theta=theta),
          loss(y=LABELS, z=Z, w=W) + 0.5 * compiled("l2(theta)")(theta=theta))


def test_ignore_index_with_class_weights_is_torch_s():
    labels = LABELS.copy()
    labels[::4] = -100
    zt = t(Z, True)
    expected = F.cross_entropy(zt, torch.tensor(labels), weight=t(W), ignore_index=-100)
    (gradient,) = torch.autograd.grad(expected, zt)
    hessian = torch.autograd.functional.hessian(
        lambda z: F.cross_entropy(z, torch.tensor(labels), weight=t(W), ignore_index=-100),
        t(Z)).reshape(N * K, N * K).diagonal().reshape(N, K)
    loss = compiled("sparse_cce_logits(y, z, weight=w)", ignore_index=-100)
    value, ours = loss.value_and_grad("z", y=labels, z=Z, w=W)
    close(value, expected.item())
    close(ours, gradient.numpy())
    close(loss.hessian("z", y=labels, z=Z, w=W), hessian.numpy())
    assert np.all(ours[::4] == 0)


@pytest.mark.parametrize("case", ["sparse_cce_logits_smoothed", "cce_logits_smoothed",
                                  "bce_logits_both", "sparse_cce"])
def test_hessians_are_central_differences_of_the_gradient(case):
    text, inputs, wrt, _ = CASES[case]
    loss = compiled(text)
    x = inputs[wrt]
    hessian = results(loss, wrt, inputs)[2]
    step = 1e-5
    rows = np.arange(0, N, 5)
    for k in range(K):
        shifted = []
        for sign in (1, -1):
            moved = x.copy()
            moved[rows, k] += sign * step
            moved_inputs = {**inputs, wrt: moved}
            gradient = (results(loss, wrt, moved_inputs)[1] if SAMPLING
                        else loss.grad(wrt, **moved_inputs))
            shifted.append(gradient[rows, k])
        numeric = (shifted[0] - shifted[1]) / (2 * step)
        close(hessian[rows, k], numeric, 1e-6)


def test_float32_inputs_give_float32_results():
    loss = compiled("sparse_cce_logits(y, z, weight=w)")
    gradient = loss.grad("z", y=LABELS, z=Z.astype(np.float32), w=W.astype(np.float32))
    assert gradient.dtype == np.float32
    close(gradient, reference("sparse_cce_logits")[1], 1e-5)


def test_dask_chunks_give_the_same_class_weighted_mean():
    da = pytest.importorskip("dask.array")
    import lossdsl.dask

    text = "sparse_cce_logits(y, z, weight=w)"
    lazy = lossdsl.dask.compile(text)
    y, z = da.from_array(LABELS, chunks=7), da.from_array(Z, chunks=(7, K))
    close(lazy(y=y, z=z, w=W).compute(), reference("sparse_cce_logits")[0])
    gradient, hessian = lazy.grad_and_hessian("z", y=y, z=z, w=W)
    close(gradient.compute(), reference("sparse_cce_logits")[1])
    close(hessian.compute(), reference("sparse_cce_logits")[2])


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") != "1",
                    reason="the simulator's check; tests/backend/test_cuda.py runs the GPU")
def test_cuda_simulator_matches_the_cpu():
    from numba import cuda

    rng = np.random.default_rng(5)
    n = 96
    z = rng.normal(size=(n, K))
    y = rng.integers(0, K, n)
    multi = (rng.random((n, K)) < 0.5).astype(np.float64)
    for text, inputs in [("sparse_cce_logits(y, z, 0.1, w)", {"y": y, "z": z, "w": W}),
                         ("bce_logits(y, z, pw)", {"y": multi, "z": z, "pw": PW})]:
        cpu = compiled(text)
        gpu = compiled(text, "cuda")
        device = {name: cuda.to_device(np.ascontiguousarray(value))
                  for name, value in inputs.items()}
        gradient, hessian = gpu.grad_and_hessian("z", **device)
        expected_gradient, expected_hessian = cpu.grad_and_hessian("z", **inputs)
        close(gradient.copy_to_host(), expected_gradient, 1e-10)
        close(hessian.copy_to_host(), expected_hessian, 1e-10)
        close(gpu(**inputs), cpu(**inputs), 1e-10)  # host arrays, per-class vector included
    strided = cuda.to_device(np.repeat(W, 2))[::2]  # a non-contiguous device vector
    close(compiled("sparse_cce_logits(y, z, 0.1, w)", "cuda")(
        y=cuda.to_device(y), z=cuda.to_device(z), w=strided),
        compiled("sparse_cce_logits(y, z, 0.1, w)")(y=y, z=z, w=W), 1e-10)


# ---------------------------------------------------------------------------------------------
# shapes and errors


def test_a_vector_of_the_wrong_length_is_a_shape_error_naming_both_lengths():
    loss = compiled("sparse_cce_logits(y, z, weight=w)")
    for wrong in (np.ones(K + 1), np.ones(K - 1)):
        with pytest.raises(LossShapeError) as raised:
            loss(y=LABELS, z=Z, w=wrong)
        message = str(raised.value)
        assert f"'w' has {len(wrong)} entries but the loss has {K} classes" in message
        assert (raised.value.line, raised.value.column) == (1, 32)
        assert "^" in message
    pos_weight = compiled("bce_logits(y, z, pw)")
    with pytest.raises(LossShapeError, match=f"'pw' has {K + 2} entries but the loss has {K}"):
        pos_weight(y=MULTI, z=Z, pw=np.ones(K + 2))


def test_a_vector_that_meets_no_classes_is_an_error_not_a_broadcast():
    loss = compiled("bce_logits(y, z, pw)")
    y, z = MULTI[:, 0], Z[:, 0]
    with pytest.raises(LossShapeError, match="nothing else in this loss has classes") as raised:
        loss(y=y, z=z, pw=PW)
    assert (raised.value.line, raised.value.column) == (1, 18)
    # a number is one weight for both kinds of label: binary bce_logits as before
    expected = F.binary_cross_entropy_with_logits(t(z), t(y), pos_weight=t(np.array(3.0)))
    close(loss(y=y, z=z, pw=3.0), expected.item())


def test_shapes_other_than_a_vector_or_a_number_are_refused():
    loss = compiled("sparse_cce_logits(y, z, weight=w)")
    for shape in [(1, K), (N, K), (K, 1)]:
        with pytest.raises(LossShapeError, match=r"'w' is a per-class vector \(classvec\) and "
                                                 r"must be a vector \(K,\)"):
            loss(y=LABELS, z=Z, w=np.ones(shape))


def test_labels_are_checked_against_the_vector_when_it_alone_gives_the_classes():
    loss = compiled("pick(classvec(w), y)*(p - q)^2")
    p, q = RNG.normal(size=N), RNG.normal(size=N)
    close(loss(w=W, y=LABELS, p=p, q=q), np.mean(W[LABELS] * (p - q) ** 2))
    bad = LABELS.copy()
    bad[3] = K
    with pytest.raises(LossDomainError, match=rf"'y' must hold integers in \[0, {K}\)"):
        loss(w=W, y=bad, p=p, q=q)


def test_a_class_vector_is_not_differentiable_nor_usable_as_a_sample_vector():
    loss = compiled("sparse_cce_logits(y, z, weight=w)")
    with pytest.raises(LossError, match="per-class vector"):
        loss.grad("w", y=LABELS, z=Z, w=W)
    with pytest.raises(LossShapeError, match="can only be read through classvec"):
        lossdsl.compile("rowsum(classvec(w)*z) + w")(w=W, z=Z)
    with pytest.raises(LossShapeError, match="both as a lookup table"):
        lossdsl.compile("rowsum(classvec(c)*rowof(c, y))")(c=np.ones(K), y=LABELS)
    with pytest.raises(LossArityError, match="classvec's argument must be an input") as raised:
        lossdsl.compile("rowsum(classvec(2*w)*z)")
    assert (raised.value.line, raised.value.column) == (1, 17)


def test_count_as_must_wrap_the_whole_loss_under_a_mean():
    inputs = {"y": LABELS, "z": Z, "w": W}
    with pytest.raises(LossShapeError, match="not inside its count_as"):
        lossdsl.compile("sparse_cce_logits(y, z, weight=w) + rowsum(z^2)")(**inputs)
    with pytest.raises(LossShapeError, match="counts its samples in two ways"):
        lossdsl.compile("sparse_cce_logits(y, z, weight=w) + sparse_cce_logits(y, z, weight=v)")(
            **inputs, v=W[::-1].copy())
    with pytest.raises(LossShapeError, match="not inside exp"):
        lossdsl.compile("exp(count_as(rowsum(z), w2))")(z=Z, w2=np.ones(N))
    with pytest.raises(LossShapeError, match="inside a sum or mean"):
        lossdsl.compile("mean(count_as(rowsum(z), w2))")(z=Z, w2=np.ones(N))
    with pytest.raises(LossShapeError, match="must be one number per sample"):
        lossdsl.compile("count_as(z, z)")(z=Z)
    # without a denominator a sum of differently weighted losses is well defined
    both = lossdsl.compile("sparse_cce_logits(y, z, weight=w) + 2*sparse_cce_logits(y, z)",
                           reduction="sum")
    plain = compiled("sparse_cce_logits(y, z)", reduction="none")(y=LABELS, z=Z)
    close(both(**inputs), np.sum(W[LABELS] * plain) + 2 * np.sum(plain))


def test_count_as_scaled_and_negated_keeps_its_denominator():
    base = compiled("sparse_cce_logits(y, z, weight=w)")
    scaled = lossdsl.compile("-(3*sparse_cce_logits(y, z, weight=w))/2")
    inputs = {"y": LABELS, "z": Z, "w": W}
    close(scaled(**inputs), -1.5 * base(**inputs))
    close(scaled.grad("z", **inputs), -1.5 * base.grad("z", **inputs))
    # over a matrix value the mean divides by K*sum(s), as by K*N without count_as
    rows = lossdsl.compile("count_as(classvec(w)*z^2, s)")
    s = RNG.uniform(0.5, 2.0, N)
    close(rows(w=W, z=Z, s=s), np.sum(W * Z**2) / (K * np.sum(s)))
    close(rows.grad("z", w=W, z=Z, s=s), 2 * W * Z / (K * np.sum(s)))


def test_defaults_compile_to_the_unweighted_kernels():
    # weight=1.0 simplifies away: the same graph as the loss without weights
    for text, plain in [("sparse_cce_logits(y, z, weight=1.0)", "logsumexp(z) - pick(z, y)"),
                        ("bce_logits(y, z, 1.0, 0.0, 1.0)",
                         "y*softplus(-z) + (1 - y)*softplus(z)")]:
        assert (lossdsl.compile(text).loss.definition.graph
                is lossdsl.compile(plain).loss.definition.graph)


def test_printing_shows_classvec_and_the_denominator():
    loss = compiled("sparse_cce_logits(y, z, weight=w)")
    assert "classvec(w)" in str(loss.expression)
    assert "count_as(" in str(loss.expression)
    assert "sum(rowsum(onehot(y) * classvec(w)))" in str(loss.derivative("z"))
    assert "w_{k}" in loss._repr_latex_()
    assert loss.class_vector_inputs() == frozenset({"w"})
    assert "<td>per-class vector</td><td>(K,)</td>" in loss._repr_html_()


def test_gradients_through_reductions_of_broadcast_operands():
    # regression: the adjoint of sum/rowsum reaching a broadcast operand counts every element
    p = RNG.normal(size=N)
    close(lossdsl.compile("mean(p - m)").grad("m", p=p, m=0.5), -1.0)
    close(lossdsl.compile("sum(p - m)^2", reduction="sum").hessian("m", p=p, m=0.5), 2 * N**2)
    a = RNG.normal(size=N)
    close(lossdsl.compile("rowsum(a - z)", reduction="sum").grad("a", a=a, z=Z), np.full(N, K))
    close(lossdsl.compile("rowsum(a - z)^2", reduction="sum").hessian("a", a=a, z=Z),
          np.full(N, 2.0 * K * K))


def test_a_constant_row_without_samples_is_a_shape_error():
    # these reached the binder as a raw KeyError: no input gives the number of samples
    for text, inputs in [("pick(classvec(w), 0)", {"w": W}), ("rowsum(onehot(1, 3))", {}),
                         ("rowsum(rowof(C, 0))", {"C": np.ones((3, 3))})]:
        with pytest.raises(LossShapeError, match="no per-sample input") as raised:
            lossdsl.compile(text)(**inputs)
        assert raised.value.line == 1 and raised.value.column is not None
    p = RNG.normal(size=N)
    close(lossdsl.compile("pick(classvec(w), 0)*p")(w=W, p=p), W[0] * np.mean(p))


def test_per_class_margins_subtract_from_the_true_class_logit():
    # LDAM-style margins m[y_i] on the true class: cross-entropy of z - m[y] onehot(y)
    margins = RNG.uniform(0.0, 1.0, K)
    loss = compiled("sparse_cce_logits(y, z - classvec(m)*onehot(y), weight=w)")
    shifted = lambda z: z - t(margins)[LABELS][:, None] * F.one_hot(  # noqa: E731
        torch.tensor(LABELS), K)
    value, gradient, hessian = torch_reference(
        lambda z: F.cross_entropy(shifted(z), torch.tensor(LABELS), weight=t(W)), Z)
    ours, our_gradient = loss.value_and_grad("z", y=LABELS, z=Z, m=margins, w=W)
    close(ours, value)
    close(our_gradient, gradient)
    close(loss.hessian("z", y=LABELS, z=Z, m=margins, w=W), hessian)
