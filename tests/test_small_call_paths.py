"""The printed call plans (lossdsl.binding: a CallPlan printed as Python functions, the
``runner`` of a signature met before): each returns exactly what the general path returns,
the numbers written by hand in NumPy, and refuses what the general path refuses, on every
call; and the errors of integer keys and group ids that carry the input and the index."""

import numpy as np
import pytest

import lossdsl
from lossdsl import LossDomainError, LossShapeError, api
from lossdsl.errors import at_index

RNG = np.random.default_rng(25)
N, K = 48, 4


def fresh(text, **options):
    return lossdsl.compile(text, **options)


def plans(compiled):
    return [plan for plan in compiled._plans.values() if plan is not None]


def assert_same(found, expected):
    assert type(found) is type(expected)
    if isinstance(expected, (list, tuple)):
        assert len(found) == len(expected)
        for a, b in zip(found, expected):
            assert_same(a, b)
    elif isinstance(expected, np.ndarray):
        assert found.dtype == expected.dtype and found.shape == expected.shape
        np.testing.assert_array_equal(found, expected)  # to the bit
    else:
        assert found == expected


@pytest.fixture
def general_path_refused(monkeypatch):
    """Calls that reach the general path fail: what succeeds ran a kept plan."""
    def refuse(*args, **kwargs):
        raise AssertionError("the general path was taken")
    return lambda: monkeypatch.setattr(api, "bind_inputs", refuse)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


CASES = {
    # text, options, inputs, wrt, (gradient, hessian) written in NumPy
    "half_mse": ("half_mse(y, p)", {"reduction": "sum"},
                 lambda: {"y": RNG.normal(size=N), "p": RNG.normal(size=N)}, "p",
                 lambda y, p: (p - y, np.ones_like(p))),
    "bce_logits (a domain count)": (
        "bce_logits(y, z)", {"reduction": "sum"},
        lambda: {"y": (RNG.random(N) > 0.5).astype(float), "z": RNG.normal(size=N)}, "z",
        lambda y, z: (sigmoid(z) - y, sigmoid(z) * (1 - sigmoid(z)))),
    "sparse_cce_logits (labels)": (
        "sparse_cce_logits(y, z)", {"reduction": "sum"},
        lambda: {"y": RNG.integers(0, K, size=N), "z": RNG.normal(size=(N, K))}, "z",
        lambda y, z: (softmax(z) - np.eye(K)[y], softmax(z) * (1 - softmax(z)))),
    "parallel target, small call": (
        "half_mse(y, p)", {"reduction": "sum", "target": "parallel"},
        lambda: {"y": RNG.normal(size=N), "p": RNG.normal(size=N)}, "p",
        lambda y, p: (p - y, np.ones_like(p))),
    "reduction none (the value per sample)": (
        "huber(y, p, 1.0)", {"reduction": "none"},
        lambda: {"y": RNG.normal(size=N), "p": 2 * RNG.normal(size=N)}, "p",
        lambda y, p: (np.clip(p - y, -1, 1), (np.abs(p - y) <= 1).astype(float))),
    "a number input": ("half_mse(y, p)", {"reduction": "sum"},
                       lambda: {"y": 0.25, "p": RNG.normal(size=N)}, "p",
                       lambda y, p: (p - y, np.ones_like(p))),
}


@pytest.mark.parametrize("case", CASES)
def test_printed_plans_equal_the_general_path_and_numpy(case, general_path_refused):
    text, options, draw, wrt, by_hand = CASES[case]
    inputs, other = draw(), draw()
    weight = RNG.random(N)
    compiled = fresh(text, **options)

    def calls_of(loss, values, **extra):
        g, h = (np.full_like(values[wrt], np.nan) for _ in range(2))
        out = g.copy()
        return [loss(**values, **extra), loss.value_and_grad(wrt, **values, **extra),
                loss.grad(wrt, **values, **extra), loss.hessian(wrt, **values, **extra),
                loss.grad_and_hessian(wrt, **values, **extra),
                loss.grad_and_hessian(wrt, **values, **extra, out=(g, h)),
                loss.grad(wrt, **values, **extra, out=out)]

    def every_call(values, **extra):
        return calls_of(compiled, values, **extra)

    def general(values, **extra):  # each signature's first call: the general path
        return calls_of(fresh(text, **options), values, **extra)

    expected = general(inputs)
    expected_other = general(other)
    expected_weighted = general(inputs, sample_weight=weight)
    every_call(inputs)
    every_call(inputs, sample_weight=weight)
    assert plans(compiled) and all(plan.runner is not None for plan in plans(compiled))
    general_path_refused()
    assert_same(every_call(inputs), expected)
    assert_same(every_call(other), expected_other)  # new values, the same signature
    assert_same(every_call(inputs, sample_weight=weight), expected_weighted)
    gradient, hessian = every_call(other)[4]
    expected_gradient, expected_hessian = by_hand(*other.values())
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(hessian, expected_hessian, rtol=1e-12, atol=1e-14)
    g = np.empty_like(gradient)
    assert compiled.grad(wrt, **other, out=g) is g  # the array given is the one returned


