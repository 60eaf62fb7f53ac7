"""XGBoost objectives on the CUDA target (issue #15, item 3).

Under Numba's simulator (CI) the CUDA kernels read and write NumPy arrays: these tests check
that ``target="cuda"`` objectives give the CPU target's gradients, Hessians and models for
every Hessian policy and per-row inputs. On a GPU with CuPy the same objectives return CuPy
arrays that XGBoost (``device="cuda"``) takes without a host round trip; the tests marked
``real_gpu`` check that, and the model against the built-in objective's, there.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import xgboost as xgb

import lossdsl
import lossdsl.xgboost as lx
from lossdsl.backend.cuda import runtime as rt
from lossdsl.boosting.objective import device_arrays

pytestmark = pytest.mark.filterwarnings(
    "ignore:(invalid value|divide by zero|overflow) encountered:RuntimeWarning")

N = 160
real_gpu = pytest.mark.skipif(rt.SIMULATOR or device_arrays() is None,
                              reason="needs a GPU and CuPy")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(N, 4))
    signal = X[:, 0] - 0.5 * X[:, 1]
    y = signal + rng.normal(scale=0.5, size=N)
    return {"X": X, "y": y, "binary": (y > 0).astype(float),
            "classes": np.digitize(y, [-0.5, 0.5]).astype(float),
            "weight": rng.uniform(0.5, 2.0, N), "clv": rng.uniform(1.0, 10.0, N)}


def _host(array):
    return array.get() if hasattr(array, "get") else np.asarray(array)


CASES = [  # (loss, label key, policy chosen by "auto", num_class)
    ("huber(y, p, 1.0)", "y", "constant", None),
    ("asymmetric_l1(y, p, 4, 1)", "y", "constant", None),
    ("bce_logits(y, p)", "binary", "floor", None),
    ("expected_cost(y, p, 1, 5)", "binary", "fisher", None),
    ("sparse_cce_logits(y, z)", "classes", "floor", 3),
]


@pytest.mark.parametrize("loss,label,policy,num_class", CASES, ids=[c[0] for c in CASES])
def test_cuda_objective_is_the_cpu_objective(data, loss, label, policy, num_class):
    """Gradient and Hessian of every policy, weighted, as the CPU target gives them; on a
    GPU they come back as CuPy arrays."""
    if loss.startswith("expected_cost"):
        loss = "y*5*sigmoid(-p) + (1 - y)*sigmoid(p)"
    on_gpu = lx.objective(loss, target="cuda")
    on_cpu = lx.objective(loss, target="cpu")
    rng = np.random.default_rng(0)
    shape = (N,) if num_class is None else (N, num_class)
    prediction = rng.normal(size=shape)
    y, w = data[label], data["weight"]
    gradient, hessian = on_gpu.gradients(y, prediction, w)
    expected_gradient, expected_hessian = on_cpu.gradients(y, prediction, w)
    assert on_gpu.policy == on_cpu.policy == policy
    if device_arrays() is not None:
        assert type(gradient).__module__.startswith("cupy")
    np.testing.assert_allclose(_host(gradient), expected_gradient, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(_host(hessian), expected_hessian, rtol=1e-7, atol=1e-12)


def test_per_row_inputs_go_to_the_device_once(data):
    """A per-row input (a customer's value) reaches the kernel with its rows, and is still
    checked against them."""
    loss = "clv*y*softplus(-p) + (1 - y)*softplus(p)"
    y = data["binary"]
    on_gpu = lx.objective(loss, inputs={"clv": data["clv"]}, rows=y, target="cuda")
    on_cpu = lx.objective(loss, inputs={"clv": data["clv"]}, rows=y, target="cpu")
    prediction = np.linspace(-2, 2, N)
    for _ in range(2):  # the second call reuses what the first copied
        gradient, hessian = on_gpu.gradients(y, prediction)
        expected = on_cpu.gradients(y, prediction)
        np.testing.assert_allclose(_host(gradient), expected[0], rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(_host(hessian), expected[1], rtol=1e-7, atol=1e-12)
    with pytest.raises(lossdsl.LossError, match="rows="):
        on_gpu.gradients(y[::-1].copy(), prediction)


def test_xgboost_trains_the_same_model(data):
    """``xgb.train`` and ``lossdsl.xgboost.train`` (exact leaves) with a CUDA-target objective
    build the CPU target's model."""
    y, w = data["y"], data["weight"]
    dtrain = xgb.DMatrix(data["X"], y, weight=w)
    params = {"max_depth": 3, "eta": 0.3, "nthread": 1}
    models = {}
    for target in ("cpu", "cuda"):
        objective = lx.objective("asymmetric_l1(y, p, 4, 1)", target=target)
        plain = xgb.train({**params, "base_score": float(objective.init_score(y, w))}, dtrain,
                          4, obj=objective)
        refitted = lx.train(objective, params, dtrain, 4)
        models[target] = [m.predict(dtrain, output_margin=True) for m in (plain, refitted)]
    for ours, theirs in zip(models["cuda"], models["cpu"]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("library", ["lightgbm", "catboost"])
def test_host_only_boosters_refuse_the_cuda_target(library):
    pytest.importorskip(library)
    module = importlib.import_module(f"lossdsl.{library}")
    with pytest.raises(lossdsl.LossError, match="takes gradients as NumPy arrays"):
        module.objective("huber(y, p, 1.0)", target="cuda")


@real_gpu
@pytest.mark.parametrize("like,loss,label,num_class", [
    ("binary:logistic", "bce_logits(y, p)", "binary", None),
    ("multi:softprob", "sparse_cce_logits(y, z)", "classes", 3),
])
def test_device_objective_builds_the_builtin_model_on_the_gpu(data, like, loss, label,
                                                              num_class):
    """XGBoost with ``device="cuda"``: the CUDA objective's CuPy gradients give the built-in
    objective's model (``like=``, same start)."""
    y, w = data[label], data["weight"]
    objective = lx.objective(loss, target="cuda", like=like)
    params = {"device": "cuda", "tree_method": "hist", "max_depth": 3, "eta": 0.3}
    if num_class:
        params["num_class"] = num_class
    start = objective.base_margin(y, w, num_class)
    dtrain = xgb.DMatrix(data["X"], y, weight=w, base_margin=start)
    gradient, _ = objective(np.zeros(start.shape), dtrain)
    assert type(gradient).__module__.startswith("cupy")
    ours = xgb.train(params, dtrain, 6, obj=objective).predict(dtrain, output_margin=True)
    theirs = xgb.train({**params, "objective": like}, dtrain, 6).predict(dtrain,
                                                                          output_margin=True)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
