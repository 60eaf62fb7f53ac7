"""CatBoost's StochasticRank for (N)DCG and MRR, and StochasticFilter: the prelude's
``stochastic_rank(y, z, q, u)``, ``stochastic_rank_mrr`` and ``stochastic_filter``, whose
gradients are CatBoost's derivative estimates given the same draws ``u`` and whose Hessians
are 0 (CatBoost's ``Der2``), and ``lossdsl.boosting.NormalDraws`` and ``UniformDraws``, which
fill ``u`` each round.

The reference is TStochasticRankError (CalcDersForSingleQuery,
CalcMonteCarloEstimateForSingleQueryPermutation, CalcDCGMetricDiff, CalcDCGCumulativeStatistics
and ComputeDCGPosWeights in catboost/private/libs/algo_helpers/error_functions.cpp) transcribed
in NumPy as CatBoost writes it: its loop over the places each document may move to, the
metric change of each move from the cumulative sums, times the change of the normal density
mass of landing there (for MRR, CatBoost's branches on the first and second relevant
documents). lossdsl computes the same sum as a pair sum (summed by parts, see ``srank_step``
and ``srank_mrr_step``); CatBoost's own generator (``TFastRng64`` seeded per query and round) is not
reproduced, so the draws are given to both. StochasticFilter's reference is
TStochasticFilterError::CalcQueryDers and CalcBaseline (error_functions.h), transcribed.
"""

from __future__ import annotations

import functools
import runpy
from pathlib import Path

import numpy as np
import pytest
from coupled import assert_results_follow_their_rows, shuffled_group_ids
from sweeps import SAMPLING

import lossdsl
from lossdsl.boosting import NormalDraws, UniformDraws

INV_SQRT_2PI = 0.398942280401432677939946


@functools.cache
def compiled(text: str, target: str = "cpu") -> lossdsl.CompiledLoss:
    return lossdsl.compile(text, target=target, reduction="sum")


