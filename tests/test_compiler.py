"""Compiled kernels against independent references: PyTorch, NumPy and finite differences.

Compiled losses are shared per module (each distinct kernel is a Numba compile); the on-disk
cache makes later runs load them instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from coupled import central_differences

import lossdsl

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RNG = np.random.default_rng(1234)
N = 64


@pytest.fixture(scope="module")
def mission():
    return {
        target: lossdsl.compile("huber(y, p, 1.0) + 0.1*l1(w)", target=target)
        for target in ("cpu", "parallel")
    }


@pytest.fixture(scope="module")
def regression_data():
    return RNG.normal(size=N), RNG.normal(size=N) * 2, RNG.normal(size=7)


@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_mission_matches_pytorch_autograd(mission, regression_data, target):
    y, p, w = regression_data
    value, grads = mission[target].value_and_grad(("p", "w"), y=y, p=p, w=w)
    yt, pt, wt = (torch.tensor(a, requires_grad=True) for a in (y, p, w))
    reference = torch.nn.functional.huber_loss(pt, yt, delta=1.0) + 0.1 * wt.abs().sum()
    reference.backward()
    assert value == pytest.approx(reference.item(), rel=1e-12)
    np.testing.assert_allclose(grads["p"], pt.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grads["w"], wt.grad.numpy(), rtol=1e-12)
    assert isinstance(value, float)


def test_mission_hessian_and_single_grad(mission, regression_data):
    y, p, w = regression_data
    loss = mission["cpu"]
    hessian = loss.hessian("p", y=y, p=p, w=w)
    np.testing.assert_array_equal(hessian, np.where(np.abs(p - y) <= 1.0, 1.0 / N, 0.0))
    gradient = loss.grad("p", y=y, p=p, w=w)
    assert gradient.shape == p.shape
    assert set(loss.grad(("p", "w"), y=y, p=p, w=w)) == {"p", "w"}
    assert loss.inputs == ("y", "p", "w")


def test_mission_float32_stays_float32(mission, regression_data):
    y, p, w = (a.astype(np.float32) for a in regression_data)
    value, grads = mission["parallel"].value_and_grad(("p", "w"), y=y, p=p, w=w)
    assert grads["p"].dtype == np.float32 and grads["w"].dtype == np.float32
    reference, reference_grads = mission["cpu"].value_and_grad(
        ("p", "w"), y=y.astype(np.float64), p=p.astype(np.float64), w=w.astype(np.float64)
    )
    assert value == pytest.approx(reference, rel=1e-6)
    np.testing.assert_allclose(grads["p"], reference_grads["p"], rtol=1e-6, atol=1e-9)
    assert "T = numpy.float32" in mission["parallel"].source


def test_strided_and_scalar_inputs(mission, regression_data):
    y, p, w = regression_data
    wide = np.zeros((N, 3))
    wide[:, 1] = p
    strided = wide[:, 1]
    assert not strided.flags["C_CONTIGUOUS"]
    loss = mission["cpu"]
    value, grads = loss.value_and_grad(("p", "w"), y=y, p=strided, w=w)
    expected, expected_grads = loss.value_and_grad(("p", "w"), y=y, p=p, w=w)
    assert value == pytest.approx(expected, rel=1e-14)
    np.testing.assert_array_equal(grads["p"], expected_grads["p"])
    # a scalar target is broadcast; the gradient w.r.t. a scalar input is a float
    scalar_value, scalar_grad = loss.value_and_grad("y", y=0.5, p=p, w=w)
    assert scalar_value == pytest.approx(loss(y=np.full(N, 0.5), p=p, w=w), rel=1e-14)
    assert isinstance(scalar_grad, float)
    assert scalar_grad == pytest.approx(-loss.grad("p", y=np.full(N, 0.5), p=p, w=w).sum())


@pytest.fixture(scope="module")
def bce_losses():
    return {
        reduction: lossdsl.compile("bce_logits(y, z)", reduction=reduction)
        for reduction in ("mean", "weighted_mean", "sum", "none")
    }


def test_reductions_and_sample_weights_match_pytorch(bce_losses):
    y = (RNG.random(N) > 0.5).astype(float)
    z = RNG.normal(size=N) * 3
    weight = RNG.random(N) + 0.1
    zt = torch.tensor(z, requires_grad=True)
    per_sample = torch.nn.functional.binary_cross_entropy_with_logits(
        zt, torch.tensor(y), reduction="none"
    )
    # both sides round differently (PyTorch arranges the formula otherwise): a few ulps apart
    np.testing.assert_allclose(
        bce_losses["none"](y=y, z=z), per_sample.detach().numpy(), rtol=1e-12
    )
    assert bce_losses["sum"](y=y, z=z) == pytest.approx(per_sample.sum().item(), rel=1e-12)
    assert bce_losses["mean"](y=y, z=z) == pytest.approx(per_sample.mean().item(), rel=1e-12)
    # mean = sum(w*l)/N (PyTorch's weight=, Keras' sum_over_batch_size); weighted_mean =
    # sum(w*l)/sum(w) (scikit-learn); weighted sum = sum(w*l); none = w*l
    weighted = torch.tensor(weight) * per_sample
    torch_weighted = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(z), torch.tensor(y), weight=torch.tensor(weight))
    assert bce_losses["mean"](y=y, z=z, sample_weight=weight) == pytest.approx(
        torch_weighted.item(), rel=1e-12
    )
    assert bce_losses["weighted_mean"](y=y, z=z, sample_weight=weight) == pytest.approx(
        weighted.sum().item() / weight.sum(), rel=1e-12
    )
    assert bce_losses["sum"](y=y, z=z, sample_weight=weight) == pytest.approx(
        weighted.sum().item(), rel=1e-12
    )
    np.testing.assert_allclose(
        bce_losses["none"](y=y, z=z, sample_weight=weight), weighted.detach().numpy(), rtol=1e-12
    )
    (weighted.sum() / weight.sum()).backward()
    np.testing.assert_allclose(
        bce_losses["weighted_mean"].grad("z", y=y, z=z, sample_weight=weight), zt.grad.numpy(),
        rtol=1e-12
    )
    np.testing.assert_allclose(
        bce_losses["mean"].grad("z", y=y, z=z, sample_weight=weight),
        zt.grad.numpy() * weight.sum() / N, rtol=1e-12
    )
    # with "none", derivatives are per sample: those of the summed loss
    gradient, hessian = bce_losses["none"].grad_and_hessian("z", y=y, z=z, sample_weight=weight)
    sigmoid = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(gradient, weight * (sigmoid - y), rtol=1e-12)
    np.testing.assert_allclose(hessian, weight * sigmoid * (1 - sigmoid), rtol=1e-12)


def test_bce_logits_is_exact_at_extreme_logits(bce_losses):
    z = np.array([1e4, -1e4, 1e4, -1e4, 40.0, -40.0, 0.0])
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    values = bce_losses["none"](y=y, z=z)
    expected = [0.0, 0.0, 1e4, 1e4, np.log1p(np.exp(-40.0)), np.log1p(np.exp(-40.0)), np.log(2.0)]
    np.testing.assert_allclose(values, expected, rtol=1e-15, atol=0)
    gradient, hessian = bce_losses["none"].grad_and_hessian("z", y=y, z=z)
    assert np.all(np.isfinite(gradient)) and np.all(np.isfinite(hessian))
    np.testing.assert_allclose(gradient[:4], [0.0, 0.0, 1.0, -1.0], atol=0)
    z32 = np.array([80.0, -80.0, 80.0], dtype=np.float32)
    y32 = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    values32 = bce_losses["none"](y=y32, z=z32)
    assert values32.dtype == np.float32
    np.testing.assert_allclose(values32, [0.0, 0.0, 80.0], rtol=1e-7, atol=1e-30)


def test_stable_rewrites_make_naive_formulas_exact():
    naive = lossdsl.compile("-(y*log(sigmoid(z)) + (1 - y)*log(1 - sigmoid(z)))", reduction="none")
    text = str(naive.expression)
    assert "log_sigmoid" in text and "log(" not in text
    z = np.array([1e4, -1e4, 30.0])
    y = np.array([0.0, 1.0, 1.0])
    np.testing.assert_allclose(naive(y=y, z=z), [1e4, 1e4, np.log1p(np.exp(-30.0))], rtol=1e-15)
    softplus = lossdsl.compile("log(1 + exp(x))", reduction="none")
    assert "softplus" in str(softplus.expression)
    assert softplus(x=np.array([1000.0]))[0] == 1000.0
    assert "expm1" in str(lossdsl.compile("exp(x) - 1").expression)
    assert "log1p" in str(lossdsl.compile("log(1 + x)").expression)


@pytest.fixture(scope="module")
def classification():
    k = 5
    z = RNG.normal(size=(N, k)) * 4
    labels = RNG.integers(0, k, size=N)
    return z, labels, np.eye(k)[labels]


def test_class_axis_losses_match_pytorch_cross_entropy(classification):
    z, labels, onehot = classification
    zt = torch.tensor(z, requires_grad=True)
    reference = torch.nn.functional.cross_entropy(zt, torch.tensor(labels))
    reference.backward()
    sparse = lossdsl.compile("sparse_cce_logits(y, z)")
    value, gradient = sparse.value_and_grad("z", y=labels, z=z)
    assert value == pytest.approx(reference.item(), rel=1e-13)
    np.testing.assert_allclose(gradient, zt.grad.numpy(), rtol=1e-12, atol=1e-16)
    dense = lossdsl.compile("cce_logits(y, z)", target="parallel")
    value, gradient = dense.value_and_grad("z", y=onehot, z=z)
    assert value == pytest.approx(reference.item(), rel=1e-13)
    np.testing.assert_allclose(gradient, zt.grad.numpy(), rtol=1e-12, atol=1e-16)
    probabilities = torch.softmax(zt, dim=1).detach().numpy()
    np.testing.assert_allclose(
        dense.hessian("z", y=onehot, z=z),
        probabilities * (1 - probabilities) / N,
        rtol=1e-11,
        atol=1e-18,
    )
    extreme = z * 1e4  # stable at huge logits: finite and exact
    per_row = lossdsl.compile("sparse_cce_logits(y, z)", reduction="none")(y=labels, z=extreme)
    expected = torch.nn.functional.cross_entropy(
        torch.tensor(extreme), torch.tensor(labels), reduction="none"
    ).numpy()
    np.testing.assert_allclose(per_row, expected, rtol=1e-15)


def test_nested_reductions_dice_against_finite_differences():
    dice = lossdsl.compile("1 - (2*sum(y*p) + 1)/(sum(y) + sum(p) + 1)", target="parallel")
    y = (RNG.random(N) > 0.5).astype(float)
    p = RNG.random(N)
    value = dice(y=y, p=p)
    assert value == pytest.approx(1 - (2 * (y * p).sum() + 1) / (y.sum() + p.sum() + 1), rel=1e-13)
    gradient = dice.grad("p", y=y, p=p)
    hessian = dice.hessian("p", y=y, p=p)
    fd_gradient, fd_hessian = central_differences(lambda x: dice(y=y, p=x), p, step=1e-4)
    np.testing.assert_allclose(gradient, fd_gradient, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(hessian, fd_hessian, rtol=1e-3, atol=1e-6)
    with pytest.raises(lossdsl.LossShapeError, match="sample_weight needs"):
        dice(y=y, p=p, sample_weight=np.ones(N))


def test_weighted_mean_gradient_and_hessian_against_finite_differences():
    loss = lossdsl.compile("log_cosh(y, p) + 0.01*p^4 + mean(p)^2")
    y, p, weight = RNG.normal(size=12), RNG.normal(size=12), RNG.random(12) + 0.5
    gradient = loss.grad("p", y=y, p=p, sample_weight=weight)
    hessian = loss.hessian("p", y=y, p=p, sample_weight=weight)
    fd_gradient, fd_hessian = central_differences(
        lambda x: loss(y=y, p=x, sample_weight=weight), p, step=1e-4
    )
    np.testing.assert_allclose(gradient, fd_gradient, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(hessian, fd_hessian, rtol=1e-4, atol=1e-6)



@pytest.mark.parametrize("text, shape", [
    # the derivative through the inner mean is the same for every sample: no axis left to sum
    ("sum((p - mean(p))^2)", (12,)),
    ("sum((p - rowmean(p))^2)", (5, 4)),
    ("((p - mean(p))/sqrt(mean((p - mean(p))^2)) - y)^2", (12,)),
])
def test_centred_losses_hessians_against_finite_differences(text, shape):
    loss = lossdsl.compile(text)
    inputs = {name: RNG.normal(size=shape) for name in loss.inputs}
    p = inputs.pop("p")
    hessian = loss.hessian("p", p=p, **inputs)
    _, fd_hessian = central_differences(lambda x: loss(p=x, **inputs), p, step=1e-4)
    np.testing.assert_allclose(hessian, fd_hessian, rtol=1e-4, atol=1e-6)

def test_subgradient_conventions():
    loss = lossdsl.compile("abs(p) + max(p, q) + where(p > 0, sqrt(p), 0)", reduction="sum")
    p = np.array([0.0, 0.0, 1.0, -1.0])
    q = np.array([0.0, 1.0, 0.0, -1.0])
    gradient = loss.grad(("p", "q"), p=p, q=q)
    # |p|'(0) = 0; max ties give the derivative to the first argument; the sqrt branch not
    # taken at p = 0 contributes 0, not 0 * inf = nan
    np.testing.assert_array_equal(gradient["p"], [1.0, 0.0, 2.5, 0.0])
    np.testing.assert_array_equal(gradient["q"], [0.0, 1.0, 0.0, 0.0])


def test_nan_and_inf_propagate_without_fastmath_breakage():
    loss = lossdsl.compile("where(p != p, 0, p) + max(p, 0)", reduction="none")
    values = loss(p=np.array([np.nan, np.inf, -1.0]))
    assert np.isnan(values[0])  # max(nan, 0) is nan, and isnan-style tests still work
    assert values[1] == np.inf and values[2] == -1.0
    log = lossdsl.compile("log(p)", reduction="none")(p=np.array([0.0, -1.0, 1e-300]))
    assert log[0] == -np.inf and np.isnan(log[1]) and log[2] == pytest.approx(np.log(1e-300))


def test_user_file_with_params_defs_and_imports():
    library = lossdsl.load(EXAMPLES / "stock.loss")
    assert set(library.losses) == {"stock", "stock_smooth"}
    assert library.stock.params == {"under": 3.0, "over": 1.0}
    y = np.array([5.0, 5.0, 5.0])
    p = np.array([3.0, 5.0, 8.0])
    default = library.stock.compile(reduction="sum")
    assert default(y=y, p=p) == pytest.approx(3.0 * 2 + 1.0 * 3)
    custom = library.stock.compile(reduction="sum", params={"under": 5.0})
    assert custom(y=y, p=p) == pytest.approx(5.0 * 2 + 1.0 * 3)
    assert custom(y=y, p=p, over=2.0) == pytest.approx(5.0 * 2 + 2.0 * 3)  # call-time override
    np.testing.assert_array_equal(custom.grad("p", y=y, p=p), [-5.0, 1.0, 1.0])
    compiled_from_module = lossdsl.compile(library.stock_smooth, reduction="none")
    values = compiled_from_module(y=y, p=p)
    np.testing.assert_allclose(values, [3.0 * 0.5 * (2 - 0.25), 0.0, 1.0 * 0.5 * (3 - 0.25)])


def test_a_def_or_let_reads_the_params_of_its_own_module(tmp_path):
    """A param k of the importing module (or of another import) does not change the k that
    an imported def or let reads (it did, silently: 20 for 11 below); where two params of
    one name would meet in one loss, that is an error naming both."""
    (tmp_path / "lib.loss").write_text("param k = 1\nparam d = 3\nparam j = 2*d\n"
                                       "def scale(x) = k*x\nlet twice = 2*k\n"
                                       "def by_j(x) = j*x\n")
    (tmp_path / "other.loss").write_text("param k = 2\ndef other(x) = k*x\n")
    (tmp_path / "main.loss").write_text(
        'import "lib.loss"\nimport "other.loss"\nparam k = 10\nparam d = 7\n'
        "loss scaled = scale(p)\nloss doubled = twice*p\nloss by_other = other(p)\n"
        "loss derived = by_j(p)\n")
    library = lossdsl.load(tmp_path / "main.loss")
    p = np.ones(1)
    for name, params, value in [("scaled", {"k": 1.0}, 1.0), ("doubled", {"k": 1.0}, 2.0),
                                ("by_other", {"k": 2.0}, 2.0), ("derived", {"d": 3.0}, 6.0)]:
        loss = getattr(library, name).compile(reduction="sum")
        assert (loss.params, loss(p=p)) == (params, value), name
    (tmp_path / "both.loss").write_text('import "lib.loss"\nparam k = 10\n'
                                        "loss total = scale(p) + k*p\n")
    with pytest.raises(lossdsl.LossNameError,
                       match=r"two params named 'k' meet here: one declared at .*lib.loss:1:1, "
                             r"the other at .*both.loss:2:1") as error:
        lossdsl.load(tmp_path / "both.loss")
    assert (error.value.line, error.value.column) == (3, 25)  # at the k


def test_an_edited_import_is_read_again(tmp_path):
    """Loading a file again after a file it imports (directly or not) changed reads the new
    contents (the in-process cache, keyed by the top file's stat alone, kept the old ones:
    a notebook user editing a shared .loss file trained on the previous formula)."""
    (tmp_path / "common.loss").write_text("param scale = 2.0\ndef f(y, p) = scale*(p - y)^2\n")
    (tmp_path / "middle.loss").write_text('import "common.loss"\n')
    (tmp_path / "main.loss").write_text('import "middle.loss"\nloss L = f(y, p)\n')
    y, p = np.array([0.0, 1.0]), np.array([1.0, 3.0])

    def value():
        loss = lossdsl.load(tmp_path / "main.loss").L.compile(reduction="sum")
        return loss.params, loss(y=y, p=p)

    assert value() == ({"scale": 2.0}, 10.0)
    assert value() == ({"scale": 2.0}, 10.0)  # unchanged files: the cached module
    (tmp_path / "common.loss").write_text("param scale = 3.0\ndef f(y, p) = scale*abs(p - y)\n")
    assert value() == ({"scale": 3.0}, 9.0)
    text = f'import "{tmp_path / "main.loss"}"\nf(y, p)'
    assert lossdsl.compile(text, reduction="sum")(y=y, p=p) == 9.0
    (tmp_path / "common.loss").write_text("param scale = 4.0\ndef f(y, p) = scale*abs(p - y)\n")
    assert lossdsl.compile(text, reduction="sum")(y=y, p=p) == 12.0


def test_an_edit_that_keeps_the_size_and_modification_time_is_read_again(tmp_path):
    """Coarse timestamps, cp -p, rsync -t and touch -r keep a file's modification time; with
    the same size the edited loss was taken from the in-process cache (the change time,
    which no tool sets, now tells)."""
    path = tmp_path / "edited.loss"
    path.write_text("loss l = 2.0*(p - y)^2\n")
    before = os.stat(path)
    y, p = np.array([1.0, 2.0, 3.0]), np.zeros(3)
    assert lossdsl.load(path).l.compile()(y=y, p=p) == pytest.approx(2.0 * 14.0 / 3.0)
    with open(path, "r+") as stream:
        stream.write("loss l = 3.0*(p - y)^2\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert lossdsl.load(path).l.compile()(y=y, p=p) == pytest.approx(14.0)


def test_a_param_defined_from_another_follows_its_override():
    """``param k = 2*d`` is 2*d wherever k is used: d given at compile or call time moves k
    too (k kept its declared 2.0 and the loss was silently 5 instead of 9)."""
    text = "param d = 1.0\nparam k = 2*d\nd*mse(y, p) + k*mae(y, p)"
    y, p = np.zeros(1), np.ones(1)
    loss = lossdsl.compile(text, reduction="sum", params={"d": 3.0})
    assert loss.params == {"d": 3.0}
    assert loss(y=y, p=p) == pytest.approx(3.0 + 6.0)
    assert loss(y=y, p=p, d=2.0) == pytest.approx(2.0 + 4.0)
    assert loss.grad("p", y=y, p=p, d=2.0) == pytest.approx([2 * 2.0 + 4.0])
    with pytest.raises(lossdsl.LossNameError, match="no param 'k'"):
        lossdsl.compile(text, params={"k": 1.0})


def test_whole_file_as_string_and_lets():
    text = "param scale = 2.0\nlet r = p - y\ndef sq(x) = x^2\nloss spread = scale*sq(r) + mean(r)"
    loss = lossdsl.compile(text, reduction="sum")
    y, p = np.array([1.0, 2.0]), np.array([2.0, 4.0])
    assert loss.name == "spread"
    # the scalar term mean(r) is added once, not once per sample, even with reduction="sum"
    assert loss(y=y, p=p) == pytest.approx(2 * (1 + 4) + 1.5)
    np.testing.assert_allclose(loss.grad("p", y=y, p=p), 2 * 2.0 * (p - y) + 1 / 2)


def test_derivative_is_readable_source():
    loss = lossdsl.compile("huber(y, p, 1.0)", reduction="sum")
    assert str(loss.derivative("p")) == "where(abs(p - y) <= 1, p - y, sign(p - y))"
    assert str(loss.derivative("p", 2)) == "where(abs(p - y) <= 1, 1, 0)"


def test_compiled_losses_pickle_for_other_processes(mission, regression_data):
    import pickle

    y, p, w = regression_data
    copy = pickle.loads(pickle.dumps(mission["parallel"]))
    assert copy(y=y, p=p, w=w) == mission["parallel"](y=y, p=p, w=w)
    library_loss = lossdsl.load(EXAMPLES / "stock.loss").stock.compile(reduction="sum")
    restored = pickle.loads(pickle.dumps(library_loss))
    assert restored(y=np.array([2.0]), p=np.array([1.0])) == pytest.approx(3.0)
    # a loss that has been called unpickles in a fresh process (it kept a reference to its
    # last kernel's generated module, which a new process has not imported)
    import subprocess
    import sys

    script = ("import pickle, sys\nimport numpy as np\n"
              "loss = pickle.loads(sys.stdin.buffer.read())\n"
              "print(loss(y=np.array([2.0]), p=np.array([1.0])))\n")
    assert library_loss(y=np.array([2.0]), p=np.array([1.0])) == pytest.approx(3.0)
    found = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(library_loss),
                           capture_output=True, timeout=300)
    assert found.returncode == 0, found.stderr.decode()
    assert float(found.stdout) == pytest.approx(3.0)


def test_rowmax_derivative_goes_to_the_first_maximum():
    loss = lossdsl.compile("rowmax(z)", reduction="none")
    z = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 3.0, 3.0], [0.0, 5.0, 1.0]])
    np.testing.assert_array_equal(
        loss.grad("z", z=z), [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])


def test_library_names_can_name_inputs():
    loss = lossdsl.compile("gamma*mse(y, p) + quantile", reduction="sum")
    assert loss.inputs == ("gamma", "y", "p", "quantile")
    value = loss(gamma=np.array([2.0, 3.0]), y=np.zeros(2), p=np.ones(2), quantile=1.0)
    # a scalar input broadcasts like any input: part of each of the two samples' loss
    assert value == pytest.approx(2.0 + 3.0 + 2 * 1.0)


def test_prelude_files_see_each_other():
    from lossdsl.frontend.resolve import prelude

    for scope in prelude().imports:  # every file resolves every library name
        assert scope.find_def("huber") is not None
        assert scope.find_def("cce_logits") is not None


def test_internal_compiler_failures_are_loss_errors(monkeypatch):
    from lossdsl.backend.cpu import codegen as cpu

    def broken(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr(cpu, "generate", broken)
    with pytest.raises(lossdsl.LossError, match="internal error .*KeyError"):
        lossdsl.compile("mse(y, p) + 0.123456789*p", reduction="sum")(y=np.ones(2), p=np.ones(2))


def test_rowof_looks_up_a_cost_table_by_label():
    costs = np.array([[0.0, 1.0, 5.0], [2.0, 0.0, 1.0], [20.0, 4.0, 0.0], [1.0, 1.0, 1.0]])
    labels = np.array([0, 3, 2, 2, 1])
    z = RNG.normal(size=(5, 3))
    loss = lossdsl.compile("rowsum(rowof(C, y) * softmax(z))", reduction="none")
    probabilities = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(loss(C=costs, y=labels, z=z),
                               (costs[labels] * probabilities).sum(axis=1), rtol=1e-14)
    gradient, hessian = loss.grad_and_hessian("z", C=costs, y=labels, z=z)
    total = lossdsl.compile("rowsum(rowof(C, y) * softmax(z))", reduction="sum")
    fd_gradient, fd_hessian = central_differences(lambda x: total(C=costs, y=labels, z=x), z,
                                                step=1e-4)
    np.testing.assert_allclose(gradient, fd_gradient, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(hessian, fd_hessian, rtol=1e-3, atol=1e-6)
    assert loss.table_inputs() == {"C"} and "y" in loss.label_inputs()
    with pytest.raises(lossdsl.LossDomainError, match=r"integers in \[0, 4\)"):
        loss(C=costs, y=np.array([0, 4, 0, 0, 0]), z=z)
    with pytest.raises(lossdsl.LossError, match="lookup table"):
        loss.grad("C", C=costs, y=labels, z=z)


# --- Deep graphs: every pass walks them without recursion (issue 10) ----------------------------


def _nested(depth: int):
    from lossdsl.ir.build import make
    from lossdsl.ir.node import constant, node

    p = node("input", (), "p", ("n0",))
    graph = p
    for index in range(depth):
        graph = make("sin", (make("add", (graph, constant(float(index + 1)))),))
    return p, graph


def test_deep_graphs_print_differentiate_and_pickle_without_recursion():
    import pickle
    import sys

    from lossdsl.ir.build import make
    from lossdsl.latex import to_latex
    from lossdsl.passes import diff

    depth = 3 * sys.getrecursionlimit()
    p, graph = _nested(depth)
    total = make("sum", (graph,))
    gradient = diff.grad(total, p)
    hessian = diff.hessian_diag(total, p, gradient)
    for result in (graph, gradient, hessian):
        assert str(result) and to_latex(result)
    assert pickle.loads(pickle.dumps(graph)) is graph


def test_a_reduction_of_a_long_product_pulls_its_factors_out_without_recursion():
    import sys

    from lossdsl.ir.build import make
    from lossdsl.ir.node import node, toposort

    p = node("input", (), "p", ("n0",))
    product = p
    factors = [node("param", (), f"a{index}", ()) for index in range(3 * sys.getrecursionlimit())]
    for factor in factors:
        product = make("neg", (make("mul", (factor, product)),))
    total = make("sum", (product,))
    # sum(-(a*-(b*...p))) -> a*(b*(...sum(p))): one reduction, of p alone
    assert [n.args[0] for n in toposort([total]) if n.op == "sum"] == [p]


def test_deep_scalar_glue_is_emitted_without_recursion():
    import sys

    from lossdsl.backend.emit import GluePrinter, Names
    from lossdsl.ir.build import make
    from lossdsl.ir.node import constant, node

    scalar = node("param", (), "a", ())
    for index in range(3 * sys.getrecursionlimit()):
        scalar = make("log", (make("add", (scalar, constant(float(index + 1)))),))
    printer = GluePrinter(Names(), {})
    name = printer.value(scalar)
    assert printer.lines[-1].startswith(f"{name} = op_log(")


def test_derivative_of_a_300_factor_product():
    import re

    names = [f"p{index}" for index in range(300)]
    loss = lossdsl.compile("*".join(names), reduction="sum")
    gradient = str(loss.derivative("p0"))
    assert "p299" in gradient and re.search(r"\bp0\b", gradient) is None
    assert str(loss.derivative("p0", 2)) == "0"


def test_folding_constants_never_overflows_a_formula_that_does_not():
    """c1*x + c2*x and c1*(c2*x) are folded only where the folded constant stays in the
    range of the written ones: 0.5*(p*1e308 + p*1e308) folded to inf*p (nan at p = 0), and
    p*1e20*1e20 to 1e40*p, inf in a float32 kernel."""
    loss = lossdsl.compile("0.5*(p*1e308 + p*1e308)", reduction="none")
    p = np.array([0.0, 1e-300, -1e-300])
    np.testing.assert_allclose(loss(p=p), [0.0, 1e8, -1e8], rtol=1e-15)
    np.testing.assert_allclose(loss.grad("p", p=p), 1e308, rtol=1e-15)
    single = lossdsl.compile("p*1e20*1e20*y", reduction="none")
    found = single(p=np.array([1e-20, 0], np.float32), y=np.array([1e-20, 0], np.float32))
    assert found.dtype == np.float32
    np.testing.assert_allclose(found, [1.0, 0.0], rtol=1e-5)
    folded = lossdsl.compile("2*(3*p) + p*4", reduction="none")  # ordinary constants fold
    assert str(folded.expression) == "10 * p"


def test_pick_gradients_are_zero_off_the_label_where_the_outer_one_is_infinite():
    """d pick(p, y) / dp is one-hot: an infinite outer derivative (sqrt, log, gce at
    p_y = 0) gave the other columns 0 * inf = NaN instead of 0 (torch's autograd gives 0)."""
    y, p = np.array([0]), np.array([[0.0, 1.0, 0.0]])
    for text, first in [("gce(y, p, 0.5)", -np.inf), ("sqrt(pick(p, y))", np.inf),
                        ("-log(pick(p, y))", -np.inf)]:
        loss = lossdsl.compile(text, reduction="none")
        gradient = loss.grad("p", y=y, p=p)
        assert gradient[0, 0] == first and np.all(gradient[0, 1:] == 0), (text, gradient)
    hessian = lossdsl.compile("gce(y, p, 0.5)", reduction="none").hessian("p", y=y, p=p)
    assert hessian[0, 0] == np.inf and np.all(hessian[0, 1:] == 0)
