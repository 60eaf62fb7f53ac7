"""Ranking through LightGBM and XGBoost with a lossdsl listwise loss over query groups: the
shipped example's models, at a size CI affords, against the libraries' own LambdaMART; the
groups each library gives the objective (LightGBM ``group=``, XGBoost ``qid=``), and the
errors when it gives none."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

lgb = pytest.importorskip("lightgbm")
xgb = pytest.importorskip("xgboost")

import lossdsl.lightgbm  # noqa: E402
import lossdsl.xgboost  # noqa: E402
from lossdsl.boosting import QueryDraws  # noqa: E402
from lossdsl.errors import LossError  # noqa: E402

EXAMPLE = runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples" / "ranking.py"),
                         run_name="example")


@pytest.fixture(scope="module")
def queries():
    return EXAMPLE["make_queries"](150, seed=1), EXAMPLE["make_queries"](100, seed=2)


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_listwise_and_pairwise_losses_rank_within_two_percent_of_lambdamart(queries, library):
    train, test = queries
    models = EXAMPLE[f"{library}_models"](train, test, rounds=60, threads=1)
    (built_in, _) = next(iter(models.values()))  # lambdarank, rank:ndcg
    ours = [models[name][0] for name in EXAMPLE["LOSSES"]]
    assert all(ndcg >= 0.98 * built_in for ndcg in ours), models
    if library == "lightgbm":  # the same draws: LightGBM's own rank_xendcg model
        assert models[EXAMPLE["XENDCG"]][0] == pytest.approx(models["rank_xendcg"][0],
                                                             abs=1e-4)


def _lightgbm_generator(seed: int, count: int) -> list[float]:
    """LightGBM's Random(seed).NextFloat() ``count`` times, in plain Python integers."""
    x, draws = seed % 2**32, []
    for _ in range(count):
        x = (214013 * x + 2531011) % 2**32
        draws.append(((x >> 16) & 0x7FFF) / 32768.0)
    return draws


def test_query_draws_are_lightgbms_per_query_generators():
    ids = np.array([7, 7, 3, 7, 3, 9])  # queries numbered by first row: 7 -> 0, 3 -> 1, 9 -> 2
    draws = QueryDraws(seed=-2)
    first = draws.advance(ids, 6).copy()
    np.testing.assert_array_equal(draws.values(ids, 6), first)
    second = draws.advance(ids, 6)
    for query, seed in ((7, -2), (3, -1), (9, 0)):
        rows = np.flatnonzero(ids == query)
        expected = _lightgbm_generator(seed, 2 * rows.size)
        np.testing.assert_array_equal(first[rows], expected[:rows.size])
        np.testing.assert_array_equal(second[rows], expected[rows.size:])
    # other rows (an evaluation set) get their first round, and advance nothing
    np.testing.assert_array_equal(draws.values(None, 2), [_lightgbm_generator(-2, 1)[0],
                                                          _lightgbm_generator(-1, 1)[0]])
    np.testing.assert_array_equal(draws.advance(ids, 6), [
        *_lightgbm_generator(-2, 9)[6:8], _lightgbm_generator(-1, 6)[4],
        _lightgbm_generator(-2, 9)[8], _lightgbm_generator(-1, 6)[5],
        _lightgbm_generator(0, 3)[2]])
    draws.restart()
    np.testing.assert_array_equal(draws.advance(ids, 6), first)


def test_rank_xendcg_with_lightgbms_draws_trains_lightgbms_model(queries):
    """Given LightGBM's objective_seed, the lossdsl objective draws what LightGBM's built-in
    rank_xendcg draws each round: the two train the same trees (to float32 rounding of
    the lambdas), through the native API and through LGBMRanker."""
    (x, rel, qid), (x_test, _, _) = queries
    sizes = np.bincount(qid)
    params = {"learning_rate": 0.1, "num_leaves": 15, "verbose": -1, "num_threads": 1,
              "objective_seed": 11, "deterministic": True, "force_row_wise": True}
    built_in = lgb.train({**params, "objective": "rank_xendcg"},
                         lgb.Dataset(x, rel, group=sizes), 20).predict(x_test)
    objective = lossdsl.lightgbm.objective("rank_xendcg(y, s, q, u)",
                                           inputs={"u": QueryDraws(seed=11)})
    ours = lgb.train({**params, "objective": objective},
                     lgb.Dataset(x, rel, group=sizes), 20).predict(x_test)
    np.testing.assert_allclose(ours, built_in, atol=1e-6 * np.max(np.abs(built_in)))
    ranker = lgb.LGBMRanker(objective=lossdsl.lightgbm.objective(
        "rank_xendcg(y, s, q, u)", inputs={"u": QueryDraws(seed=11)}), n_estimators=20,
        learning_rate=0.1, num_leaves=15, verbose=-1, n_jobs=1, deterministic=True,
        force_row_wise=True).fit(x, rel, group=sizes)
    np.testing.assert_allclose(ranker.predict(x_test), built_in,
                               atol=1e-6 * np.max(np.abs(built_in)))
    # as a metric on other rows: the cross-entropy against those rows' first-round draws
    (_, _, _), (_, rel_test, qid_test) = queries
    scores = np.linspace(-1.0, 1.0, qid_test.size)
    test_set = lgb.Dataset(x_test, rel_test, group=np.bincount(qid_test)).construct()
    _, value, _ = lossdsl.lightgbm.metric(objective)(scores, test_set)
    draws = QueryDraws(seed=11).values(qid_test, qid_test.size)
    expected = lossdsl.compile("rank_xendcg(y, s, q, u)")(y=rel_test, s=scores, q=qid_test,
                                                          u=draws)
    assert value == pytest.approx(float(expected), rel=1e-12)


