"""Catalog row 48 (LambdaMART): CatBoost's ``LambdaMart:metric=ERR`` on graded labels
(``lambdarank_err`` with labels in [0, 1], the probabilities that documents satisfy the user),
CatBoost's ``YetiRank`` (``yetirank(y, z, q, u)``, its random permutations' noise an input
``u`` (N, 10), read by column within pair sums: ``pick(u, k)`` at the partner) and XGBoost's
sampled pairs (``lambdarank_mean(y, z, q, u)``, ``lambdarank_pair_method="mean"``).

The references are CatBoost's C++ transcribed in NumPy, loop for loop:
``TLambdaMartError::CalcDersERR`` and ``CalcDersForSingleQuery``
(catboost/private/libs/algo_helpers/error_functions.cpp) for ERR, and
``GenerateYetiRankPairsForQuery`` (catboost/private/libs/algo/yetirank_helpers.cpp) with
``TPairLogitError::CalcDersForQueries`` (error_functions.h) for YetiRank; XGBoost's
``MakePairs`` and ``LambdaGrad`` (src/objective/lambdarank_obj.{h,cc}); CatBoost itself,
whose first tree, one document per leaf, shows the derivatives it computed; and, for the
column reads within pair sums, JAX's derivatives of the pair sum written out in NumPy terms.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.special
from coupled import assert_simulated_cuda_matches_cpu, central_differences, shuffled_group_ids
from test_ranking_metrics import catboost_err_pairs, catboost_lambdamart

import lossdsl
from lossdsl.boosting import QueryDraws
from lossdsl.errors import LossDomainError, LossShapeError


@functools.cache
def compiled(text: str, reduction: str = "sum", target: str = "cpu") -> lossdsl.CompiledLoss:
    return lossdsl.compile(text, target=target, reduction=reduction)


def fused(loss: lossdsl.CompiledLoss, d: dict) -> list:
    """[value, gradient, Hessian diagonal] with respect to z, in one call."""
    return loss.compute(True, ("z",), ("z",), d, None)


# ------------------------------------------------------------------------ ERR, graded labels

ERR = "param sigma = 1.0\nparam norm = 1\nloss err = lambdarank_err(y, z, q, sigma, norm)"


def graded_queries(seed: int) -> dict[str, np.ndarray]:
    """Queries of 1 to 11 documents (rows shuffled), labels in [0, 1] with exact 0s and 1s
    and no two equal labels strictly between 0 and 1 in a query, scores with ties (rounded),
    one query whose scores are all equal and one whose first document has label 1."""
    rng = np.random.default_rng(seed)
    q = shuffled_group_ids(rng, 9, 11)
    ids = np.unique(q)
    z = np.round(rng.normal(0.0, 1.5, q.size), 1)
    z[q == ids[0]] = -0.4
    y = rng.uniform(0.01, 0.99, q.size)
    y[rng.uniform(size=q.size) < 0.25] = 0.0
    y[rng.uniform(size=q.size) < 0.15] = 1.0
    top = np.flatnonzero(q == ids[1])
    y[top[np.argmax(z[top])]] = 1.0
    return {"y": y, "z": z, "q": q}


ERR_CASES = [(0, {}), (1, {}), (2, {"sigma": 0.5, "norm": 0}), (3, {"sigma": 2.0})]


@pytest.mark.parametrize("seed, params", ERR_CASES, ids=[f"{s}{p or ''}" for s, p in ERR_CASES])
def test_graded_err_is_catboosts_calc_ders_err(seed, params):
    d = graded_queries(seed)
    expected = catboost_lambdamart("ERR", d, params.get("sigma", 1.0),
                                   bool(params.get("norm", 1)))
    np.testing.assert_allclose(compiled(ERR, "none")(**d, **params), expected[0], rtol=1e-12,
                               atol=1e-13)
    value, gradient, hessian = fused(compiled(ERR), {**d, **params})
    assert value == pytest.approx(np.sum(expected[0]), rel=1e-12)
    np.testing.assert_allclose(gradient, expected[1], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(hessian, expected[2], rtol=1e-12, atol=1e-13)


def test_graded_err_in_float32_follows_float64():
    d = graded_queries(4)
    d["y"] = d["y"].astype(np.float32).astype(np.float64)  # the same labels in both
    d["z"] = np.round(d["z"] * 8) / 8  # and the same ranking: scores float32 holds exactly
    single = fused(compiled(ERR), {k: v.astype(np.float32) for k, v in d.items()})
    assert single[1].dtype == np.float32
    _, gradient, hessian = catboost_lambdamart("ERR", d)
    np.testing.assert_allclose(single[1], gradient, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(single[2], hessian, rtol=1e-4, atol=1e-6)


def expected_reciprocal_rank(t: np.ndarray) -> float:
    """Chapelle et al.'s ERR of labels ``t`` (probabilities) in ranked order."""
    reach = np.concatenate([[1.0], np.cumprod(1 - t)[:-1]])
    return float(np.sum(reach * t / np.arange(1, t.size + 1)))