def test_an_interpreted_plan_answers_only_for_its_own_signature():
    """A plan the printed functions do not cover (a per-class vector) checks the call's
    signature itself (CallPlan.matches): a weighted call after unweighted ones, weights of
    another dtype, and back, each get their own numbers (a NumPy dtype compares equal to
    None, as float64: an unweighted plan once answered for float64 weights, ignoring them)."""
    text = "sparse_cce_logits(y, z, weight=w)"
    compiled = fresh(text)
    z, labels = RNG.normal(size=(N, K)), RNG.integers(0, K, size=N)
    w, v = RNG.uniform(0.2, 3.0, K), RNG.uniform(0.0, 2.0, N)
    log_softmax = z - z.max(axis=1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(axis=1, keepdims=True))
    per_sample = -log_softmax[np.arange(N), labels]
    unweighted = np.sum(w[labels] * per_sample) / np.sum(w[labels])
    for _ in range(2):  # the general path, then the plan
        assert compiled(y=labels, z=z, w=w) == pytest.approx(unweighted, rel=1e-13)
    assert all(plan.runner is None for plan in plans(compiled))  # interpreted
    for weight in (v, v.astype(np.float32), v, None, v):
        expected = unweighted if weight is None else (
            np.sum(weight * w[labels] * per_sample) / np.sum(w[labels]))
        found = compiled(y=labels, z=z, w=w, sample_weight=weight)
        assert found == pytest.approx(expected, rel=1e-6 if weight is not v else 1e-13)
        assert found == fresh(text)(y=labels, z=z, w=w, sample_weight=weight)


def test_a_printed_plan_holds_no_user_text():
    """Input and param names reach a printed plan as constants of its namespace, never as
    source: the code objects hold generated names only."""
    text = "param zz_delta = 1.0\nloss l = huber(yy_odd_name, pp_odd_name, zz_delta)"
    compiled = fresh(text)
    y, p = RNG.normal(size=N), RNG.normal(size=N)
    for _ in range(2):
        compiled.grad_and_hessian("pp_odd_name", yy_odd_name=y, pp_odd_name=p)
    (plan,) = plans(compiled)
    codes = [plan.runner.__code__, *(call.__code__ for call in plan._callers.values())]
    assert len(codes) == 2
    for code in codes:
        text_in_code = [*code.co_names, *code.co_varnames,
                        *(c for c in code.co_consts if isinstance(c, str))]
        assert not [t for t in text_in_code if "odd_name" in t or "zz_delta" in t]
    # the param's declared domain (huber's delta in (0, inf)) is checked on every call
    compiled.params["zz_delta"] = 2.0
    r = p - y
    gradient, _ = compiled.grad_and_hessian("pp_odd_name", yy_odd_name=y, pp_odd_name=p)
    np.testing.assert_allclose(gradient, np.clip(r, -2.0, 2.0) / N, rtol=1e-13)
    compiled.params["zz_delta"] = -1.0
    with pytest.raises(LossDomainError, match="zz_delta"):
        compiled.grad_and_hessian("pp_odd_name", yy_odd_name=y, pp_odd_name=p)


def test_a_float_number_after_an_int_takes_its_own_kernel_dtype():
    """A Python float among the inputs makes the kernel float64 where an int leaves the
    arrays' float32: a plan of y=3 must not answer for y=0.25 (a float32 kernel would round
    the results without a sign)."""
    compiled = fresh("half_mse(y, p)", reduction="sum")
    p = RNG.normal(size=N).astype(np.float32)
    for _ in range(2):
        assert compiled.grad("p", y=3, p=p).dtype == np.float32
    for _ in range(2):
        gradient = compiled.grad("p", y=0.25, p=p)
        assert gradient.dtype == np.float64
        np.testing.assert_array_equal(gradient, p.astype(np.float64) - 0.25)
    assert compiled.grad("p", y=3, p=p).dtype == np.float32  # and back


def test_a_printed_plan_still_refuses_what_the_general_path_refuses():
    labels, z = RNG.integers(0, K, size=N), RNG.normal(size=(N, K))
    sparse = fresh("sparse_cce_logits(y, z)")
    bce = fresh("bce_logits(y, z)", reduction="weighted_mean")
    y, p = (RNG.random(N) > 0.5).astype(float), RNG.normal(size=N)
    for _ in range(2):
        sparse.grad_and_hessian("z", y=labels, z=z)
        bce.grad_and_hessian("z", y=y, z=p, sample_weight=np.ones(N))
    assert all(plan.runner is not None for plan in plans(sparse) + plans(bce))
    for bad in (K, -1):
        wrong = labels.copy()
        wrong[7] = bad
        with pytest.raises(LossDomainError, match=r"'y' must hold integers in \[0, 4\).*"
                                                  r"at index 7") as caught:
            sparse.grad_and_hessian("z", y=wrong, z=z)
        assert (caught.value.input, caught.value.index) == ("y", 7)
    with pytest.raises(LossShapeError, match="disagree on the number of samples"):
        sparse.grad_and_hessian("z", y=labels[:-1], z=z)
    dense = fresh("cce_logits(y, z)")
    onehot = np.eye(K)[labels]
    for _ in range(2):
        dense.grad("z", y=onehot, z=z)
    assert plans(dense)[0].runner is not None
    with pytest.raises(LossShapeError, match="disagree on the number of classes"):
        dense.grad("z", y=onehot, z=np.ones((N, K + 1)))
    outside = y.copy()
    outside[3] = 2.0  # bce_logits' y in [0, 1]: counted by the kernel, named by the general path
    with pytest.raises(LossDomainError, match="at index 3"):
        bce.grad_and_hessian("z", y=outside, z=p, sample_weight=np.ones(N))
    with pytest.raises(LossDomainError, match="sample_weight sums to 0"):
        bce.grad_and_hessian("z", y=y, z=p, sample_weight=np.zeros(N))
    with pytest.raises(LossShapeError, match="sample_weight has"):
        bce.grad_and_hessian("z", y=y, z=p, sample_weight=np.ones(N - 1))
    huber = fresh("huber(y, p, 1.0)")
    for _ in range(2):
        huber.grad("p", y=3, p=p)
    with pytest.raises(LossShapeError, match="input 'y' must be numbers"):
        huber.grad("p", y=2**70, p=p)


