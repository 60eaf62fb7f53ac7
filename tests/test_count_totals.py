"""A mean whose ``count_as`` counts total 0 is an error, not NaN.

``count_as(l, s)`` makes sample i count s_i times in a mean's denominator (PyTorch's
class-weighted cross-entropy divides by the sum of ``weight[y_i]``). Counts that total 0
(every sample's class weight 0, a count input of zeros) made the mean 0/0 = NaN (or
``sum(l)/0 = inf``) and its gradients NaN or infinite, silently; PyTorch returns NaN too.
lossdsl refuses such a call with a ``LossDomainError``, as it refuses sample weights whose
total a ``"weighted_mean"`` divides by is 0, on every path: the general kernel path (serial
and parallel), the kept call plans (printed and interpreted, the small call of a parallel
loss), Dask (the total over every chunk, not a chunk's), target="cuda" (Numba's simulator
without a GPU) and lossdsl.jax (concrete inputs raise; under ``jit`` every result is NaN).
Totals that are not 0, some counts 0 among them, give the mean written in NumPy, PyTorch's
``F.cross_entropy(weight=...)`` or JAX's autodiff of the formula.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import lossdsl
from lossdsl import api, binding
from lossdsl.errors import LossDomainError

pytestmark = pytest.mark.filterwarnings(
    "ignore:(invalid value|divide by zero|overflow) encountered:RuntimeWarning")

SQUARED = "count_as(square(y - p), c)"
N, K = 12, 3
REFUSED = r"count_as\(l, s\).* sum to 0\.0: reduction='mean' divides by their total"
RNG = np.random.default_rng(41)

# every kind of call: (want_value, grads, hessians)
CALLS = [(True, (), ()), (False, ("p",), ()), (False, (), ("p",)), (False, ("p",), ("p",)),
         (True, ("p",), ())]


def regression(n: int = N) -> dict[str, np.ndarray]:
    """Targets and predictions of ``n`` samples."""
    y = RNG.normal(size=n)
    return {"y": y, "p": y + RNG.normal(size=n)}


def squared_mean(y: np.ndarray, p: np.ndarray, c: np.ndarray | float
                 ) -> tuple[float, np.ndarray, np.ndarray]:
    """(value, gradient, Hessian diagonal) of sum((y - p)^2)/sum(c), written in NumPy."""
    total = float(np.sum(np.broadcast_to(c, y.shape)))
    return float(np.sum((y - p) ** 2)) / total, 2 * (p - y) / total, np.full(y.shape, 2 / total)


def every_call(compiled: lossdsl.CompiledLoss, inputs: dict[str, Any]) -> list[Any]:
    """The loss through each public method, one result list per method."""
    return [compiled(**inputs), compiled.grad("p", **inputs), compiled.hessian("p", **inputs),
            compiled.grad_and_hessian("p", **inputs), compiled.value_and_grad("p", **inputs)]


def refused_by_every_method(compiled: lossdsl.CompiledLoss, inputs: dict[str, Any],
                            match: str = REFUSED) -> None:
    methods = [compiled, lambda **i: compiled.grad("p", **i),
               lambda **i: compiled.hessian("p", **i),
               lambda **i: compiled.grad_and_hessian("p", **i),
               lambda **i: compiled.value_and_grad("p", **i)]
    for method in methods:
        with pytest.raises(LossDomainError, match=match):
            method(**inputs)


@pytest.fixture(scope="module")
def squared() -> dict[str, lossdsl.CompiledLoss]:
    return {target: lossdsl.compile(SQUARED, target=target) for target in ("cpu", "parallel")}


# ----------------------------------------------------------------------------- general path
@pytest.mark.parametrize("target, n", [("cpu", N), ("parallel", binding.PARALLEL_MIN_ELEMENTS)])
def test_the_general_path_refuses_counts_that_total_zero(squared, target, n):
    """Each kind of call of a bound kernel (serial, and parallel at a size it threads)
    refuses zero counts; some counts 0 with a total that is not give the NumPy mean."""
    compiled = squared[target]
    data = regression(n)
    for want_value, grads, hessians in CALLS:
        call = compiled.bind_call(want_value, grads, hessians, {**data, "c": np.zeros(n)})
        assert call.kernel.target == target
        with pytest.raises(LossDomainError, match=REFUSED):
            call.run()
    counts = np.zeros(n)
    counts[::5] = RNG.uniform(0.5, 2.0, len(counts[::5]))  # most samples count 0
    value, gradient, hessian = compiled.bind_call(
        True, ("p",), ("p",), {**data, "c": counts}).run()
    expected = squared_mean(data["y"], data["p"], counts)
    np.testing.assert_allclose(value, expected[0], rtol=1e-12)
    np.testing.assert_allclose(gradient, expected[1], rtol=1e-12)
    np.testing.assert_allclose(hessian, expected[2], rtol=1e-12)


def test_a_count_given_as_a_number_zero_is_refused(squared):
    """``count_as(l, c)`` with ``c`` a number: the mean divides by ``N*c``."""
    data = regression()
    refused_by_every_method(squared["cpu"], {**data, "c": 0.0})
    value, gradient, hessian = squared["cpu"].compute(True, ("p",), ("p",), {**data, "c": 2.5})
    expected = squared_mean(data["y"], data["p"], 2.5)
    np.testing.assert_allclose([value, *gradient, *hessian],
                               [expected[0], *expected[1], *expected[2]], rtol=1e-12)


# ---------------------------------------------------------------------------- kept plans
PLANS = {
    # text, options, inputs drawn, counts that total 0, whether the plan is printed
    "printed plan": (SQUARED, {}, regression, {"c": np.zeros(N)}, True),
    "small call of a parallel loss": (SQUARED, {"target": "parallel"}, regression,
                                      {"c": np.zeros(N)}, True),
    # a per-class vector: an interpreted plan
    "interpreted plan": ("count_as(square(pick(z, y)), pick(classvec(w), y))", {},
                         lambda: {"y": RNG.integers(0, K, N), "z": RNG.normal(size=(N, K))},
                         {"w": np.zeros(K)}, False),
}


@pytest.mark.parametrize("case", PLANS)
def test_a_kept_plan_leaves_zero_counts_to_the_general_path_which_refuses(case, monkeypatch):
    """A signature met before runs its plan; counts that total 0 make the plan hand the call
    to the general path (which raises), never return the NaN the kernel computed."""
    text, options, draw, zeros, printed = PLANS[case]
    compiled = lossdsl.compile(text, **options)
    wrt = "p" if "p" in compiled.inputs else "z"
    data = draw()
    good = {**data, **{name: np.full_like(value, 0.5, dtype=float)
                       for name, value in zeros.items()}}
    for _ in range(2):  # the general path, then the plan
        compiled(**good)
        compiled.grad_and_hessian(wrt, **good)
    kept = [plan for plan in compiled._plans.values() if plan is not None]
    assert kept and all((plan.runner is not None) == printed for plan in kept)
    taken = []
    bind = api.bind_inputs

    def general_path(*args, **kwargs):
        taken.append(True)
        return bind(*args, **kwargs)

    monkeypatch.setattr(api, "bind_inputs", general_path)
    compiled(**good)
    assert not taken  # the plan answers a usable call itself
    for method in (compiled, lambda **i: compiled.grad_and_hessian(wrt, **i)):
        with pytest.raises(LossDomainError, match=REFUSED):
            method(**{**data, **zeros})
    assert len(taken) == 2


# ----------------------------------------------------------- where the counts come from
FORMS = {
    # text, the value written in NumPy (inputs y, p and the counts c)
    "scaled, negated, with a batch term": (
        "0.1*sum(p*p) - 2*count_as(square(y - p), c)",
        lambda y, p, c: 0.1 * np.sum(p * p) - 2 * np.sum((y - p) ** 2) / np.sum(c)),
    "a matrix loss (the mean divides by K*sum(c))": (
        SQUARED, lambda y, p, c: np.sum((y - p) ** 2) / (y.shape[1] * np.sum(c))),
}


@pytest.mark.parametrize("form", FORMS)
def test_counts_of_every_form_of_mean_are_checked(form):
    text, by_hand = FORMS[form]
    compiled = lossdsl.compile(text)
    shape = (N, K) if "matrix" in form else (N,)
    y, p = RNG.normal(size=shape), RNG.normal(size=shape)
    refused_by_every_method(compiled, {"y": y, "p": p, "c": np.zeros(N)})
    counts = np.where(np.arange(N) % 3 == 0, 1.5, 0.0)
    np.testing.assert_allclose(compiled(y=y, p=p, c=counts), by_hand(y, p, counts), rtol=1e-12)


def test_a_weighted_mean_refuses_weights_times_counts_that_total_zero():
    """``"weighted_mean"`` divides by ``sum(w*s)``: zero where the weights are 0 wherever the
    counts are not, though neither totals 0; ``"mean"`` with weights divides by
    ``sum(s)``."""
    data = regression()
    counts = np.where(np.arange(N) < N // 2, 1.0, 0.0)
    weights = 1.0 - counts
    weighted = lossdsl.compile(SQUARED, reduction="weighted_mean")
    with pytest.raises(LossDomainError, match="times sample_weight sum to 0.0"):
        weighted(**data, c=counts, sample_weight=weights)
    weights = RNG.uniform(0.5, 2.0, N)
    losses = (data["y"] - data["p"]) ** 2
    np.testing.assert_allclose(weighted(**data, c=counts, sample_weight=weights),
                               np.sum(weights * losses) / np.sum(weights * counts), rtol=1e-12)
    mean = lossdsl.compile(SQUARED)
    with pytest.raises(LossDomainError, match=REFUSED):
        mean.grad("p", **data, c=np.zeros(N), sample_weight=weights)
    np.testing.assert_allclose(mean(**data, c=counts, sample_weight=weights),
                               np.sum(weights * losses) / np.sum(counts), rtol=1e-12)


def test_library_losses_counting_events_and_pairs_refuse_none():
    """``count_as(cox_ph(y, z), y > 0)`` (XGBoost's cox-nloglik: the mean over the events)
    with every sample censored, and RankNet's mean over pairs with no pair in any query."""
    times = RNG.uniform(1.0, 5.0, N)
    cox = lossdsl.compile("count_as(cox_ph(y, z), y > 0)")
    with pytest.raises(LossDomainError, match="count_as"):
        cox.grad("z", y=-times, z=RNG.normal(size=N))
    pairs = lossdsl.compile("count_as(ranknet(y, z, q), pairsum(y > partner(y), q))")
    with pytest.raises(LossDomainError, match="count_as"):
        pairs(y=np.ones(N), z=RNG.normal(size=N), q=np.repeat(np.arange(3), N // 3))


# --------------------------------------------------------------------- PyTorch's weights
def torch_cross_entropy(z, y, weight, ignore_index=-100):
    """(value, gradient) of ``F.cross_entropy(z, y, weight=weight)`` in float64."""
    torch = pytest.importorskip("torch")
    logits = torch.tensor(z, requires_grad=True)
    value = torch.nn.functional.cross_entropy(logits, torch.tensor(y, dtype=torch.long),
                                              weight=torch.tensor(weight),
                                              ignore_index=ignore_index)
    value.backward()
    return value.item(), logits.grad.numpy()


def test_class_weights_all_zero_are_refused_where_pytorch_gives_nan():
    """PyTorch's class-weighted mean over samples whose classes all weigh 0 is NaN (so is
    its gradient); lossdsl refuses it. With some class weights 0 but not all the classes
    present, both give the same value and gradient; with ignore_index, the samples kept
    are the ones whose weights must not all be 0."""
    z = RNG.normal(size=(N, K))
    labels = np.arange(N) % K
    ce = lossdsl.compile("sparse_cce_logits(y, z, weight=w)")
    zero = np.zeros(K)
    value, gradient = torch_cross_entropy(z, labels, zero)
    assert np.isnan(value) and np.isnan(gradient).all()
    for method in (ce, lambda **i: ce.grad("z", **i), lambda **i: ce.grad_and_hessian("z", **i)):
        with pytest.raises(LossDomainError, match=REFUSED):
            method(y=labels, z=z, w=zero)
    some_zero = np.array([0.0, 2.5, 0.5])
    value, gradient = torch_cross_entropy(z, labels, some_zero)
    found, found_gradient = ce.value_and_grad("z", y=labels, z=z, w=some_zero)
    np.testing.assert_allclose(found, value, rtol=1e-12)
    np.testing.assert_allclose(found_gradient, gradient, rtol=1e-12, atol=1e-15)
    ignoring = lossdsl.compile("sparse_cce_logits(y, z, weight=w)", ignore_index=-100)
    padded = np.where(labels == 0, 0, -100)  # the samples kept are of class 0, weighing 0
    assert np.isnan(torch_cross_entropy(z, padded, some_zero)[0])
    with pytest.raises(LossDomainError, match="of the samples not ignored sum to 0.0"):
        ignoring.grad("z", y=padded, z=z, w=some_zero)
    padded[1] = 1
    value, gradient = torch_cross_entropy(z, padded, some_zero)
    found, found_gradient = ignoring.value_and_grad("z", y=padded, z=z, w=some_zero)
    np.testing.assert_allclose(found, value, rtol=1e-12)
    np.testing.assert_allclose(found_gradient, gradient, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------- Dask
def test_dask_refuses_a_total_of_zero_over_every_chunk_not_a_chunk():
    da = pytest.importorskip("dask.array")
    import lossdsl.dask

    loss = lossdsl.dask.compile(SQUARED)
    data = regression()
    y, p = (da.from_array(data[name], chunks=4) for name in ("y", "p"))
    counts = np.where(np.arange(N) >= 8, 1.25, 0.0)  # two of three chunks count nothing
    c = da.from_array(counts, chunks=4)
    expected = squared_mean(data["y"], data["p"], counts)
    gradient, hessian = loss.grad_and_hessian("p", y=y, p=p, c=c)
    np.testing.assert_allclose(loss(y=y, p=p, c=c).compute(), expected[0], rtol=1e-12)
    np.testing.assert_allclose(gradient.compute(), expected[1], rtol=1e-12)
    np.testing.assert_allclose(hessian.compute(), expected[2], rtol=1e-12)
    zeros = da.zeros(N, chunks=4)
    value, gradient = loss.value_and_grad("p", y=y, p=p, c=zeros)
    for result in (loss(y=y, p=p, c=zeros), value, gradient,
                   *loss.grad_and_hessian("p", y=y, p=p, c=zeros)):
        with pytest.raises(LossDomainError, match=REFUSED):
            result.compute()


# ---------------------------------------------------------------------------------- CUDA
def test_cuda_refuses_zero_counts_given_on_the_host_or_the_device():
    from numba import cuda

    from lossdsl.backend.cuda import runtime

    if not runtime.SIMULATOR and not cuda.is_available():
        pytest.skip("no CUDA GPU, and NUMBA_ENABLE_CUDASIM is not 1")
    loss = lossdsl.compile(SQUARED, target="cuda")
    data = regression()
    for counts in (np.zeros(N), cuda.to_device(np.zeros(N))):
        refused_by_every_method(loss, {**data, "c": counts})
    on_device = {name: cuda.to_device(value) for name, value in data.items()}
    with pytest.raises(LossDomainError, match=REFUSED):
        loss.grad("p", **on_device, c=cuda.to_device(np.zeros(N)))
    counts = np.where(np.arange(N) % 4 == 0, 2.0, 0.0)
    gradient, hessian = loss.grad_and_hessian("p", **data, c=counts)
    expected = squared_mean(data["y"], data["p"], counts)
    tolerance = 1e-12 if runtime.SIMULATOR else 1e-10
    np.testing.assert_allclose(loss(**data, c=counts), expected[0], rtol=tolerance)
    np.testing.assert_allclose(gradient, expected[1], rtol=tolerance)
    np.testing.assert_allclose(hessian, expected[2], rtol=tolerance)


# ----------------------------------------------------------------------------------- JAX
def test_jax_refuses_concrete_zero_counts_and_gives_nan_under_jit():
    """Concrete counts (also under ``jax.grad`` of the predictions) are checked and refused;
    traced ones (under ``jit``) make the value and every derivative NaN, where 0/0 gave
    ``sum(l)/0 = inf``. Counts that total something else give JAX's autodiff of the
    formula."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    import lossdsl.jax

    f = lossdsl.jax.loss(SQUARED)
    data = regression()
    y, p = jnp.asarray(data["y"], jnp.float32), jnp.asarray(data["p"], jnp.float32)
    zeros = jnp.zeros(N, jnp.float32)
    for call in (lambda: f(y, p, c=zeros), lambda: jax.grad(f, argnums=1)(y, p, c=zeros)):
        with pytest.raises(LossDomainError, match=REFUSED):
            call()
    assert np.isnan(float(jax.jit(f)(y, p, c=zeros)))
    assert np.isnan(np.asarray(jax.jit(jax.grad(f, argnums=1))(y, p, c=zeros))).all()
    counts = jnp.asarray(np.where(np.arange(N) % 3 == 0, 1.5, 0.0), jnp.float32)

    def by_hand(y, p, c):
        return jnp.sum((y - p) ** 2) / jnp.sum(c)

    np.testing.assert_allclose(float(f(y, p, c=counts)), float(by_hand(y, p, counts)),
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(f, argnums=1))(y, p, c=counts)),
                               np.asarray(jax.grad(by_hand, argnums=1)(y, p, counts)),
                               rtol=1e-5)
