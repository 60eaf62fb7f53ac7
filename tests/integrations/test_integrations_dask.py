"""lossdsl.dask: chunked evaluation equals one call over all the data; xgboost.dask training."""

import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
import lossdsl  # noqa: E402
import lossdsl.dask as ld  # noqa: E402

N = 1000


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(6)
    y = (rng.random(N) > 0.6).astype(float)
    p = rng.normal(size=N)
    weight = rng.uniform(0.1, 2.0, size=N)
    return {
        "y": y, "p": p, "weight": weight,
        # deliberately different chunkings: inputs are aligned on the first one's
        "Y": da.from_array(y, chunks=170), "P": da.from_array(p, chunks=230),
        "W": da.from_array(weight, chunks=100),
    }


def _check(text, reduction, data, weighted=True, wrt="p"):
    single = lossdsl.compile(text, reduction=reduction)
    chunked = ld.compile(text, reduction=reduction)
    kwargs = {"sample_weight": data["weight"]} if weighted else {}
    dask_kwargs = {"sample_weight": data["W"]} if weighted else {}
    value, gradient = chunked.value_and_grad(wrt, y=data["Y"], p=data["P"], **dask_kwargs)
    assert gradient.chunks == data["P"].chunks or gradient.chunks == data["Y"].chunks
    np.testing.assert_allclose(value.compute(), single(y=data["y"], p=data["p"], **kwargs),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gradient.compute(),
                               single.grad(wrt, y=data["y"], p=data["p"], **kwargs),
                               rtol=1e-10, atol=1e-15)
    return single, chunked, kwargs, dask_kwargs


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_per_sample_loss_matches_single_call(data, reduction, weighted):
    single, chunked, kwargs, dask_kwargs = _check("bce_logits(y, p)", reduction, data, weighted)
    gradient, hessian = chunked.grad_and_hessian("p", y=data["Y"], p=data["P"], **dask_kwargs)
    np.testing.assert_allclose(hessian.compute(),
                               single.hessian("p", y=data["y"], p=data["p"], **kwargs),
                               rtol=1e-12, atol=1e-18)
    np.testing.assert_allclose(chunked.hessian("p", y=data["Y"], p=data["P"],
                                               **dask_kwargs).compute(), hessian.compute())


@pytest.mark.parametrize("text", [
    "dice(y, sigmoid(p))",                               # the whole loss is a ratio of sums
    "1 - (2*sum(y*p) + 1)/(sum(y) + sum(p) + 1)",
])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nested_reductions_two_phases(data, text, reduction):
    _check(text, reduction, data, weighted=False)


@pytest.mark.parametrize("text", [
    "mse(y, p) + 0.1*mean(p)^2",               # a per-sample loss plus a scalar penalty
    "(p - mean(p))^2*y + sum(y*p)^2/100",      # inner sums inside the per-sample terms
])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mixed_per_sample_and_nested_terms(data, text, reduction):
    _check(text, reduction, data, weighted=True)


def test_class_matrix_inputs(data):
    rng = np.random.default_rng(7)
    onehot = np.eye(4)[rng.integers(0, 4, N)]
    logits = rng.normal(size=(N, 4))
    single = lossdsl.compile("cce_logits(y, z)")
    chunked = ld.compile("cce_logits(y, z)")
    Z = da.from_array(logits, chunks=(300, 4))
    value, gradient = chunked.value_and_grad("z", y=onehot, z=Z, sample_weight=data["weight"])
    assert gradient.shape == (N, 4)
    np.testing.assert_allclose(value.compute(), single(y=onehot, z=logits,
                                                       sample_weight=data["weight"]))
    np.testing.assert_allclose(gradient.compute(), single.grad("z", y=onehot, z=logits,
                                                               sample_weight=data["weight"]))
    elementwise = ld.compile("mse(y, z)")  # mean over N*K elements
    np.testing.assert_allclose(elementwise(y=onehot, z=Z).compute(),
                               lossdsl.compile("mse(y, z)")(y=onehot, z=logits))