def _catboost_query(approx: np.ndarray, target: np.ndarray, noises: list[np.ndarray],
                    sigma: float, mu: float, nu: float, lam: float, top: int,
                    normalize: bool, metric: str = "DCG", decay: float = 0.85,
                    position: bool = False) -> np.ndarray:
    """CatBoost's Der1 of one query's documents (in the order given) for metric ``"DCG"``
    (NDCG where ``normalize``; gains the labels, type=Base), ``"MRR"``, ``"PFound"`` (its
    ``decay``) or ``"ERR"``, ``top`` -1 for all, one noise vector per estimation."""
    count = approx.size
    der = np.zeros(count)
    if count <= 1:
        return der
    top_size = count if top == -1 or top > count else top
    filtered = metric == "FilteredDCG"  # the last document is C's virtual one (0, 0, no noise)
    shifted = approx - sigma * mu * target  # stage 1
    if not filtered:
        shifted = shifted - sum(shifted) / count

    def density(x: float, mean: float, sd: float) -> float:
        return np.exp(-(((x - mean) / sd) ** 2) / 2.0) * INV_SQRT_2PI / sd

    weights = np.zeros(count)  # ComputeDCGPosWeights
    for pos in range(top_size):
        weights[pos] = 1.0 / (pos + 1.0) if filtered or position else 1.0 / np.log2(2.0 + pos)
    if normalize and metric == "DCG":
        ideal = sum(np.sort(target)[::-1][:top_size] * weights[:top_size])
        if ideal > np.finfo(float).eps:
            weights[:top_size] /= ideal
    for noise in noises:  # stage 2
        scores = shifted + sigma * noise
        noise_sum = sum(noise)
        order = sorted(range(count), key=lambda doc: -scores[doc])  # stable
        at = [scores[order[k]] for k in range(count)]
        if metric in ("PFound", "ERR"):  # ComputePFoundPosWeights, ComputeERRPosWeights
            weights, look = np.zeros(count), 1.0
            weights[0] = 1.0
            for pos in range(1, top_size):
                if metric == "PFound":
                    weights[pos] = weights[pos - 1] * decay * (1 - target[order[pos - 1]])
                else:
                    look *= 1 - target[order[pos - 1]]
                    weights[pos] = look / (pos + 1)
        cum, up, low = np.zeros(count + 1), np.zeros(count + 1), np.zeros(count + 1)
        for pos in range(count):
            gain = 0.0 if filtered and scores[order[pos]] < 0 else target[order[pos]]
            cum[pos + 1] = cum[pos] + gain * weights[pos]
            if metric == "ERR":  # CalcERRCumulativeStatistics
                if pos + 1 < count:
                    low[pos + 1] = low[pos] + gain * weights[pos] * (pos + 1.0) / (pos + 2.0)
                if pos > 0:
                    up[pos + 1] = up[pos] + gain * weights[pos] * (pos + 1.0) / pos
                continue
            if pos + 1 < count:
                low[pos + 1] = low[pos] + gain * weights[pos + 1]
            if pos > 0:
                up[pos + 1] = up[pos] + gain * weights[pos - 1]
        if metric != "ERR":
            low[count] = low[count - 1]
        relevant = [pos for pos in range(count) if target[order[pos]] > 0]  # CalcMRRStatistics
        first = relevant[0] if relevant else -1
        second = relevant[1] if len(relevant) > 1 else -1

        def metric_diff(old: int, new: int, order=order, cum=cum, up=up, low=low,
                        first=first, second=second, weights=weights,
                        scores=scores) -> float:
            if new == old or min(old, new) >= top_size:
                return 0.0
            if metric == "MRR":  # CalcMRRMetricDiff
                if first == -1:
                    return 0.0
                if old < first:
                    return 1.0 / first - 1.0 / (first + 1) if new >= first else 0.0
                if old == first:
                    if second == -1 or new < second:
                        return 1.0 / (new + 1) - 1.0 / (old + 1)
                    return 1.0 / second - 1.0 / (old + 1)
                if new <= first:
                    if target[order[old]] > 0:
                        return 1.0 / (new + 1) - 1.0 / (first + 1)
                    return 1.0 / (first + 2) - 1.0 / (first + 1)
                return 0.0
            if metric in ("PFound", "ERR"):
                return _pfound_err_diff(metric, old, new, top_size, target[order], weights,
                                        cum, up, low, decay)
            old_weight, new_weight = weights[old], weights[new]
            if filtered:  # CalcDCGMetricDiff: weights switched by the noisy scores' signs
                old_weight *= scores[order[old]] >= 0
                new_weight *= (scores[order[new]] if new < old else
                               scores[order[new + 1]] if new + 1 < count else -1) >= 0
            doc_diff = target[order[old]] * (new_weight - old_weight)
            if new < old:
                return doc_diff + (low[old] - low[new]) - (cum[old] - cum[new])
            return doc_diff + (up[new + 1] - up[old + 1]) - (cum[new + 1] - cum[old + 1])

        def over_places(pos: int, mean: float, sd: float, max_new: int, at=at,
                        metric_diff=metric_diff) -> float:
            total = 0.0
            for new in range(max_new + 1):
                if new == pos:
                    continue
                if new == 0:
                    mass = density(at[0], mean, sd)
                elif new + 1 == min(count, top_size + 1):
                    mass = -density(at[top_size - 1] if new < pos
                                    else at[min(top_size, count - 1)], mean, sd)
                elif new < pos:
                    mass = density(at[new], mean, sd) - density(at[new - 1], mean, sd)
                else:
                    mass = density(at[new + 1], mean, sd) - density(at[new], mean, sd)
                total += metric_diff(pos, new) * mass
            return total

        for pos in range(count):
            doc = order[pos]
            mean = shifted[doc] + (0 if filtered else
                                   (noise_sum - (scores[doc] - shifted[doc])) / (count - 1))
            sd = sigma * (1.0 if filtered else np.sqrt(count / (count - 1.0)))
            if metric != "MRR":
                total = over_places(pos, mean, sd, min(count - 1, top_size))
            elif pos == first and second == -1:
                total = over_places(pos, mean, sd, count - 1)
            elif pos == first:
                total = (over_places(pos, mean, sd, second - 1)
                         + (1.0 / second - 1.0 / (first + 1)) * -density(at[second], mean, sd))
            elif pos == second:
                total = over_places(pos, mean, sd, first)
            elif pos < first:
                total = (1.0 / first - 1.0 / (first + 1)) * -density(at[first], mean, sd)
            elif pos < second:
                total = (1.0 / (first + 2) - 1.0 / (first + 1)) * density(at[first], mean, sd)
            elif first != -1:
                if target[doc] == 0:
                    total = ((1.0 / (first + 2) - 1.0 / (first + 1))
                             * density(at[first], mean, sd))
                else:
                    total = over_places(pos, mean, sd, first)
            else:
                total = 0.0
            der[doc] += total / len(noises)
    if not filtered:
        der = der - sum(der) / count  # stage 3
    if count > 2:
        centred = approx - sum(approx) / count
        norm = (np.sqrt(sum(centred**2)) + nu) ** 2
        der = der - lam * sum(der * centred) / norm * centred
    return der


