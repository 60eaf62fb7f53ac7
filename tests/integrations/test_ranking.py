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
from lossdsl.errors import LossError  # noqa: E402

EXAMPLE = runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples" / "ranking.py"),
                         run_name="example")


@pytest.fixture(scope="module")
def queries():
    return EXAMPLE["make_queries"](150, seed=1), EXAMPLE["make_queries"](100, seed=2)


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_listwise_and_pairwise_losses_rank_within_two_percent_of_lambdamart(queries, library):
    train, test = queries
    models = EXAMPLE[f"{library}_models"](train, test, rounds=60)
    (built_in, _) = next(iter(models.values()))  # lambdarank, rank:ndcg
    ours = [models[EXAMPLE[name]][0] for name in ("LOSS", "PAIRWISE", "LAMBDAMART")]
    assert all(ndcg >= 0.98 * built_in for ndcg in ours), models


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
