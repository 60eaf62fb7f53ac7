"""Declared domains and requirements reached through a per-class vector (``classvec(a)``) or
a table (``rowof(T, y)``): ``quantile(y, p, classvec(a))`` with a level of 1.8 used to give a
negative pinball loss without a word. Every entry of such a vector or table is checked
before each call, on every path (serial and parallel kernels, the small-call plans, the
boosting objectives, Dask, JAX, the CUDA simulator), and valid levels still give the
pinball loss NumPy computes.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import lossdsl

Y = np.zeros(4)
P = np.ones((4, 2))
BAD_LEVELS = np.array([0.5, 1.8])
QUANTILE_IN = r"quantile requires alpha in \[0, 1\]"
HUBER_IN = r"huber requires delta in \(0, inf\)"
EXPECTILE_IN = r"expectile requires alpha in \[0, 1\]"


def pinball(y: np.ndarray, p: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The pinball loss of each row and level: alpha (y - p) below the label, (1 - alpha)
    (p - y) above it."""
    below = y[:, None] - p
    return np.where(below >= 0, levels * below, (levels - 1) * below)


# (loss, inputs, the message's parameter and domain, where the false entry is)
OUT_OF_DOMAIN = [
    ("quantile(y, p, classvec(a))", {"p": P, "a": BAD_LEVELS}, QUANTILE_IN,
     "index 1 of 'a': alpha = 1.8"),
    ("quantile_noncrossing(y, z, a)", {"z": P, "a": BAD_LEVELS}, QUANTILE_IN,
     "index 1 of 'a': alpha = 1.8"),
    ("expectile_noncrossing(y, z, a)", {"z": P, "a": np.array([0.5, -0.5])}, EXPECTILE_IN,
     "index 1 of 'a': alpha = -0.5"),
    ("huber(y, p, classvec(b) - 1)", {"p": P, "b": np.array([0.5, 2.0])}, HUBER_IN,
     "index 0 of 'b': delta = -0.5"),
    ("huber(y, p, 2*classvec(b))", {"p": P, "b": np.array([0.5, -2.0])}, HUBER_IN,
     "index 1 of 'b': delta = -4"),
    ("quantile(y, p, rowof(T, y))", {"p": P, "T": np.array([[0.5, 1.8]])}, QUANTILE_IN,
     r"index \(0, 1\) of 'T': alpha = 1.8"),
]


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("text, inputs, declared, where", OUT_OF_DOMAIN)
def test_an_entry_outside_the_declared_domain_is_refused(text, inputs, declared, where,
                                                          reduction):
    loss = lossdsl.compile(text, reduction=reduction)
    for _ in range(2):  # the first call, and the plan a repeated signature takes
        with pytest.raises(lossdsl.LossDomainError, match=f"{declared}.*{where}"):
            loss(y=Y, **inputs)


@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_every_call_path_refuses_and_valid_levels_still_compute(target):
    rng = np.random.default_rng(3)
    y, p = rng.normal(size=7), rng.normal(size=(7, 3))
    good, bad = np.array([0.1, 0.5, 0.9]), np.array([0.1, 0.5, 1.2])
    loss = lossdsl.compile("quantile(y, p, classvec(a))", target=target, reduction="none")
    for _ in range(3):  # alternating: a refused call leaves no plan that skips the check
        np.testing.assert_allclose(loss(y=y, p=p, a=good), pinball(y, p, good), rtol=1e-12)
        gradient, _ = loss.grad_and_hessian("p", y=y, p=p, a=good)
        np.testing.assert_allclose(gradient, np.where(y[:, None] >= p, -good, 1 - good))
        with pytest.raises(lossdsl.LossDomainError, match=f"{QUANTILE_IN}.*index 2 of 'a'"):
            loss(y=y, p=p, a=bad)
        with pytest.raises(lossdsl.LossDomainError, match=QUANTILE_IN):
            loss.grad_and_hessian("p", y=y, p=p, a=bad)


def test_a_table_read_through_labels_computes_the_pinball_loss_of_each_row():
    y = np.array([0.0, 1.0, 1.0, 0.0])
    p = np.array([[0.5, -0.5], [2.0, 0.0], [1.0, 1.5], [-1.0, 3.0]])
    table = np.array([[0.2, 0.8], [0.4, 0.6]])
    loss = lossdsl.compile("quantile(y, p, rowof(T, y))", reduction="none")
    np.testing.assert_allclose(loss(y=y, p=p, T=table),
                               pinball(y, p, table[y.astype(int)]), rtol=1e-12)