def _pfound_err_diff(metric: str, old: int, new: int, top_size: int, ranked: np.ndarray,
                     weights: np.ndarray, cum: np.ndarray, up: np.ndarray, low: np.ndarray,
                     decay: float) -> float:
    """CatBoost's CalcPFoundMetricDiff or CalcERRMetricDiff: the change of the metric when
    the document at place ``old`` of the labels ``ranked`` (in the noisy order) moves to
    ``new``."""
    gain, weight = ranked[old], weights[old]
    factor = decay if metric == "PFound" else 1.0
    if new < old:
        inner = low if metric == "ERR" else cum
        mid_old = cum[old] - cum[new]
        mid_new = (inner[old] - inner[new]) * factor * (1 - gain)
        if old >= top_size:
            mid_new -= weights[top_size - 1] * ranked[top_size - 1] * factor * (1 - gain)
        return gain * (weights[new] - weight) + mid_new - mid_old
    mid_old = cum[new + 1] - cum[old + 1]
    if metric == "PFound" and decay == 0.0:
        new_weight, mid_new = 0.0, ranked[1] if old == 0 else mid_old
    elif gain == 1.0 and metric == "PFound":  # multiplied afresh: a factor 1 - gain of 0
        look, mid_new = weight, 0.0
        for pos in range(old + 1, min(new, top_size - 1) + 1):
            mid_new += ranked[pos] * look
            look *= (1 - ranked[pos]) * decay
        new_weight = look if new < top_size else 0.0
    elif gain == 1.0:
        look, mid_new, pos = weight * (old + 1), 0.0, old + 1
        while pos <= new and look > 0:
            mid_new += ranked[pos] * look / pos
            look *= 1 - ranked[pos]
            pos += 1
        new_weight = look / (new + 1) if new < top_size else 0.0
    elif metric == "PFound":
        new_weight = weights[new] * (1 - ranked[new]) / (1 - gain)
        mid_new = (cum[new + 1] - cum[old + 1]) / decay / (1 - gain)
        if new >= top_size:
            mid_new += weights[top_size - 1] * ranked[top_size] / (1 - gain) * (
                1 - ranked[top_size - 1])
    else:
        new_weight = weights[new] * (1 - ranked[new]) / (1 - gain) * (new + 2.0) / (new + 1.0)
        mid_new = (up[new + 1] - up[old + 1]) / (1 - gain)
        if new >= top_size:
            mid_new += weights[top_size - 1] * ranked[top_size] / (1 - gain) * (
                1 - ranked[top_size - 1])
    return gain * (new_weight - weight) + mid_new - mid_old