def test_regulariser_vector_goes_whole(data):
    w = np.array([0.5, -1.0, 2.0])
    text = "huber(y, p) + 0.1*l1(w)"
    chunked = ld.compile(text)
    value, gradient = chunked.value_and_grad("p", y=data["Y"], p=data["P"], w=w)
    single = lossdsl.compile(text)
    np.testing.assert_allclose(value.compute(), single(y=data["y"], p=data["p"], w=w))
    np.testing.assert_allclose(gradient.compute(), single.grad("p", y=data["y"], p=data["p"], w=w))
    # the vector's own loop runs as one task
    np.testing.assert_allclose(chunked.grad("w", y=data["Y"], p=data["P"], w=w).compute(),
                               single.grad("w", y=data["y"], p=data["p"], w=w))


def test_regulariser_dask_vector_goes_whole(data):
    """A dask parameter vector of its own length (not the samples') is read whole by every
    task, as a NumPy one is: it used to be refused as a misaligned sample input."""
    w = np.linspace(-1.5, 2.0, 10)
    W = da.from_array(w, chunks=4)
    chunked = ld.compile("huber(y, p, 1.0) + 0.1*l1(w)")
    value, gradients = chunked.value_and_grad(["p", "w"], y=data["Y"], p=data["P"], w=W)
    hessian = chunked.hessian("w", y=data["Y"], p=data["P"], w=W)
    residual = data["p"] - data["y"]
    expected = (np.where(np.abs(residual) <= 1, 0.5*residual**2, np.abs(residual) - 0.5).mean()
                + 0.1*np.abs(w).sum())
    np.testing.assert_allclose(value.compute(), expected, rtol=1e-12)
    np.testing.assert_allclose(gradients["p"].compute(), np.clip(residual, -1, 1)/N,
                               rtol=1e-12)
    assert gradients["w"].chunks == W.chunks
    np.testing.assert_allclose(gradients["w"].compute(), 0.1*np.sign(w), rtol=1e-12)
    np.testing.assert_allclose(hessian.compute(), np.zeros(10))
    # the sample weights still need the samples' rows
    with pytest.raises(lossdsl.LossShapeError, match=r"sample_weight has shape \(10,\)"):
        chunked(y=data["Y"], p=data["P"], w=W, sample_weight=da.ones(10, chunks=5))