def test_every_row_of_a_table_is_checked_whether_a_label_selects_it_or_not():
    # documented: a table is checked whole (it is small), not only the rows labels select
    table = np.array([[0.2, 0.8], [0.4, 1.6]])
    with pytest.raises(lossdsl.LossDomainError, match=r"index \(1, 1\) of 'T': alpha = 1.6"):
        lossdsl.compile("quantile(y, p, rowof(T, y))")(y=Y, p=P, T=table)


def test_a_class_vector_given_as_a_number_is_checked_as_a_number():
    loss = lossdsl.compile("quantile(y, p, classvec(a))", reduction="none")
    np.testing.assert_allclose(loss(y=Y, p=P, a=0.3), pinball(Y, P, np.full(2, 0.3)))
    with pytest.raises(lossdsl.LossDomainError, match=f"{QUANTILE_IN}.*false: alpha = 1.8"):
        loss(y=Y, p=P, a=1.8)


def test_a_def_requirement_on_a_class_vector_is_checked():
    loss = lossdsl.compile("def f(y, p, a) requires a < 1 = quantile(y, p, a)\n"
                           "loss l = f(y, p, classvec(a))")
    assert loss(y=Y, p=P, a=np.array([0.5, 0.9])) == pytest.approx(0.3)
    with pytest.raises(lossdsl.LossDomainError, match="f requires a < 1.*index 1 of 'a'"):
        loss(y=Y, p=P, a=np.array([0.5, 1.0]))


def test_a_class_vector_combined_with_a_per_sample_input_is_an_error_that_says_what_to_do():
    loss = lossdsl.compile("quantile(y, p, classvec(a)*w)")
    with pytest.raises(lossdsl.LossError, match="'a' together with the per-sample input 'w'.*"
                                                "pass it as an input"):
        loss(y=Y, p=P, a=np.array([0.5, 0.8]), w=np.full(4, 0.5))
    assert loss(y=Y, p=P, a=np.array([0.5, 0.8]), w=0.5) == pytest.approx(0.675)


def test_the_xgboost_objective_refuses_a_level_outside_0_1():
    xgb = pytest.importorskip("xgboost")
    import lossdsl.xgboost

    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    data = xgb.DMatrix(X, label=X[:, 0])
    with pytest.raises(lossdsl.LossDomainError, match=f"{QUANTILE_IN}.*index 1 of 'a'"):
        objective = lossdsl.xgboost.objective("quantile(y, p, classvec(a))",
                                              inputs={"a": BAD_LEVELS})
        xgb.train({"multi_strategy": "one_output_per_tree", "num_target": 2}, data, 1,
                  obj=objective)


def test_jax_raises_for_concrete_levels_and_makes_traced_ones_nan():
    jax = pytest.importorskip("jax")
    import lossdsl.jax as lj

    loss = lj.loss("quantile(y, p, classvec(a))", reduction="none")
    good = np.array([0.25, 0.75])
    np.testing.assert_allclose(loss(y=Y, p=P, a=good), pinball(Y, P, good), rtol=1e-6)
    with pytest.raises(lossdsl.LossDomainError, match=f"{QUANTILE_IN}.*index 1 of 'a'"):
        loss(y=Y, p=P, a=BAD_LEVELS)
    traced = jax.jit(lambda a: loss(y=Y, p=P, a=a))
    np.testing.assert_allclose(traced(good), pinball(Y, P, good), rtol=1e-6)
    assert np.all(np.isnan(np.asarray(traced(BAD_LEVELS))))


def test_dask_refuses_a_level_outside_0_1():
    da = pytest.importorskip("dask.array")
    import lossdsl.dask

    loss = lossdsl.dask.compile("quantile(y, p, classvec(a))")
    y, p = da.from_array(np.zeros(8), chunks=4), da.from_array(np.ones((8, 2)), chunks=(4, 2))
    assert float(loss(y=y, p=p, a=np.array([0.5, 0.8]))) == pytest.approx(0.35)
    with pytest.raises(lossdsl.LossDomainError, match=f"{QUANTILE_IN}.*index 1 of 'a'"):
        float(loss(y=y, p=p, a=BAD_LEVELS))


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") != "1",
                    reason="the simulator's check; a GPU runs the same code")
def test_cuda_refuses_a_level_outside_0_1_on_the_host_or_the_device():
    from numba import cuda

    loss = lossdsl.compile("quantile(y, p, classvec(a))", target="cuda")
    y, p = cuda.to_device(np.zeros(8)), cuda.to_device(np.ones((8, 2)))
    assert loss(y=y, p=p, a=cuda.to_device(np.array([0.5, 0.8]))) == pytest.approx(0.35)
    for levels in (BAD_LEVELS, cuda.to_device(BAD_LEVELS)):
        with pytest.raises(lossdsl.LossDomainError, match=f"{QUANTILE_IN}.*index 1 of 'a'"):
            loss(y=y, p=p, a=levels)