def catboost_stochastic_rank(d: dict[str, np.ndarray], draws: tuple[str, ...] = ("u",),
                             sigma: float = 1.0, mu: float = 0.0, nu: float = 0.01,
                             lam: float = 1.0, top: float = -1, normalize: int = 1,
                             metric: str = "DCG", decay: float = 0.85, position: int = 0
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value, gradient, Hessian diagonal) of lossdsl's ``stochastic_rank`` as CatBoost's
    StochasticRank (metric=NDCG, or DCG with normalize=0; ``metric="MRR"``: its MRR, of
    ``stochastic_rank_mrr``) gives them for the noise in the inputs ``draws`` (one per
    estimation): 0, minus CatBoost's Der1, 0 (its Der2)."""
    y, z, q = d["y"], d["z"], d["q"]
    gradient = np.zeros(q.size)
    for query in np.unique(q):
        rows = np.flatnonzero(q == query)
        extra = [0.0] if metric == "FilteredDCG" else []  # C's virtual document
        gradient[rows] = -_catboost_query(
            np.r_[z[rows], extra], np.r_[y[rows], extra], [np.r_[d[u][rows], extra] for u in draws],
            sigma, mu, nu, lam, -1 if top == np.inf else int(top), bool(normalize), metric,
            decay, bool(position))[:rows.size]
    return np.zeros(q.size), gradient, np.zeros(q.size)


def catboost_stochastic_filter(d: dict[str, np.ndarray], draws: tuple[str, ...] = ("u",),
                               sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value, gradient, Hessian diagonal) of lossdsl's ``stochastic_filter`` as CatBoost's
    StochasticFilter gives them for the uniform draws in the inputs ``draws`` (one per
    estimation): 0, minus CatBoost's Der1, 0 (its Der2)."""
    y, z, q = d["y"], d["z"], d["q"]
    gradient = np.zeros(q.size)
    for query in np.unique(q):
        rows = np.flatnonzero(q == query)
        baseline, pos = 0.0, 0
        for row in rows:
            if z[row] >= 0:
                pos += 1
                baseline += y[row] / pos
        der = np.zeros(rows.size)
        for u in draws:
            pos, loss, probs = 0, 0.0, np.zeros(rows.size)
            for j, row in enumerate(rows):
                prob = 1.0 / (1.0 + np.exp(-z[row] * sigma))
                kept = prob >= d[u][row]
                loss += y[row] / (pos + 1) if kept else 0.0
                pos += kept
                probs[j] = 1 - prob if kept else -prob
            der += probs * (loss - baseline) / len(draws)
        gradient[rows] = -der
    return np.zeros(q.size), gradient, np.zeros(q.size)


def queries(seed: int, n_groups: int = 8) -> dict[str, np.ndarray]:
    """Queries of 1 to 9 documents, graded labels 0-4 (one query all 0), shuffled rows."""
    rng = np.random.default_rng(seed)
    q = shuffled_group_ids(rng, n_groups, 9)
    y = rng.integers(0, 5, q.size).astype(float)
    y[q == q[0]] = 0.0
    return {"y": y, "z": rng.normal(0.0, 1.5, q.size), "q": q,
            "u": rng.standard_normal(q.size), "v": rng.standard_normal(q.size)}


def fused(loss: lossdsl.CompiledLoss, d: dict, params: dict | None = None) -> list:
    """[value, gradient, Hessian diagonal] in z, from one kernel."""
    inputs = {name: d[name] for name in loss.inputs if name in d}
    return loss.compute(True, ("z",), ("z",), {**inputs, **(params or {})}, None)


OPTIONS = [{}, {"sigma": 0.5, "mu": 0.3, "nu": 0.1, "lam": 0.5, "top": 3},
           {"normalize": 0, "top": 1}, {"sigma": 2.0, "lam": 0.0},
           {"position": 1, "top": 4}, {"position": 1, "normalize": 0}]


#: stochastic_rank with its options as params given at the call: one kernel for all of them.
WITH_PARAMS = ("param sigma = 1.0\nparam mu = 0.0\nparam nu = 0.01\nparam lam = 1.0\n"
               "param top = inf\nparam normalize = 1\nparam position = 0\n"
               "loss srank = stochastic_rank(y, z, q, u, sigma, mu, nu, lam, top, normalize, "
               "position)")


#: stochastic_rank_mrr with its options as params.
MRR_WITH_PARAMS = ("param sigma = 1.0\nparam mu = 0.0\nparam nu = 0.01\nparam lam = 1.0\n"
                   "loss mrr = stochastic_rank_mrr(y, z, q, u, sigma, mu, nu, lam)")

#: stochastic_rank_pfound with its options as params.
PFOUND_WITH_PARAMS = ("param sigma = 1.0\nparam mu = 0.0\nparam nu = 0.01\nparam lam = 1.0\n"
                      "param decay = 0.85\n"
                      "loss pfound = stochastic_rank_pfound(y, z, q, u, sigma, mu, nu, lam, decay)")