def test_lgbm_ranker_passes_the_groups_to_the_objective(queries):
    (x, rel, qid), (x_test, _, _) = queries
    sizes = np.bincount(qid)
    gain = 2.0**rel - 1
    params = {"n_estimators": 10, "learning_rate": 0.1, "verbose": -1, "n_jobs": 1}
    objective = lossdsl.lightgbm.objective("softmax_ranking(y, s, q)")
    ranker = lgb.LGBMRanker(objective=objective, **params).fit(x, gain, group=sizes)
    native = lgb.train({"objective": objective, "learning_rate": 0.1, "verbose": -1,
                        "num_threads": 1}, lgb.Dataset(x, gain, group=sizes), 10)
    np.testing.assert_allclose(ranker.predict(x_test), native.predict(x_test), rtol=1e-12)
    metric = lossdsl.lightgbm.metric(objective)
    name, value, higher_is_better = metric(native.predict(x), lgb.Dataset(
        x, gain, group=sizes).construct())
    assert not higher_is_better and np.isfinite(value)
    with pytest.raises(LossError, match="gave no groups"):
        lgb.train({"objective": objective, "verbose": -1}, lgb.Dataset(x, gain), 2)


def test_xgboost_reads_the_queries_of_the_dmatrix(queries):
    (x, rel, qid), _ = queries
    gain = 2.0**rel - 1
    objective = lossdsl.xgboost.objective("listnet(y, s, q)")
    scores = np.random.default_rng(0).normal(size=qid.size)
    gradient, hessian = objective(scores, xgb.DMatrix(x, gain, qid=qid))
    expected = objective.gradients(gain, scores, groups=qid)
    np.testing.assert_allclose(gradient, expected[0], rtol=1e-12)
    np.testing.assert_allclose(hessian, expected[1], rtol=1e-12)
    # a constant does not change a listwise loss: its optimal start is where it starts
    assert objective.init_score(gain, groups=qid) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(LossError, match="gave no groups"):
        objective(scores, xgb.DMatrix(x, gain))
    with pytest.raises(LossError, match="depends on rows outside the leaf"):
        lossdsl.xgboost.train(objective, {}, xgb.DMatrix(x, gain, qid=qid), 2)


def test_xgboost_draws_anew_each_round_and_restarts_on_request(queries):
    (x, rel, qid), (x_test, _, _) = queries
    objective = lossdsl.xgboost.objective("rank_xendcg(y, s, q, u)",
                                          inputs={"u": QueryDraws(seed=3)})

    def trained() -> np.ndarray:
        booster = xgb.train({"base_score": 0.0, "nthread": 1},
                            xgb.DMatrix(x, rel, qid=qid), 4, obj=objective)
        return booster.predict(xgb.DMatrix(x_test), output_margin=True)

    first = trained()
    rounds = objective.draws["u"]
    expected = QueryDraws(seed=3)
    for _ in range(4):
        expected.advance(qid, qid.size)
    np.testing.assert_array_equal(rounds.values(qid, qid.size), expected.values(qid, qid.size))
    assert not np.allclose(trained(), first)  # the generators ran on
    objective.restart_draws()
    np.testing.assert_array_equal(trained(), first)


def _mean_average_precision(relevant: np.ndarray, scores: np.ndarray, qid: np.ndarray) -> float:
    found = []
    for query in np.unique(qid):
        rows = qid == query
        ranked = relevant[rows][np.argsort(-scores[rows], kind="stable")]
        if ranked.sum() > 0:
            precision = np.cumsum(ranked) / np.arange(1, ranked.size + 1)
            found.append(np.sum(precision * ranked) / ranked.sum())
    return float(np.mean(found))


