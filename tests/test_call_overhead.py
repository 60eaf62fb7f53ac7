"""Repeated calls and caller-owned outputs: a call of a signature seen before runs the plan
kept for it (lossdsl.binding.CallPlan) and returns exactly what the general path returns,
whatever changes between calls (dtype, rank, weights, labels out of range); ``out=`` writes
the same bits into the caller's arrays and refuses arrays it cannot write into correctly."""

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import lossdsl
from lossdsl import api, binding

RNG = np.random.default_rng(16)
N, K = 64, 4


@pytest.fixture(scope="module")
def huber():
    return lossdsl.compile("huber(y, p, 1.0)")


@pytest.fixture(scope="module")
def sparse():
    return lossdsl.compile("sparse_cce_logits(y, z)")


def fresh(compiled):
    """The same loss compiled anew: its first call of any signature takes the general path."""
    return lossdsl.compile(compiled.loss, compiled.target, compiled.reduction,
                           compiled.params, compiled.ignore_index)


def assert_same(found, expected):
    assert type(found) is type(expected)
    if isinstance(expected, (list, tuple)):
        assert len(found) == len(expected)
        for a, b in zip(found, expected):
            assert_same(a, b)
    elif isinstance(expected, dict):
        assert found.keys() == expected.keys()
        for name in expected:
            assert_same(found[name], expected[name])
    elif isinstance(expected, np.ndarray):
        assert found.dtype == expected.dtype and found.shape == expected.shape
        np.testing.assert_array_equal(found, expected)  # to the bit (NaNs in place)
    else:
        assert found == expected or (found != found and expected != expected)


@pytest.fixture
def general_path_refused(monkeypatch):
    """Calls that reach the general path fail: what succeeds ran the kept plan."""
    def refuse(*args, **kwargs):
        raise AssertionError("the general path was taken")

    def apply():
        monkeypatch.setattr(api, "bind_inputs", refuse)
    return apply


def calls(compiled, wrt, **inputs):
    return [compiled(**inputs), compiled.value_and_grad(wrt, **inputs),
            compiled.grad(wrt, **inputs), compiled.hessian(wrt, **inputs),
            compiled.grad_and_hessian(wrt, **inputs)]


def test_repeated_calls_take_the_plan_and_equal_the_general_path(huber, general_path_refused):
    y, p = RNG.normal(size=N), RNG.normal(size=N)
    expected = calls(fresh(huber), "p", y=y, p=p)
    y2, p2 = RNG.normal(size=2 * N), RNG.normal(size=2 * N)
    expected_other = fresh(huber).grad_and_hessian("p", y=y2, p=p2)
    calls(huber, "p", y=y, p=p)
    general_path_refused()
    assert_same(calls(huber, "p", y=y, p=p), expected)
    # other values, same signature: still the plan, and the right numbers
    assert_same(huber.grad_and_hessian("p", y=y2, p=p2), expected_other)


@pytest.mark.parametrize("change", ["float32", "int_labels", "scalar_y", "weighted",
                                    "weight_float32", "strided", "list"])
def test_every_signature_change_gives_the_general_paths_result(huber, change):
    y, p = RNG.normal(size=N), RNG.normal(size=N)
    compiled = fresh(huber)
    calls(compiled, "p", y=y, p=p)  # plan of the float64 vector signature kept
    extra = {}
    if change == "float32":
        y, p = y.astype(np.float32), p.astype(np.float32)
    elif change == "int_labels":
        y = np.round(y).astype(np.int32)
    elif change == "scalar_y":
        y = 0.25
    elif change == "weighted":
        extra["sample_weight"] = RNG.random(N)
    elif change == "weight_float32":
        extra["sample_weight"] = RNG.random(N).astype(np.float32)
    elif change == "strided":
        p = np.repeat(p, 2)[::2]
    elif change == "list":
        y = list(y)
    for _ in range(2):  # the changed signature's first call, then its plan
        assert_same(calls(compiled, "p", y=y, p=p, **extra),
                    calls(fresh(huber), "p", y=y, p=p, **extra))
    # and back: the first signature's plan still answers for it
    assert_same(calls(compiled, "p", y=np.ones(N), p=np.zeros(N)),
                calls(fresh(huber), "p", y=np.ones(N), p=np.zeros(N)))