def test_a_label_between_0_and_1_shared_inside_a_pair_gives_the_metrics_change():
    """Documents of query 0 ranked as given, labels (0.5, 0.2, 0.5, 0.9, 0): CatBoost's loop
    skips the 0.5 at rank 3 between the pair (rank 1, rank 4); lossdsl keeps it, and each
    pair weight is then |ERR - ERR with the two swapped| (the metric's change), which differs
    from CatBoost's delta for that pair. Query 1 (labels 1, 0.3, 1, 0.6): there CatBoost's
    skip of the 1 at rank 3 is followed, as for 0/1 labels."""
    t0, t1 = np.array([0.5, 0.2, 0.5, 0.9, 0.0]), np.array([1.0, 0.3, 1.0, 0.6])
    d = {"y": np.concatenate([t0, t1]), "z": -np.arange(9.0), "q": np.repeat([0, 1], [5, 4])}
    weights = compiled("pairsum(err_graded_swap(y, z, q), q)", "none")(**d)
    swapped = []
    for i in range(5):
        change = 0.0
        for j in range(5):
            if t0[i] > t0[j]:
                order = np.arange(5)
                order[[i, j]] = order[[j, i]]
                change += abs(expected_reciprocal_rank(t0[order]) - expected_reciprocal_rank(t0))
        swapped.append(change)
    np.testing.assert_allclose(weights[:5], swapped, rtol=1e-13, atol=1e-15)
    catboost = {(h, lo): delta for h, lo, delta in catboost_err_pairs(t0)}
    metric = abs(expected_reciprocal_rank(t0[[3, 1, 2, 0, 4]]) - expected_reciprocal_rank(t0))
    assert abs(catboost[(3, 0)] - metric) > 1e-3  # CatBoost's delta is not the change there
    followed = np.zeros(4)
    for high, _, delta in catboost_err_pairs(t1):
        followed[high] += delta
    np.testing.assert_allclose(weights[5:], followed, rtol=1e-13, atol=1e-15)


def test_catboosts_first_tree_shows_the_graded_err_derivatives():
    """One CatBoost tree (LambdaMart:metric=ERR, Gradient leaves, depth 5 on five bits of
    the row number: one document per leaf, learning rate 1, l2_leaf_reg 0): each leaf is the
    document's Der1, lossdsl's gradient. Labels on a grid of 1/64 (CatBoost keeps labels as
    float32), distinct within a query except 0s and 1s; scores on a grid of 1/8; a query of
    one document and one with all scores equal."""
    catboost = pytest.importorskip("catboost")
    rng = np.random.default_rng(11)
    q = np.repeat([0, 1, 2, 3, 4], [9, 1, 6, 7, 9])
    y = np.concatenate([rng.choice(np.arange(1, 64), size, replace=False) / 64
                        for size in (9, 1, 6, 7, 9)])
    y[rng.uniform(size=q.size) < 0.2] = 0.0
    y[[3, 12, 25]] = 1.0
    z = np.round(8 * rng.normal(size=q.size)) / 8
    z[16:23] = 0.25
    bits = ((np.arange(q.size)[:, None] >> np.arange(5)) & 1).astype(float)
    model = catboost.CatBoost({
        "loss_function": "LambdaMart:metric=ERR", "iterations": 1, "depth": 5,
        "learning_rate": 1.0, "l2_leaf_reg": 0, "random_strength": 0, "bootstrap_type": "No",
        "boosting_type": "Plain", "boost_from_average": False,
        "leaf_estimation_method": "Gradient", "leaf_estimation_iterations": 1,
        "thread_count": 1, "verbose": 0})
    model.fit(catboost.Pool(bits, y, group_id=q, baseline=z))
    _, gradient, _ = fused(compiled(ERR), {"y": y, "z": z, "q": q})
    assert np.count_nonzero(gradient) > 20
    # CatBoost sums its Gradient leaves in float32 (as for 0/1 labels, test_ranking_metrics)
    np.testing.assert_allclose(model.predict(bits, prediction_type="RawFormulaVal"), gradient,
                               rtol=1e-6, atol=1e-9)