def test_lambdarank_at_32_trains_xgboosts_rank_ndcg_model(queries):
    """XGBoost's rank:ndcg is LightGBM's lambdarank lambdas truncated at 32 (its default
    top-k pairs) with each pair's Hessian doubled: lambdarank(y, s, q, truncation=32) with
    like="rank:ndcg" trains its model, with query weights, which XGBoost rescales to mean 1
    (taken as they were, weights of mean 4 gave margins 20% away from its model)."""
    (x, rel, qid), (x_test, _, _) = queries
    params = {"eta": 0.1, "max_depth": 6, "nthread": 1, "tree_method": "hist",
              "base_score": 0.0}
    weight = np.random.default_rng(3).uniform(2.0, 6.0, np.unique(qid).size)
    built_in = xgb.train({**params, "objective": "rank:ndcg"},
                         xgb.DMatrix(x, rel, qid=qid, weight=weight), 6)
    objective = lossdsl.xgboost.objective("lambdarank(y, s, q, truncation=32)",
                                          like="rank:ndcg")
    ours = xgb.train(params, xgb.DMatrix(x, rel, qid=qid, weight=weight), 6, obj=objective)
    expected = built_in.predict(xgb.DMatrix(x_test), output_margin=True)
    np.testing.assert_allclose(ours.predict(xgb.DMatrix(x_test), output_margin=True), expected,
                               atol=1e-5 * np.max(np.abs(expected)))


def test_lambdarank_map_trains_xgboosts_rank_map_model(queries):
    """lambdarank_map's gradients are XGBoost's rank:map lambdas and like="rank:map" its
    Hessians: the same trees (to XGBoost's float32 margins); LightGBM, which has no MAP
    objective, trains on it too."""
    (x, rel, qid), (x_test, rel_test, qid_test) = queries
    relevant, relevant_test = (rel >= 3).astype(float), (rel_test >= 3).astype(float)
    params = {"eta": 0.1, "max_depth": 6, "nthread": 1, "tree_method": "hist",
              "base_score": 0.0}
    built_in = xgb.train({**params, "objective": "rank:map"},
                         xgb.DMatrix(x, relevant, qid=qid), 8)
    objective = lossdsl.xgboost.objective("lambdarank_map(y, s, q)", like="rank:map")
    ours = xgb.train(params, xgb.DMatrix(x, relevant, qid=qid), 8, obj=objective)
    expected = built_in.predict(xgb.DMatrix(x_test), output_margin=True)
    np.testing.assert_allclose(ours.predict(xgb.DMatrix(x_test), output_margin=True), expected,
                               atol=1e-5 * np.max(np.abs(expected)))
    booster = lgb.train({"objective": lossdsl.lightgbm.objective("lambdarank_map(y, s, q)"),
                         "verbose": -1, "num_threads": 1, "learning_rate": 0.1},
                        lgb.Dataset(x, relevant, group=np.bincount(qid)), 8)
    start = _mean_average_precision(relevant_test, np.zeros(qid_test.size), qid_test)
    assert _mean_average_precision(relevant_test, booster.predict(x_test), qid_test) > start + 0.1


def _mean_reciprocal_rank(relevant: np.ndarray, scores: np.ndarray, qid: np.ndarray) -> float:
    """The mean over the queries with a relevant document of 1/its best rank (a stable sort
    by score)."""
    found = []
    for query in np.unique(qid):
        rows = qid == query
        hits = np.flatnonzero(relevant[rows][np.argsort(-scores[rows], kind="stable")] > 0)
        if hits.size:
            found.append(1.0 / (hits[0] + 1))
    return float(np.mean(found))


def test_lambdarank_mrr_ranks_as_well_as_catboosts_lambdamart(queries):
    """lambdarank_mrr through XGBoost reaches the test MRR of CatBoost's LambdaMart:metric=MRR
    trained alike (a sanity check: the trees differ, and CatBoost's Newton leaves move up
    the loss where a leaf's Hessian sum is below l2_leaf_reg, see
    tests/test_ranking_metrics.py, which checks the derivatives; measured: 0.82 and 0.61
    from 0.26). lambdarank_err goes the same way (0.77 and 0.70), not run here for time."""
    metric = "MRR"
    catboost = pytest.importorskip("catboost")
    (_, _, _), (x_test, rel_test, qid_test) = queries
    x, rel, qid = EXAMPLE["make_queries"](40, seed=3)  # the pair weights' passes cost time
    relevant, relevant_test = (rel >= 3).astype(float), (rel_test >= 3).astype(float)
    built_in = catboost.CatBoost({"loss_function": f"LambdaMart:metric={metric}",
                                  "iterations": 20, "depth": 6, "learning_rate": 0.1,
                                  "thread_count": 1, "verbose": 0, "random_seed": 0})
    built_in.fit(catboost.Pool(x, relevant, group_id=qid))
    objective = lossdsl.xgboost.objective(f"lambdarank_{metric.lower()}(y, s, q)")
    ours = xgb.train({"eta": 0.1, "max_depth": 6, "nthread": 1, "tree_method": "hist",
                      "base_score": 0.0}, xgb.DMatrix(x, relevant, qid=qid), 20, obj=objective)
    start = _mean_reciprocal_rank(relevant_test, np.zeros(qid_test.size), qid_test)
    reached = _mean_reciprocal_rank(relevant_test, built_in.predict(x_test), qid_test)
    ours_reached = _mean_reciprocal_rank(
        relevant_test, ours.predict(xgb.DMatrix(x_test), output_margin=True), qid_test)
    assert reached > start + 0.3
    assert ours_reached >= reached - 0.03, (ours_reached, reached)