def test_param_overrides_are_read_on_every_call():
    text = "param alpha = 0.5\nloss q = quantile(y, p, alpha)"
    compiled = lossdsl.compile(text)
    y, p = RNG.normal(size=N), RNG.normal(size=N)
    for value in (0.5, 0.2, 0.2, 0.5, 0.9):
        expected = lossdsl.compile(text).value_and_grad("p", y=y, p=p, alpha=value)
        assert_same(compiled.value_and_grad("p", y=y, p=p, alpha=value), expected)
        assert_same(compiled.value_and_grad("p", y=y, p=p, alpha=value), expected)
    compiled.value_and_grad("p", y=y, p=p)
    compiled.params["alpha"] = 0.2  # compile-time params changed in place are read too
    assert_same(compiled.value_and_grad("p", y=y, p=p),
                lossdsl.compile(text, params={"alpha": 0.2}).value_and_grad("p", y=y, p=p))


def test_rank_switch_of_a_multiclass_loss(sparse):
    z = RNG.normal(size=(N, K))
    labels = RNG.integers(0, K, size=N)
    compiled = fresh(sparse)
    for y in (labels, 2, labels.astype(np.float64), labels, 3):
        for _ in range(2):
            assert_same(calls(compiled, "z", y=y, z=z), calls(fresh(sparse), "z", y=y, z=z))