@pytest.mark.parametrize("text", [
    "dice(y, sigmoid(p))",
    "(p - mean(p))^2*y + sum(y*p)^2/100",
    "sum((p - mean(p))^2)",
    # three levels: the standardised prediction needs the mean, then the variance around it
    "((p - mean(p))/sqrt(mean((p - mean(p))^2)) - y)^2",
])
@pytest.mark.parametrize("weighted", [False, True])
def test_nested_reductions_hessians(data, text, weighted):
    single = lossdsl.compile(text)
    chunked = ld.compile(text)
    if weighted and text.startswith(("dice", "sum")):
        weighted = False  # a single number: no per-sample weights to apply
    kwargs = {"sample_weight": data["weight"]} if weighted else {}
    dask_kwargs = {"sample_weight": data["W"]} if weighted else {}
    arrays = {n: data[n] for n in single.inputs}
    dask_arrays = {n: data[n.upper()] for n in single.inputs}
    gradient, hessian = chunked.grad_and_hessian("p", **dask_arrays, **dask_kwargs)
    assert hessian.chunks in (data["Y"].chunks, data["P"].chunks)
    expected_gradient, expected_hessian = single.grad_and_hessian("p", **arrays, **kwargs)
    assert np.abs(expected_hessian).max() > 0
    np.testing.assert_allclose(gradient.compute(), expected_gradient, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(hessian.compute(), expected_hessian, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(chunked(**dask_arrays, **dask_kwargs).compute(),
                               single(**arrays, **kwargs), rtol=1e-12)


def test_passes_run_once_per_chunk(monkeypatch):
    # every loop of the kernel runs once per chunk, however deep the passes nest
    chunked = ld.compile("((p - mean(p))/sqrt(mean((p - mean(p))^2)) - y)^2")
    runs = []
    original = ld._run_chunk
    monkeypatch.setattr(ld, "_run_chunk", lambda *a: runs.append(a[1]) or original(*a))
    rng = np.random.default_rng(10)
    y, p = rng.random(2000), rng.random(2000)
    _, hessian = chunked.grad_and_hessian("p", y=da.from_array(y, chunks=200),
                                          p=da.from_array(p, chunks=200))
    hessian.compute()
    loops = chunked.compiled.source.count("\ndef loop")
    assert loops >= 3  # mean, then the variance around it, then the per-sample pass
    assert sorted(runs) == sorted(f"loop{k}" for k in range(loops) for _ in range(10))


def test_float32_and_labels_checked_per_chunk():
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 3, 400)  # integer labels keep float32 logits float32
    logits = rng.normal(size=(400, 3)).astype(np.float32)
    chunked = ld.compile("sparse_cce_logits(y, z)")
    gradient = chunked.grad("z", y=da.from_array(labels, chunks=90), z=logits)
    assert gradient.dtype == np.float32 and gradient.compute().dtype == np.float32
    np.testing.assert_allclose(gradient.compute(),
                               lossdsl.compile("sparse_cce_logits(y, z)").grad(
                                   "z", y=labels, z=logits), rtol=1e-6)
    labels[333] = 3
    with pytest.raises(lossdsl.LossDomainError, match="found 3 at index 333"):
        chunked(y=da.from_array(labels, chunks=90), z=logits).compute()


def test_weighted_mean_over_weights_summing_to_zero_is_an_error():
    """The NumPy path refuses weights whose total is 0 or not finite; the dask path computed
    NaN (a RuntimeWarning and nan for the value and every gradient)."""
    chunked = ld.compile("mse(y, p)", reduction="weighted_mean")
    y, p = da.ones(8, chunks=4), da.zeros(8, chunks=4)
    for weight in (da.zeros(8, chunks=4), da.from_array(np.r_[1.0, -1.0, 0, 0, 0, 0, 0, 0],
                                                        chunks=4), np.zeros(8)):
        with pytest.raises(lossdsl.LossDomainError, match="sample_weight sums to 0.0"):
            chunked(weight, y=y, p=p).compute()
        with pytest.raises(lossdsl.LossDomainError, match="sample_weight sums to 0.0"):
            chunked.grad("p", weight, y=y, p=p).compute()
    weight = np.arange(1.0, 9.0)  # usable weights: -2 w (y - p) / sum(w)
    np.testing.assert_allclose(chunked.grad("p", da.from_array(weight, chunks=4), y=y,
                                            p=p).compute(), -2 * weight / weight.sum())


def test_bad_calls_raise(data):
    with pytest.raises(lossdsl.LossShapeError, match="sample_weight"):
        ld.compile("dice(y, p)")(y=data["Y"], p=data["P"], sample_weight=data["W"])
    with pytest.raises(lossdsl.LossNameError, match="missing input"):
        ld.compile("mse(y, p)")(y=data["Y"])
    with pytest.raises(lossdsl.LossError, match="at least one dask array"):
        ld.compile("mse(y, p)")(y=data["y"], p=data["p"])
    with pytest.raises(lossdsl.LossError, match="CPU kernels"):
        ld.compile("mse(y, p)", target="cuda")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def test_runs_on_local_cluster(client, data):
    chunked = ld.compile("pseudo_huber(y, p)")
    value, gradient = chunked.value_and_grad("p", y=data["Y"], p=data["P"],
                                             sample_weight=data["W"])
    value, gradient = client.compute([value, gradient], sync=True)
    single = lossdsl.compile("pseudo_huber(y, p)")
    kwargs = {"y": data["y"], "p": data["p"], "sample_weight": data["weight"]}
    np.testing.assert_allclose(value, single(**kwargs))
    np.testing.assert_allclose(gradient, single.grad("p", **kwargs))


def test_xgboost_dask_same_model_as_builtin(client):
    xgb_dask = pytest.importorskip("xgboost.dask")
    import lossdsl.xgboost as lx

    rng = np.random.default_rng(8)
    n = 2000
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] - X[:, 1] + 0.5 * rng.normal(size=n) > 0).astype(float)
    weight = rng.uniform(0.5, 2.0, size=n)
    dtrain = xgb_dask.DaskDMatrix(client, da.from_array(X, chunks=(500, 4)),
                                  da.from_array(y, chunks=500),
                                  weight=da.from_array(weight, chunks=500),
                                  base_margin=da.zeros(n, chunks=500))
    params = {"nthread": 1, "max_depth": 3, "eta": 0.3, "tree_method": "hist"}
    objective = lx.objective("bce_logits(y, p)", target="cpu")
    ours = xgb_dask.train(client, params, dtrain, 8, obj=objective)["booster"]
    theirs = xgb_dask.train(client, {**params, "objective": "binary:logistic"}, dtrain,
                            8)["booster"]
    ours_margin = xgb_dask.predict(client, ours, dtrain, output_margin=True).compute()
    theirs_margin = xgb_dask.predict(client, theirs, dtrain, output_margin=True).compute()
    assert np.abs(theirs_margin).max() > 1
    np.testing.assert_allclose(ours_margin, theirs_margin, rtol=1e-5, atol=1e-5)


