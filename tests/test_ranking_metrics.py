"""CatBoost's LambdaMart for MRR and ERR: ``lambdarank_mrr`` and ``lambdarank_err`` (built on
``mrr_swap``, ``err_graded_swap`` and ``lambdamart_pairs`` in the prelude's core; graded ERR
labels in tests/test_ranking_row48.py).

The reference is CatBoost's TLambdaMartError (CalcDersMRR, CalcDersERR and
CalcDersForSingleQuery, catboost/private/libs/algo_helpers/error_functions.cpp) transcribed
in NumPy, its pair loops as CatBoost writes them (ERR with CatBoost's running products, which
it keeps for graded labels too); a hand-worked query for each metric; and CatBoost itself,
whose first tree, one document per leaf, shows the derivatives it computed.

CatBoost's LambdaMart returns the pairs' loss gradient and Hessian (``Der1``, ``Der2``) where
its other objectives return their negations: its ``Newton`` leaves (the default) divide the
two, so the leaf moves down the loss where a leaf's Hessian sum exceeds ``l2_leaf_reg``;
its ``Gradient`` leaves move up the loss. lossdsl's objectives give CatBoost the negations.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.special
from coupled import assert_results_follow_their_rows, shuffled_group_ids

import lossdsl


@functools.cache
def compiled(text: str, reduction: str = "sum") -> lossdsl.CompiledLoss:
    return lossdsl.compile(text, reduction=reduction)


def _pairs_mrr(t: np.ndarray) -> list[tuple[int, int, float]]:
    """CatBoost's CalcDersMRR pairs (relevant position, other position, delta) of one query
    whose labels ``t`` are in ranked order."""
    relevant = np.flatnonzero(t > 0)
    if relevant.size == 0:
        return []
    first = relevant[0]
    second = relevant[1] if relevant.size > 1 else 0  # CatBoost's 0: there is none
    pairs = []
    for f in relevant:
        for k in range(t.size if f == first else first):
            if t[k] > 0:
                continue
            if k < f:
                delta = 1 / (k + 1) - 1 / (f + 1)
            elif second == 0 or k < second:
                delta = 1 / (f + 1) - 1 / (k + 1)
            else:
                delta = 1 / (f + 1) - 1 / (second + 1)
            pairs.append((f, k, delta))
    return pairs


def catboost_err_pairs(t: np.ndarray) -> list[tuple[int, int, float]]:
    """CatBoost's CalcDersERR pairs (higher-label position, lower, delta) of one query whose
    labels ``t`` (probabilities, 0/1 or graded) are in ranked order; the running products
    over the documents between the two skip those whose label equals the upper document's,
    as CatBoost's ``continue`` does before it updates them."""
    pairs, look_first = [], 1.0
    for f in range(t.size):
        look_middle, middle_rr = 1.0, 0.0
        for k in range(f + 1, t.size):
            if t[f] == t[k]:
                continue
            high, low = (f, k) if t[f] > t[k] else (k, f)
            delta = look_first * abs((t[f] - t[k]) / (f + 1) + middle_rr * (t[k] - t[f])
                                     + look_middle * (t[k] - t[f]) / (k + 1))
            middle_rr += look_middle * t[k] / (k + 1)
            look_middle *= 1 - t[k]
            pairs.append((high, low, delta))
        look_first *= 1 - t[f]
    return pairs


def catboost_lambdamart(metric: str, d: dict[str, np.ndarray], sigma: float = 1.0,
                        norm: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value, gradient, Hessian diagonal) of CatBoost's LambdaMart for ``metric``, query by
    query as CalcDersForSingleQuery computes them: a stable sort by score, the metric's pair
    deltas, each divided by 0.01 + |score gap| unless the query's scores are all equal, then
    every derivative scaled by log2(1 + S)/S, S the sum of 2 sigma delta sigmoid over the
    pairs. Its Der1 is the gradient below; the value is the pairs' weighted logistic loss."""
    y, z, q = d["y"], d["z"], d["q"]
    value, gradient, hessian = np.zeros(q.size), np.zeros(q.size), np.zeros(q.size)
    for query in np.unique(q):
        rows = np.flatnonzero(q == query)
        if rows.size <= 1:
            continue
        order = rows[np.argsort(-z[rows], kind="stable")]
        t, s = y[order], z[order]
        all_equal = s[0] == s[-1]
        weighted, total = [], 0.0
        for high, low, delta in (_pairs_mrr if metric == "MRR" else catboost_err_pairs)(t):
            difference = s[high] - s[low]
            if norm and not all_equal:
                delta /= 0.01 + abs(difference)
            p = scipy.special.expit(-sigma * difference)
            weighted.append((order[high], order[low], delta, difference, p))
            total += 2 * sigma * delta * p
        scale = np.log2(1 + total) / total if norm and total > 0 else 1.0
        for high, low, delta, difference, p in weighted:
            value[high] += scale * delta * np.logaddexp(0.0, -sigma * difference)
            gradient[high] -= scale * sigma * delta * p
            gradient[low] += scale * sigma * delta * p
            hessian[[high, low]] += scale * sigma**2 * delta * p * (1 - p)
    return value, gradient, hessian