@pytest.mark.parametrize("bad", [K, -1, 1.5, np.nan])
def test_labels_out_of_range_are_caught_on_every_call(sparse, bad):
    z = RNG.normal(size=(N, K))
    dtype = np.int64 if float(bad).is_integer() else np.float64
    labels = RNG.integers(0, K, size=N).astype(dtype)
    compiled = fresh(sparse)
    compiled.grad_and_hessian("z", y=labels, z=z)
    compiled.grad_and_hessian("z", y=labels, z=z)  # the plan runs
    wrong = labels.copy()
    wrong[N // 2] = bad
    with pytest.raises(lossdsl.LossDomainError, match=r"'y' must hold integers in \[0, 4\)"):
        compiled.grad_and_hessian("z", y=wrong, z=z)
    with pytest.raises(lossdsl.LossDomainError, match=r"must hold integers"):
        compiled(y=wrong, z=z)


@pytest.mark.parametrize("dtype, bad", [(np.uint8, K), (np.int32, -1), (np.float32, 2.5),
                                        (np.float32, np.nan), (np.int16, 300)])
def test_labels_of_every_dtype_are_range_checked(sparse, dtype, bad):
    z = RNG.normal(size=(N, K))
    labels = RNG.integers(0, K, size=N).astype(dtype)
    compiled = fresh(sparse)
    for _ in range(2):  # the general path, then the plan
        compiled.grad_and_hessian("z", y=labels, z=z)
    wrong = labels.copy()
    wrong[N - 1] = bad
    with pytest.raises(lossdsl.LossDomainError, match=rf"at index {N - 1}"):
        compiled.grad_and_hessian("z", y=wrong, z=z)


def test_shapes_that_disagree_are_refused_on_a_planned_signature(huber, sparse):
    compiled = fresh(huber)
    compiled.grad("p", y=np.ones(N), p=np.ones(N))
    with pytest.raises(lossdsl.LossShapeError, match="disagree on the number of samples"):
        compiled.grad("p", y=np.ones(N), p=np.ones(N + 1))
    weighted = fresh(huber)
    weighted.grad("p", y=np.ones(N), p=np.ones(N), sample_weight=np.ones(N))
    with pytest.raises(lossdsl.LossShapeError, match="sample_weight has"):
        weighted.grad("p", y=np.ones(N), p=np.ones(N), sample_weight=np.ones(N - 1))
    classes = fresh(sparse)
    classes.grad("z", y=np.zeros(N, dtype=np.int64), z=np.ones((N, K)))
    with pytest.raises(lossdsl.LossShapeError, match="disagree"):
        classes.grad("z", y=np.zeros(N + 1, dtype=np.int64), z=np.ones((N, K)))


def test_ignore_index_counts_the_kept_samples_on_every_call():
    compiled = lossdsl.compile("sparse_cce_logits(y, z)", ignore_index=-100)
    z = RNG.normal(size=(N, K))
    labels = RNG.integers(0, K, size=N)
    for ignored in (0, 5, 20, 20, 3):
        y = labels.copy()
        y[:ignored] = -100
        expected = fresh(compiled).value_and_grad("z", y=y, z=z)
        assert_same(compiled.value_and_grad("z", y=y, z=z), expected)
    with pytest.raises(lossdsl.LossDomainError, match="every label of 'y' equals ignore_index"):
        compiled(y=np.full(N, -100), z=z)


def test_class_vector_and_scalar_inputs_on_a_plan():
    compiled = lossdsl.compile("sparse_cce_logits(y, z, 0.0, w)")
    z = RNG.normal(size=(N, K))
    labels = RNG.integers(0, K, size=N)
    for weight in (np.arange(1.0, K + 1), np.ones(K), 2.0, np.arange(1.0, K + 1)):
        assert_same(compiled.value_and_grad("z", y=labels, z=z, w=weight),
                    lossdsl.compile("sparse_cce_logits(y, z, 0.0, w)")
                    .value_and_grad("z", y=labels, z=z, w=weight))
    with pytest.raises(lossdsl.LossShapeError, match="per-class vector 'w' has 3 entries"):
        compiled(y=labels, z=z, w=np.ones(K - 1))


def test_python_integers_beyond_int64_are_refused_on_a_plan_as_on_the_general_path(huber):
    """A plan made by ``y=3`` converted a later ``y=10**400`` with float(): a raw
    OverflowError, and 2**70 accepted where the general path refuses it."""
    p = RNG.normal(size=8)
    huber(y=3, p=p)
    for value in (10**400, 2**70, -2**63 - 1):
        with pytest.raises(lossdsl.LossShapeError, match="input 'y' must be numbers"):
            huber(y=value, p=p)
    assert_same(huber(y=2**63, p=p), fresh(huber)(y=2**63, p=p))


def test_compiled_source_is_the_last_kernel_run(huber):
    compiled = fresh(huber)
    for dtype in (np.float64, np.float32, np.float64, np.float32):
        compiled.grad("p", y=np.ones(N, dtype=dtype), p=np.zeros(N, dtype=dtype))
        assert f"T = numpy.{np.dtype(dtype).name}" in compiled.source


# ------------------------------------------------------------------------------------ out=
def test_out_writes_the_allocating_calls_bits_and_returns_the_array(huber, sparse):
    y, p = RNG.normal(size=N), RNG.normal(size=N) * 3
    gradient, hessian = huber.grad_and_hessian("p", y=y, p=p)
    for _ in range(3):  # the general path, then the plan
        g, h = np.full(N, np.nan), np.full(N, np.nan)
        found = huber.grad_and_hessian("p", y=y, p=p, out=(g, h))
        assert found[0] is g and found[1] is h
        assert_same(g, gradient)
        assert_same(h, hessian)
        g = np.empty(N)
        assert huber.grad("p", y=y, p=p, out=g) is g
        assert_same(g, gradient)
        value, g2 = huber.value_and_grad("p", y=y, p=p, out=g)
        # the allocating call of the same kernel (the value-only kernel may sum in another
        # order: its reduction is vectorised differently, a last-bit difference on some CPUs)
        assert g2 is g and value == huber.value_and_grad("p", y=y, p=p)[0]
        h = np.empty(N)
        assert huber.hessian("p", y=y, p=p, out=h) is h
        assert_same(h, hessian)
    z = RNG.normal(size=(N, K))
    labels = RNG.integers(0, K, size=N)
    expected = sparse.grad_and_hessian("z", y=labels, z=z)
    for _ in range(2):
        g = np.empty((N, K))
        gradient, hessian = sparse.grad_and_hessian("z", y=labels, z=z, out=(g, None))
        assert gradient is g
        assert_same([gradient, hessian], list(expected))


def test_out_for_several_inputs_is_a_tuple():
    compiled = lossdsl.compile("huber(y, p, 1.0) + 0.1*l1(w)")
    y, p, w = RNG.normal(size=N), RNG.normal(size=N), RNG.normal(size=7)
    expected = compiled.grad(("p", "w"), y=y, p=p, w=w)
    for _ in range(2):
        gp, gw = np.empty(N), np.empty(7)
        found = compiled.grad(("p", "w"), y=y, p=p, w=w, out=(gp, gw))
        assert found["p"] is gp and found["w"] is gw
        assert_same(found, expected)
        found = compiled.grad(("p", "w"), y=y, p=p, w=w, out=(None, gw))
        assert found["w"] is gw
        assert_same(found, expected)
    with pytest.raises(lossdsl.LossShapeError, match=r"a tuple of 2 arrays .*grad:p, grad:w"):
        compiled.grad(("p", "w"), y=y, p=p, w=w, out=gp)


def test_out_in_float32_and_output_dtype():
    compiled = lossdsl.compile("bce_logits(y, z)")
    y = (RNG.random(N) > 0.5).astype(np.float32)
    z = RNG.normal(size=N).astype(np.float32)
    expected = compiled.grad_and_hessian("z", y=y, z=z)
    for _ in range(2):
        out = (np.empty(N, dtype=np.float32), np.empty(N, dtype=np.float32))
        assert_same(list(compiled.grad_and_hessian("z", y=y, z=z, out=out)), list(expected))
    with pytest.raises(lossdsl.LossShapeError, match="dtype float32, got shape .* float64"):
        compiled.grad("z", y=y, z=z, out=np.empty(N))


def test_out_in_float16_gets_the_rounded_results():
    compiled = lossdsl.compile("bce_logits(y, z)")
    y = (RNG.random(N) > 0.5).astype(np.float16)
    z = RNG.normal(size=N).astype(np.float16)
    expected = compiled.grad("z", y=y, z=z)
    assert expected.dtype == np.float16
    g = np.empty(N, dtype=np.float16)
    assert compiled.grad("z", y=y, z=z, out=g) is g
    assert_same(g, expected)


@pytest.mark.parametrize("case", ["shape", "dtype", "strided", "fortran", "read_only", "list",
                                  "alias_input", "alias_view", "alias_each_other",
                                  "alias_views", "number"])
def test_out_refuses_what_it_cannot_write_correctly(huber, sparse, case):
    y, p = RNG.normal(size=N), RNG.normal(size=N)
    compiled = fresh(sparse if case == "fortran" else huber)
    inputs = {"y": y, "p": p}
    out: object = np.empty(N)
    message = "must be a C-contiguous NumPy array of shape"
    if case == "shape":
        out = np.empty(N + 1)
    elif case == "dtype":
        out = np.empty(N, dtype=np.float32)
    elif case == "strided":
        out = np.empty(2 * N)[::2]
        message = "not C-contiguous"
    elif case == "fortran":
        inputs = {"y": np.zeros(N, dtype=np.int64), "z": np.ones((N, K))}
        out = np.empty((N, K), order="F")
        message = "not C-contiguous"
    elif case == "read_only":
        out.flags.writeable = False
        message = "read-only"
    elif case == "list":
        out = [0.0] * N
        message = "got list"
    elif case == "alias_input":
        out = p
        message = "shares memory with an input"
    elif case == "alias_view":
        out = p[:]
        message = "shares memory with an input"
    elif case in ("alias_each_other", "alias_views"):
        out = np.empty(N) if case == "alias_each_other" else np.empty(N + 1)[:N]
        message = "share memory with each other"
    elif case == "number":
        inputs = {"y": y, "p": 0.5}
        message = "out= was given for 'p', a number"
    wrt = "z" if case == "fortran" else "p"
    for _ in range(2):  # refused on the general path, and again once a plan is kept
        before = out.copy() if isinstance(out, np.ndarray) else None
        with pytest.raises(lossdsl.LossShapeError, match=message):
            if case == "alias_each_other":
                compiled.grad_and_hessian(wrt, **inputs, out=(out, out))
            elif case == "alias_views":
                compiled.grad_and_hessian(wrt, **inputs, out=(out, out.base[1:]))
            else:
                compiled.grad(wrt, **inputs, out=out)
        if before is not None:
            np.testing.assert_array_equal(out, before)  # nothing written
        compiled.grad(wrt, **inputs)  # a plan for this signature now exists


def test_an_input_cannot_be_called_out():
    with pytest.raises(lossdsl.LossNameError, match="cannot be called 'out'"):
        lossdsl.compile("(out - p)^2")


# ------------------------------------------------------------------------- thread pool
def test_small_calls_of_a_parallel_loss_run_serially_and_start_no_threads():
    script = textwrap.dedent("""
        import numba, numpy as np, lossdsl
        from lossdsl import binding
        loss = lossdsl.compile("bce_logits(y, z)", target="parallel")
        y, z = np.ones(256), np.linspace(-3, 3, 256)
        for _ in range(3):
            loss.grad_and_hessian("z", y=y, z=z)
            loss(y=y, z=z)
        small = "prange(" in loss.source
        try:
            numba.threading_layer()
            started = True
        except ValueError:  # "Threading layer is not initialized."
            started = False
        n = binding.PARALLEL_MIN_ELEMENTS
        big = loss.grad("z", y=np.ones(n), z=np.zeros(n))
        print(small, started, "prange(" in loss.source, big.shape == (n,))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "True", "True"]


def test_parallel_and_serial_kernels_agree_across_the_size_threshold():
    compiled = lossdsl.compile("bce_logits(y, z)", target="parallel")
    serial = lossdsl.compile("bce_logits(y, z)")
    for n in (binding.PARALLEL_MIN_ELEMENTS - 1, binding.PARALLEL_MIN_ELEMENTS, 300):
        y = (RNG.random(n) > 0.5).astype(np.float64)
        z = RNG.normal(size=n)
        g, h = compiled.grad_and_hessian("z", y=y, z=z)
        g2, h2 = serial.grad_and_hessian("z", y=y, z=z)
        np.testing.assert_array_equal(g, g2)  # elementwise: the same bits threaded or not
        np.testing.assert_array_equal(h, h2)
        assert compiled(y=y, z=z) == pytest.approx(serial(y=y, z=z), rel=1e-13)


# ------------------------------------------------------------ reused boosting outputs
@pytest.mark.parametrize("hessian", ["exact", "constant"])
def test_boosting_gradients_reuse_their_arrays_per_thread(hessian):
    import copy
    import threading

    from lossdsl.boosting.objective import BoostingObjective

    objective = BoostingObjective("huber(y, p, 1.0)", hessian=hessian)
    y, p = RNG.normal(size=N), RNG.normal(size=N)
    expected = objective.gradients(y, p)
    first = objective.gradients(y, p, reuse=True)
    assert_same(list(first), list(expected))
    p2 = RNG.normal(size=N)
    expected2 = objective.gradients(y, p2)
    second = objective.gradients(y, p2, reuse=True)
    assert second[0] is first[0]  # the same gradient array, written anew
    if hessian == "exact":
        assert second[1] is first[1]
    assert_same(list(second), list(expected2))
    # another thread, or a copy (a clone training elsewhere), never writes into these arrays
    found = []
    thread = threading.Thread(target=lambda: found.append(objective.gradients(y, p,
                                                                               reuse=True)))
    thread.start()
    thread.join()
    assert found[0][0] is not first[0]
    clone = copy.deepcopy(objective)
    assert clone.gradients(y, p, reuse=True)[0] is not first[0]
    assert_same(list(objective.gradients(y, p2, reuse=True)), list(expected2))
    # another shape or dtype: arrays of its own
    short = objective.gradients(y[:10], p[:10], reuse=True)
    assert short[0].shape == (10,) and short[0] is not first[0]
    single = objective.gradients(y.astype(np.float32), p.astype(np.float32), reuse=True)
    assert single[0].dtype == np.float32


def test_wrt_that_names_no_input_is_a_loss_error(huber):
    y, p = RNG.normal(size=N), RNG.normal(size=N)
    compiled = fresh(huber)
    for wrt in (("p", ["y"]), 3, ("q",), [["p"]]):
        for _ in range(2):  # and again, once the tuples met before are remembered
            with pytest.raises(lossdsl.LossNameError):
                compiled.grad(wrt, y=y, p=p)
    by_tuple = compiled.grad(("p",), y=y, p=p)
    assert list(by_tuple) == ["p"]
    assert_same(compiled.grad(("p",), y=y, p=p), by_tuple)
    assert_same(by_tuple["p"], compiled.grad("p", y=y, p=p))


# ------------------------------------------------------------------ floating-point warnings
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_inf_and_nan_sums_stay_silent(reduction, dtype):
    """Sums that overflow to inf, or meet inf - inf (NaN), warn of nothing, on the general
    path and on the plan, whether or not ``run`` opens a ``numpy.errstate`` block."""
    compiled = lossdsl.compile("y*p", reduction=reduction)
    big = np.finfo(dtype).max
    y = np.array([10.0, 10.0, 1.0, 1.0], dtype=dtype)
    for p in ([big, big, 1.0, 2.0], [big, -big, 1.0, 2.0], [np.nan, 1.0, 2.0, 3.0]):
        p = np.array(p, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for _ in range(2):  # the general path, then the plan
                value, gradient = compiled.value_and_grad("p", y=y, p=p)
                assert not np.isfinite(compiled(y=y, p=p)) and not np.isfinite(value)
                compiled.grad_and_hessian("p", y=y, p=p)


def test_a_summed_loss_runs_its_loops_without_errstate():
    """A summed loss's value and gradient are sums of the compiled loops alone: ``run`` calls
    them without the ``numpy.errstate`` block (a microsecond of a small call); a mean's
    division and a float32 kernel's casts keep it."""
    y, p = RNG.normal(size=N), RNG.normal(size=N)
    summed = lossdsl.compile("huber(y, p, 1.0)", reduction="sum")
    summed.value_and_grad("p", y=y, p=p)
    assert "errstate" not in summed.source
    averaged = lossdsl.compile("huber(y, p, 1.0)", reduction="mean")
    averaged.value_and_grad("p", y=y, p=p)
    assert "errstate" in averaged.source
