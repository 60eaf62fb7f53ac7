"""lossdsl.torch completed: double backward through the symbolic Hessian (checked against
torch.autograd of the same formula written in torch), repr, per-call params and torch's dtype
promotion."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import lossdsl  # noqa: E402
import lossdsl.api  # noqa: E402
import lossdsl.torch as lt  # noqa: E402
import lossdsl.xgboost  # noqa: E402

# Each elementwise loss, with the same formula written in torch (per sample).
ELEMENTWISE = {
    "huber(y, p, 1.0)": lambda y, p: torch.where((p - y).abs() <= 1.0, 0.5 * (p - y) ** 2,
                                                 (p - y).abs() - 0.5),
    "bce_logits(y, p)": lambda y, p: F.binary_cross_entropy_with_logits(p, y, reduction="none"),
    "log_cosh(y, p)": lambda y, p: torch.log(torch.cosh(p - y)),
    "quantile(y, p, 0.8)": lambda y, p: torch.where(y >= p, 0.8 * (y - p), 0.2 * (p - y)),
}
REDUCE = {"mean": torch.mean, "sum": torch.sum, "none": lambda x: x}


def _data(text, n=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    p = torch.randn(n, dtype=torch.float64, generator=generator)
    if text.startswith("bce"):
        y = (torch.rand(n, generator=generator) > 0.5).double()
    else:  # away from the kinks of huber (|p - y| = 1) and quantile (p = y)
        y = p + torch.linspace(-2.6, 2.4, n, dtype=torch.float64)
    return y, p.requires_grad_(True)


@pytest.mark.parametrize("text", sorted(ELEMENTWISE))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_second_derivatives_equal_torch_autograd(text, reduction):
    """grad(create_graph=True) then backward of a function of the gradient: the second
    derivative, equal to autograd of the torch formula; gradcheck and gradgradcheck pass."""
    criterion = lt.loss(text, reduction=reduction, target="cpu")
    y, p = _data(text)
    upstream = torch.linspace(0.5, 2.0, len(p), dtype=torch.float64)

    def second(loss_fn):
        q = p.detach().clone().requires_grad_(True)
        value = loss_fn(q)
        outer = upstream if reduction == "none" else None
        (gradient,) = torch.autograd.grad(value, q, grad_outputs=outer, create_graph=True)
        # (+ 0*q: torch's gradient of quantile is a constant, outside the graph)
        ((gradient ** 2 * upstream).sum() + (0 * q).sum()).backward()
        return value.detach(), gradient.detach(), q.grad

    ours = second(lambda q: criterion(y=y, p=q))
    reference = second(lambda q: REDUCE[reduction](ELEMENTWISE[text](y, q)))
    for mine, theirs in zip(ours, reference):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)
    assert ours[2].abs().sum() > 0 or text.startswith("quantile")  # a real second derivative
    assert torch.autograd.gradcheck(lambda q: criterion(y=y, p=q), (p,))
    assert torch.autograd.gradgradcheck(lambda q: criterion(y=y, p=q), (p,))


def test_double_backward_with_weights_matrices_and_regularisers():
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(6, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    y = (torch.rand(6, 3, generator=generator) > 0.5).double()
    weight = torch.rand(6, dtype=torch.float64, generator=generator) + 0.5
    # multi-label logits (N, K): elementwise, so the diagonal Hessian is the whole Hessian
    multilabel = lt.loss("rowsum(bce_logits(y, z))", reduction="none", target="cpu")
    assert torch.autograd.gradgradcheck(
        lambda q: multilabel(y=y, z=q, sample_weight=weight), (z,))
    torch_form = F.binary_cross_entropy_with_logits(z, y, reduction="none").sum(1) * weight
    (g_ref,) = torch.autograd.grad(torch_form.sum(), z, create_graph=True)
    (h_ref,) = torch.autograd.grad(g_ref.sum(), z)
    (g,) = torch.autograd.grad(multilabel(y=y, z=z, sample_weight=weight).sum(), z,
                               create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), z)
    torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-14)
    # a regulariser on a second input: the gradient of each input is free of the other
    regularised = lt.loss("huber(y, p, 1.0) + 0.1*l2(w)", target="cpu")
    p = torch.randn(6, dtype=torch.float64, generator=generator, requires_grad=True)
    w = torch.randn(4, dtype=torch.float64, generator=generator, requires_grad=True)
    targets = p.detach() + 0.3
    assert torch.autograd.gradgradcheck(lambda a, b: regularised(y=targets, p=a, w=b), (p, w))


def test_coupled_inputs_refuse_double_backward_clearly():
    """Class-axis and batch-level losses have only their diagonal Hessian: the second backward
    pass raises a LossError instead of a partial answer; the first derivative still works."""
    generator = torch.Generator().manual_seed(2)
    z = torch.randn(5, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    labels = torch.randint(0, 4, (5,), generator=generator)
    for text, inputs in (("sparse_cce_logits(y, z)", {"y": labels}),
                         ("cce_logits(y, z)", {"y": F.one_hot(labels, 4).double()})):
        criterion = lt.loss(text, target="cpu")
        (gradient,) = torch.autograd.grad(criterion(z=z, **inputs), z, create_graph=True)
        torch.testing.assert_close(gradient.detach(),
                                   (z.detach().softmax(1) - F.one_hot(labels, 4)) / 5)
        with pytest.raises(lossdsl.LossError, match="coupled.*only the diagonal Hessian"):
            (gradient ** 2).sum().backward()
    dice = lt.loss("dice(y, p)", target="cpu")
    p = torch.rand(8, dtype=torch.float64, generator=generator, requires_grad=True)
    (gradient,) = torch.autograd.grad(dice(y=(p.detach() > 0.5).double(), p=p), p,
                                      create_graph=True)
    with pytest.raises(lossdsl.LossError, match="coupled"):
        gradient.sum().backward()


@pytest.mark.parametrize("text, labels", [
    ("pairsum((partner(z) - z)^2, q)", None),
    ("pairsum(partner(z)*z, q)", None),
    ("classpairsum(partner(z)*z*y)", "classes"),
])
def test_partner_reads_refuse_double_backward(text, labels):
    """A pair sum reads z at each sample's (or class's) partners: its Hessian is not
    diagonal, and the second pass gave the diagonal alone ([8, 0, 0, 0, 0] for the true
    [8, -4, -4, 0, 0] of the first)."""
    generator = torch.Generator().manual_seed(3)
    q = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0])
    shape = (5, 3) if labels else (5,)
    z = torch.randn(shape, dtype=torch.float64, generator=generator, requires_grad=True)
    inputs = {"y": torch.rand(shape, dtype=torch.float64, generator=generator)} if labels \
        else {"q": q}
    criterion = lt.loss(text, reduction="sum", target="cpu")
    (gradient,) = torch.autograd.grad(criterion(z=z, **inputs), z, create_graph=True)
    with pytest.raises(lossdsl.LossError, match="coupled"):
        torch.autograd.grad(gradient.reshape(-1)[0], z)
    with pytest.raises(lossdsl.LossError, match="coupled"):
        torch.func.hessian(lambda t: criterion(z=t, **inputs))(z.detach())


@pytest.mark.parametrize("text", ["groupsum(z, q)^2", "y*sum(y*z)", "z*colsum(z)",
                                  "pairsum(softplus(partner(z) - z), q)", "cox_ph(y, z)"])
def test_per_sample_losses_reading_other_samples_refuse_differentiable_backward(text):
    """With reduction "none" the differentiable backward pass (create_graph, torch.func)
    multiplied each sample's upstream gradient into the summed loss's gradient, the true
    vector-Jacobian product only when a sample's loss reads its own rows alone: for
    groupsum(z, q)^2 and v = e_0 it gave [-2, 0, 0, 0] where J^T v is [-1, -1, 0, 0]. The
    plain backward pass stays exact."""
    q = torch.tensor([1.0, 1.0, 2.0, 2.0])
    y = torch.tensor([1.0, -2.0, 3.0, 0.5])
    z = torch.tensor([0.5, -1.0, 2.0, 0.3], dtype=torch.float64, requires_grad=True)
    inputs = {name: value for name, value in (("q", q), ("y", y)) if name in text}
    criterion = lt.loss(text, reduction="none", target="cpu")
    v = torch.tensor([1.0, 0.0, 2.0, 0.0], dtype=torch.float64)

    def reference(t):
        return torch.autograd.functional.jacobian(
            lambda u: criterion(z=u, **inputs), t.detach())

    (plain,) = torch.autograd.grad(criterion(z=z, **inputs), z, v)
    torch.testing.assert_close(plain, reference(z).T @ v)
    with pytest.raises(lossdsl.LossError, match="depends on other samples"):
        torch.autograd.grad(criterion(z=z, **inputs), z, v, create_graph=True)
    with pytest.raises(lossdsl.LossError, match="depends on other samples"):
        torch.func.jacrev(lambda t: criterion(z=t, **inputs))(z.detach())


def test_mixed_and_third_derivatives_are_refused():
    criterion = lt.loss("log_cosh(y, p)", target="cpu")
    y = torch.randn(5, dtype=torch.float64, requires_grad=True)
    p = torch.randn(5, dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(criterion(y=y, p=p), p, create_graph=True)
    with pytest.raises(lossdsl.LossError, match="mixed second derivative.*'p' and 'y'"):
        gradient.sum().backward()
    (gradient,) = torch.autograd.grad(criterion(y=y.detach(), p=p), p, create_graph=True)
    (second,) = torch.autograd.grad(gradient.sum(), p, create_graph=True)
    reference = 1 / torch.cosh(p.detach() - y.detach()) ** 2 / 5  # d2/dp2 of mean log cosh
    torch.testing.assert_close(second.detach(), reference)
    with pytest.raises(lossdsl.LossError, match="third derivative"):
        second.sum().backward()
    per_sample = lt.loss("mse(y, p) * c", reduction="none", target="cpu")
    c = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    values = per_sample(y=y.detach(), p=p.detach(), c=c)
    with pytest.raises(lossdsl.LossError, match="one row per sample"):
        torch.autograd.grad(values.sum(), c, create_graph=True)
    with pytest.raises(lossdsl.LossError, match=r"forward mode .* one row per sample; 'c'"):
        torch.func.jvp(lambda c: per_sample(y=y.detach(), p=p.detach(), c=c),
                       (c.detach(),), (torch.ones((), dtype=torch.float64),))


def test_repr_shows_the_formula():
    criterion = lt.loss("huber(y, p, 1.0) + 0.1*l1(w)", target="cpu")
    assert repr(criterion) == ("TorchLoss(huber(y, p, 1.0) + 0.1*l1(w), reduction='mean', "
                               "target='cpu')")
    named = lt.loss("param delta = 2.0\nloss h = huber(y, p, delta)", reduction="sum",
                    params={"delta": 3.0}, target="cpu")
    assert repr(named).startswith("TorchLoss(h = where(abs(p - y) <= delta")
    assert repr(named).endswith("reduction='sum', target='cpu', params={'delta': 3.0})")
    assert "TorchLoss(huber(y, p)" in repr(lt.loss("huber", target="cpu"))
    model = torch.nn.Sequential(torch.nn.Linear(2, 1))
    model.criterion = lt.loss("mse(y, p)", target="cpu")
    assert "(criterion): TorchLoss(mse(y, p), reduction='mean'" in repr(model)


def test_per_call_params_reuse_the_module(monkeypatch):
    criterion = lt.loss("param delta = 1.0\nloss h = huber(y, p, delta)", target="cpu")
    y = torch.zeros(6, dtype=torch.float64)
    p = torch.linspace(-3, 3, 6, dtype=torch.float64).requires_grad_(True)
    criterion(y=y, p=p).backward()  # kernels built before counting
    built = []
    original = lossdsl.api.CompiledLoss.__init__

    def counting(self, *args, **kwargs):
        built.append(args)
        original(self, *args, **kwargs)

    monkeypatch.setattr(lossdsl.api.CompiledLoss, "__init__", counting)
    p.grad = None
    value = criterion(y=y, p=p, delta=torch.tensor(2.0))
    value.backward()
    assert built == []  # no module, no compiled loss made for the override
    q = p.detach().clone().requires_grad_(True)
    reference = torch.where(q.abs() <= 2.0, 0.5 * q ** 2, 2.0 * (q.abs() - 1.0)).mean()
    reference.backward()
    assert value.item() == pytest.approx(reference.item(), rel=1e-14)
    torch.testing.assert_close(p.grad, q.grad)
    assert criterion(y=y, p=p).item() == pytest.approx(
        torch.where(q.abs() <= 1, 0.5 * q ** 2, q.abs() - 0.5).mean().item())  # not kept
    none = lt.loss("param delta = 1.0\nloss h = huber(y, p, delta)", reduction="none",
                   target="cpu")
    p.grad = None
    (none(y=y, p=p, delta=2.0) * torch.arange(6.0, dtype=torch.float64)).sum().backward()
    q.grad = None
    (torch.where(q.abs() <= 2.0, 0.5 * q ** 2, 2.0 * (q.abs() - 1.0))
     * torch.arange(6.0, dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(p.grad, q.grad)
    with pytest.raises(lossdsl.LossError, match="does not differentiate with respect to params"):
        criterion(y=y, p=p, delta=torch.tensor(2.0, requires_grad=True))
    with pytest.raises(lossdsl.LossError, match="single number"):
        criterion(y=y, p=p, delta=torch.ones(2))
    with pytest.raises(lossdsl.LossNameError, match="not an input or param"):
        criterion(y=y, p=p, delt=2.0)
    monkeypatch.undo()
    # and overrides reuse the kernels: new values build nothing (the module was rebuilt per
    # call before; speed itself is measured in benchmarks/, not asserted here)
    kernels = len(criterion._cpu._kernels)
    for delta in (0.5, 2.0, 3.0):
        criterion(y=y, p=p, delta=delta).backward()
    assert len(criterion._cpu._kernels) == kernels


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_mixed_dtypes_follow_torch_promotion(reduction):
    generator = torch.Generator().manual_seed(3)
    criterion = lt.loss("mse(y, p)", reduction=reduction, target="cpu")
    reduce = REDUCE[reduction]
    cases = [(torch.float32, torch.float64, 1), (torch.float64, torch.float32, 1),
             (torch.float16, torch.float32, 1), (torch.float32, torch.float64, 0),
             (torch.bfloat16, torch.float16, 1)]
    for p_dtype, y_dtype, y_rank in cases:
        p = torch.randn(6, generator=generator).to(p_dtype).requires_grad_(True)
        y = torch.randn(6 if y_rank else (), generator=generator).to(y_dtype)
        q = p.detach().clone().requires_grad_(True)
        reference = reduce((q - y) ** 2)
        value = criterion(y=y, p=p)
        expected = torch.result_type(q, y)  # promote_types; a 0-d tensor does not promote
        assert value.dtype == reference.dtype == expected, (p_dtype, y_dtype, y_rank)
        precise = reduce((q.detach().double() - y.double()) ** 2).to(expected)
        tolerance = {torch.float16: 2e-3, torch.bfloat16: 2e-2}.get(expected, 1e-6)
        torch.testing.assert_close(value.detach(), precise, rtol=tolerance, atol=tolerance)
        value.sum().backward()
        reference.sum().backward()
        assert p.grad.dtype == p_dtype
        torch.testing.assert_close(p.grad.float(), q.grad.float(), rtol=2e-2, atol=2e-2)
    labels = torch.randint(0, 3, (4,), generator=generator)
    logits = torch.randn(4, 3, generator=generator)
    sparse = lt.loss("sparse_cce_logits(y, z)", target="cpu")
    assert sparse(y=labels, z=logits).dtype == torch.float32  # integer labels do not promote


def test_reduction_none_backward_of_a_loss_per_sample_and_class():
    """(N, K) multi-label values take (N, K) incoming gradients, as F's reduction='none'."""
    rng = np.random.default_rng(4)
    y = torch.as_tensor(rng.integers(0, 2, (6, 3)), dtype=torch.float64)
    z = torch.as_tensor(rng.normal(0.0, 2.0, (6, 3))).requires_grad_(True)
    z_ref = z.detach().clone().requires_grad_(True)
    v = torch.as_tensor(rng.normal(size=(6, 3)))
    weight = torch.as_tensor(rng.uniform(0.5, 2.0, 6))
    criterion = lt.loss("bce_logits(y, z)", reduction="none", target="cpu")
    values = criterion(y=y, z=z, sample_weight=weight)
    reference = F.binary_cross_entropy_with_logits(z_ref, y, reduction="none") * weight[:, None]
    torch.testing.assert_close(values, reference.detach(), rtol=1e-12, atol=1e-14)
    values.backward(v)
    reference.backward(v)
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=1e-12, atol=1e-14)
    # entries coupled by a softmax over the row: the loss times v, summed (it was refused)
    coupled = lt.loss("-y * log_softmax(z)", reduction="none", target="cpu")
    z.grad, z_ref.grad = None, None
    coupled(y=y, z=z, sample_weight=weight).backward(v)
    (-y * torch.log_softmax(z_ref, 1) * weight[:, None]).backward(v)
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=1e-12, atol=1e-14)


