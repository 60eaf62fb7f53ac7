"""lossdsl.torch: gradients equal PyTorch autograd of the same formula; a training loop runs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import lossdsl  # noqa: E402
import lossdsl.torch as lt  # noqa: E402


@pytest.fixture(scope="module")
def huber_l1():
    return lt.loss("huber(y, p, 1.0) + 0.1*l1(w)", target="cpu")


def _leaf(tensor):
    return tensor.detach().clone().requires_grad_(True)


def test_grads_match_autograd(huber_l1):
    torch.manual_seed(0)
    y = torch.randn(64, dtype=torch.float64) * 2
    p = torch.randn(64, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    value = huber_l1(y=y, p=p, w=w)
    value.backward()
    p_ref, w_ref = _leaf(p), _leaf(w)
    reference = torch.nn.functional.huber_loss(p_ref, y, delta=1.0) + 0.1 * w_ref.abs().sum()
    reference.backward()
    assert value.item() == pytest.approx(reference.item(), rel=1e-12)
    torch.testing.assert_close(p.grad, p_ref.grad)
    torch.testing.assert_close(w.grad, w_ref.grad)


def test_float32_weights_and_positional(huber_l1):
    torch.manual_seed(1)
    y, weight = torch.randn(32), torch.rand(32)
    p = torch.randn(32, requires_grad=True)
    w = torch.zeros(3)  # no grad wanted for w
    value = huber_l1(p, y, w=w, sample_weight=weight)  # (input, target), as torch.nn
    assert value.dtype == torch.float32
    value.backward(torch.tensor(2.0))
    p_ref = _leaf(p)
    per_sample = torch.nn.functional.huber_loss(p_ref, y, delta=1.0, reduction="none")
    (2 * (weight * per_sample).sum() / len(y)).backward()  # "mean": sum(w*l)/N
    torch.testing.assert_close(p.grad, p_ref.grad)
    assert w.grad is None


def test_reduction_none_vector_jacobian():
    criterion = lt.loss("bce_logits(y, z)", reduction="none", target="cpu")
    torch.manual_seed(2)
    y = (torch.rand(40) > 0.5).double()
    z = torch.randn(40, dtype=torch.float64, requires_grad=True)
    values = criterion(y=y, z=z)
    upstream = torch.linspace(-1, 2, 40, dtype=torch.float64)
    (values * upstream).sum().backward()
    z_ref = _leaf(z)
    reference = torch.nn.functional.binary_cross_entropy_with_logits(z_ref, y, reduction="none")
    torch.testing.assert_close(values, reference.detach())
    (reference * upstream).sum().backward()
    torch.testing.assert_close(z.grad, z_ref.grad)
    # a regulariser is in every sample's value: it counts sum(upstream) times (it was
    # refused; the upstream's sum here is 20, and 0 below)
    with_regulariser = lt.loss("mse(y, p) + l2(w)", reduction="none", target="cpu")
    for v in (upstream, torch.arange(40, dtype=torch.float64) % 2 * 2 - 1):
        p, w = _leaf(z), torch.linspace(-1, 1, 3, dtype=torch.float64, requires_grad=True)
        with_regulariser(y=y, p=p, w=w).backward(v)
        p_ref, w_ref = _leaf(p), _leaf(w)
        ((p_ref - y) ** 2 + (w_ref ** 2).sum()).backward(v)
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-13, atol=1e-13)
    with pytest.raises(lossdsl.LossError, match="batch term .* no second derivative"):
        torch.autograd.grad(with_regulariser(y=y, p=_leaf(z), w=w).sum(), w,
                            create_graph=True)


def test_multiclass_logits_and_integer_labels():
    criterion = lt.loss("sparse_cce_logits(y, z)", target="cpu")
    torch.manual_seed(3)
    labels = torch.randint(0, 4, (16,))
    logits = torch.randn(16, 4, dtype=torch.float64, requires_grad=True)
    criterion(y=labels, z=logits).backward()
    logits_ref = _leaf(logits)
    torch.nn.functional.cross_entropy(logits_ref, labels).backward()
    torch.testing.assert_close(logits.grad, logits_ref.grad)


def test_training_loop_converges():
    torch.manual_seed(4)
    X = torch.randn(256, 3)
    true_weight = torch.tensor([1.5, -2.0, 0.5])
    y = X @ true_weight + 0.05 * torch.randn(256)
    model = torch.nn.Linear(3, 1)
    criterion = lt.loss("pseudo_huber(y, p)", target="cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(150):
        optimizer.zero_grad()
        loss = criterion(y=y, p=model(X).squeeze(1))  # a non-contiguous view: no copy needed
        loss.backward()
        optimizer.step()
    torch.testing.assert_close(model.weight.detach().squeeze(0), true_weight, atol=0.05,
                               rtol=0)
    assert loss.item() < 0.01


def test_param_override_and_errors():
    criterion = lt.loss("param delta = 1.0\nloss h = huber(y, p, delta)", target="cpu")
    y, p = torch.zeros(4, dtype=torch.float64), torch.full((4,), 3.0, dtype=torch.float64)
    assert criterion(y=y, p=p).item() == pytest.approx(2.5)
    assert criterion(y=y, p=p, delta=2.0).item() == pytest.approx(4.0)
    with pytest.raises(lossdsl.LossNameError, match="missing input"):
        criterion(y=y)
    with pytest.raises(lossdsl.LossNameError):
        criterion(y=y, p=p, delt=2.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_use_cuda_target():
    criterion = lt.loss("bce_logits(y, z)")
    y = (torch.rand(1000, device="cuda") > 0.5).float()
    z = torch.randn(1000, device="cuda", requires_grad=True)
    value = criterion(y=y, z=z)
    value.backward()
    z_ref = _leaf(z)
    torch.nn.functional.binary_cross_entropy_with_logits(z_ref, y).backward()
    assert z.grad.is_cuda
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(value.item(), torch.nn.functional.binary_cross_entropy_with_logits(
        z.detach(), y).item(), rtol=1e-5)


def test_positional_arguments_follow_torch_input_then_target():
    """criterion(logits, target) as torch.nn losses take them, whatever the inputs' order in
    the formula; roles that the names do not tell are refused, never guessed."""
    torch.manual_seed(5)
    z, y = torch.randn(30, dtype=torch.float64), (torch.rand(30) > 0.5).double()
    clv = torch.rand(30, dtype=torch.float64) * 100
    reference = torch.nn.functional.binary_cross_entropy_with_logits(z, y, weight=clv)
    own = lt.loss("clv*bce_logits(y, z)", target="cpu")  # inputs ('clv', 'y', 'z')
    assert own.inputs == ("clv", "y", "z")
    assert own(z, y, clv=clv).item() == pytest.approx(reference.item(), rel=1e-12)
    builtin = lt.loss("bce_logits(y, z)", target="cpu")
    plain = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
    assert builtin(z, y).item() == pytest.approx(plain.item(), rel=1e-12)
    assert builtin(z, y=y).item() == pytest.approx(plain.item(), rel=1e-12)
    with pytest.raises(lossdsl.LossError, match="cannot tell which"):
        lt.loss("(a - b)^2", target="cpu")(z, y)
    with pytest.raises(lossdsl.LossError, match=r"\(input, target\)"):
        own(z, y, clv)


def test_weighted_mean_reductions_match_torch_and_sklearn():
    """"mean" with sample weights is sum(w*l)/N (PyTorch's weight=, Keras' default
    sum_over_batch_size); "weighted_mean" is sum(w*l)/sum(w) (scikit-learn)."""
    torch.manual_seed(6)
    z, y = torch.randn(25, dtype=torch.float64), (torch.rand(25) > 0.5).double()
    w = torch.rand(25, dtype=torch.float64) * 3
    per_sample = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")
    mean = lossdsl.compile("bce_logits(y, z)")
    weighted_mean = lossdsl.compile("bce_logits(y, z)", reduction="weighted_mean")
    torch_mean = torch.nn.functional.binary_cross_entropy_with_logits(z, y, weight=w)
    keras_sum_over_batch_size = float((w * per_sample).sum() / len(y))
    assert mean(y=y.numpy(), z=z.numpy(), sample_weight=w.numpy()) == pytest.approx(
        torch_mean.item(), rel=1e-12)
    assert torch_mean.item() == pytest.approx(keras_sum_over_batch_size, rel=1e-12)
    assert weighted_mean(y=y.numpy(), z=z.numpy(), sample_weight=w.numpy()) == pytest.approx(
        float(np.average(per_sample.numpy(), weights=w.numpy())), rel=1e-12)
    gradient = mean.grad("z", y=y.numpy(), z=z.numpy(), sample_weight=w.numpy())
    z_ref = _leaf(z)
    torch.nn.functional.binary_cross_entropy_with_logits(z_ref, y, weight=w).backward()
    np.testing.assert_allclose(gradient, z_ref.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_tensors(dtype):
    """float16 and bfloat16 are computed in float32 (as PyTorch's CPU kernels) and come back
    in the tensor's own dtype, values and gradients."""
    torch.manual_seed(7)
    z = torch.randn(16).to(dtype).requires_grad_(True)
    y = (torch.rand(16) > 0.5).to(dtype)
    for reduction in ("mean", "none"):
        criterion = lt.loss("bce_logits(y, z)", reduction=reduction, target="cpu")
        value = criterion(z, y)
        assert value.dtype == dtype
        z_ref = _leaf(z.detach().float())
        reference = torch.nn.functional.binary_cross_entropy_with_logits(
            z_ref, y.float(), reduction=reduction)
        torch.testing.assert_close(value.float(), reference.detach().to(dtype).float())
        value.sum().backward()
        reference.sum().backward()
        assert z.grad.dtype == dtype
        torch.testing.assert_close(z.grad.float(), z_ref.grad.to(dtype).float())
        z.grad = None


def test_repeated_calls_take_the_kept_binding_and_match_the_first(huber_l1, monkeypatch):
    """A call of a form met before (the same positional count and keywords, CPU tensors of
    one floating dtype) skips forward's role and dtype work; it gives the first call's value
    and gradients, in each form, and anything else still goes through the general path."""
    torch.manual_seed(7)
    y = torch.randn(40, dtype=torch.float64)
    w = torch.randn(3, dtype=torch.float64)
    p = torch.randn(40, dtype=torch.float64, requires_grad=True)
    calls = {"positional": lambda: huber_l1(p, y, w=w),
             "keywords": lambda: huber_l1(y=y, w=w, p=p),
             "weighted": lambda: huber_l1(p, y, w=w, sample_weight=torch.rand(40) + 1)}
    first = {}
    for name, call in calls.items():
        p.grad = None
        value = call()
        value.backward()
        first[name] = (value.detach().clone(), p.grad.clone())
    def refuse(*args, **kwargs):
        raise AssertionError("the kept binding was not used")

    monkeypatch.setattr(lt.TorchLoss, "positional_inputs", refuse)
    monkeypatch.setattr(lt, "result_dtype", refuse)
    for name, call in calls.items():
        if name == "weighted":
            continue  # a new weight each call: compared with the reference below
        p.grad = None
        value = call()
        value.backward()
        assert value.dtype == torch.float64
        assert torch.equal(value.detach(), first[name][0])
        assert torch.equal(p.grad, first[name][1])
    torch.testing.assert_close(first["keywords"][1], first["positional"][1])
    with pytest.raises(AssertionError, match="kept binding"):
        huber_l1(p, y=y, w=w)  # a form not met before: the general path
    with pytest.raises(AssertionError, match="kept binding"):
        huber_l1(p.float(), y, w=w)  # mixed dtypes: the general path
    monkeypatch.undo()
    # float32 after float64: its own kept call, float32 results and gradients
    q = p.detach().float().requires_grad_(True)
    for _ in range(2):
        q.grad = None
        value = huber_l1(q, y.float(), w=w.float())
        value.backward()
        assert value.dtype == q.grad.dtype == torch.float32
        torch.testing.assert_close(q.grad, first["positional"][1].float())
    # the kept call saves its inputs for a double backward, which sees in-place changes
    value = huber_l1(p, y, w=w)
    gradient, = torch.autograd.grad(value, p, create_graph=True)
    torch.testing.assert_close(gradient, first["positional"][1])
    target = y.clone()
    value = huber_l1(p, target, w=w)
    target.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(value, p, create_graph=True)