@pytest.mark.parametrize("case", ["dtype", "shape", "read_only", "strided", "fortran",
                                  "alias_input", "alias_view_of_input", "alias_each_other",
                                  "alias_views", "list"])
def test_out_on_a_printed_plan_refuses_what_it_cannot_write_correctly(case):
    y, z = RNG.integers(0, K, size=N), RNG.normal(size=(N, K))
    compiled = fresh("sparse_cce_logits(y, z)")
    for _ in range(2):
        compiled.grad_and_hessian("z", y=y, z=z, out=(np.empty((N, K)), np.empty((N, K))))
    assert plans(compiled)[0].runner is not None
    g, h = np.empty((N, K)), np.empty((N, K))
    message = "must be a C-contiguous NumPy array"
    if case == "dtype":
        g = np.empty((N, K), np.float32)
    elif case == "shape":
        g = np.empty((N, K + 1))
    elif case == "read_only":
        g.flags.writeable = False
        message = "read-only"
    elif case == "strided":
        g = np.empty((N, 2 * K))[:, ::2]
        message = "not C-contiguous"
    elif case == "fortran":
        g = np.empty((N, K), order="F")
        message = "not C-contiguous"
    elif case == "alias_input":
        g = z
        message = "shares memory with an input"
    elif case == "alias_view_of_input":
        g = z[:]
        message = "shares memory with an input"
    elif case == "alias_each_other":
        h = g
        message = "share memory with each other"
    elif case == "alias_views":
        block = np.empty((N + 1, K))
        g, h = block[:N], block[1:]
        message = "share memory with each other"
    elif case == "list":
        g = g.tolist()
        message = "got list"
    before = z.copy()
    for _ in range(2):
        with pytest.raises(LossShapeError, match=message):
            compiled.grad_and_hessian("z", y=y, z=z, out=(g, h))
    np.testing.assert_array_equal(z, before)  # no input written


# ------------------------------------------------------------------ errors with an index
def test_integer_keys_the_kernel_cannot_hold_carry_input_and_index():
    stratified = lossdsl.compile("cox_ph(y, z, g)", reduction="none")
    big = np.array([2**53, 2**53 + 1, 2**53, 2**53 + 1])
    with pytest.raises(LossDomainError) as caught:
        stratified(y=np.ones(4), z=np.zeros(4), g=big)
    error = caught.value
    assert (error.input, error.index) == ("g", 1)
    assert f"9007199254740993{at_index(1)}" in error.message
    relocated = error.relocated(" at line 9 of data.csv")  # what the command line does
    assert "9007199254740993 at line 9 of data.csv" in relocated.message
    assert "index" not in relocated.message


def test_float_group_ids_too_large_for_their_type_carry_input_and_index():
    loss = lossdsl.compile("groupsum(s, q)^2", reduction="sum")
    q = np.array([0, 0, 1, 1, 2], dtype=np.float32)
    q[3] = 2.0**24  # float32 cannot tell 2**24 from 2**24 + 1
    with pytest.raises(LossDomainError, match="cannot tell neighbouring integers") as caught:
        loss(s=np.ones(5), q=q)
    assert (caught.value.input, caught.value.index) == ("q", 3)
    assert f"16777216.0{at_index(3)}" in caught.value.message


def test_group_total_ids_the_kernel_cannot_hold_carry_input_and_index():
    compiled = lossdsl.compile("dice_images_logits(y, z, g)")
    g = np.repeat([0, 2**25 + 1, 7], 4)  # float32 kernels round 2**25 + 1 to 2**25
    y = (RNG.random((12, 2)) > 0.5).astype(np.float32)
    z = RNG.normal(size=(12, 2)).astype(np.float32)
    with pytest.raises(LossDomainError, match="cannot tell") as caught:
        compiled(y=y, z=z, g=g)
    assert (caught.value.input, caught.value.index) == ("g", 4)
    assert f"{2**25 + 1}{at_index(4)}" in caught.value.message