def test_a_sample_weight_that_requires_grad_is_refused():
    """The kernels give no derivative in the weights: the weight's gradient was None
    (silently), or the backward pass crashed when only the weight required one."""
    z = torch.randn(6, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(6) > 0.5).double()
    weight = torch.rand(6, dtype=torch.float64, requires_grad=True)
    loss = lossdsl.torch.loss("bce_logits(y, z)")
    with pytest.raises(lossdsl.LossError, match="sample_weight.detach"):
        loss(z, y, sample_weight=weight)
    written = lossdsl.torch.loss("w*bce_logits(y, z)")(z, y, w=weight)
    written.backward()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")
    torch.testing.assert_close(weight.grad, expected.detach() / 6)


def test_torch_compile_runs_the_loss_outside_its_graph():
    loss = lossdsl.torch.loss("huber(y, p, 1.0)")
    p = torch.randn(8, dtype=torch.float64, requires_grad=True)
    y = torch.randn(8, dtype=torch.float64)
    eager = loss(p, y)  # a call before compiling, as a training loop makes
    compiled = torch.compile(lambda p, y: 2.0 * loss(p, y))(p, y)
    compiled.backward()
    torch.testing.assert_close(compiled, 2.0 * eager)
    expected = torch.nn.functional.huber_loss(p.detach(), y, delta=1.0)
    torch.testing.assert_close(compiled.detach(), 2.0 * expected)
    torch.testing.assert_close(p.grad, 2.0 * torch.clamp(p.detach() - y, -1, 1) / 8)


