"""Reductions within groups of samples: ``groupsum(e, g)``, ``groupmax``, ``groupmean`` and the
``group_logsumexp`` family of the core prelude.

Each is checked against NumPy computed group by group, its gradient and diagonal Hessian
against central differences of the total (a sample's value depends on its group's others, so
each element is perturbed alone), on every CPU target and under the CUDA simulator, with
group ids given in any order (the binder sorts the rows into groups and puts the results
back).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.special
from coupled import (
    assert_results_follow_their_rows,
    assert_simulated_cuda_matches_cpu,
    central_differences,
    shuffled_group_ids,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lossdsl
from lossdsl.binding import PARALLEL_MIN_ELEMENTS
from lossdsl.errors import LossArityError, LossDomainError, LossShapeError


@functools.cache
def compiled(text: str, target: str = "cpu", reduction: str = "sum") -> lossdsl.CompiledLoss:
    return lossdsl.compile(text, target=target, reduction=reduction)


def taken(loss: lossdsl.CompiledLoss, d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs of ``d`` that ``loss`` takes."""
    return {name: d[name] for name in loss.inputs}


def per_group(q: np.ndarray, function, *arrays: np.ndarray) -> np.ndarray:
    """``function`` of each group's slices of ``arrays``, one value per sample."""
    out = np.empty(q.shape[0])
    for group in np.unique(q):
        rows = q == group
        out[rows] = function(*(a[rows] for a in arrays))
    return out


def data(seed: int = 0, n_groups: int = 7) -> dict[str, np.ndarray]:
    """Groups of 1 to 12 samples whose ids are arbitrary integers, rows shuffled."""
    rng = np.random.default_rng(seed)
    q = shuffled_group_ids(rng, n_groups, 12)
    return {"q": q, "y": rng.integers(0, 4, q.size).astype(float),
            "s": rng.normal(0.0, 1.5, q.size)}


# (loss text, its per-sample value as NumPy computes it group by group)
CASES = [
    ("s * groupsum(s, q)", lambda d: d["s"] * per_group(d["q"], np.sum, d["s"])),
    ("(s - groupmean(s, q))^2",
     lambda d: (d["s"] - per_group(d["q"], np.mean, d["s"])) ** 2),
    ("exp(0.3 * s) * log(groupsum(exp(s), q)) + y * s",
     lambda d: (np.exp(0.3 * d["s"]) * np.log(per_group(d["q"], np.sum, np.exp(d["s"])))
                + d["y"] * d["s"])),
    ("-y * group_log_softmax(s, q)",
     lambda d: -d["y"] * per_group_softmax(d, scipy.special.log_softmax)),
    ("y * group_softmax(s, q)", lambda d: d["y"] * per_group_softmax(d, scipy.special.softmax)),
    ("group_logsumexp(s, q) - s",
     lambda d: per_group(d["q"], scipy.special.logsumexp, d["s"]) - d["s"]),
    # nested: a group reduction of a value that holds another one, and a batch term
    ("groupsum((s - groupmax(s, q))^2, q) / groupsum(1, q) + 0.1 * mean(s^2)",
     lambda d: (per_group(d["q"], lambda s: np.mean((s - s.max()) ** 2), d["s"])
                + 0.1 * np.mean(d["s"] ** 2))),
    ("sqrt(1 + groupsum(s^2, q)) * y", lambda d: np.sqrt(1 + per_group(
        d["q"], lambda s: np.sum(s**2), d["s"])) * d["y"]),
]


def per_group_softmax(d, function) -> np.ndarray:
    out = np.empty(d["s"].shape[0])
    for group in np.unique(d["q"]):
        rows = d["q"] == group
        out[rows] = function(d["s"][rows])
    return out


def fused(loss: lossdsl.CompiledLoss, d: dict, wrt: str = "s") -> list:
    """[value, gradient, Hessian diagonal] from one kernel (the tests share it)."""
    return loss.compute(True, (wrt,), (wrt,), d, None)