def test_a_compiled_loss_keeps_its_reduction():
    """lossdsl.dask.compile(C) of a CompiledLoss with reduction="sum" sums (it was silently
    recompiled with the mean); an explicit reduction still wins."""
    rng = np.random.default_rng(4)
    y, p = rng.normal(size=40), rng.normal(size=40)
    summed = lossdsl.compile("mse(y, p)", reduction="sum")
    chunked = ld.compile(summed)
    assert chunked.reduction == "sum"
    assert chunked(y=da.from_array(y, chunks=13), p=p).compute() == pytest.approx(
        summed(y=y, p=p), rel=1e-12)
    assert ld.compile(summed, reduction="mean").reduction == "mean"


def test_unknown_chunk_sizes_and_ranks_say_what_is_wrong():
    loss = ld.compile("mse(y, p)")
    unknown = da.ones(10, chunks=5)[da.ones(10, chunks=5) > 0]  # a boolean index: sizes nan
    with pytest.raises(lossdsl.LossShapeError, match="unknown chunk sizes"):
        loss(y=unknown, p=da.ones(10, chunks=5))
    with pytest.raises(lossdsl.LossShapeError, match=r"\(10, 1, 1\): inputs are vectors"):
        loss(y=da.ones((10, 1, 1)), p=da.ones(10))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_inf_and_nan_sums_stay_silent(reduction):
    """Chunks whose partial sums are inf and -inf add up to NaN without a RuntimeWarning
    (dask adds them after the kernel's run returned, outside its errstate), as one call
    over all the data does."""
    big = np.finfo(np.float64).max
    y = np.array([10.0, 10.0, 10.0, 10.0, 1.0, 1.0])
    chunked = ld.compile("y*p", reduction=reduction)
    for p in ([big, big, -big, -big, 1.0, 2.0], [big, big, big, big, 1.0, 2.0]):
        p = np.array(p)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            value, gradient = chunked.value_and_grad("p", y=da.from_array(y, chunks=2),
                                                     p=da.from_array(p, chunks=2))
            value, gradient = value.compute(), gradient.compute()
            single = lossdsl.compile("y*p", reduction=reduction)(y=y, p=p)
        np.testing.assert_array_equal(value, single)
        assert not np.isfinite(value)


def test_a_bad_value_met_in_a_later_chunk_says_an_earlier_one_may_hold_one_too():
    """dask checks the chunks as it computes them, in any order: the error named index 95
    where the first bad value is at 10, as if it were the first (the NumPy path names 10)."""
    import dask

    y = np.ones(100)
    y[[10, 40, 70, 95]] = -1.0
    loss = ld.compile("poisson(y, p)")
    with dask.config.set(scheduler="synchronous"):
        with pytest.raises(lossdsl.LossDomainError) as raised:
            loss(y=da.from_array(y, chunks=30), p=da.from_array(np.ones(100), chunks=30)).compute()
        message = str(raised.value)
        index = int(message.split("at index ")[1].split()[0])
        assert index in (10, 40, 70, 95)
        if index != 10:
            assert "an earlier chunk may hold one too" in message
        with pytest.raises(lossdsl.LossDomainError, match=r"at index 10\n"):  # one chunk
            loss(y=da.from_array(y, chunks=100),
                 p=da.from_array(np.ones(100), chunks=100)).compute()
