"""Sums over the pairs of samples within groups: ``pairsum(e, g)``, with ``partner(x)`` in
``e`` reading ``x`` at the other sample of the pair, and the prelude's ``ranknet``.

Each is checked against NumPy's double loop over the pairs, its gradient and diagonal Hessian
against central differences of the total (a sample is in its partners' pairs too, so each
element is perturbed alone), with weights, in float32, on every CPU target, under the CUDA
simulator (with the group reductions, in ``test_groups.py``) and through ``lossdsl.jax``;
CatBoost's ``PairLogit`` metric is the reference of ``ranknet``.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from coupled import assert_results_follow_their_rows, central_differences, shuffled_group_ids
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lossdsl
from lossdsl.binding import PARALLEL_MIN_ELEMENTS
from lossdsl.errors import LossArityError, LossError, LossShapeError


@functools.cache
def compiled(text: str, target: str = "cpu", reduction: str = "sum") -> lossdsl.CompiledLoss:
    return lossdsl.compile(text, target=target, reduction=reduction)


def data(seed: int = 0, n_groups: int = 6) -> dict[str, np.ndarray]:
    """Groups of 1 to 9 samples with arbitrary integer ids, rows shuffled; graded labels."""
    rng = np.random.default_rng(seed)
    q = shuffled_group_ids(rng, n_groups, 9)
    return {"q": q, "y": rng.integers(0, 4, q.size).astype(float),
            "s": rng.normal(0.0, 2.0, q.size), "c": rng.uniform(0.5, 2.0, q.size)}


def over_pairs(d: dict[str, np.ndarray], term) -> np.ndarray:
    """Each sample's sum of ``term(d, i, j)`` over the other samples j of its group."""
    out = np.zeros(d["q"].size)
    for i in range(out.size):
        for j in range(out.size):
            if i != j and d["q"][i] == d["q"][j]:
                out[i] += term(d, i, j)
    return out


def softplus(x: float) -> float:
    return max(x, 0.0) + np.log1p(np.exp(-abs(x)))


# (loss text, the per-sample value by NumPy's double loop over the pairs)
CASES = [
    ("ranknet(y, s, q)", lambda d: over_pairs(
        d, lambda d, i, j: softplus(d["s"][j] - d["s"][i]) if d["y"][i] > d["y"][j] else 0.0)),
    ("ranknet(y, s, q, sigma=2.5)", lambda d: over_pairs(
        d, lambda d, i, j: (softplus(-2.5 * (d["s"][i] - d["s"][j]))
                            if d["y"][i] > d["y"][j] else 0.0))),
    # the sample's own coefficient outside, its partner's inside, and a per-sample term
    ("c * pairsum(exp(-(s - partner(s))^2) * partner(c), q) + 0.1 * s^2",
     lambda d: d["c"] * over_pairs(d, lambda d, i, j: np.exp(-(d["s"][i] - d["s"][j]) ** 2)
                                   * d["c"][j]) + 0.1 * d["s"] ** 2),
    # not symmetric in the pair: the sample's own value and its partner's differ in role
    ("pairsum(where(y > partner(y), (1 + y - partner(y)) * log1p(exp(partner(s) - 2*s)), "
     "0.5 * partner(s)^2 * s^2), q)",
     lambda d: over_pairs(d, lambda d, i, j: (
         (1 + d["y"][i] - d["y"][j]) * np.log1p(np.exp(d["s"][j] - 2 * d["s"][i]))
         if d["y"][i] > d["y"][j] else 0.5 * d["s"][j] ** 2 * d["s"][i] ** 2))),
]


def taken(loss: lossdsl.CompiledLoss, d: dict) -> dict:
    return {name: d[name] for name in loss.inputs}


def fused(loss: lossdsl.CompiledLoss, d: dict, wrt: str = "s", weight=None) -> list:
    """[value, gradient, Hessian diagonal] from one kernel."""
    return loss.compute(True, (wrt,), (wrt,), d, weight)


def numeric_derivatives(loss, d, wrt="s", weight=None):
    """Central differences of the total, one element at a time."""
    return central_differences(lambda x: loss(**{**d, wrt: x}, sample_weight=weight), d[wrt])