def numeric_derivatives(loss: lossdsl.CompiledLoss, d: dict, wrt: str = "s",
                        step: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of the total (reduction "sum"), one element at a time."""
    return central_differences(lambda x: fused(loss, {**d, wrt: x}, wrt)[0], d[wrt], step)


@pytest.mark.parametrize("text, reference", CASES, ids=[c[0] for c in CASES])
def test_values_and_derivatives_against_numpy_and_finite_differences(text, reference):
    d = taken(compiled(text), data())
    per_sample = compiled(text, reduction="none")(**d)
    expected = reference(d)
    np.testing.assert_allclose(per_sample, expected, rtol=1e-12, atol=1e-12)
    # a batch term (a mean over the samples) is in every sample's value, and once in a sum
    batch = 0.1 * np.mean(d["s"] ** 2) if "mean(s^2)" in text else 0.0
    loss = compiled(text)
    value, gradient, hessian = fused(loss, d)
    assert value == pytest.approx(np.sum(expected - batch) + batch, rel=1e-12)
    numeric_gradient, numeric_hessian = numeric_derivatives(loss, d)
    np.testing.assert_allclose(gradient, numeric_gradient, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hessian, numeric_hessian, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("text", [CASES[3][0], CASES[6][0]])
def test_rows_in_any_order_give_each_row_its_own_results(text):
    d = taken(compiled(text), data(1))
    loss = compiled(text)
    value, gradient, hessian = loss.compute(True, ("s",), ("s",), d, None)
    grouped = np.argsort(d["q"], kind="stable")  # each group one run: no sort needed
    again = loss.compute(True, ("s",), ("s",), {k: v[grouped] for k, v in d.items()}, None)
    assert again[0] == pytest.approx(value, rel=1e-13)
    np.testing.assert_allclose(again[1], gradient[grouped], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(again[2], hessian[grouped], rtol=1e-13, atol=1e-15)
    # out= arrays receive the results in the rows' own order too
    out_gradient, out_hessian = np.empty_like(gradient), np.empty_like(hessian)
    loss.grad_and_hessian("s", **d, out=(out_gradient, out_hessian))
    np.testing.assert_array_equal(out_gradient, gradient)
    np.testing.assert_array_equal(out_hessian, hessian)


@pytest.mark.parametrize("reduction", ["mean", "weighted_mean", "none"])
def test_reductions_count_samples_and_weights_travel_with_their_rows(reduction):
    d = data(2)
    text = "-y * group_log_softmax(s, q)"
    per_sample = compiled(text, reduction="none")(**d)
    gradient = compiled(text).grad("s", **d)
    w = np.random.default_rng(5).uniform(0.2, 3.0, d["s"].size)
    weighted_gradient = compiled(text).grad("s", **d, sample_weight=w)
    np.testing.assert_allclose(weighted_gradient, per_group(
        d["q"], lambda y, s, w: (np.sum(w * y) * scipy.special.softmax(s) - w * y),
        d["y"], d["s"], w), rtol=1e-12, atol=1e-14)
    loss = compiled(text, reduction=reduction)
    value = loss(**d, sample_weight=w)
    scale = {"mean": 1 / d["s"].size, "weighted_mean": 1 / w.sum()}.get(reduction, 1.0)
    if reduction == "none":
        np.testing.assert_allclose(value, w * per_sample, rtol=1e-12)
    else:
        assert value == pytest.approx(scale * np.sum(w * per_sample), rel=1e-12)
        assert loss(**d) == pytest.approx(
            np.sum(per_sample) / (d["s"].size if reduction != "sum" else 1), rel=1e-12)
        if reduction == "mean":
            np.testing.assert_allclose(loss.grad("s", **d), gradient / d["s"].size,
                                       rtol=1e-12, atol=1e-15)


def test_groupmax_gives_its_derivative_to_the_first_maximum_of_each_group():
    d = {"q": np.array([3, 3, 8, 3, 8]), "s": np.array([1.0, 2.0, 5.0, 2.0, -1.0])}
    loss = compiled("groupmax(s, q)")
    assert loss(**d) == pytest.approx(3 * 2 + 2 * 5)  # each sample its group's maximum
    np.testing.assert_array_equal(loss.grad("s", **d), [0.0, 3.0, 2.0, 0.0, 0.0])


def test_groupsum_of_a_number_counts_the_samples_of_each_group():
    d = {"q": np.array([1, 2, 2, 5, 5, 5]), "s": np.zeros(6)}
    np.testing.assert_array_equal(compiled("s + groupsum(1, q)", reduction="none")(**d),
                                  [1, 2, 2, 3, 3, 3])
    np.testing.assert_array_equal(compiled("s + groupmean(2, q)", reduction="none")(**d),
                                  np.full(6, 2.0))


def test_no_samples():
    d = {"q": np.zeros(0), "y": np.zeros(0), "s": np.zeros(0)}
    loss = compiled("-y * group_log_softmax(s, q)")
    assert loss(**d) == 0.0
    assert loss.grad("s", **d).shape == (0,)


def test_group_ids_may_be_integral_floats_and_must_be_integers():
    d = data(3)
    loss = compiled("-y * group_log_softmax(s, q)")
    assert loss(**{**d, "q": d["q"].astype(float)}) == pytest.approx(loss(**d), rel=1e-15)
    for bad in (0.5, np.nan, np.inf):
        q = d["q"].astype(float)
        q[4] = bad
        with pytest.raises(LossDomainError, match=r"group ids 'q' must be integers.*index 4"):
            loss(**{**d, "q": q})
    q = d["q"].astype(np.float32)
    q[2] = 2.0**24  # float32 cannot tell 2**24 from 2**24 + 1: two queries could merge
    with pytest.raises(LossDomainError, match=r"cannot tell neighbouring integers apart"):
        loss(**{**d, "q": q})


@pytest.mark.parametrize("text, inputs, error, message", [
    ("groupsum(s, 2 * q)", None, LossArityError, "second argument must be an input"),
    ("groupsum(s, q)", {"s": np.zeros(3), "q": np.zeros((3, 2))}, LossShapeError,
     "'q' holds group ids"),
    ("groupsum(s, q) + groupsum(s, r)", {"s": np.zeros(3), "q": np.zeros(3), "r": np.zeros(3)},
     LossShapeError, "grouped both by 'q' and by 'r'"),
    # samples with classes are grouped as group totals (tests/test_group_matrices.py), which
    # sum but take no maximum
    ("groupmax(s, q) + rowsum(z)", {"s": np.zeros(3), "q": np.zeros(3), "z": np.zeros((3, 2))},
     LossShapeError, "only groupsum and groupmean"),
    ("group_logsumexp(s, q) + pick(z, y)", {"s": np.zeros(3), "q": np.zeros(3),
                                            "y": np.zeros(3), "z": np.zeros((3, 2))},
     LossShapeError, "only groupsum and groupmean"),
    ("groupsum(s, q) - s", {"s": np.zeros(3), "q": np.zeros(4)}, LossShapeError, "disagree"),
])
def test_what_cannot_be_grouped_is_an_error_that_says_why(text, inputs, error, message):
    with pytest.raises(error, match=message):
        lossdsl.compile(text)(**(inputs or {}))


def test_ignore_index_is_refused_for_grouped_samples():
    loss = lossdsl.compile("groupsum(s, q) * onehot(y, 3)", ignore_index=-100)
    with pytest.raises(LossShapeError):
        loss(s=np.zeros(3), q=np.zeros(3), y=np.zeros(3))


def test_parallel_kernels_split_the_groups_between_threads():
    rng = np.random.default_rng(4)
    n = 2 * PARALLEL_MIN_ELEMENTS
    d = {"q": rng.integers(0, 3000, n), "y": rng.integers(0, 4, n).astype(float),
         "s": rng.normal(size=n)}
    text = "-y * group_log_softmax(s, q)"
    serial = compiled(text).compute(True, ("s",), ("s",), d, None)
    threaded = compiled(text, "parallel").compute(True, ("s",), ("s",), d, None)
    assert threaded[0] == pytest.approx(serial[0], rel=1e-12)
    np.testing.assert_allclose(threaded[1], serial[1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(threaded[2], serial[2], rtol=1e-12, atol=1e-15)
    # 3,000 groups, 65,536 samples: the samples' number decides that threads are worth it
    assert any(getattr(loop, "targetoptions", {}).get("parallel")
               for kernel in compiled(text, "parallel").kernels()
               for loop in kernel.loops.values())


def test_cuda_kernels_match_the_cpu_under_the_simulator():
    assert_simulated_cuda_matches_cpu(
        'data = {"q": rng.integers(0, 9, 120), "y": rng.integers(0, 4, 120).astype(float), '
        '"s": rng.normal(size=120)}',
        ["-y * group_log_softmax(s, q)", "(s - groupmean(s, q))^2 * groupsum(1, q)",
         "ranknet(y, s, q)", "lambdarank(y, s, q)"],  # and pairs (test_pairs.py)
        "s", 1e-14)


@pytest.mark.parametrize("text", [CASES[3][0], CASES[6][0]])
@pytest.mark.parametrize("in_group_order", [False, True], ids=["shuffled", "grouped"])
def test_dask_chunks_end_where_groups_end(text, in_group_order):
    dask_array = pytest.importorskip("dask.array")
    import lossdsl.dask

    d = taken(compiled(text), data(5, n_groups=30))
    if in_group_order:  # each group one run, which the given chunks cut through
        order = np.argsort(d["q"], kind="stable")
        d = {k: v[order] for k, v in d.items()}
    w = np.random.default_rng(6).uniform(0.5, 2.0, d["s"].size)
    chunked = {k: dask_array.from_array(v, chunks=17) for k, v in d.items()}
    loss = lossdsl.dask.compile(text, reduction="mean")
    value = loss(**chunked, sample_weight=dask_array.from_array(w, chunks=17)).compute()
    gradient, hessian = loss.grad_and_hessian("s", **chunked)
    assert gradient.chunks == chunked["s"].chunks
    expected = compiled(text, reduction="mean")
    assert value == pytest.approx(expected(**d, sample_weight=w), rel=1e-13)
    expected_gradient, expected_hessian = expected.grad_and_hessian("s", **d)
    np.testing.assert_allclose(gradient.compute(), expected_gradient, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(hessian.compute(), expected_hessian, rtol=1e-13, atol=1e-16)


def test_ranking_losses_match_optax_and_catboost():
    optax = pytest.importorskip("optax")
    catboost_utils = pytest.importorskip("catboost.utils")
    d = data(6)
    total = compiled("softmax_ranking(y, s, q)")(**d)
    per_list = [float(optax.losses.ranking_softmax_loss(d["s"][d["q"] == g],
                                                         d["y"][d["q"] == g]))
                for g in np.unique(d["q"])]
    assert total == pytest.approx(sum(per_list), rel=1e-6)  # optax computes in float32
    order = np.argsort(d["q"], kind="stable")  # CatBoost wants each group's rows together
    y, p, q = d["y"][order], d["s"][order], d["q"][order]
    (rmse,) = catboost_utils.eval_metric(y, p, "QueryRMSE", group_id=q)
    mean_square = compiled("query_mse(y, p, q)", reduction="mean")(y=y, p=p, q=q)
    assert np.sqrt(mean_square) == pytest.approx(rmse, rel=1e-9)
    # CatBoost's QuerySoftMax divides the sum over queries by the sum of the labels
    (softmax,) = catboost_utils.eval_metric(y, p, "QuerySoftMax:beta=2", group_id=q)
    per_label = compiled("count_as(softmax_ranking(y, s, q, beta=2), y)", reduction="mean")
    assert per_label(y=y, s=p, q=q) == pytest.approx(softmax, rel=1e-9)


def test_binary_sparsemax_and_log_linear_quantile_match_optax_and_catboost():
    optax = pytest.importorskip("optax")
    catboost_utils = pytest.importorskip("catboost.utils")
    rng = np.random.default_rng(7)
    y, z = rng.integers(0, 2, 50).astype(float), rng.normal(0.0, 1.5, 50)
    np.testing.assert_allclose(compiled("binary_sparsemax(y, z)", reduction="none")(y=y, z=z),
                               optax.losses.sparsemax_loss(z, y), rtol=1e-6, atol=1e-7)
    target = rng.uniform(0.5, 4.0, 50)
    (expected,) = catboost_utils.eval_metric(target, z, "LogLinQuantile:alpha=0.3")
    loss = compiled("log_linear_quantile(y, z, 0.3)", reduction="mean")
    assert loss(y=target, z=z) == pytest.approx(expected, rel=1e-7)



@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ids=st.lists(st.integers(-3, 3), min_size=1, max_size=25),
       seed=st.integers(0, 2**16), case=st.sampled_from([0, 1, 3, 5]))
def test_any_grouping_of_any_rows_matches_numpy_group_by_group(ids, seed, case):
    """Singletons, one group, negative ids, groups split into several runs."""
    text, reference = CASES[case]
    rng = np.random.default_rng(seed)
    d = taken(compiled(text), {"q": np.array(ids), "y": rng.integers(0, 4, len(ids)) * 1.0,
                               "s": rng.normal(0.0, 2.0, len(ids))})
    np.testing.assert_allclose(compiled(text, reduction="none")(**d), reference(d),
                               rtol=1e-12, atol=1e-12)
    assert_results_follow_their_rows(functools.partial(fused, compiled(text)), d,
                                     rng.permutation(len(ids)))