@pytest.mark.parametrize("text", ["huber(y, p, 1.0)", "bce_logits(y, p)"])
def test_torch_func_transforms_equal_the_formula_written_in_torch(text):
    """grad, jacrev (once and twice), vmap and vmap(grad) (per-sample gradients), and in
    forward mode jvp, jacfwd and torch.func.hessian (jacfwd of jacrev), of the loss equal
    those of the same formula written in torch, for each reduction; a coupled Hessian and a
    mixed second derivative are refused with a LossError."""
    func = torch.func
    written = ELEMENTWISE[text]
    y, p = _data(text, n=6)
    p = p.detach()
    weights = torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    for reduction, reduce in REDUCE.items():
        criterion = lt.loss(text, reduction=reduction, target="cpu")

        def ours(p, y, criterion=criterion):
            return (criterion(y=y, p=p) * weights).sum()

        def reference(p, y, reduce=reduce):
            return (reduce(written(y, p)) * weights).sum()

        torch.testing.assert_close(func.grad(ours)(p, y), func.grad(reference)(p, y))
        torch.testing.assert_close(func.jacrev(func.jacrev(ours))(p, y),
                                   func.jacrev(func.jacrev(reference))(p, y))
        tangent = torch.linspace(-1.0, 1.0, 6, dtype=torch.float64)
        for found, expected in zip(
                func.jvp(lambda p, criterion=criterion: criterion(y=y, p=p), (p,), (tangent,)),
                func.jvp(lambda p, reduce=reduce: reduce(written(y, p)), (p,), (tangent,))):
            torch.testing.assert_close(found, expected)
        torch.testing.assert_close(func.jacfwd(ours)(p, y), func.jacfwd(reference)(p, y))
        torch.testing.assert_close(func.hessian(ours)(p, y), func.hessian(reference)(p, y))
        batch_p, batch_y = p.reshape(2, 3), y.reshape(2, 3)
        torch.testing.assert_close(func.vmap(criterion)(batch_p, batch_y),
                                   func.vmap(lambda p, y, reduce=reduce: reduce(written(y, p)))(
                                       batch_p, batch_y))
        torch.testing.assert_close(
            func.vmap(func.grad(lambda p, y, criterion=criterion: criterion(y=y, p=p).sum()))(
                batch_p, batch_y),
            func.vmap(func.grad(lambda p, y, reduce=reduce: reduce(written(y, p)).sum()))(
                batch_p, batch_y))
    # per-sample gradients of a model's parameters, as torch.func's tutorial computes them
    model = torch.nn.Linear(3, 1).double()
    params = {name: value.detach() for name, value in model.named_parameters()}
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    criterion = lt.loss(text, target="cpu")

    def per_sample(params, x, y, loss):
        prediction = func.functional_call(model, params, (x.unsqueeze(0),)).squeeze(-1)
        return loss(prediction, y.unsqueeze(0))

    found = func.vmap(func.grad(per_sample), in_dims=(None, 0, 0, None))(params, x, y, criterion)
    expected = func.vmap(func.grad(per_sample), in_dims=(None, 0, 0, None))(
        params, x, y, lambda p, y: written(y, p).mean())
    for name in params:
        torch.testing.assert_close(found[name], expected[name])
    with torch.autograd.forward_ad.dual_level():  # forward-mode autograd outside torch.func
        dual = torch.autograd.forward_ad.make_dual(p, torch.ones_like(p))
        tangent = torch.autograd.forward_ad.unpack_dual(criterion(y=y, p=dual)).tangent
    torch.testing.assert_close(tangent, func.jvp(lambda p: written(y, p).mean(), (p,),
                                                 (torch.ones_like(p),))[1])
    if text.startswith("huber"):  # y is differentiable: its tangent needs d2L/dp dy
        with pytest.raises(lossdsl.LossError, match="mixed second derivative"):
            func.hessian(lambda p, y: criterion(y=y, p=p), argnums=(0, 1))(p, y)
    coupled = lt.loss("sparse_cce_logits(y, z)", target="cpu")
    z, labels = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 2, 1, 2])
    torch.testing.assert_close(func.grad(lambda z: coupled(y=labels, z=z))(z),
                               func.grad(lambda z: F.cross_entropy(z, labels))(z))
    with pytest.raises(lossdsl.LossError, match="coupled"):
        func.jacrev(func.jacrev(lambda z: coupled(y=labels, z=z)))(z)
    torch.testing.assert_close(func.jacfwd(lambda z: coupled(y=labels, z=z))(z),
                               func.jacrev(lambda z: F.cross_entropy(z, labels))(z))
    with pytest.raises(lossdsl.LossError, match="coupled"):
        func.hessian(lambda z: coupled(y=labels, z=z))(z)


