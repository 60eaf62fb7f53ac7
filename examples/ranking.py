"""Learning to rank with a listwise loss written in lossdsl, trained by LightGBM and XGBoost.

Search results: each query has 10 to 120 candidate documents with graded relevance 0-4 (LETOR
style: a nonlinear relevance of 20 document features, a query-level topic, noise). The
models are scored by NDCG@10 on held-out queries. Per library, the same trees, rounds and
learning rate:

* the library's own ranking objective: LightGBM ``lambdarank``, XGBoost ``rank:ndcg``
  (LambdaMART: what a competent user trains for NDCG), and XGBoost's ``rank:pairwise``
  (RankNet on sampled pairs);
* ``softmax_ranking(y, s, q)`` from lossdsl's prelude (optax's ``ranking_softmax_loss``): the
  softmax cross-entropy of each query's scores against the gains ``y = 2^rel - 1``, a custom
  objective whose gradient and exact diagonal Hessian lossdsl derives. LightGBM fills the
  query ids ``q`` from the Dataset's ``group=``, XGBoost from the DMatrix's ``qid=``
  (``xgb.train``: XGBRanker refuses custom objectives);
* ``ranknet(y, s, q)``: RankNet's pairwise logistic loss, summed for each document over the
  other documents of its query that it should rank above (``pairsum``), the objective of
  XGBoost's ``rank:pairwise`` and CatBoost's ``PairLogit`` written in the language;
* ``lambdarank(y, s, q)``: LambdaMART written in the language (RankNet's pairs weighted by
  the NDCG change of swapping them in the current ranking, with LightGBM's lambdarank_norm):
  its gradients are LightGBM's lambdarank lambdas, now available to XGBoost as well;
* ``rank_xendcg(y, s, q, u)``: XE-NDCG, LightGBM's ``rank_xendcg`` (the softmax
  cross-entropy against each query's gains 2^rel - u with a uniform draw u per document and
  round), with the draws of ``QueryDraws(seed)``: LightGBM's own generators, so that with
  its ``objective_seed`` the lossdsl objective trains LightGBM's built-in model, and XGBoost
  gets the same objective.

XGBoost's documentation says its ranking task "does not support customized functions"; it
does through the native API once the objective reads the queries from the DMatrix.

    python examples/ranking.py
"""

from __future__ import annotations

import time

import lightgbm as lgb
import numpy as np
import xgboost as xgb

import lossdsl.lightgbm
import lossdsl.xgboost
from lossdsl.boosting import QueryDraws

LOSS = "softmax_ranking(y, s, q)"
PAIRWISE = "ranknet(y, s, q)"
LAMBDAMART = "lambdarank(y, s, q)"
XENDCG = "rank_xendcg(y, s, q, u)"
LOSSES = (LOSS, PAIRWISE, LAMBDAMART, XENDCG)
SEED = 5  # LightGBM's objective_seed (its default), the seed of rank_xendcg's draws


def objective(library, loss: str):
    """The lossdsl objective of ``loss`` for ``library`` (lossdsl.lightgbm or
    lossdsl.xgboost); XE-NDCG's draws u come anew each round from LightGBM's generators."""
    inputs = {"u": QueryDraws(SEED)} if loss == XENDCG else None
    return library.objective(loss, inputs=inputs)


def labels(loss: str, relevance: np.ndarray) -> np.ndarray:
    """The labels each lossdsl objective takes: gains 2^rel - 1 for the listwise softmax,
    the grades themselves for the pairwise losses (RankNet: only their order within a query
    counts; LambdaMART computes its gains 2^rel - 1 itself)."""
    return 2.0**relevance - 1 if loss == LOSS else relevance
ROUNDS = 200