def test_err_labels_must_be_probabilities():
    d = graded_queries(0)
    with pytest.raises(LossDomainError, match=r"'y' must be in \[0, 1\]"):
        compiled(ERR).grad("z", **{**d, "y": d["y"] * 2})


# ------------------------------------------------------------------------------------ YetiRank

YETI = "param decay = 0.85\nloss yeti = yetirank(y, z, q, u, decay)"


def catboost_yetirank(d: dict[str, np.ndarray], decay: float = 0.85
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value, gradient, Hessian) of CatBoost's YetiRank given the draws ``u`` (N, P):
    GenerateYetiRankPairsForQuery (per permutation, exp(z) times the float32 ratio u/(1.000001
    - u), sorted descending; each two neighbours of different labels add 0.15 decay^position
    |label gap| to the higher label's pair; the weights divided by P), then TPairLogitError
    on those pairs (p = e^z_loser/(e^z_loser + e^z_winner): the winner's Der1 += w p, its
    Der2 += w p (p - 1); here the loss's gradient -w p and Hessian w p (1 - p)). CatBoost
    accumulates the weights in float32; this reference in float64."""
    y, z, q, u = d["y"], d["z"], d["q"], d["u"]
    value, gradient, hessian = np.zeros(q.size), np.zeros(q.size), np.zeros(q.size)
    for query in np.unique(q):
        rows = np.flatnonzero(q == query)
        weights = np.zeros((rows.size, rows.size))  # [winner, loser]
        for permutation in range(u.shape[1]):
            draws = u[rows, permutation].astype(np.float32)
            noisy = np.exp(z[rows]) * (draws / (np.float32(1.000001) - draws)).astype(float)
            order = np.argsort(-noisy, kind="stable")
            decay_coefficient = 1.0
            for position in range(1, rows.size):
                first, second = order[position - 1], order[position]
                weight = 0.15 * decay_coefficient * abs(y[rows[first]] - y[rows[second]])
                if y[rows[first]] > y[rows[second]]:
                    weights[first, second] += weight
                elif y[rows[first]] < y[rows[second]]:
                    weights[second, first] += weight
                decay_coefficient *= decay
        weights /= u.shape[1]
        for winner, loser in zip(*np.nonzero(weights)):
            w, a, b = weights[winner, loser], rows[winner], rows[loser]
            p = np.exp(z[b]) / (np.exp(z[b]) + np.exp(z[a]))
            value[a] += w * np.logaddexp(0.0, z[b] - z[a])
            gradient[a] -= w * p
            gradient[b] += w * p
            hessian[[a, b]] += w * p * (1 - p)
    return value, gradient, hessian


def yeti_queries(seed: int) -> dict[str, np.ndarray]:
    """Queries of 1 to 12 documents, rows shuffled, grades 0-3 (ties), scores with ties, and
    10 uniform draws per document."""
    rng = np.random.default_rng(seed)
    q = shuffled_group_ids(rng, 7, 12)
    return {"y": rng.integers(0, 4, q.size).astype(float),
            "z": np.round(rng.normal(size=q.size), 1), "q": q,
            "u": rng.uniform(size=(q.size, 10))}


@pytest.mark.parametrize("seed, decay", [(0, 0.85), (1, 0.85), (2, 0.5)])
def test_yetirank_given_the_draws_is_catboosts(seed, decay):
    d = yeti_queries(seed)
    value, gradient, hessian = catboost_yetirank(d, decay)
    ours = fused(compiled(YETI), {**d, "decay": decay})
    assert ours[0] == pytest.approx(np.sum(value), rel=1e-12)
    np.testing.assert_allclose(ours[1], gradient, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours[2], hessian, rtol=1e-12, atol=1e-14)
    assert np.count_nonzero(gradient) > d["q"].size // 2


def test_catboosts_first_yetirank_tree_shows_the_same_derivatives():
    """Queries of two documents (and one of one): in every permutation the two are
    neighbours at the top, so CatBoost's random pair weights are 0.15 |label gap| whatever it
    draws. One tree on five bits of the row number (depth 5), learning rate 1, YetiRank's
    Newton leaves with l2_leaf_reg 1: each leaf is -(sum of gradients)/(sum of Hessians + 1)
    over its documents (one or two), which checks the pair weights' size as well as the
    logistic derivatives (with l2_leaf_reg 0 a lone pair's weight would cancel)."""
    catboost = pytest.importorskip("catboost")
    rng = np.random.default_rng(3)
    q = np.concatenate([np.repeat(np.arange(13), 2), [13]])
    y = rng.integers(0, 4, q.size).astype(float)
    z = np.round(8 * rng.normal(size=q.size)) / 8
    bits = ((np.arange(q.size)[:, None] >> np.arange(5)) & 1).astype(float)
    model = catboost.CatBoost({
        "loss_function": "YetiRank", "iterations": 1, "depth": 5, "learning_rate": 1.0,
        "l2_leaf_reg": 1, "random_strength": 0, "bootstrap_type": "No",
        "boosting_type": "Plain", "boost_from_average": False, "thread_count": 1,
        "verbose": 0})
    model.fit(catboost.Pool(bits, y, group_id=q, baseline=z))
    _, gradient, hessian = fused(compiled(YETI), {"y": y, "z": z, "q": q,
                                                  "u": rng.uniform(size=(q.size, 10))})
    assert np.count_nonzero(gradient) > 10
    leaf = model.calc_leaf_indexes(catboost.Pool(bits))[:, 0]
    expected = np.array([-gradient[leaf == k].sum() / (hessian[leaf == k].sum() + 1)
                         for k in leaf])
    # CatBoost keeps its pair weights in float32
    np.testing.assert_allclose(model.predict(bits, prediction_type="RawFormulaVal"), expected,
                               rtol=1e-6, atol=1e-9)


def test_yetirank_needs_ten_draws_per_document():
    d = yeti_queries(0)
    with pytest.raises(LossDomainError, match=r"class index \d+ .* a row of 4 classes"):
        compiled(YETI).grad("z", **{**d, "u": d["u"][:, :4]})


def test_query_draws_with_columns_draw_a_matrix_each_round():
    draws = QueryDraws(seed=4, columns=10)
    groups = np.array([3, 3, 1, 1, 1])
    first = draws.advance(groups, 5)
    assert first.shape == (5, 10) and np.all((first >= 0) & (first < 1))
    second = draws.advance(groups, 5)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(draws.values(groups, 5), second)
    np.testing.assert_array_equal(draws.values(groups[:4], 4), first[:4])  # another layout
    draws.restart()
    np.testing.assert_array_equal(draws.advance(groups, 5), first)
    assert repr(draws) == "QueryDraws(seed=4, columns=10)"
    with pytest.raises(ValueError, match="columns must be a positive integer"):
        QueryDraws(columns=0)


# ------------------------------------------------------ XGBoost's sampled pairs ("mean")

MEAN = "param norm = 1\nloss mean_pairs = lambdarank_mean(y, z, q, u, norm)"


def xgboost_mean_pairs(d: dict[str, np.ndarray], norm: bool = True
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value, gradient, half Hessian) of XGBoost's rank:ndcg with lambdarank_pair_method="mean" and
    one pair per sample, given each document's draw u: MakePairs (the rank list sorted by
    label, highest first; each label bucket's documents, in rank order, draw the partner
    ridx = floor(u n) among the n documents outside the bucket, shifted past it) and
    LambdaGrad on each sampled pair (the NDCG change over the whole list with gains 2^y - 1,
    divided by 0.01 + |score gap| unless the query's scores are all equal; lambda (sigmoid -
    1) delta, Hessian 2 sigmoid (1 - sigmoid) delta, halved here; the value is the sampled
    pairs' weighted logistic loss, at the higher label). XGBoost draws ridx with
    std::uniform_int_distribution from its own minstd_rand; the draws are an input here."""
    y, z, q, u = d["y"], d["z"], d["q"], d["u"]
    value, gradient, hessian = np.zeros(q.size), np.zeros(q.size), np.zeros(q.size)
    for query in np.unique(q):
        rows = np.flatnonzero(q == query)
        count = rows.size
        rank = rows[np.argsort(-z[rows], kind="stable")]  # g_rank: rank position -> row
        labels = y[rank]
        by_label = np.argsort(-labels, kind="stable")  # y_sorted_idx: positions on g_rank
        ideal = np.sort(2.0 ** y[rows] - 1)[::-1]
        ideal_dcg = np.sum(ideal / np.log2(np.arange(2, count + 2)))
        all_equal = z[rank[0]] == z[rank[-1]]
        sampled, start = [], 0  # MakePairs: the pairs (positions on g_rank) it hands on
        while start < count:
            end = start + 1
            while end < count and labels[by_label[start]] == labels[by_label[end]]:
                end += 1
            others = start + count - end
            for position in range(start, end) if others else ():
                drawn = int(np.floor(u[rank[by_label[position]]] * others))
                if drawn >= start:
                    drawn += end - start  # past the bucket
                sampled.append((by_label[position], by_label[drawn]))
            start = end
        for i, j in sampled:  # LambdaGrad
            high, low = (i, j) if labels[i] > labels[j] else (j, i)
            delta = abs((2.0 ** labels[high] - 2.0 ** labels[low])
                        * (1 / np.log2(high + 2) - 1 / np.log2(low + 2))) / ideal_dcg
            gap = z[rank[high]] - z[rank[low]]
            if norm and not all_equal:
                delta /= abs(gap) + 0.01
            sigmoid = scipy.special.expit(gap)
            value[rank[high]] += delta * np.logaddexp(0.0, -gap)
            gradient[rank[high]] += (sigmoid - 1) * delta
            gradient[rank[low]] -= (sigmoid - 1) * delta
            hessian[[rank[high], rank[low]]] += sigmoid * (1 - sigmoid) * delta
    return value, gradient, hessian


@pytest.mark.parametrize("seed, norm", [(0, 1), (1, 1), (2, 0)])
def test_lambdarank_mean_given_the_draws_is_xgboosts_sampled_pairs(seed, norm):
    rng = np.random.default_rng(seed)
    q = shuffled_group_ids(rng, 8, 12)
    z = np.round(rng.normal(size=q.size), 1)
    z[q == q[0]] = 0.3  # a query whose scores are all equal
    d = {"y": rng.integers(0, 4, q.size).astype(float), "z": z, "q": q,
         "u": rng.uniform(size=q.size)}
    _, gradient, hessian = xgboost_mean_pairs(d, bool(norm))
    _, ours, ours_hessian = fused(compiled(MEAN), {**d, "norm": norm})
    np.testing.assert_allclose(ours, gradient, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours_hessian, hessian, rtol=1e-12, atol=1e-14)
    assert np.count_nonzero(gradient) > q.size // 2


def test_lambdarank_mean_trains_as_xgboosts_sampled_pairs():
    """Through XGBoost on examples/ranking.py's queries (40 training queries, 30 rounds),
    draws from QueryDraws and XGBoost's Hessian (like="rank:ndcg"): the held-out NDCG@10
    is within 0.05 of XGBoost's own rank:ndcg with lambdarank_pair_method="mean" (measured:
    0.706 and 0.709, from 0.17)."""
    xgb = pytest.importorskip("xgboost")
    import runpy
    from pathlib import Path

    import lossdsl.xgboost

    example = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "ranking.py"),
                             run_name="example")
    (x, rel, qid), (x_test, rel_test, qid_test) = (example["make_queries"](40, seed=3),
                                                   example["make_queries"](40, seed=4))
    params = {"eta": 0.1, "max_depth": 6, "nthread": 1, "tree_method": "hist",
              "base_score": 0.0}
    built_in = xgb.train({**params, "objective": "rank:ndcg", "lambdarank_pair_method": "mean"},
                         xgb.DMatrix(x, rel, qid=qid), 30)
    objective = lossdsl.xgboost.objective("lambdarank_mean(y, s, q, u)",
                                          inputs={"u": QueryDraws(seed=1)}, like="rank:ndcg")
    ours = xgb.train(params, xgb.DMatrix(x, rel, qid=qid), 30, obj=objective)
    ndcg = example["ndcg_at_10"]
    reached = ndcg(rel_test, built_in.predict(xgb.DMatrix(x_test), output_margin=True), qid_test)
    ours_reached = ndcg(rel_test, ours.predict(xgb.DMatrix(x_test), output_margin=True),
                        qid_test)
    assert reached > ndcg(rel_test, np.zeros(qid_test.size), qid_test) + 0.3
    assert ours_reached >= reached - 0.05, (ours_reached, reached)


# ---------------------------------------------- a column of a matrix input within a pair sum

#: Column reads at the sample and at its partner, through a rank (a stored pass) and in the
#: summand, each differentiated with respect to both inputs.
COLUMNS = ("pairsum(exp(partner(pick(u, 1)))*z + pick(u, 2)^2*partner(z)"
           " + softplus(pick(u, 0) - partner(pick(u, 0)) - z), q)")


def columns_reference(u: np.ndarray, z: np.ndarray, q: np.ndarray) -> float:
    """COLUMNS written out over every ordered pair of the same group."""
    same = (q[:, None] == q[None, :]) & ~np.eye(q.size, dtype=bool)
    terms = (np.exp(u[None, :, 1]) * z[:, None] + (u[:, 2] ** 2)[:, None] * z[None, :]
             + np.logaddexp(0.0, u[:, None, 0] - u[None, :, 0] - z[:, None]))
    return float(np.sum(np.where(same, terms, 0.0)))


def test_columns_read_at_the_partner_have_exact_derivatives():
    rng = np.random.default_rng(2)
    q = np.array([1, 1, 2, 2, 2, 1, 7])
    d = {"u": rng.normal(size=(7, 3)), "z": rng.normal(size=7), "q": q}
    loss = compiled(COLUMNS)
    assert loss(**d) == pytest.approx(columns_reference(**d), rel=1e-13)
    for name in ("z", "u"):
        gradient, hessian = loss.grad_and_hessian(name, **d)
        differences = central_differences(
            lambda x, name=name: columns_reference(**{**d, name: x}), d[name])
        np.testing.assert_allclose(gradient, differences[0], rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(hessian, differences[1], rtol=1e-5, atol=1e-5)
    # the Hessian's exact terms, by hand at one entry of each kind: u[i, 1] is read at the
    # partners only (exp(u_i1) times the sum of z over i's partners), u[i, 2] at i only
    same = (q[:, None] == q[None, :]) & ~np.eye(7, dtype=bool)
    _, hessian = loss.grad_and_hessian("u", **d)
    np.testing.assert_allclose(hessian[:, 1], np.exp(d["u"][:, 1]) * (same @ d["z"]),
                               rtol=1e-13)
    np.testing.assert_allclose(hessian[:, 2], 2 * (same @ d["z"]), rtol=1e-13, atol=1e-15)


#: YetiRank with two of its permutations: small enough for every target.
YETI_TWO = ("yetirank_pairs(y, z, q, 0.15*(y - partner(y))*(yetirank_neighbours(z, q, u, 0,"
            " 0.85) + yetirank_neighbours(z, q, u, 2, 0.85))/2)")


def test_jax_and_the_parallel_kernels_read_the_columns_as_the_serial_kernels(jax_x64):
    import lossdsl.jax

    d = yeti_queries(5)
    d["u"] = d["u"][:, :3]
    serial = fused(compiled(YETI_TWO), d)
    for a, b in zip(fused(compiled(YETI_TWO, target="parallel"), d), serial):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    printed = lossdsl.jax.loss(YETI_TWO, reduction="sum")
    assert float(printed(**d)) == pytest.approx(serial[0], rel=1e-12)
    grad = jax_x64.grad(lambda z: printed(**{**d, "z": z}))
    np.testing.assert_allclose(grad(d["z"]), serial[1], rtol=1e-10, atol=1e-14)


def test_cuda_kernels_read_the_columns_under_the_simulator():
    assert_simulated_cuda_matches_cpu(
        "data = {'y': np.array([0., 1, 2, 1, 0, 2, 1]), 'q': np.array([4, 4, 9, 9, 4, 9, 4]), "
        "'z': rng.normal(0.0, 0.7, 7), 'u': rng.uniform(size=(7, 3))}",
        [YETI_TWO], "z", atol=1e-12)


@pytest.mark.parametrize("text, error, message", [
    ("pairsum(partner(pick(u, y)) - z, q)", LossShapeError,
     r"classes \(pick, onehot, rowof, classvec\) cannot be read for samples paired"),
    ("pairsum(partner(pick(u, 5)) - z, q)", LossDomainError,
     r"the class index 5 written in the loss must be an integer in \[0, 3\)"),
    ("pairsum(u*partner(z), q)", LossShapeError, "meet a pair's values only as the dot product"),
])
def test_what_a_pair_sum_still_refuses_of_a_matrix(text, error, message):
    d = {"u": np.zeros((4, 3)), "z": np.zeros(4), "q": np.zeros(4), "y": np.zeros(4)}
    with pytest.raises(error, match=message) as caught:
        loss = lossdsl.compile(text, reduction="sum")
        loss(**{k: d[k] for k in loss.inputs})
    assert "^" in str(caught.value)  # the caret under the culprit