#: stochastic_rank_err with its options as params.
ERR_WITH_PARAMS = ("param sigma = 1.0\nparam mu = 0.0\nparam nu = 0.01\nparam lam = 1.0\n"
                   "loss err = stochastic_rank_err(y, z, q, u, sigma, mu, nu, lam)")

#: stochastic_rank_filtered with its options as params.
FILTERED_WITH_PARAMS = ("param sigma = 1.0\nparam mu = 0.0\nparam nu = 0.01\nparam lam = 0.0\n"
                        "loss filtered = stochastic_rank_filtered(y, z, q, u, sigma, mu, nu, lam)")

#: stochastic_filter with its sigma a param.
FILTER_WITH_PARAMS = "param sigma = 1.0\nloss f = stochastic_filter(y, z, q, u, sigma)"


def _text(options: dict) -> str:
    return "stochastic_rank(y, z, q, u" + "".join(f", {k}={v}" for k, v in options.items()) + ")"


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("options", OPTIONS, ids=[_text(o) for o in OPTIONS])
def test_gradient_is_catboosts_der1_given_the_same_noise(options, seed):
    d = queries(seed)
    loss = compiled(WITH_PARAMS)
    value, gradient, hessian = fused(loss, d, options)
    _, expected, _ = catboost_stochastic_rank(d, **options)
    assert value == 0.0
    np.testing.assert_allclose(gradient, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(hessian, 0.0)  # CatBoost's Der2
    assert np.abs(expected).max() > 1e-2  # the queries move
    assert_results_follow_their_rows(lambda inputs: fused(loss, inputs, options), d,
                                     np.random.default_rng(seed).permutation(d["q"].size))


@pytest.mark.parametrize("options", [{}, {"mu": 0.5}])
def test_ties_of_the_noisy_scores_rank_in_the_order_given(options):
    """Integer scores without noise tie exactly: both rank the tied documents as given (a
    stable sort), so the same rows in another order within a query give other derivatives,
    CatBoost's for that order."""
    d = queries(2)
    d = {**d, "z": np.round(d["z"]), "u": np.zeros(d["q"].size)}
    loss = compiled(WITH_PARAMS)
    for order in (np.arange(d["q"].size), np.random.default_rng(3).permutation(d["q"].size)):
        taken = {k: v[order] for k, v in d.items()}
        _, gradient, _ = fused(loss, taken, options)
        np.testing.assert_allclose(gradient, catboost_stochastic_rank(taken, **options)[1],
                                   rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", range(6))
def test_mrr_gradient_is_catboosts_der1_given_the_same_noise(seed):
    """Graded labels (relevant where > 0), 0/1 labels with queries of one or no relevant
    document, labels -1 to 2 with tied scores (integers, no noise for half of them)."""
    d = queries(seed)
    rng = np.random.default_rng(seed + 10)
    if seed % 3 == 1:
        d["y"] = (rng.uniform(size=d["q"].size) < 0.3).astype(float)
    if seed % 3 == 2:
        d["y"] = rng.integers(-1, 3, d["q"].size).astype(float)
        d["z"] = np.round(d["z"])
        d["u"] = np.where(rng.uniform(size=d["q"].size) < 0.5, 0.0, d["u"])
    options = [{}, {"sigma": 0.5, "mu": 0.3, "nu": 0.1, "lam": 0.5}][seed % 2]
    value, gradient, hessian = fused(compiled(MRR_WITH_PARAMS), d, options)
    _, expected, _ = catboost_stochastic_rank(d, metric="MRR", **options)
    assert value == 0.0
    np.testing.assert_allclose(gradient, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(hessian, 0.0)
    assert np.abs(expected).max() > 1e-2


def probability_labels(d: dict, seed: int) -> dict:
    """Labels in [0, 1] as PFound and ERR read them: about a third 1 (a factor 1 - y of 0:
    C's products multiplied afresh), the others 0, 0.2, 0.5 or 0.9."""
    rng = np.random.default_rng(seed + 20)
    certain = rng.uniform(size=d["q"].size) < 0.3
    return {**d, "y": np.where(certain, 1.0, rng.choice([0.0, 0.2, 0.5, 0.9], d["q"].size))}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("metric, loss", [
    ("PFound", PFOUND_WITH_PARAMS), ("ERR", ERR_WITH_PARAMS),
    ("FilteredDCG", FILTERED_WITH_PARAMS)], ids=["PFound", "ERR", "FilteredDCG"])
def test_pfound_err_and_filtered_dcg_gradients_are_catboosts_der1(metric, loss, seed):
    """Given the same noise. PFound and ERR: labels in [0, 1] with many 1s, C's options and
    PFound's decay as params (decay 1: PFound does not change when two documents swap, so no
    gradient); FilteredDCG: graded labels, C's virtual document (score 0: real documents of
    noisy score 0 rank above it). Seed 3 ties the scores (integers, no noise for half of the
    documents), ranked in the order given."""
    d = queries(seed) if metric == "FilteredDCG" else probability_labels(queries(seed), seed)
    options = [{}, {"sigma": 0.5, "mu": 0.3, "nu": 0.1, "lam": 0.5}][seed % 2]
    if metric == "FilteredDCG":  # its default lam is 0 (CatBoost's default acts so)
        options = {"lam": [0.0, 0.5, 1.0, 3.0][seed], **options}
    if metric == "PFound" and seed >= 2:
        options = {**options, "decay": [0.5, 1.0][seed % 2]}
    if seed == 3:
        rng = np.random.default_rng(seed)
        d["z"] = np.round(d["z"])
        d["u"] = np.where(rng.uniform(size=d["q"].size) < 0.5, 0.0, d["u"])
    value, gradient, hessian = fused(compiled(loss), d, options)
    _, expected, _ = catboost_stochastic_rank(d, metric=metric, **options)
    assert value == 0.0
    np.testing.assert_allclose(gradient, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(hessian, 0.0)
    assert np.abs(expected).max() > (1e-2 if options.get("decay") != 1.0 else -1)


def test_one_document_queries_and_queries_without_gains_give_zero():
    """CatBoost returns 0 for a query of one document; a query whose labels are all 0 has no
    gain to move (its ideal DCG, 0, is not divided by)."""
    d = {"y": np.array([3.0, 0.0, 0.0, 0.0, 1.0]), "z": np.array([0.2, 1.0, -1.0, 0.5, 0.0]),
         "q": np.array([4, 9, 9, 9, 6]), "u": np.array([0.3, -1.0, 0.2, 2.0, 1.5])}
    value, gradient, hessian = fused(compiled(WITH_PARAMS), d)
    assert value == 0.0
    np.testing.assert_array_equal(gradient, 0.0)
    np.testing.assert_array_equal(hessian, 0.0)


def test_num_estimations_is_the_mean_of_losses_with_their_own_draws():
    """CatBoost's num_estimations=2 averages two estimates before its centring and
    projection, which are linear: the mean of two losses with two draws (on CI, the mean of
    the shared kernel's derivatives at each draw: one kernel fewer)."""
    d = queries(4)
    if SAMPLING:
        loss = compiled(WITH_PARAMS)
        gradient, hessian = np.mean([fused(loss, {**d, "u": d[u]})[1:] for u in "uv"], axis=0)
    else:
        loss = compiled("(stochastic_rank(y, z, q, u) + stochastic_rank(y, z, q, v))/2")
        _, gradient, hessian = fused(loss, d)
    np.testing.assert_allclose(gradient, catboost_stochastic_rank(d, draws=("u", "v"))[1],
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(hessian, 0.0)


@pytest.mark.skipif(SAMPLING, reason="a kernel of its own: on CI, stochastic_rank's float32 "
                    "kernel is checked by test_library's or test_cuda's float32 sweep")
def test_float32_gives_the_float64_derivatives():
    """float32 kernels against CatBoost's algorithm in float64 on the same (float32) values."""
    rng = np.random.default_rng(5)
    d = {"q": rng.integers(0, 30, 200), "y": rng.integers(0, 5, 200).astype(float),
         "z": rng.normal(0.0, 1.5, 200), "u": rng.standard_normal(200)}
    single = fused(compiled(WITH_PARAMS), {k: v.astype(np.float32) for k, v in d.items()})
    assert single[1].dtype == np.float32
    expected = catboost_stochastic_rank({k: v.astype(np.float32).astype(float)
                                         for k, v in d.items()})[1]
    np.testing.assert_allclose(single[1], expected, rtol=1e-4, atol=1e-5)


def test_normal_draws_advance_each_round_and_restart_from_the_seed():
    ids = np.array([7, 7, 3, 7, 3, 9])
    draws = NormalDraws(seed=4)
    first = draws.advance(ids, 6).copy()
    np.testing.assert_array_equal(first, np.random.default_rng(4).standard_normal(6))
    np.testing.assert_array_equal(draws.values(ids, 6), first)
    second = draws.advance(ids, 6).copy()
    assert not np.allclose(second, first)
    np.testing.assert_array_equal(draws.values(ids[:5], 5), first[:5])  # other rows: round 1
    draws.restart()
    np.testing.assert_array_equal(draws.advance(ids, 6), first)
    assert repr(draws) == "NormalDraws(seed=4)"


@pytest.mark.skipif(SAMPLING, reason="a kernel of its own and 15 rounds: full runs only")
def test_training_through_lightgbm_improves_held_out_ndcg():
    """The noise drawn anew each round (NormalDraws), first-order steps (the Hessian is 0),
    on examples/ranking.py's queries, 15 rounds lift the held-out NDCG@10 from the constant
    model's to about LightGBM's lambdarank's after as many rounds."""
    lgb = pytest.importorskip("lightgbm")
    import lossdsl.lightgbm

    example = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "ranking.py"),
                             run_name="example")
    (x, rel, qid), (x_test, rel_test, qid_test) = (example["make_queries"](60, seed=1),
                                                   example["make_queries"](40, seed=2))
    ndcg, sizes = example["ndcg_at_10"], np.bincount(qid)
    params = {"learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 20, "verbose": -1,
              "num_threads": 1}
    objective = lossdsl.lightgbm.objective("stochastic_rank(y, s, q, u)",
                                           inputs={"u": NormalDraws(3)}, hessian_constant=0.01)
    assert objective.policy == "constant"  # "auto" for a Hessian of 0: first-order steps
    ours = lgb.train({**params, "objective": objective},
                     lgb.Dataset(x, 2.0**rel - 1, group=sizes), 15)
    built_in = lgb.train({**params, "objective": "lambdarank"}, lgb.Dataset(x, rel, group=sizes),
                         15)
    constant = ndcg(rel_test, np.zeros(rel_test.size), qid_test)
    found = ndcg(rel_test, ours.predict(x_test), qid_test)
    reference = ndcg(rel_test, built_in.predict(x_test), qid_test)
    assert found > constant + 0.3 and found > 0.95 * reference, (constant, found, reference)


@pytest.mark.parametrize("sigma", [1.0, 0.4])
def test_stochastic_filter_gradient_is_catboosts_der1_given_the_same_draws(sigma):
    """Graded labels, queries of one to nine documents (one alone: CatBoost computes its
    estimate too), draws that tie a probability exactly (kept: CatBoost's prob >= draw), and
    two estimations as the mean of two losses."""
    d = queries(6)
    d["u"] = np.random.default_rng(7).uniform(size=d["q"].size)
    d["z"][0], d["u"][0] = 0.0, 0.5  # sigmoid(0) = 0.5: kept
    d["v"] = np.random.default_rng(8).uniform(size=d["q"].size)
    value, gradient, hessian = fused(compiled(FILTER_WITH_PARAMS), d, {"sigma": sigma})
    assert value == 0.0
    np.testing.assert_allclose(gradient, catboost_stochastic_filter(d, sigma=sigma)[1],
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(hessian, 0.0)
    assert np.abs(gradient).max() > 0.1
    if SAMPLING:  # the shared kernel at each draw: one kernel fewer
        two = [None, np.mean([fused(compiled(FILTER_WITH_PARAMS), {**d, "u": d[u]})[1]
                              for u in "uv"], axis=0)]
    else:
        two = fused(compiled("(stochastic_filter(y, z, q, u) + stochastic_filter(y, z, q, v))/2"),
                    d)
    np.testing.assert_allclose(two[1], catboost_stochastic_filter(d, draws=("u", "v"))[1],
                               rtol=1e-12, atol=1e-14)
    draws = UniformDraws(seed=2)
    first = draws.advance(d["q"], d["q"].size)
    np.testing.assert_array_equal(first, np.random.default_rng(2).random(d["q"].size))
    assert repr(draws) == "UniformDraws(seed=2)"


@pytest.mark.parametrize("loss, catboost_loss, draw", [
    (WITH_PARAMS, "StochasticRank:metric=NDCG;", "standard_normal"),
    (MRR_WITH_PARAMS, "StochasticRank:metric=MRR;", "standard_normal"),
    (FILTER_WITH_PARAMS, "StochasticFilter:", "random"),
    (PFOUND_WITH_PARAMS, "StochasticRank:metric=PFound;", "standard_normal"),
    (ERR_WITH_PARAMS, "StochasticRank:metric=ERR;", "standard_normal"),
    (FILTERED_WITH_PARAMS, "StochasticRank:metric=FilteredDCG;", "standard_normal")],
    ids=["StochasticRank", "StochasticRank-MRR", "StochasticFilter", "StochasticRank-PFound",
         "StochasticRank-ERR", "StochasticRank-FilteredDCG"])
def test_catboosts_own_estimates_agree_in_distribution(loss, catboost_loss, draw):
    """CatBoost itself, its generator unmatched: with num_estimations=2000 its first tree (one
    document per leaf, Gradient leaves, learning rate 1) holds each document's mean Der1 over
    2000 draws of its own; the mean of lossdsl's negated gradient over 2000 draws of NumPy's
    estimates the same expectation. Their differences, in units of the Monte Carlo standard
    error, look standard normal (a sign or a formula off would put them far out)."""
    catboost = pytest.importorskip("catboost")
    rng = np.random.default_rng(7)
    q = np.repeat([0, 1, 2, 3], [9, 1, 6, 8])
    y, z = rng.integers(0, 4, q.size).astype(float), np.round(8 * rng.normal(size=q.size)) / 8
    if "PFound" in catboost_loss or "ERR" in catboost_loss:
        y = y / 3  # probabilities: 0, 1/3, 2/3 and 1
    bits = ((np.arange(q.size)[:, None] >> np.arange(5)) & 1).astype(float)
    estimations = 2000
    model = catboost.CatBoost({
        "loss_function": f"{catboost_loss}num_estimations={estimations}", "iterations": 1,
        "depth": 5, "learning_rate": 1.0, "l2_leaf_reg": 0, "random_strength": 0,
        "bootstrap_type": "No", "boosting_type": "Plain", "boost_from_average": False,
        "leaf_estimation_method": "Gradient", "leaf_estimation_iterations": 1,
        "thread_count": 1, "verbose": 0})
    model.fit(catboost.Pool(bits, y, group_id=q, baseline=z))
    theirs = model.predict(bits, prediction_type="RawFormulaVal")
    # every estimation's copy of the queries at once: query ids q + 10 e
    copies = {"y": np.tile(y, estimations), "z": np.tile(z, estimations),
              "q": (q + 10 * np.arange(estimations)[:, None]).ravel(),
              "u": getattr(np.random.default_rng(1), draw)(estimations * q.size)}
    _, gradient, _ = fused(compiled(loss), copies)
    per_draw = -gradient.reshape(estimations, q.size)
    error = per_draw.std(axis=0) * np.sqrt(2 / estimations)  # of the difference of two means
    # a query of one document: no StochasticRank derivative, FilteredDCG's without noise
    moving = error > 1e-9
    score = (theirs - per_draw.mean(axis=0))[moving] / error[moving]
    assert np.abs(score).max() < 4.5 and np.mean(score**2) < 2.0, score
    np.testing.assert_allclose(theirs[~moving], per_draw.mean(axis=0)[~moving], rtol=1e-9,
                               atol=1e-14)