def make_queries(n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, relevance 0-4, query id) of ``n_queries`` queries, rows grouped by query."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(10, 121, n_queries)
    qid = np.repeat(np.arange(n_queries), sizes)
    features = rng.normal(size=(qid.size, 20))
    topic = rng.normal(size=(n_queries, 2))[qid]  # what the query is about
    weights = np.linspace(1.0, 0.1, 20)
    latent = (features @ (weights / np.linalg.norm(weights))
              + 0.8 * np.sin(2 * features[:, 0]) * features[:, 1]
              + 0.5 * features[:, 2] * topic[:, 0] + 0.6 * np.tanh(features[:, 3] + topic[:, 1])
              + rng.normal(scale=0.6, size=qid.size))
    relevance = np.empty(qid.size)
    for query in range(n_queries):  # grades by the query's own quantiles: few are relevant
        rows = qid == query
        cuts = np.quantile(latent[rows], [0.5, 0.75, 0.9, 0.97])
        relevance[rows] = np.searchsorted(cuts, latent[rows])
    # a noisy view of the topic, as a query feature
    topic_feature = topic[:, :1] + rng.normal(scale=0.3, size=(qid.size, 1))
    return np.hstack([features, topic_feature]), relevance, qid


def ndcg_at_10(relevance: np.ndarray, scores: np.ndarray, qid: np.ndarray) -> float:
    """The mean over queries with a relevant document of NDCG@10 (gains 2^rel - 1)."""
    found = []
    for query in np.unique(qid):
        rows = qid == query
        rel = relevance[rows]
        if rel.max() == 0:
            continue
        discounts = 1.0 / np.log2(np.arange(2, 12))
        ranked = rel[np.argsort(-scores[rows], kind="stable")][:10]
        ideal = np.sort(rel)[::-1][:10]
        found.append(np.sum((2**ranked - 1) * discounts[:ranked.size])
                     / np.sum((2**ideal - 1) * discounts[:ideal.size]))
    return float(np.mean(found))


def lightgbm_models(train, test, rounds: int = ROUNDS,
                    threads: int = 2) -> dict[str, tuple[float, float]]:
    """{model: (NDCG@10 on the test queries, training seconds)} for LightGBM."""
    (x, rel, qid), (x_test, rel_test, qid_test) = train, test
    sizes = np.bincount(qid)
    params = {"learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 20, "verbose": -1,
              "num_threads": threads, "objective_seed": SEED}
    found = {}
    for name, chosen, label in [("lambdarank", "lambdarank", rel),
                                ("rank_xendcg", "rank_xendcg", rel),
                                *((loss, objective(lossdsl.lightgbm, loss), labels(loss, rel))
                                  for loss in LOSSES)]:
        start = time.perf_counter()
        booster = lgb.train({**params, "objective": chosen},
                            lgb.Dataset(x, label, group=sizes), rounds)
        seconds = time.perf_counter() - start
        found[name] = (ndcg_at_10(rel_test, booster.predict(x_test), qid_test), seconds)
    return found


def xgboost_models(train, test, rounds: int = ROUNDS,
                   threads: int = 2) -> dict[str, tuple[float, float]]:
    """{model: (NDCG@10 on the test queries, training seconds)} for XGBoost."""
    (x, rel, qid), (x_test, rel_test, qid_test) = train, test
    params = {"eta": 0.05, "max_depth": 6, "nthread": threads, "tree_method": "hist"}
    found = {}
    for name, chosen, label in [("rank:ndcg", None, rel), ("rank:pairwise", None, rel),
                                *((loss, objective(lossdsl.xgboost, loss), labels(loss, rel))
                                  for loss in LOSSES)]:
        start = time.perf_counter()
        if chosen is None:
            booster = xgb.train({**params, "objective": name},
                                xgb.DMatrix(x, label, qid=qid), rounds)
        else:  # base_score 0: a listwise loss does not change with a constant shift
            booster = xgb.train({**params, "base_score": 0.0}, xgb.DMatrix(x, label, qid=qid),
                                rounds, obj=chosen)
        seconds = time.perf_counter() - start
        scores = booster.predict(xgb.DMatrix(x_test), output_margin=True)
        found[name] = (ndcg_at_10(rel_test, scores, qid_test), seconds)
    return found


def main() -> None:
    train, test = make_queries(600, seed=1), make_queries(300, seed=2)
    print(f"{train[2].max() + 1} training queries ({train[0].shape[0]} documents), "
          f"{test[2].max() + 1} test queries; {ROUNDS} rounds")
    for library, models in [("LightGBM", lightgbm_models), ("XGBoost", xgboost_models)]:
        for name, (ndcg, seconds) in models(train, test).items():
            print(f"{library:9s} {name:25s} NDCG@10 {ndcg:.4f}   {seconds:5.1f} s")


if __name__ == "__main__":
    main()