def test_torch_func_corners_found_by_a_user_journey():
    """Each of these gave a wrong gradient silently, or a raw error from inside lossdsl."""
    func = torch.func
    generator = torch.Generator().manual_seed(5)
    P = torch.randn(3, 4, dtype=torch.float64, generator=generator)
    Y = torch.randn(3, 4, dtype=torch.float64, generator=generator)
    w = torch.rand(4, dtype=torch.float64, generator=generator)
    huber = lt.loss("huber(y, p, 0.5)", target="cpu")

    def reference(p, y):
        return F.huber_loss(p, y, delta=0.5)

    # a backward pass outside the vmap: the slices' gradients were never computed (None, 0)
    for outer in ("backward", "grad"):
        if outer == "backward":
            ours, theirs = P.clone().requires_grad_(True), P.clone().requires_grad_(True)
            func.vmap(huber)(ours, Y).sum().backward()
            func.vmap(reference)(theirs, Y).sum().backward()
            torch.testing.assert_close(ours.grad, theirs.grad)
        else:
            torch.testing.assert_close(
                func.grad(lambda p: func.vmap(huber)(p, Y).sum())(P),
                func.grad(lambda p: func.vmap(reference)(p, Y).sum())(P))
    # sample weights under grad, and per-example Hessians vmap(jacrev(jacrev))
    torch.testing.assert_close(
        func.grad(lambda p: huber(p, Y[0], sample_weight=w))(P[0]),
        func.grad(lambda p: (w * F.huber_loss(p, Y[0], delta=0.5, reduction="none")).mean()
                  )(P[0]))
    torch.testing.assert_close(func.vmap(func.jacrev(func.jacrev(huber)))(P, Y),
                               func.vmap(func.jacrev(func.jacrev(reference)))(P, Y))
    # reduction="none" with a per-class weight vector: its rank as the kernels bind it
    z = torch.randn(6, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    labels, class_weight = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([1.0, 2.0, 3.0],
                                                                          dtype=torch.float64)
    lt.loss("sparse_cce_logits(y, z, weight=cw)", reduction="none", target="cpu")(
        z=z, y=labels, cw=class_weight).sum().backward()
    torch.testing.assert_close(z.grad, func.grad(lambda z: F.cross_entropy(
        z, labels, weight=class_weight, reduction="none").sum())(z.detach()))
    # an in-place change of the weights before backward is caught, as torch catches it
    p = P[0].clone().requires_grad_(True)
    weight = w.clone()
    value = lt.loss("huber(y, p, 0.5)", reduction="none", target="cpu")(p, Y[0],
                                                                       sample_weight=weight)
    weight.mul_(10)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        value.sum().backward()
    with pytest.raises(lossdsl.LossError, match="meta tensor"):
        huber(P.to("meta"), Y.to("meta"))


def _dice_rows(y, p):
    return 1 - (2 * (y * p).sum(-1) + 1) / (y.sum(-1) + p.sum(-1) + 1)


# reduction="none" losses, each with the same values written in torch: elementwise, per entry
# of (N, K), per row, entries coupled by a softmax, samples coupled through the batch, a
# batch term (a regulariser on a second input), one number for the whole batch, a param
BATCHED = {
    "huber": ("huber(y, p, 1.0)", ("p", "y"),
              lambda i: F.huber_loss(i["p"], i["y"], delta=1.0, reduction="none")),
    "bce_logits (N, K)": ("bce_logits(y, z)", ("z",),
                          lambda i: F.binary_cross_entropy_with_logits(i["z"], i["y"],
                                                                       reduction="none")),
    "sparse_cce_logits": ("sparse_cce_logits(y, z)", ("z",),
                          lambda i: F.cross_entropy(i["z"], i["y"], reduction="none")),
    "dice_rows": ("dice_rows(y, p)", ("p",), lambda i: _dice_rows(i["y"], i["p"])),
    "log_softmax entries": ("-y * log_softmax(z)", ("z",),
                            lambda i: -i["y"] * torch.log_softmax(i["z"], 1)),
    "centred": ("square(y - p + mean(p) - mean(y))", ("p", "y"),
                lambda i: (i["y"] - i["p"] + i["p"].mean() - i["y"].mean()) ** 2),
    # the sample weights weigh each sample's own term, not the batch term every value carries
    "regulariser": ("huber(y, p, 1.0) + 0.1*l2(w)", ("p", "w"),
                    lambda i: i["weight"] * F.huber_loss(i["p"], i["y"], delta=1.0,
                                                         reduction="none")
                    + 0.1 * (i["w"] ** 2).sum()),
    "dice": ("dice(y, p)", ("p",),
             lambda i: 1 - (2 * (i["y"] * i["p"]).sum() + 1) / (i["y"].sum() + i["p"].sum()
                                                              + 1)),
    "param": ("param delta = 1.0\nloss h = huber(y, p, delta)", ("p",),
              lambda i: F.huber_loss(i["p"], i["y"], delta=2.0, reduction="none")),
}


def _batched_inputs(case, dtype):
    generator = torch.Generator().manual_seed(6)
    n, k = 6, 4

    def normal(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)

    def uniform(*shape):
        return (0.05 + 0.9 * torch.rand(*shape, generator=generator,
                                        dtype=torch.float64)).to(dtype)

    if case == "sparse_cce_logits":
        return {"y": torch.randint(0, k, (n,), generator=generator), "z": normal(n, k)}
    if case in ("bce_logits (N, K)", "log_softmax entries"):
        return {"y": (uniform(n, k) > 0.5).to(dtype), "z": normal(n, k)}
    if case in ("dice_rows", "dice"):
        return {"y": (uniform(n, k) > 0.5).to(dtype), "p": uniform(n, k)}
    p = normal(n)  # away from huber's kinks: |p - y| = 1
    y = p + torch.linspace(-2.6, 2.4, n, dtype=torch.float64).to(dtype)
    return {"y": y, "p": p, "w": normal(3)} if case == "regulariser" else {"y": y, "p": p}


@pytest.fixture(scope="module")
def batched_losses():
    return {case: lt.loss(text, reduction="none", target="cpu")
            for case, (text, _, _) in BATCHED.items()}


@pytest.mark.parametrize("case", sorted(BATCHED))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reduction_none_takes_a_batch_of_incoming_gradients(case, dtype, batched_losses):
    """autograd.grad(..., is_grads_batched=True) and jacobian(vectorize=True) of
    reduction='none' (refused before: the batched incoming gradients were one tensor the
    kernels could not read) equal those of the loss written in torch, with sample weights
    where the loss has one value per sample, and equal the unbatched backward row by row."""
    _, wrt, written = BATCHED[case]
    criterion = batched_losses[case]
    inputs = _batched_inputs(case, dtype)
    extra = {"delta": 2.0} if case == "param" else {}
    # a weight per sample (of each row's entries too); none for a loss that is one number
    weight = None if case == "dice" else torch.linspace(0.5, 2.0, 6,
                                                         dtype=torch.float64).to(dtype)

    def ours(*moving):
        return criterion(**{**inputs, **dict(zip(wrt, moving))}, sample_weight=weight, **extra)

    def reference(*moving):
        values = written({**inputs, **dict(zip(wrt, moving)), "weight": weight})
        if weight is None or case == "regulariser":
            return values
        return values * weight.reshape((-1,) + (1,) * (values.dim() - 1))

    leaves = [inputs[name].detach().clone().requires_grad_(True) for name in wrt]
    values, expected = ours(*leaves), reference(*leaves)
    tolerance = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {}
    torch.testing.assert_close(values.detach(), expected.detach(), **tolerance)
    upstream = torch.randn((5, *values.shape), generator=torch.Generator().manual_seed(7),
                           dtype=torch.float64).to(dtype)
    if values.dim() == 1:
        upstream[0] = torch.tensor([1.0, -1.0] * 3)  # sums to 0: a batch term counts 0 times
    found = torch.autograd.grad(values, leaves, upstream, is_grads_batched=True)
    wanted = torch.autograd.grad(expected, leaves, upstream, is_grads_batched=True)
    for name, mine, theirs in zip(wrt, found, wanted):
        assert mine.shape == theirs.shape == (5, *inputs[name].shape)
        assert mine.dtype == dtype
        torch.testing.assert_close(mine, theirs, **tolerance)
        for row, unbatched in zip(mine, upstream):  # the unbatched backward, row by row
            (one,) = torch.autograd.grad(ours(*leaves), leaves[wrt.index(name)], unbatched)
            torch.testing.assert_close(row, one, rtol=1e-6, atol=1e-7)
    jacobians = torch.autograd.functional.jacobian(ours, tuple(leaves), vectorize=True)
    expected_jacobians = torch.autograd.functional.jacobian(reference, tuple(leaves))
    for mine, theirs in zip(jacobians, expected_jacobians):
        torch.testing.assert_close(mine, theirs, **tolerance)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_batched_incoming_gradients_of_a_reduced_loss(reduction):
    """is_grads_batched over a mean or sum: each of the batch's incoming numbers scales the
    gradient, as for the loss written in torch, and once more with create_graph=True."""
    inputs = _batched_inputs("huber", torch.float64)
    criterion = lt.loss("huber(y, p, 1.0)", reduction=reduction, target="cpu")
    p = inputs["p"].clone().requires_grad_(True)
    upstream = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    (found,) = torch.autograd.grad(criterion(p, inputs["y"]), p, upstream,
                                   is_grads_batched=True, create_graph=True)
    (expected,) = torch.autograd.grad(F.huber_loss(p, inputs["y"], reduction=reduction), p,
                                      upstream, is_grads_batched=True, create_graph=True)
    torch.testing.assert_close(found, expected, rtol=1e-14, atol=1e-15)
    (second,) = torch.autograd.grad((found ** 3).sum(), p)
    (expected_second,) = torch.autograd.grad((expected ** 3).sum(), p)
    torch.testing.assert_close(second, expected_second, rtol=1e-12, atol=1e-14)


def test_the_ignore_index_refusal_gives_advice_that_reproduces_pytorch():
    """The objectives' refusal of a loss compiled with ignore_index advises sample_weight=0
    with reduction='weighted_mean' (under the default mean those rows would still count in
    the denominator: 0.77 for torch's 1.155); lossdsl.torch carries the ignore_index over
    (tests/integrations/test_torch_ignore_index.py)."""
    compiled = lossdsl.compile("sparse_cce_logits(y, z)", ignore_index=-100)
    assert lt.loss(compiled).ignore_index == -100
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(6, 3, dtype=torch.float64, generator=generator)
    y = torch.tensor([0, -100, 2, 1, -100, 0])
    expected = F.cross_entropy(z, y, ignore_index=-100)
    kept = (y != -100).double()
    advised = lt.loss("sparse_cce_logits(y, z)", reduction="weighted_mean")(
        z, y.clamp(min=0), sample_weight=kept)
    torch.testing.assert_close(advised, expected)
    with pytest.raises(lossdsl.LossError, match="weighted_mean"):
        lossdsl.xgboost.objective(compiled)