@pytest.mark.parametrize("text, reference", CASES, ids=[c[0] for c in CASES])
def test_values_and_derivatives_against_numpy_and_finite_differences(text, reference):
    d = taken(compiled(text), data())
    expected = reference(d)
    np.testing.assert_allclose(compiled(text, reduction="none")(**d), expected,
                               rtol=1e-12, atol=1e-12)
    loss = compiled(text)
    value, gradient, hessian = fused(loss, d)
    assert value == pytest.approx(np.sum(expected), rel=1e-12)
    numeric_gradient, numeric_hessian = numeric_derivatives(loss, d)
    np.testing.assert_allclose(gradient, numeric_gradient, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hessian, numeric_hessian, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("reduction", ["mean", "weighted_mean"])
def test_sample_weights_weigh_each_sample_and_reach_its_partners_gradients(reduction):
    text = CASES[0][0]
    d = taken(compiled(text), data(1))
    w = np.random.default_rng(2).uniform(0.2, 3.0, d["s"].size)
    loss = compiled(text, reduction=reduction)
    scale = 1 / (d["s"].size if reduction == "mean" else w.sum())
    assert loss(**d, sample_weight=w) == pytest.approx(scale * np.sum(w * CASES[0][1](d)),
                                                       rel=1e-12)
    value, gradient, hessian = fused(loss, d, weight=w)
    numeric_gradient, numeric_hessian = numeric_derivatives(loss, d, weight=w)
    np.testing.assert_allclose(gradient, numeric_gradient, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(hessian, numeric_hessian, rtol=1e-3, atol=1e-5)


def test_pairsum_of_a_number_counts_each_samples_partners():
    d = {"q": np.array([4, 9, 4, 4, 7, 9]), "s": np.zeros(6)}
    np.testing.assert_array_equal(compiled("s + pairsum(1, q)", reduction="none")(**d),
                                  [2, 1, 2, 2, 0, 1])
    # a group's sum is the sample's own value and its partners'
    d["s"] = np.arange(6.0)
    np.testing.assert_allclose(compiled("s + pairsum(partner(s), q)", reduction="none")(**d),
                               compiled("groupsum(s, q)", reduction="none")(**d))


def test_ranknet_is_catboosts_pairlogit_per_pair():
    catboost_utils = pytest.importorskip("catboost.utils")
    d = data(3, n_groups=8)
    order = np.argsort(d["q"], kind="stable")  # CatBoost wants each group's rows together
    y, s, q = d["y"][order], d["s"][order], d["q"][order]
    pairs = [[i, j] for i in range(q.size) for j in range(q.size)
             if q[i] == q[j] and y[i] > y[j]]
    (expected,) = catboost_utils.eval_metric(y, s, "PairLogit", group_id=q, pairs=pairs)
    per_pair = compiled("count_as(ranknet(y, s, q), pairsum(y > partner(y), q))",
                        reduction="mean")
    assert per_pair(y=y, s=s, q=q) == pytest.approx(expected, rel=1e-12)


def test_extreme_scores_stay_finite_and_exact():
    d = {"q": np.array([1, 1, 1, 2, 2]), "y": np.array([2.0, 1.0, 0.0, 1.0, 0.0]),
         "s": np.array([-1e4, 1e4, 0.0, 1e4, -1e4])}
    value, gradient, hessian = fused(compiled("ranknet(y, s, q)"), d)
    # pairs (0,1): softplus(2e4); (0,2): softplus(1e4); (1,2): softplus(-1e4) ~ 0; (3,4): 0
    assert value == pytest.approx(3e4, rel=1e-15)
    np.testing.assert_array_equal(gradient, [-2.0, 1.0, 1.0, 0.0, 0.0])
    assert np.all(np.isfinite(hessian)) and np.all(hessian >= 0)


def test_float32_and_threads_agree_with_float64():
    rng = np.random.default_rng(4)
    n = 2 * PARALLEL_MIN_ELEMENTS
    d = {"q": rng.integers(0, 4000, n), "y": rng.integers(0, 4, n).astype(float),
         "s": rng.normal(size=n)}
    text = "ranknet(y, s, q)"
    serial = fused(compiled(text), d)
    threaded = fused(compiled(text, "parallel"), d)
    assert threaded[0] == pytest.approx(serial[0], rel=1e-12)
    np.testing.assert_allclose(threaded[1], serial[1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(threaded[2], serial[2], rtol=1e-12, atol=1e-15)
    single = fused(compiled(text, "parallel"), {k: v.astype(np.float32) for k, v in d.items()})
    assert single[1].dtype == np.float32
    assert single[0] == pytest.approx(serial[0], rel=1e-5)
    np.testing.assert_allclose(single[1], serial[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(single[2], serial[2], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("text, inputs, error, message", [
    ("pairsum(s, 2 * q)", None, LossArityError, "second argument must be an input"),
    ("partner(s) * s", {"s": np.zeros(3)}, LossShapeError, "only defined within a pair sum"),
    ("pairsum(partner(partner(s)), q)", {"s": np.zeros(3), "q": np.zeros(3)},
     LossShapeError, "nor be read at a partner itself"),
    ("pairsum(partner(s), q) + groupsum(s, q)", {"s": np.zeros(3), "q": np.zeros(3)},
     LossShapeError, "groups its samples one way"),
    # a matrix's rows meet a pair's values only as dot products (tests/test_embedding_rows.py)
    ("pairsum(partner(s) * z, q)", {"s": np.zeros(3), "q": np.zeros(3),
                                    "z": np.zeros((3, 2))},
     LossShapeError, "only as the dot product rowsum"),
    ("pairsum(partner(s), q)", {"s": np.zeros(3), "q": np.zeros((3, 2))}, LossShapeError,
     "'q' holds group ids"),
    ("pairsum(partner(s), q)", {"s": np.zeros(3), "q": np.zeros(4)}, LossShapeError,
     "disagree"),
    ("pairsum(partner(s), q)", {"s": np.zeros(3), "q": np.array([0.0, 0.5, 1.0])}, LossError,
     "must be integers"),
])
def test_what_cannot_be_paired_is_an_error_that_says_why(text, inputs, error, message):
    with pytest.raises(error, match=message):
        lossdsl.compile(text)(**(inputs or {}))


def test_a_pair_sum_inside_a_nonlinear_function_has_exact_derivatives():
    """The partner's share reads the outer derivative at the partner (stored by a pass); the
    exact Hessian adds the derivative of the partner's pair sum with respect to this sample,
    read at the pair with its roles swapped."""
    loss = compiled("log(1 + pairsum(exp(partner(s) - s), q))")
    d = {"s": np.random.default_rng(8).normal(size=12), "q": np.repeat([3, 1, 4], 4)}
    expected = sum(np.log1p(sum(np.exp(d["s"][j] - d["s"][i]) for j in range(12)
                                if j != i and d["q"][j] == d["q"][i])) for i in range(12))
    assert loss(**d) == pytest.approx(expected, rel=1e-12)
    numeric_gradient, numeric_hessian = numeric_derivatives(loss, d)
    gradient, hessian = loss.grad_and_hessian("s", **d)
    np.testing.assert_allclose(gradient, numeric_gradient, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(hessian, numeric_hessian, rtol=1e-4, atol=1e-6)


def test_a_pair_sum_read_at_the_partners_ranks_within_groups():
    """partner(pairsum(...)): a pass stores each sample's pair sum, a later one reads it at
    the partners; ranks have no derivative, so the Hessian is exact."""
    d = data(9)
    rank = over_pairs(d, lambda d, i, j: float(d["s"][j] > d["s"][i]))
    text = "pairsum(partner(pairsum(partner(s) > s, q)) * (s - partner(s))^2, q)"
    loss = compiled(text)
    np.testing.assert_allclose(compiled(text, reduction="none")(q=d["q"], s=d["s"]),
                               over_pairs(d, lambda d, i, j: rank[j] * (d["s"][i] - d["s"][j])**2),
                               rtol=1e-12)
    _, gradient, hessian = fused(loss, {"q": d["q"], "s": d["s"]})
    np.testing.assert_allclose(gradient, 2 * over_pairs(d, lambda d, i, j: (rank[j] + rank[i])
                                                        * (d["s"][i] - d["s"][j])), rtol=1e-12)
    np.testing.assert_allclose(hessian, 2 * over_pairs(d, lambda d, i, j: rank[j] + rank[i]),
                               rtol=1e-12)


def test_jax_prints_the_pairs_as_a_masked_matrix_and_matches_the_kernels(jax_x64):
    jax = jax_x64
    import lossdsl.jax

    d = data(5)
    w = np.random.default_rng(6).uniform(0.5, 2.0, d["s"].size)
    text = CASES[3][0]
    loss, kernels = lossdsl.jax.loss(text, reduction="sum"), compiled(text)
    arguments = taken(kernels, d)
    value, gradient, hessian = fused(kernels, arguments, weight=w)
    assert float(loss(**arguments, sample_weight=w)) == pytest.approx(value, rel=1e-12)
    grad = jax.grad(lambda s: loss(**{**arguments, "s": s}, sample_weight=w))
    np.testing.assert_allclose(grad(arguments["s"]), gradient, rtol=1e-12, atol=1e-12)
    jitted = jax.jit(lambda s: jax.jvp(grad, (s,), (jax.numpy.ones_like(s),))[1])
    # the gradient's JVP along a one-hot direction is a Hessian column: its diagonal entry
    column = jax.jvp(grad, (arguments["s"],), (np.eye(d["s"].size)[3],))[1]
    assert float(column[3]) == pytest.approx(hessian[3], rel=1e-10)
    assert jitted(arguments["s"]).shape == d["s"].shape


def test_dask_refuses_pair_sums_and_says_what_to_do():
    dask_array = pytest.importorskip("dask.array")
    import lossdsl.dask

    d = {name: dask_array.from_array(v, chunks=5) for name, v in data(7).items()}
    with pytest.raises(LossError, match="compute it on NumPy arrays"):
        lossdsl.dask.compile("ranknet(y, s, q)")(y=d["y"], s=d["s"], q=d["q"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ids=st.lists(st.integers(-3, 3), min_size=1, max_size=20),
       seed=st.integers(0, 2**16), case=st.sampled_from([0, 2, 3]))
def test_any_grouping_of_any_rows_matches_the_double_loop(ids, seed, case):
    """Singletons (no partners), one group, negative ids, groups in several runs."""
    text, reference = CASES[case]
    rng = np.random.default_rng(seed)
    d = taken(compiled(text), {"q": np.array(ids), "y": rng.integers(0, 4, len(ids)) * 1.0,
                               "s": rng.normal(0.0, 2.0, len(ids)),
                               "c": rng.uniform(0.5, 2.0, len(ids))})
    np.testing.assert_allclose(compiled(text, reduction="none")(**d), reference(d),
                               rtol=1e-12, atol=1e-12)
    assert_results_follow_their_rows(functools.partial(fused, compiled(text)), d,
                                     rng.permutation(len(ids)))


def test_group_rank_breaks_ties_in_the_order_given_as_a_stable_sort():
    stats = pytest.importorskip("scipy.stats")
    d = data(10, n_groups=5)
    d["s"] = np.round(d["s"])  # ties
    rank = compiled("s * 0 + group_rank(s, q)", reduction="none")(q=d["q"], s=d["s"])
    for group in np.unique(d["q"]):
        rows = d["q"] == group
        np.testing.assert_array_equal(rank[rows],
                                      stats.rankdata(-d["s"][rows], method="ordinal"))
    with pytest.raises(LossShapeError, match="only defined within a pair sum over the groups"):
        lossdsl.compile("s * partner_first(q)")(s=d["s"], q=d["q"])


def test_jax_lambdarank_matches_the_kernels(jax_x64):
    jax = jax_x64
    import lossdsl.jax

    d = data(11)
    loss, kernels = lossdsl.jax.loss("lambdarank(y, s, q)", reduction="sum"), compiled(
        "lambdarank(y, s, q)")
    value, gradient, hessian = fused(kernels, {k: d[k] for k in ("y", "s", "q")})
    assert float(loss(y=d["y"], s=d["s"], q=d["q"])) == pytest.approx(value, rel=1e-12)
    grad = jax.grad(lambda s: loss(y=d["y"], s=s, q=d["q"]))
    np.testing.assert_allclose(grad(d["s"]), gradient, rtol=1e-10, atol=1e-14)
    column = jax.jvp(grad, (d["s"],), (np.eye(d["s"].size)[2],))[1]
    assert float(column[2]) == pytest.approx(hessian[2], rel=1e-10, abs=1e-14)


def test_the_numpy_reference_evaluates_the_pair_graphs_as_the_kernels_do():
    """lossdsl.reference runs the typed graph (partner leaves, values stored for the
    partners, the order given) on the binder's layout of the partners."""
    from lossdsl import reference
    from lossdsl.binding import pair_layout
    from lossdsl.ir.axes import Axis

    d = data(12)
    loss = compiled("lambdarank(y, s, q)", reduction="none")
    spec = loss.specialization({"y": 1, "s": 1, "q": 1}, False)
    offsets, partners = pair_layout("q", d["q"], None)
    items = Axis(spec.shapes.input_axes["s"][0]).items()  # each sample's partners
    (value,) = reference.evaluate([spec.objective.value], d, counts={"n0": d["s"].size},
                                  offsets={items: offsets}, partners={items: partners})
    np.testing.assert_allclose(value, loss(**{k: d[k] for k in ("y", "s", "q")}), rtol=1e-12)


@pytest.mark.parametrize("text", ["ranknet(y, s, q)", "lambdarank(y, s, q)"])
def test_torch_backpropagates_through_pair_sums(text):
    torch = pytest.importorskip("torch")
    import lossdsl.torch

    d = data(13)
    scores = torch.tensor(d["s"], requires_grad=True)
    value = lossdsl.torch.loss(text, reduction="sum")(
        y=torch.tensor(d["y"]), s=scores, q=torch.tensor(d["q"]))
    value.backward()
    kernels = compiled(text)
    arguments = {k: d[k] for k in ("y", "s", "q")}
    assert float(value.detach()) == pytest.approx(kernels(**arguments), rel=1e-12)
    np.testing.assert_allclose(scores.grad.numpy(), kernels.grad("s", **arguments),
                               rtol=1e-12, atol=1e-15)