def queries(seed: int, graded: bool = False) -> dict[str, np.ndarray]:
    """Queries of 1 to 12 documents, rows shuffled, scores with ties (rounded), one query
    whose scores are all equal and one with no relevant document; 0/1 labels, or grades
    -1 to 3 (relevant where > 0, as CatBoost's MRR takes them)."""
    rng = np.random.default_rng(seed)
    q = shuffled_group_ids(rng, 8, 12)
    ids = np.unique(q)
    z = np.round(rng.normal(0.0, 1.5, q.size), 1)
    z[q == ids[0]] = 0.7
    y = (rng.uniform(size=q.size) < 0.3).astype(float)
    if graded:
        y = np.where(y > 0, rng.integers(1, 4, q.size), rng.integers(-1, 1, q.size)) * 1.0
    y[q == ids[1]] = 0.0
    return {"y": y, "z": z, "q": q}


#: One loss per metric, its sigma and norm params given per call: two kernels each
#: (reductions "none" and "sum"), compiled once (pair kernels take seconds to compile).
LOSSES = {metric: f"param sigma = 1.0\nparam norm = 1\nloss {metric.lower()} = "
                  f"lambdarank_{metric.lower()}(y, z, q, sigma, norm)"
          for metric in ("MRR", "ERR")}

CASES = [  # (metric, params, graded labels)
    ("MRR", {}, False),
    ("MRR", {}, True),
    ("MRR", {"sigma": 2.0, "norm": 0}, True),
    ("ERR", {}, False),
    ("ERR", {"sigma": 0.5, "norm": 0}, False),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("metric, params, graded", CASES,
                         ids=[f"{c[0]}{c[1] or ''}{'-graded' if c[2] else ''}" for c in CASES])
def test_values_and_derivatives_are_catboosts_lambdamart(metric, params, graded, seed):
    d = queries(seed, graded)
    options = {"sigma": params.get("sigma", 1.0), "norm": bool(params.get("norm", 1))}
    value, gradient, hessian = catboost_lambdamart(metric, d, **options)
    np.testing.assert_allclose(compiled(LOSSES[metric], "none")(**d, **params), value,
                               rtol=1e-12, atol=1e-13)
    summed = compiled(LOSSES[metric])
    ours = summed.compute(True, ("z",), ("z",), {**d, **params}, None)
    assert ours[0] == pytest.approx(np.sum(value), rel=1e-12)
    np.testing.assert_allclose(ours[1], gradient, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(ours[2], hessian, rtol=1e-12, atol=1e-13)
    # rows in another order: the same results per row where no tie's order decides the ranking
    rng = np.random.default_rng(seed)
    untied = {**d, "z": rng.normal(size=d["q"].size)}
    assert_results_follow_their_rows(
        lambda inputs: summed.compute(True, ("z",), ("z",), {**inputs, **params}, None), untied,
        rng.permutation(d["q"].size))


def test_a_hand_worked_query_for_each_metric():
    """Three documents with equal scores, ranked as given (ranks 1, 2, 3), each pair's
    sigmoid 1/2, norm=0. MRR, labels (1, 1, 0): the first relevant document against the
    third, ranked below the second relevant one, weighs 1/1 - 1/2; the second relevant
    document pairs with no one (nothing irrelevant ranks above the first). ERR weighs that
    pair |1/3 - 1/1| (CatBoost's delta; swapping the two changes the ERR by 1/2). Labels
    (0, 1, 0): 1/1 - 1/2 with the document above, 1/2 - 1/3 with the one below, both
    metrics. A query of one document adds nothing."""
    q, z = np.array([5, 5, 5, 8]), np.full(4, 0.3)
    for labels, metric, expected in (((1, 1, 0), "mrr", [-1 / 4, 0, 1 / 4]),
                                     ((1, 1, 0), "err", [-1 / 3, 0, 1 / 3]),
                                     ((0, 1, 0), "mrr", [1 / 4, -1 / 3, 1 / 12]),
                                     ((0, 1, 0), "err", [1 / 4, -1 / 3, 1 / 12])):
        y = np.array([*labels, 1.0])
        gradient = compiled(LOSSES[metric.upper()]).grad("z", y=y, z=z, q=q, norm=0)
        np.testing.assert_allclose(gradient, [*expected, 0.0], rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("metric", ["MRR", "ERR"])
def test_catboosts_first_tree_shows_the_same_derivatives(metric):
    """One CatBoost tree on five bit features of the row number, depth 5: one document per
    leaf, l2_leaf_reg=0, learning rate 1. A Gradient leaf is the document's Der1 (lossdsl's
    gradient); a Newton leaf is Der1/(-Der2) (-gradient/Hessian). Scores on a grid of 1/8,
    which CatBoost's float32 baseline holds exactly; equal scores in one query, a query of
    one document and one with no relevant document."""
    catboost = pytest.importorskip("catboost")
    rng = np.random.default_rng(7)
    q = np.repeat([0, 1, 2, 3, 4], [9, 1, 6, 7, 9])
    y = (rng.uniform(size=q.size) < 0.35).astype(float)
    y[10:16] = 0.0
    z = np.round(8 * rng.normal(size=q.size)) / 8
    z[16:23] = 0.25
    bits = ((np.arange(q.size)[:, None] >> np.arange(5)) & 1).astype(float)

    def first_tree(method: str) -> np.ndarray:
        model = catboost.CatBoost({
            "loss_function": f"LambdaMart:metric={metric}", "iterations": 1, "depth": 5,
            "learning_rate": 1.0, "l2_leaf_reg": 0, "random_strength": 0,
            "bootstrap_type": "No", "boosting_type": "Plain", "boost_from_average": False,
            "leaf_estimation_method": method, "leaf_estimation_iterations": 1,
            "thread_count": 1, "verbose": 0})
        model.fit(catboost.Pool(bits, y, group_id=q, baseline=z))
        return model.predict(bits, prediction_type="RawFormulaVal")

    gradient, hessian = compiled(LOSSES[metric]).grad_and_hessian("z", y=y, z=z, q=q)
    assert np.count_nonzero(gradient) > 20
    # CatBoost keeps ERR's Gradient leaves of the tied query to float32 (7e-8 relative)
    np.testing.assert_allclose(first_tree("Gradient"), gradient, rtol=1e-7, atol=1e-12)
    newton = first_tree("Newton")
    np.testing.assert_allclose(newton[hessian > 0], -gradient[hessian > 0] / hessian[hessian > 0],
                               rtol=1e-12)
    np.testing.assert_array_equal(newton[hessian == 0], 0.0)


def test_what_the_losses_refuse():
    d = queries(3)
    graded = {**d, "y": d["y"] * 2}  # ERR's labels are probabilities (row 48's graded ERR)
    with pytest.raises(lossdsl.LossDomainError, match=r"'y' must be in \[0, 1\]"):
        compiled("lambdarank_err(y, z, q)")(**graded)
    compiled("lambdarank_mrr(y, z, q)")(**graded)  # relevant where y > 0
    for text, message in (("lambdarank_mrr(y, z, q, sigma=0)", r"'sigma' must be in \(0, inf\)"),
                          ("lambdarank_err(y, z, q, norm=2)", "'norm' must be 0 or 1")):
        with pytest.raises(lossdsl.LossDomainError, match=message):
            lossdsl.compile(text)


def test_lambdarank_refuses_labels_whose_gain_overflows():
    # 2^y of a label of 1024 was inf, every pair weight of its query NaN, and the boosting
    # adapters' NaN check named another row; labels stop at 31, as LightGBM's default
    # label_gain and XGBoost's exponential gain do
    d = queries(3)
    d["y"] = np.asarray(d["y"], dtype=np.float64).copy()
    d["y"][4] = 1024.0
    with pytest.raises(lossdsl.LossDomainError, match=r"'y' must be in \[0, 31\].* at index 4"):
        compiled("lambdarank(y, z, q)").grad("z", **d)
    d["y"][4] = 31.0
    assert np.all(np.isfinite(compiled("lambdarank(y, z, q)").grad("z", **d)))
